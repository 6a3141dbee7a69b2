"""Continuous batching: concurrent requests for one model decode together, each with its own
sampling options, and give what they would give alone."""

from __future__ import annotations

from functools import partial
from typing import Any

from helpers import chat_turn, engine_fixture, in_parallel

from mlx_ollama_bridge.engine import Engine, GenerationRequest, merge_options
from mlx_ollama_bridge.engine.requests import Finished
from mlx_ollama_bridge.registry import LocalModel

GREEDY = {"temperature": 0, "num_predict": 16, "repeat_penalty": 1.0}
PROMPTS = ["Tell me about cats.", "Why is the sky blue?", "hi", "Count: one two three four"]


parallel = engine_fixture(num_parallel=4, prompt_cache_entries=4)


serial = engine_fixture(num_parallel=1, prompt_cache_entries=4)


def run(engine: Engine, model: LocalModel, prompt: str, **options) -> tuple[str, Finished]:
    """One chat turn to the end: (text, Finished)."""
    messages = [{"role": "user", "content": prompt}]
    return chat_turn(engine, model, messages, {**GREEDY, **options})


def run_together(
    engine: Engine, model: LocalModel, calls: list[tuple[str, dict[str, Any]]]
) -> list[tuple[str, Finished]]:
    """Submit every call at once from its own thread, as concurrent clients do."""
    return in_parallel([partial(run, engine, model, p, **o) for p, o in calls])


def test_concurrent_greedy_requests_batch_and_match_their_solo_answers(parallel, serial, tiny):
    alone = [run(serial, tiny, p)[0] for p in PROMPTS]
    together = run_together(parallel, tiny, [(p, {}) for p in PROMPTS])
    assert [text for text, _ in together] == alone
    assert all(done.eval_count == GREEDY["num_predict"] for _, done in together)
    stats = parallel.stats()
    assert stats["batch_peak"] >= 2  # they really shared decode steps
    assert stats["batched_tokens"] >= len(PROMPTS) * GREEDY["num_predict"]


def test_each_member_keeps_its_own_sampling_options(parallel, serial, tiny):
    seeded = {"temperature": 1.0, "seed": 7, "top_k": 0, "top_p": 1.0}
    calls = [
        (PROMPTS[0], seeded),
        (PROMPTS[1], {}),
        (PROMPTS[2], {"num_predict": 5}),
        (PROMPTS[3], {"stop": ["e"], "num_predict": 30}),
    ]
    alone = [run(serial, tiny, p, **o) for p, o in calls]
    together = run_together(parallel, tiny, calls)
    assert [t for t, _ in together] == [t for t, _ in alone]
    assert together[2][1].eval_count == 5
    assert together[2][1].done_reason == "length"
    assert "e" not in together[3][0]
    assert parallel.stats()["batch_peak"] >= 2


def test_a_batched_turn_leaves_its_cache_for_the_next(parallel, tiny):
    text, done = run(parallel, tiny, PROMPTS[0])
    again, _ = run(parallel, tiny, PROMPTS[0])
    assert again == text
    assert parallel.stats()["prompt_tokens_reused"] == done.prompt_eval_count - 1


def test_a_canceled_member_leaves_the_others_running(parallel, tiny):
    # Long enough to still be running when the others are done and it is canceled: 200
    # tokens (~0.4 s alone) could all be decoded while a loaded box starts the other two.
    opts = merge_options(tiny.parameters, {**GREEDY, "num_predict": 4000}, default_num_ctx=4096)
    request = GenerationRequest(
        model=tiny, options=opts, messages=[{"role": "user", "content": PROMPTS[0]}]
    )
    job, _ready = parallel.submit(request)
    job.replies.get(timeout=60)  # its first event: it is generating
    results = run_together(parallel, tiny, [(PROMPTS[1], {}), (PROMPTS[2], {})])
    request.cancel.set()
    assert all(done.eval_count == GREEDY["num_predict"] for _, done in results)
    # the canceled request gets no Finished; the engine forgets it and keeps serving
    text, done = run(parallel, tiny, PROMPTS[3])
    assert done.eval_count == GREEDY["num_predict"]
    assert parallel.stats()["canceled"] == 1
    assert [m.active_requests for m in parallel.running()] == [0]  # its slot was freed
    leftovers = [job.replies.get_nowait() for _ in range(job.replies.qsize())]
    assert not any(isinstance(event, Finished) for event in leftovers)
