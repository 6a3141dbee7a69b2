"""The one memory budget: parallel sequences chosen from memory, KV caches admitted against
the budget, the prompt-cache pools bounded by what it leaves (engine/kv_memory.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import partial
from typing import Any

import psutil
import pytest
import requests
from helpers import chat_turn, in_parallel, own_server, stop_server

from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.engine import Engine
from mlx_ollama_bridge.engine.kv_memory import auto_parallel
from mlx_ollama_bridge.engine.mlx_models import ModelSetup, load_model, prepare_model
from mlx_ollama_bridge.engine.preflight import MemoryBudget
from mlx_ollama_bridge.engine.prompt_cache import kv_bytes_per_token
from mlx_ollama_bridge.errors import ServerBusy
from mlx_ollama_bridge.registry import LocalModel

GREEDY = {"temperature": 0, "num_predict": 12, "repeat_penalty": 1.0}


def engine_with(budget_bytes: int | None = None, **overrides: Any) -> Iterator[Engine]:
    budget = MemoryBudget(budget_bytes, 1.0) if budget_bytes else None
    engine = Engine(Settings.from_env().with_overrides(**overrides), budget=budget)
    engine.start()
    yield engine
    engine.stop()


def run_together(engine: Engine, model: LocalModel, prompts: list[str], **options: Any):
    """One chat turn per prompt, all submitted at once."""

    def turn(prompt: str):
        messages = [{"role": "user", "content": prompt}]
        return chat_turn(engine, model, messages, {**GREEDY, **options})

    return in_parallel([partial(turn, prompt) for prompt in prompts])


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


# -- admission against one budget, with the tiny model -----------------------------------------

NUM_CTX = 256


def sizes(tiny_model_dir) -> tuple[int, int]:
    """(weights bytes, KV bytes of one NUM_CTX sequence) of the tiny model."""
    setup = ModelSetup()
    loaded = load_model(tiny_model_dir, setup)
    prepare_model(loaded, setup)
    return loaded.size_bytes, kv_bytes_per_token(loaded) * NUM_CTX


def test_requests_wait_when_their_kv_caches_would_overflow_the_budget(tiny, tiny_model_dir):
    weights, per_sequence = sizes(tiny_model_dir)
    budget = weights + per_sequence * 3 // 2  # room for one sequence, not two
    for engine in engine_with(budget, num_parallel=4, context_length=NUM_CTX):
        results = run_together(engine, tiny, ["one", "two", "three"], num_ctx=NUM_CTX)
        assert all(done.eval_count == GREEDY["num_predict"] for _, done in results)
        stats = engine.stats()
        assert stats["batch_peak"] == 1  # admitted one at a time: each waited for the budget
        assert stats["kv_reserved_bytes"] == 0  # all given back
        assert stats["weights_bytes"] + stats["prompt_cache_bytes"] <= budget


def test_with_room_they_batch_under_the_same_budget(tiny, tiny_model_dir):
    weights, per_sequence = sizes(tiny_model_dir)
    budget = weights + per_sequence * 4
    for engine in engine_with(budget, num_parallel=4, context_length=NUM_CTX):
        run_together(engine, tiny, ["one", "two", "three"], num_ctx=NUM_CTX)
        assert engine.stats()["batch_peak"] >= 2


def test_auto_parallel_follows_the_budget(tiny, tiny_model_dir):
    weights, per_sequence = sizes(tiny_model_dir)
    for engine in engine_with(weights + per_sequence * 5, context_length=NUM_CTX):
        run_together(engine, tiny, ["a", "b", "c", "d", "e", "f"], num_ctx=NUM_CTX)
        assert engine.stats()["batch_peak"] == 4  # 8 would not fit, 4 does


def test_a_kv_cache_that_can_never_fit_is_a_clean_503(tiny, tiny_model_dir):
    weights, per_sequence = sizes(tiny_model_dir)
    for engine in engine_with(weights + per_sequence // 2, context_length=NUM_CTX):
        with pytest.raises(ServerBusy) as caught:
            chat_turn(engine, tiny, [{"role": "user", "content": "hi"}], {"num_ctx": NUM_CTX})
        assert caught.value.status_code == 503
        assert "lower num_ctx" in caught.value.message
        # a smaller context fits and is answered
        text, done = chat_turn(
            engine, tiny, [{"role": "user", "content": "hi"}], {**GREEDY, "num_ctx": 64}
        )
        assert done.eval_count == GREEDY["num_predict"]


def test_the_prompt_cache_pool_stays_within_what_the_budget_leaves(tiny, tiny_model_dir):
    weights, per_sequence = sizes(tiny_model_dir)
    budget = weights + per_sequence * 2  # one running sequence plus about one cached
    for engine in engine_with(
        budget, num_parallel=1, prompt_cache_entries=64, context_length=NUM_CTX
    ):
        peak = 0
        for i in range(12):  # different conversations: each leaves a cache behind
            prompt = f"conversation {i}: " + "lorem ipsum dolor sit amet " * 8
            chat_turn(
                engine, tiny, [{"role": "user", "content": prompt}], {**GREEDY, "num_ctx": NUM_CTX}
            )
            stats = engine.stats()
            peak = max(peak, stats["prompt_cache_bytes"])
            assert stats["weights_bytes"] + stats["prompt_cache_bytes"] <= budget
        assert peak > 0  # caches were kept, within the budget


# -- over HTTP: a flood of long-context requests against a small budget -------------------------


def test_a_flood_over_the_budget_ends_in_answers_and_clean_503s(tmp_path, tiny_model_dir):
    setup = ModelSetup(dense_max_params=0)  # quantized, as the server below loads it
    loaded = load_model(tiny_model_dir, setup)
    prepare_model(loaded, setup)
    per_sequence = kv_bytes_per_token(loaded) * 2048  # the tiny model's whole context
    budget = loaded.size_bytes + per_sequence * 5 // 2  # two long requests at a time
    fraction = budget / psutil.virtual_memory().total
    server = own_server(
        tmp_path,
        {"tiny": tiny_model_dir},
        MLX_BRIDGE_MEMORY_FRACTION=f"{fraction:.15f}",
        MLX_BRIDGE_CPU_DENSE_MAX_PARAMS="0",
        OLLAMA_NUM_PARALLEL="8",
        OLLAMA_MAX_QUEUE="6",
    )
    statuses: list[int] = []
    samples: list[dict[str, int]] = []
    done = threading.Event()

    def one(index: int) -> None:
        body = {
            "model": "tiny",
            "prompt": f"request {index} " * 20,
            "stream": False,
            "options": {"num_ctx": 2048, "num_predict": 24, "temperature": 0},
        }
        reply = requests.post(f"{server.url}/api/generate", json=body, timeout=300)
        assert reply.status_code == 200 or "server busy" in reply.json()["error"], reply.text
        statuses.append(reply.status_code)

    def watch() -> None:
        while not done.is_set():
            samples.append(requests.get(f"{server.url}/health", timeout=30).json()["engine_stats"])

    try:
        watcher = threading.Thread(target=watch)
        watcher.start()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(14)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        done.set()
        watcher.join(60)
        # some waited for memory and were answered, the rest found the queue full
        assert len(statuses) == 14 and set(statuses) <= {200, 503} and 200 in statuses
        for stats in samples:  # weights, running requests' KV and pools: never over budget
            used = stats["weights_bytes"] + stats["kv_reserved_bytes"]
            assert used + stats["prompt_cache_bytes"] <= stats["memory_budget_bytes"]
            assert stats["kv_reserved_bytes"] <= 2 * per_sequence
        assert max(s["batch_peak"] for s in samples) <= 2
        assert requests.get(f"{server.url}/api/version", timeout=30).status_code == 200
    finally:
        done.set()
        stop_server(server)
