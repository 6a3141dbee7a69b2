"""Agent sessions sharing one long system prompt: the second session starts from the first
one's prefix (the prompt-cache trie, shared by every session of a model), its greedy output is
what it would be without reuse, and memory stays bounded over many sessions."""

from __future__ import annotations

from typing import Any

from helpers import chat_turn, engine_fixture

from mlx_ollama_bridge.engine import Engine
from mlx_ollama_bridge.registry import LocalModel

GREEDY = {"temperature": 0, "num_predict": 8, "repeat_penalty": 1.0, "num_ctx": 2048}
# an agent's system prompt: instructions and tool schemas, the same in every session
SYSTEM = "You are a coding agent. Use the tools to read and edit files. " + " ".join(
    f'{{"name": "tool_{i}", "parameters": {{"path": "string"}}}}' for i in range(25)
)
TASKS = ["Fix the bug in main.py.", "Add a test for parse().", "Rename foo to bar."]


cached = engine_fixture(prompt_cache_entries=4, prompt_cache_disk_bytes=0)


uncached = engine_fixture(prompt_cache_entries=0, prompt_cache_disk_bytes=0)


def session(
    engine: Engine, model: LocalModel, task: str, turns: int = 3
) -> list[tuple[str, int, int]]:
    """An agent session resending everything each turn: (answer, prompt tokens, reused)."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
    out = []
    for turn in range(turns):
        messages.append({"role": "user", "content": task if turn == 0 else f"Next step {turn}."})
        before = engine.stats()["prompt_tokens_reused"]
        text, done = chat_turn(engine, model, messages, GREEDY)
        out.append((text, done.prompt_eval_count, engine.stats()["prompt_tokens_reused"] - before))
        messages.append({"role": "assistant", "content": text})
    return out


def system_tokens(engine: Engine, model: LocalModel) -> int:
    _text, done = chat_turn(engine, model, [{"role": "system", "content": SYSTEM}], GREEDY)
    return done.prompt_eval_count


def test_a_second_session_starts_from_the_first_ones_system_prompt(cached, uncached, tiny):
    prefix = system_tokens(uncached, tiny)
    assert prefix > 300
    first = session(cached, tiny, TASKS[0])
    second = session(cached, tiny, TASKS[1])
    # turn 1 of the second session reuses the whole shared system prompt (all but the
    # "assistant" header that ends the system-only prompt)
    assert second[0][2] >= prefix - 3
    # later turns of a session reuse all but the new user message
    assert all(reused >= prompt - 40 for _text, prompt, reused in first[1:] + second[1:])
    # greedy answers are the same as without any reuse
    assert [t for t, _, _ in second] == [t for t, _, _ in session(uncached, tiny, TASKS[1])]


def test_memory_stays_bounded_over_many_sessions(cached, tiny):
    peaks = []
    for index in range(12):
        session(cached, tiny, f"Task number {index}: {TASKS[index % 3]}", turns=2)
        peaks.append(cached.stats()["prompt_cache_bytes"])
    # the pool keeps at most 4 conversations: it stops growing once full
    assert max(peaks[4:]) <= max(peaks[:4]) * 1.5
    assert peaks[-1] > 0
