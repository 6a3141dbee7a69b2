"""num_ctx bounds a chat the way Ollama does: the oldest turns go first, system and the last
message stay (real server, tiny model)."""

from __future__ import annotations

from types import SimpleNamespace

import requests

from mlx_ollama_bridge.engine.jobs import build_prompt

CTX = 256


def chat(server, messages, **extra):
    body = {
        "model": "tiny",
        "messages": messages,
        "stream": False,
        "options": {"num_ctx": CTX, "num_predict": 1, "temperature": 0},
        **extra,
    }
    return requests.post(server.url + "/api/chat", json=body, timeout=120)


class WordBackend:
    """Renders messages as ``role: content`` lines and counts one token per word."""

    def render_chat(self, loaded, messages, **_kwargs) -> str:
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages)

    def encode(self, loaded, text, *, add_special_tokens) -> list[int]:
        return list(range(len(text.split())))


def build(messages, context_length, truncate=True) -> str:
    model = SimpleNamespace(
        messages=[],
        system=None,
        manifest=SimpleNamespace(template=None, go_template=None),
        form=None,
    )
    request = SimpleNamespace(
        model=model,
        messages=messages,
        tools=None,
        think=None,
        think_level=None,
        truncate=truncate,
        is_chat=True,
    )
    text, _tokens = build_prompt(WordBackend(), None, request, context_length)
    return text


def test_oldest_turns_go_first_system_and_last_stay():
    messages = [
        {"role": "system", "content": "be brief"},
        *({"role": "user", "content": f"turn{i} a b c d"} for i in range(6)),
        {"role": "user", "content": "final question"},
    ]
    text = build(messages, context_length=24)
    assert text.startswith("system: be brief")
    assert text.endswith("user: final question")
    assert "turn0" not in text and "turn1" not in text
    assert "turn5" in text  # the most recent turns survive
    assert len(text.split()) <= 24  # Ollama keeps a chat of exactly num_ctx tokens


def test_nothing_is_dropped_when_it_fits_or_truncate_is_off():
    messages = [{"role": "user", "content": f"turn{i} a b c d"} for i in range(6)]
    assert "turn0" in build(messages, context_length=1000)
    assert "turn0" in build(messages, context_length=10, truncate=False)


def test_engine_prompt_keeps_system_and_last_message(server):
    """The prompt actually evaluated: compare token counts with and without old turns."""
    filler = "words " * 40
    recent = [{"role": "system", "content": "SYSTEM-PROMPT"}, {"role": "user", "content": "LAST"}]
    old = [{"role": "user", "content": f"old {i} {filler}"} for i in range(12)]
    short = chat(server, recent).json()["prompt_eval_count"]
    truncated = chat(server, [recent[0], *old, recent[1]]).json()["prompt_eval_count"]
    assert short <= truncated < CTX


def test_truncate_false_refuses_an_overlong_chat(server):
    messages = [{"role": "user", "content": "words " * 400}]
    response = chat(server, messages, truncate=False)
    assert response.status_code == 400
    assert response.json()["error"] == "the input length exceeds the context length"
