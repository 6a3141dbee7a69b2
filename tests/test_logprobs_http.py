"""logprobs / top_logprobs over real HTTP (gunicorn, the tiny model): Ollama's shape on
/api/generate and /api/chat, OpenAI's on /v1; the values match a direct MLX computation, in
the batch lane and in single decoding (a quantized KV cache keeps a request out of the lane)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import mlx.core as mx
import pytest
import requests
from helpers import RunningServer, own_server, stop_server
from mlx_lm import load

PROMPT = "The quick brown fox"
STEPS = 6
OPTIONS = {"temperature": 0, "num_predict": STEPS, "repeat_penalty": 1.0}


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path) -> list[tuple[str, float]]:
    """Greedy tokens after PROMPT and their log-probabilities, computed with MLX directly."""
    model, tokenizer = load(str(tiny_model_dir))
    tokens = list(tokenizer.encode(PROMPT))
    out = []
    for _ in range(STEPS):
        logits = model(mx.array([tokens]))[0, -1].astype(mx.float32)
        logprobs = logits - mx.logsumexp(logits)
        token = int(mx.argmax(logprobs).item())
        out.append((tokenizer.decode([token]), logprobs[token].item()))
        tokens.append(token)
    return out


@pytest.fixture(scope="module")
def solo_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> Iterator[RunningServer]:
    """A server whose requests decode alone: q8_0 KV caches are not batched."""
    root = tmp_path_factory.mktemp("solo-store")
    running = own_server(root, {"tiny": tiny_model_dir}, OLLAMA_KV_CACHE_TYPE="q8_0")
    yield running
    stop_server(running)


def _generate(server: RunningServer, **fields) -> dict:
    body = {"model": "tiny", "prompt": PROMPT, "raw": True, "options": OPTIONS, **fields}
    reply = requests.post(server.url + "/api/generate", json={**body, "stream": False}, timeout=120)
    assert reply.status_code == 200, reply.text
    return reply.json()


def _check_against(reference: list[tuple[str, float]], entries: list[dict], tolerance: float):
    assert [e["token"] for e in entries] == [token for token, _ in reference]
    for entry, (_token, logprob) in zip(entries, reference, strict=True):
        assert entry["logprob"] == pytest.approx(logprob, abs=tolerance)
        assert entry["bytes"] == list(entry["token"].encode("utf-8"))


def test_generate_logprobs_match_mlx_and_greedy_is_the_max(server, reference) -> None:
    answer = _generate(server, logprobs=True, top_logprobs=3)
    entries = answer["logprobs"]
    assert len(entries) == answer["eval_count"] == STEPS
    _check_against(reference, entries, 2e-3)
    for entry in entries:
        top = entry["top_logprobs"]
        assert len(top) == 3
        assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
        # greedy picked the most likely token: it heads the list, and exp(logprob) is the max
        assert top[0]["token"] == entry["token"]
        assert math.exp(entry["logprob"]) == pytest.approx(max(math.exp(t["logprob"]) for t in top))
        assert sum(math.exp(t["logprob"]) for t in top) <= 1.0 + 1e-6


def test_single_decoding_gives_the_same_logprobs(solo_server, reference) -> None:
    answer = _generate(solo_server, logprobs=True)
    _check_against(reference, answer["logprobs"], 2e-2)  # q8_0 KV cache: close, not equal
    assert all("top_logprobs" not in e for e in answer["logprobs"])


def test_no_logprobs_unless_asked(server) -> None:
    assert "logprobs" not in _generate(server)
    assert "logprobs" not in _generate(server, top_logprobs=3)  # only with logprobs on


def test_streamed_chat_lines_carry_their_tokens_logprobs(server) -> None:
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "Hello"}],
        "options": OPTIONS,
        "logprobs": True,
        "top_logprobs": 1,
    }
    with requests.post(server.url + "/api/chat", json=body, stream=True, timeout=120) as reply:
        lines = [json.loads(line) for line in reply.iter_lines() if line]
    entries = [e for line in lines for e in line.get("logprobs", [])]
    assert len(entries) == lines[-1]["eval_count"] == STEPS
    # (the answer's leading whitespace is trimmed from the content, not from the tokens)
    text = "".join(line["message"]["content"] for line in lines)
    assert "".join(e["token"] for e in entries).lstrip() == text
    for line in lines[:-1]:  # each content line has the logprobs of the tokens it carries
        tokens = "".join(e["token"] for e in line["logprobs"])
        assert tokens.lstrip() == line["message"]["content"].lstrip()


def test_v1_chat_logprobs_in_openais_shape(server) -> None:
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": STEPS,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 2,
    }
    reply = requests.post(server.url + "/v1/chat/completions", json=body, timeout=120).json()
    content = reply["choices"][0]["logprobs"]["content"]
    assert len(content) == reply["usage"]["completion_tokens"]
    answer = reply["choices"][0]["message"]["content"]
    assert "".join(c["token"] for c in content).lstrip() == answer
    assert all(len(c["top_logprobs"]) == 2 and "bytes" in c for c in content)
    chunks = _sse(server, "/v1/chat/completions", {**body, "stream": True})
    streamed = [c for chunk in chunks for c in (chunk["choices"][0].get("logprobs") or {})
                .get("content", [])]  # fmt: skip
    assert [c["token"] for c in streamed] == [c["token"] for c in content]


def test_v1_completions_logprobs_in_the_legacy_shape(server) -> None:
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": STEPS, "temperature": 0}
    reply = requests.post(server.url + "/v1/completions", json={**body, "logprobs": 2}, timeout=120)
    choice = reply.json()["choices"][0]
    logprobs = choice["logprobs"]
    assert "".join(logprobs["tokens"]) == choice["text"]
    assert len(logprobs["token_logprobs"]) == len(logprobs["tokens"]) == STEPS
    assert all(len(top) <= 2 for top in logprobs["top_logprobs"])
    offsets = [sum(len(t) for t in logprobs["tokens"][:i]) for i in range(STEPS)]
    assert logprobs["text_offset"] == offsets
    plain = requests.post(server.url + "/v1/completions", json=body, timeout=120).json()
    assert plain["choices"][0]["logprobs"] is None


def test_bad_logprobs_fields_are_400(server) -> None:
    chat = {"model": "tiny", "messages": [{"role": "user", "content": "Hello"}]}
    reply = requests.post(
        server.url + "/v1/chat/completions", json={**chat, "logprobs": "yes"}, timeout=60
    )
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "logprobs"
    reply = requests.post(server.url + "/api/chat", json={**chat, "top_logprobs": 21}, timeout=60)
    assert reply.status_code == 400
    assert reply.json() == {"error": "top_logprobs must be between 0 and 20"}


def _sse(server: RunningServer, path: str, body: dict) -> list[dict]:
    with requests.post(server.url + path, json=body, stream=True, timeout=120) as reply:
        lines = list(reply.iter_lines(decode_unicode=True))
    data = [line[6:] for line in lines if line.startswith("data: ")]
    return [json.loads(d) for d in data if d != "[DONE]"]
