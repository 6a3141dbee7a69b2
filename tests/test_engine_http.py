"""Engine behaviour through the real server: prompt cache reuse, cancellation, busy queue."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests
from helpers import RunningServer, Store, isolated_env, start_server, stop_server, wait_until

from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.manifest import Manifest, hash_model_dir
from mlx_ollama_bridge.registry import Registry
from mlx_ollama_bridge.store.manifests import write_manifest

SMOL = "smollm2:135m"
ENDLESS = "endless"  # the tiny model with an end-of-sequence id it can never produce


@pytest.fixture(scope="module")
def engine_store(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Store:
    """A store with ``endless``: generation only stops at num_predict or a disconnect."""
    root = tmp_path_factory.mktemp("engine-store")
    endless = root / "endless-src"
    shutil.copytree(tiny_model_dir, endless)
    never = 1000  # a token id past the model's output layer: it can never be sampled
    for name in ("config.json", "generation_config.json"):
        config = json.loads((endless / name).read_text())
        config["eos_token_id"] = never
        (endless / name).write_text(json.dumps(config))
    tokenizer = json.loads((endless / "tokenizer.json").read_text())
    tokenizer["added_tokens"].append(
        {
            "id": never,
            "content": "<|never|>",
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
    )
    (endless / "tokenizer.json").write_text(json.dumps(tokenizer))
    tok_config = json.loads((endless / "tokenizer_config.json").read_text())
    tok_config["eos_token"] = "<|never|>"
    (endless / "tokenizer_config.json").write_text(json.dumps(tok_config))
    env = isolated_env(root)
    registry = Registry(Settings.from_env(env))
    manifest = Manifest(
        model_dir=str(endless),
        format="mlx",
        source="test",
        files=hash_model_dir(endless),
        created_at=time.time(),
    )
    write_manifest(registry, ENDLESS, manifest)
    return Store(root, env)


def queue_depth(url: str) -> int:
    return requests.get(url + "/diagnostics", timeout=10).json()["queue_depth"]


def engine_stats(url: str) -> dict[str, int]:
    return requests.get(url + "/health", timeout=10).json()["engine_stats"]


def chat(url: str, model: str, messages: list[dict], **options) -> dict:
    body = {
        "model": model,
        "messages": messages,
        "stream": False,
        "options": {"temperature": 0, "num_predict": 6, **options},
    }
    response = requests.post(url + "/api/chat", json=body, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_follow_up_turn_reuses_the_cached_prefix(server):
    messages = [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "Name a colour."},
    ]
    before = engine_stats(server.url)
    first = chat(server.url, SMOL, messages)
    middle = engine_stats(server.url)
    messages += [first["message"], {"role": "user", "content": "Another?"}]
    second = chat(server.url, SMOL, messages)
    after = engine_stats(server.url)
    assert middle["prompt_tokens"] - before["prompt_tokens"] == first["prompt_eval_count"]
    # Ollama's rule: prompt_eval_count is the whole prompt, cached or not
    assert after["prompt_tokens"] - middle["prompt_tokens"] == second["prompt_eval_count"]
    reused = after["prompt_tokens_reused"] - middle["prompt_tokens_reused"]
    # the first turn's prompt and its answer came from the cache; only the new turn ran
    assert reused >= first["prompt_eval_count"] + first["eval_count"] - 1
    assert second["prompt_eval_count"] - reused < 15


@pytest.fixture(scope="module")
def limited(
    engine_store: Store, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One slot per model and one place in the queue: what is busy shows at once."""
    env = {**engine_store.env, "OLLAMA_NUM_PARALLEL": "1", "OLLAMA_MAX_QUEUE": "1"}
    running = start_server(env, tmp_path_factory.mktemp("limited") / "server.log")
    yield running
    stop_server(running)


LONG = {"model": ENDLESS, "prompt": "go", "options": {"num_predict": 100000}}
SHORT = {"model": ENDLESS, "prompt": "go", "stream": False, "options": {"num_predict": 3}}


def generate(url: str, body: dict, **kwargs) -> requests.Response:
    return requests.post(url + "/api/generate", json=body, **{"timeout": 30, **kwargs})


def test_a_disconnected_stream_frees_the_only_slot(limited):
    before = engine_stats(limited.url)
    with generate(limited.url, LONG, stream=True) as response:
        next(response.iter_lines())  # generating; leaving the block hangs up mid-stream
    reply = generate(limited.url, SHORT)  # not stuck behind 100000 tokens
    assert reply.status_code == 200
    assert engine_stats(limited.url)["canceled"] == before["canceled"] + 1


