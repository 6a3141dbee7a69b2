"""The lane's decode step (``engine/lean_batch.py``): the tokens mlx-lm's own step samples,
without its log-softmax, each handed out in the step that computes it (on the CPU)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx
import pytest
from mlx_lm import load
from mlx_lm.generate import BatchGenerator

from mlx_ollama_bridge.engine import lean_batch
from mlx_ollama_bridge.engine.batching import BatchLane
from mlx_ollama_bridge.engine.mlx_models import LoadedModel
from mlx_ollama_bridge.engine.options import Options
from mlx_ollama_bridge.engine.prompt_cache import PromptCachePool, cache_offset
from mlx_ollama_bridge.engine.sampling import make_processors, make_sampler

PROMPTS = [[1, 5, 9, 13, 17, 21, 25], [2, 4], [3, 6, 9, 12]]  # different lengths: padding
TOKENS = 12


@pytest.fixture(scope="module")
def tiny_loaded(tiny_model_dir: Path) -> tuple[Any, Any]:
    return load(str(tiny_model_dir))


def sampling(row: int) -> tuple[Any, list[Any]]:
    """Row 0 greedy, row 1 seeded sampling with top-p and min-p, row 2 seeded sampling with a
    repeat penalty: a fresh sampler each call, so two runs draw the same numbers."""
    options = [
        {"temperature": 0},
        {"temperature": 0.9, "seed": 11, "top_p": 0.8, "min_p": 0.05, "top_k": 20},
        {"temperature": 1.2, "seed": 5, "repeat_penalty": 1.5, "repeat_last_n": 8},
    ][row]
    merged = Options(**options)
    return make_sampler(merged), make_processors(merged, prompt_length=len(PROMPTS[row]))


def greedy(_row: int) -> tuple[Any, list[Any]]:
    return make_sampler(Options(temperature=0)), []


def decode(
    model: Any, *, lean: bool, rows: Callable[[int], tuple[Any, list[Any]]] = sampling
) -> tuple[list[list[int]], list[int]]:
    """Every row's tokens as mlx-lm's ``BatchGenerator`` hands them out, and the ``next``
    call (counted from 1) that handed out each row's first token."""
    generator = BatchGenerator(model, max_tokens=TOKENS, completion_batch_size=4)
    if lean:
        lean_batch.install(generator)
    setup = [rows(i) for i in range(len(PROMPTS))]
    uids = generator.insert(
        PROMPTS,
        max_tokens=[TOKENS] * len(PROMPTS),
        samplers=[s for s, _ in setup],
        logits_processors=[p for _, p in setup],
    )
    out: dict[int, list[int]] = {uid: [] for uid in uids}
    first: dict[int, int] = {}
    call = 0
    while any(len(t) < TOKENS for t in out.values()):
        call += 1
        for r in generator.next()[1]:
            first.setdefault(r.uid, call)
            out[r.uid].append(int(r.token))
    generator.close()
    return [out[uid] for uid in uids], [first[uid] for uid in uids]


def lane_on(
    tiny: tuple[Any, Any], tmp_path: Path, width: int, pool: PromptCachePool | None = None
) -> BatchLane:
    """A batch lane of the tiny model (with ``pool`` as its prompt caches), as the backend
    makes one."""
    model, tokenizer = tiny
    loaded = LoadedModel(tmp_path, model, tokenizer, size_bytes=0, context_length=512)
    loaded.prompt_cache = pool
    return BatchLane(loaded, width=width, prefill_step=512)


def test_the_lean_step_samples_what_mlx_lms_own_step_samples(tiny_loaded):
    model, _ = tiny_loaded
    plain, _ = decode(model, lean=False)
    assert decode(model, lean=True)[0] == plain
    assert all(len(tokens) == TOKENS for tokens in plain)


def test_install_refuses_a_generator_already_decoding(tiny_loaded):
    model, _ = tiny_loaded
    generator = BatchGenerator(model, max_tokens=4)
    generator.insert([PROMPTS[0]])
    while not generator.next()[1]:
        pass
    with pytest.raises(RuntimeError):
        lean_batch.install(generator)
    generator.close()


def test_a_cpu_lane_hands_out_each_token_in_the_step_that_computes_it(tiny_loaded, tmp_path):
    assert mx.default_device() == mx.cpu
    plain, first_plain = decode(tiny_loaded[0], lean=False, rows=greedy)

    lane = lane_on(tiny_loaded, tmp_path, width=len(PROMPTS))
    slots = [lane.add(p, *greedy(i)) for i, p in enumerate(PROMPTS)]
    got: dict[int, list[int]] = {s.uid: [] for s in slots}
    first: dict[int, int] = {}
    call = 0
    while any(len(t) < TOKENS for t in got.values()):
        call += 1
        for uid, token in lane.step().items():
            first.setdefault(uid, call)
            if len(got[uid]) < TOKENS:
                got[uid].append(token)
    lane.close()

    assert [got[s.uid] for s in slots] == plain
    assert [first[s.uid] for s in slots] == [call - 1 for call in first_plain]


def test_a_finished_sequence_leaves_a_cache_of_exactly_the_tokens_it_fed(tiny_loaded, tmp_path):
    """Handed out one step early, the last token is not in the cache yet: what the pool
    keeps must hold exactly the tokens its key names (prompt + all but the last token)."""
    pool = PromptCachePool(tiny_loaded[0], max_entries=2)
    lane = lane_on(tiny_loaded, tmp_path, width=1, pool=pool)
    slot = lane.add(PROMPTS[0], *greedy(0))
    tokens: list[int] = []
    while len(tokens) < 5:
        tokens += list(lane.step().values())
    assert lane.finish(slot, keep_cache=True)
    cache, rest = pool.fetch(PROMPTS[0] + tokens[:4] + [99])
    assert rest == [99]
    assert cache_offset(cache) == len(PROMPTS[0]) + 4
