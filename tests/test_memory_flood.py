"""A flood of long-context requests against a small memory budget, measured on the real server
process: its resident memory stays within the budget and every request is answered or gets a
clean 503.

The model is built for this: tiny weights (~9 MB) but KV caches of 64 KiB per token (16
layers, ``head_dim`` 512), so eight requests at once would need ~256 MB of KV and the budget
allows two. ``tests/test_kv_memory.py`` checks the engine's own accounting under a flood;
this test checks what the kernel sees: the worker's RSS (psutil), sampled throughout.
"""

from __future__ import annotations

import threading

import psutil
import pytest
import requests
from helpers import own_server, stop_server

from mlx_ollama_bridge.engine.mlx_models import ModelSetup, load_model, prepare_model
from mlx_ollama_bridge.engine.prompt_cache import kv_bytes_per_token

NUM_CTX = 512
FLOOD = 10
HEAVY_KV = {
    "num_hidden_layers": 16,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 512,
    "max_position_embeddings": 4096,
}
SLACK = 48 << 20  # prefill activations, HTTP buffers, allocator rounding


@pytest.fixture(scope="module")
def heavy_kv_model(tmp_path_factory):
    from tiny_model import build_tiny_model

    return build_tiny_model(
        tmp_path_factory.mktemp("heavy-kv") / "model", config=HEAVY_KV, quantized=False
    )


def test_a_flood_keeps_the_servers_rss_within_the_budget(tmp_path, heavy_kv_model):
    loaded = load_model(heavy_kv_model, ModelSetup())
    prepare_model(loaded, ModelSetup())
    per_sequence = kv_bytes_per_token(loaded) * NUM_CTX
    kv_room = per_sequence * 5 // 2  # two sequences at a time
    budget = loaded.size_bytes + kv_room
    server = own_server(
        tmp_path,
        {"heavy": heavy_kv_model},
        MLX_BRIDGE_MEMORY_FRACTION=f"{budget / psutil.virtual_memory().total:.15f}",
        OLLAMA_NUM_PARALLEL="8",
        OLLAMA_MAX_QUEUE="6",
    )
    url = server.url
    try:
        load = {"model": "heavy", "prompt": "", "stream": False}
        assert requests.post(f"{url}/api/generate", json=load, timeout=300).status_code == 200
        worker = psutil.Process(server.process.pid).children(recursive=True)[0]
        baseline = worker.memory_info().rss
        samples: list[int] = []
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                samples.append(worker.memory_info().rss)
                done.wait(0.02)

        statuses: list[int] = []

        def one(index: int) -> None:
            body = {
                "model": "heavy",
                "prompt": f"request {index} " * 75,  # ~300 tokens: caches of 512 tokens
                "stream": False,
                "options": {"num_ctx": NUM_CTX, "num_predict": 4, "temperature": 0},
            }
            reply = requests.post(f"{url}/api/generate", json=body, timeout=600)
            assert reply.status_code == 200 or "server busy" in reply.json()["error"], reply.text
            statuses.append(reply.status_code)

        watcher = threading.Thread(target=watch)
        watcher.start()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(FLOOD)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
        done.set()
        watcher.join(60)
        grown = max(samples) - baseline
        print(
            f"rss baseline {baseline >> 20} MiB, peak growth {grown >> 20} MiB, "
            f"kv room {kv_room >> 20} MiB, eight at once {8 * per_sequence >> 20} MiB, "
            f"statuses {sorted(statuses)}"
        )
        assert len(statuses) == FLOOD and set(statuses) <= {200, 503} and 200 in statuses
        assert grown <= kv_room + SLACK < 8 * per_sequence
        health = requests.get(f"{url}/health", timeout=30).json()["engine_stats"]
        assert health["kv_reserved_bytes"] == 0
    finally:
        stop_server(server)