def test_a_client_gone_during_a_non_streamed_answer_cancels_it(limited):
    """``stream: false`` writes nothing until the end: only the disconnect watch notices."""
    before = engine_stats(limited.url)
    with pytest.raises(requests.exceptions.ReadTimeout):  # gives up while it generates
        generate(limited.url, {**LONG, "stream": False}, timeout=(5, 1.0))
    assert wait_until(lambda: engine_stats(limited.url)["canceled"] == before["canceled"] + 1)
    reply = generate(limited.url, SHORT)  # the only slot is free again
    assert reply.status_code == 200


def test_a_queued_request_whose_client_left_is_dropped(limited):
    first = generate(limited.url, LONG, stream=True)
    lines = first.iter_lines()  # kept: dropping the iterator closes the connection
    next(lines)
    before = engine_stats(limited.url)
    gave_up = limited.log().count("status=499")
    with pytest.raises(requests.exceptions.ReadTimeout):  # gives up while queued
        generate(limited.url, SHORT, timeout=(5, 1.0))
    # the server's disconnect watch sees the closed socket and answers 499 to no one
    assert wait_until(lambda: limited.log().count("status=499") > gave_up)
    first.close()
    assert wait_until(lambda: engine_stats(limited.url)["canceled"] >= before["canceled"] + 2)
    after = engine_stats(limited.url)
    assert after["canceled"] == before["canceled"] + 2  # the stream and the queued one
    assert after["prompt_tokens"] == before["prompt_tokens"]  # the queued one never ran


def test_a_full_queue_answers_503_with_ollamas_message(limited):
    results: list[int] = []
    waiter = threading.Thread(
        target=lambda: results.append(generate(limited.url, SHORT).status_code)
    )
    first = generate(limited.url, LONG, stream=True)
    try:
        lines = first.iter_lines()
        next(lines)  # generating: holds the only slot
        waiter.start()  # the second request waits in the queue (its only place)
        assert wait_until(lambda: queue_depth(limited.url) == 1)
        refused = generate(limited.url, SHORT, timeout=10)
        assert refused.status_code == 503
        expected = "server busy, please try again.  maximum pending requests exceeded"
        assert refused.json() == {"error": expected}
    finally:
        first.close()  # frees the slot: the queued request runs
        waiter.join(timeout=30)
    assert results == [200]


def test_a_killed_worker_ends_its_stream_and_is_replaced(limited):
    (worker,) = psutil.Process(limited.process.pid).children()
    stream = generate(limited.url, LONG, stream=True)
    lines = stream.iter_lines()
    next(lines)
    worker.send_signal(signal.SIGKILL)
    received = []
    with pytest.raises(requests.exceptions.RequestException):
        for line in lines:  # the stream ends with a broken connection, never hangs
            received.append(json.loads(line))
    assert not any(line.get("done") for line in received)

    def replaced() -> bool:
        children = psutil.Process(limited.process.pid).children()
        return bool(children) and children[0].pid != worker.pid

    assert wait_until(replaced, 30)
    assert wait_until(lambda: _answers(limited.url), 60)
    reply = generate(limited.url, SHORT)
    assert reply.status_code == 200 and reply.json()["done"] is True
    assert limited.process.poll() is None  # the master survived


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:  # the new worker is still booting
        return False


@pytest.fixture(scope="module")
def batching(
    engine_store: Store, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """Four requests per model decode together."""
    env = {**engine_store.env, "OLLAMA_NUM_PARALLEL": "4"}
    running = start_server(env, tmp_path_factory.mktemp("batching") / "server.log")
    yield running
    stop_server(running)


def test_concurrent_streams_decode_in_one_batch_over_http(batching):
    url = batching.url
    body = {"model": ENDLESS, "prompt": "go", "options": {"num_predict": 40, "temperature": 0}}
    alone = generate(url, {**body, "stream": False}).json()
    before = engine_stats(url)

    def stream(index: int) -> tuple[str, dict]:
        options = {**body["options"], "seed": index}
        with requests.post(
            url + "/api/generate", json={**body, "options": options}, stream=True, timeout=120
        ) as reply:
            lines = [json.loads(line) for line in reply.iter_lines() if line]
        return "".join(line.get("response", "") for line in lines), lines[-1]

    # An endless stream decodes throughout: every stream below shares its decode steps,
    # however late its client thread starts (one 40-token answer alone takes ~50 ms, so
    # four threads on a loaded box could otherwise each find the lane empty).
    with generate(url, LONG, stream=True) as anchor:
        next(anchor.iter_lines())
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(stream, range(4)))
        after = engine_stats(url)
    for text, final in results:
        assert final["done"] and final["eval_count"] == 40
        assert text == alone["response"]  # greedy: batching does not change the answer
    assert after["batch_peak"] >= 2
    assert after["batched_tokens"] - before["batched_tokens"] >= 4 * 40
