"""Requests without ``num_predict`` (what ordinary clients send) take the normal path: they
batch and reuse the prompt cache; only a sequence that reaches ``num_ctx`` shifts its context,
as Ollama's runner does, and ``shift: false`` stops there instead."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

from helpers import chat_turn, engine_fixture, import_copy, in_parallel

from mlx_ollama_bridge.engine import Engine, GenerationRequest, merge_options
from mlx_ollama_bridge.engine.requests import Failed, Finished, Logprobs, TextChunk
from mlx_ollama_bridge.registry import LocalModel

GREEDY = {"temperature": 0, "repeat_penalty": 1.0}  # and no num_predict: unbounded
CTX = 64
ASK = [{"role": "user", "content": "Tell me a long story about cats."}]

parallel = engine_fixture(num_parallel=4, prompt_cache_entries=4)
cached = engine_fixture(num_parallel=1, prompt_cache_entries=4)
uncached = engine_fixture(num_parallel=1, prompt_cache_entries=0)


def run(
    engine: Engine, model: LocalModel, messages: list[dict[str, Any]], **fields: Any
) -> tuple[str, Finished, list[Logprobs]]:
    """One chat request to the end: (text, Finished, its Logprobs events)."""
    options = {**GREEDY, **fields.pop("options", {})}
    opts = merge_options(model.parameters, options, default_num_ctx=4096)
    request = GenerationRequest(model=model, options=opts, messages=messages, **fields)
    job, _ready = engine.submit(request)
    text, logprobs = [], []
    while True:
        event = job.replies.get(timeout=120)
        if isinstance(event, TextChunk):
            text.append(event.text)
        elif isinstance(event, Logprobs):
            logprobs.append(event)
        elif isinstance(event, Failed):
            raise event.error
        elif isinstance(event, Finished):
            return "".join(text), event, logprobs


def test_concurrent_requests_without_num_predict_batch(parallel, tiny):
    calls = [partial(chat_turn, parallel, tiny, ASK, {**GREEDY, "num_ctx": CTX})] * 2
    results = in_parallel(calls)
    stats = parallel.stats()
    assert stats["batch_peak"] >= 2  # they shared decode steps
    # unbounded: 10 x num_ctx, past the context many times over (shifting each time)
    for _text, done in results:
        assert done.eval_count == 10 * CTX
        assert done.done_reason == "length"


def test_a_second_turn_without_num_predict_reuses_the_first(
    cached, uncached, isolated_home: Path, feature_model_dirs: dict[str, Path]
):
    # the parrot model ends its answer with EOS, as a real model does
    parrot = import_copy(isolated_home, feature_model_dirs["parrot-tools"], "parrot")
    messages = [{"role": "system", "content": "Be brief. " * 30}, *ASK]
    first, done, _ = run(cached, parrot, messages)
    assert done.done_reason == "stop"
    assert cached.stats()["prompt_tokens_reused"] == 0
    follow_up = [*messages, {"role": "assistant", "content": first}, ASK[0]]
    second, again, _ = run(cached, parrot, follow_up)
    assert again.cached_count > 0
    assert cached.stats()["prompt_tokens_reused"] == again.cached_count
    fresh, _, _ = run(uncached, parrot, follow_up)
    assert second == fresh
    assert uncached.stats()["prompt_tokens_reused"] == 0


def test_a_generation_past_num_ctx_shifts_and_keeps_going(cached, tiny):
    stopped, limited, _ = run(cached, tiny, ASK, shift=False, options={"num_ctx": CTX})
    assert limited.done_reason == "length"
    assert limited.eval_count == CTX - limited.prompt_eval_count
    text, done, _ = run(cached, tiny, ASK, options={"num_ctx": CTX, "num_predict": 3 * CTX})
    assert done.done_reason == "length"
    assert done.eval_count == 3 * CTX > CTX - done.prompt_eval_count
    # the tokens before the first shift are the ones shift=false gives
    assert text.startswith(stopped)
    unbounded, endless, _ = run(cached, tiny, ASK, options={"num_ctx": CTX})
    assert endless.eval_count == 10 * CTX
    assert unbounded.startswith(text)


def test_structured_output_and_logprobs_survive_a_shift(cached, tiny):
    options = {"num_ctx": CTX, "num_predict": 2 * CTX}
    text, done, logprobs = run(cached, tiny, ASK, format="json", options=options)
    assert done.eval_count > CTX - done.prompt_eval_count  # it shifted at least once
    json.loads(text)  # the grammar's state carried over the restarts
    _, done, logprobs = run(cached, tiny, ASK, logprobs=True, options=options)
    assert sum(len(event.entries) for event in logprobs) == done.eval_count == 2 * CTX
