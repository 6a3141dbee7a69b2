"""Prompt cache reuse across turns: fewer tokens evaluated, the same greedy output."""

from __future__ import annotations

from typing import Any

from helpers import chat, engine_fixture

from mlx_ollama_bridge.engine import Engine
from mlx_ollama_bridge.registry import LocalModel

cached = engine_fixture(prompt_cache_entries=4)


uncached = engine_fixture(prompt_cache_entries=0)


def conversation(engine: Engine, model: LocalModel, turns: int) -> list[str]:
    """A multi-turn chat that resends the whole history each turn, as clients do."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are terse. " * 20}]
    answers = []
    for turn in range(turns):
        messages.append({"role": "user", "content": f"Question number {turn}: why?"})
        text, _done = chat(engine, model, messages)
        answers.append(text)
        messages.append({"role": "assistant", "content": text})
    return answers


def test_follow_up_turns_evaluate_only_the_new_tokens(cached, tiny):
    messages = [{"role": "system", "content": "Be brief. " * 30}, {"role": "user", "content": "hi"}]
    first, done = chat(cached, tiny, messages)
    assert cached.stats()["prompt_tokens_reused"] == 0
    messages += [{"role": "assistant", "content": first}, {"role": "user", "content": "more"}]
    _text, second = chat(cached, tiny, messages)
    stats = cached.stats()
    # prompt_eval_count stays the whole prompt (Ollama's rule); the engine counts the reuse
    assert second.prompt_eval_count > done.prompt_eval_count
    assert stats["prompt_tokens"] == done.prompt_eval_count + second.prompt_eval_count
    # the whole first prompt (and what was generated from it) came from the cache
    assert stats["prompt_tokens_reused"] >= done.prompt_eval_count
    evaluated = second.prompt_eval_count - stats["prompt_tokens_reused"]
    assert 0 < evaluated <= second.prompt_eval_count - done.prompt_eval_count


def test_exact_repeat_reuses_all_but_one_token(cached, tiny):
    messages = [{"role": "user", "content": "Say something long enough to cache."}]
    first, done = chat(cached, tiny, messages)
    again, _ = chat(cached, tiny, messages)
    assert again == first
    assert cached.stats()["prompt_tokens_reused"] == done.prompt_eval_count - 1


def test_greedy_output_is_the_same_with_and_without_the_cache(cached, uncached, tiny):
    with_cache = conversation(cached, tiny, 4)
    without = conversation(uncached, tiny, 4)
    assert with_cache == without
    assert cached.stats()["prompt_tokens_reused"] > 0
    assert uncached.stats()["prompt_tokens_reused"] == 0


def test_a_rotating_window_skips_the_cache(cached, tiny):
    messages = [{"role": "user", "content": "word " * 40}]
    chat(cached, tiny, messages, num_ctx=32, num_predict=40)  # prompt + output > num_ctx
    chat(cached, tiny, messages, num_ctx=32, num_predict=40)
    assert cached.stats()["prompt_tokens_reused"] == 0
