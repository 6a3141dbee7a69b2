"""The one memory budget: parallel sequences chosen from memory, KV caches admitted against
the budget, the prompt-cache pools bounded by what it leaves (engine/kv_memory.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from engine_helpers import chat_turn, import_copy

from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.engine.kv_memory import auto_parallel
from mlx_ollama_bridge.engine.mlx_models import ModelSetup, load_model, prepare_model
from mlx_ollama_bridge.engine.preflight import MemoryBudget
from mlx_ollama_bridge.engine.prompt_cache import kv_bytes_per_token
from mlx_ollama_bridge.engine.scheduler import Scheduler
from mlx_ollama_bridge.registry import LocalModel

GREEDY = {"temperature": 0, "num_predict": 12, "repeat_penalty": 1.0}


@pytest.fixture
def tiny(isolated_home, tiny_model_dir) -> LocalModel:
    return import_copy(isolated_home, tiny_model_dir, "tiny")


def engine_with(budget_bytes: int | None = None, **overrides: Any) -> Iterator[Scheduler]:
    budget = MemoryBudget(budget_bytes, 1.0) if budget_bytes else None
    engine = Scheduler(Settings.from_env().with_overrides(**overrides), budget=budget)
    engine.start()
    yield engine
    engine.stop()


def run_together(engine: Scheduler, model: LocalModel, prompts: list[str], **options: Any):
    results: list[Any] = [None] * len(prompts)
    start = threading.Barrier(len(prompts))

    def worker(index: int) -> None:
        start.wait()
        try:
            messages = [{"role": "user", "content": prompts[index]}]
            results[index] = chat_turn(engine, model, messages, {**GREEDY, **options})
        except Exception as exc:  # surfaced by the assertion below
            results[index] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not any(isinstance(r, Exception) or r is None for r in results), results
    return results


def test_kv_bytes_per_token_is_measured_from_the_models_layers(tiny_model_dir):
    setup = ModelSetup()
    loaded = load_model(tiny_model_dir, setup)
    prepare_model(loaded, setup)
    args = loaded.model.args
    heads = getattr(args, "num_key_value_heads", None) or args.num_attention_heads
    head_dim = getattr(args, "head_dim", None) or args.hidden_size // args.num_attention_heads
    itemsize = loaded.model.layers[0].self_attn.q_proj.scales.dtype.size  # activations' dtype
    expected = args.num_hidden_layers * 2 * heads * head_dim * itemsize
    assert kv_bytes_per_token(loaded) == expected
    assert loaded.kv_bytes_per_token == expected  # remembered


def test_auto_parallel_takes_the_most_sequences_that_fit():
    gb = 10**9
    assert auto_parallel(16 * gb, 1 * gb, gb // 5) == 8
    assert auto_parallel(4 * gb, 1 * gb, gb // 2) == 4
    assert auto_parallel(2 * gb, 1 * gb, gb // 2) == 1
    assert auto_parallel(2 * gb, 1 * gb, 5 * gb) == 1  # never 0: the budget admits each one


def test_a_fresh_server_batches_by_default(tiny):
    assert Settings.from_env().num_parallel == 0  # auto
    for engine in engine_with():
        run_together(engine, tiny, ["one", "two", "three", "four"])
        assert engine.stats()["batch_peak"] >= 2  # they shared decode steps


def test_ollama_num_parallel_still_wins(tiny):
    for engine in engine_with(num_parallel=1):
        run_together(engine, tiny, ["one", "two", "three"])
        assert engine.stats()["batch_peak"] == 1
