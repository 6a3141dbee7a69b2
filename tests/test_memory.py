"""Before a load: the memory budget (refuse or evict) and intact model files."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time

import psutil
import pytest
import requests
from fake_models import write_safetensors
from helpers import isolated_env, start_server, stop_server

from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.engine.preflight import MemoryBudget, check_model_files
from mlx_ollama_bridge.errors import ModelLoadError
from mlx_ollama_bridge.registry import Registry
from mlx_ollama_bridge.store.importer import import_model_dir

BUDGET = 130_000  # bytes: one tiny model (~97 KB on disk, ~68 KB loaded) fits, two do not


def test_a_model_bigger_than_the_budget_is_refused_with_the_fix():
    budget = MemoryBudget(total_bytes=16 * 10**9, fraction=0.5)
    budget.check_alone("small", 7 * 10**9)
    with pytest.raises(ModelLoadError) as caught:
        budget.check_alone("glm-4.5-air:latest", 60 * 10**9)
    message = caught.value.message
    assert "glm-4.5-air:latest needs ~60.0 GB, the budget is 8.0 GB (50% of 16 GB RAM)" in message
    assert message.endswith("free memory or raise MLX_BRIDGE_MEMORY_FRACTION")
    assert budget.fits(4 * 10**9, 4 * 10**9) and not budget.fits(4 * 10**9, 5 * 10**9)


@pytest.fixture
def copy_of_tiny(isolated_home, tiny_model_dir):
    registry = Registry(Settings.from_env())
    source = isolated_home / "src"
    shutil.copytree(tiny_model_dir, source)
    return registry, import_model_dir(registry, source, "victim", source="test")


def test_truncated_missing_and_changed_files_are_named(copy_of_tiny):
    registry, model = copy_of_tiny
    check_model_files(model)  # intact
    weights = model.path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"model\.safetensors of victim:latest is corrupt"):
        check_model_files(registry.resolve("victim"))
    flipped = bytearray(data)
    flipped[-10] ^= 0xFF
    weights.write_bytes(bytes(flipped))  # same size, newer than the manifest
    later = time.time() + 10
    os.utime(weights, (later, later))
    with pytest.raises(ModelLoadError, match="sha256 does not match"):
        check_model_files(model)
    weights.write_bytes(data)
    os.utime(weights, (model.manifest.created_at, model.manifest.created_at))
    check_model_files(model)  # restored
    (model.path / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match=r"tokenizer\.json .*\(the file is missing\)"):
        check_model_files(model)


def test_a_safetensors_file_shorter_than_its_header_says_is_truncated(copy_of_tiny):
    _, model = copy_of_tiny
    weights = model.path / "model.safetensors"
    write_safetensors(weights, {"w": ("F32", [64])})
    with open(weights, "r+b") as handle:
        handle.truncate(weights.stat().st_size - 16)
    entry = model.manifest.files["model.safetensors"]
    entry["size"] = weights.stat().st_size  # even with a matching manifest size
    with pytest.raises(ModelLoadError, match="its header describes .*: truncated"):
        check_model_files(model)


# -- over HTTP ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def budget_server(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("budget")
    env = isolated_env(root)
    env["MLX_BRIDGE_MEMORY_FRACTION"] = f"{BUDGET / psutil.virtual_memory().total:.15f}"
    env["MLX_BRIDGE_CPU_DENSE_MAX_PARAMS"] = "0"  # quantized as on disk: ~68 KB, not 428 KB
    registry = Registry(Settings.from_env(env))
    import_model_dir(registry, tiny_model_dir, "tiny", source="test")
    for name, extra in (("tiny2", None), ("fat", 300_000), ("broken", None)):
        directory = root / name
        shutil.copytree(tiny_model_dir, directory)
        (directory / "marker.txt").write_text(name)  # its own weights directory
        if extra:
            write_safetensors(directory / "padding.safetensors", {"pad": ("F32", [extra // 4])})
        import_model_dir(registry, directory, name, source="test")
    weights = registry.resolve("broken").path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    running = start_server(env, root / "server.log")
    yield running
    stop_server(running)


def generate(server, model: str, **extra) -> requests.Response:
    # a small num_ctx: the budget holds the KV cache a request reserves too (kv_memory)
    options = {"num_predict": 2, "num_ctx": 64}
    body = {"model": model, "prompt": "hi", "stream": False, "options": options}
    return requests.post(server.url + "/api/generate", json={**body, **extra}, timeout=120)


def loaded(server) -> list[str]:
    return [m["name"] for m in requests.get(server.url + "/api/ps").json()["models"]]


def test_loading_a_second_model_evicts_the_idle_first(budget_server):
    assert generate(budget_server, "tiny").status_code == 200
    assert loaded(budget_server) == ["tiny:latest"]
    assert generate(budget_server, "tiny2").status_code == 200
    assert loaded(budget_server) == ["tiny2:latest"]


def test_a_busy_model_is_not_evicted_the_newcomer_waits(budget_server):
    body = {"model": "tiny", "prompt": "hi", "options": {"num_predict": 400, "num_ctx": 64}}
    stream = requests.post(budget_server.url + "/api/generate", json=body, stream=True)
    lines = stream.iter_lines()
    assert not json.loads(next(lines))["done"]  # tiny is generating now
    other: list[requests.Response] = []
    waiter = threading.Thread(target=lambda: other.append(generate(budget_server, "tiny2")))
    waiter.start()
    final = [json.loads(line) for line in lines if line][-1]
    assert final["done"] and final["done_reason"] == "length" and "error" not in final
    waiter.join(60)
    assert other[0].status_code == 200
    assert loaded(budget_server) == ["tiny2:latest"]


def test_a_model_over_the_budget_is_refused_and_the_server_goes_on(budget_server):
    response = generate(budget_server, "fat")
    assert response.status_code == 500
    error = response.json()["error"]
    assert "fat:latest needs ~0.0 GB" in error and "MLX_BRIDGE_MEMORY_FRACTION" in error
    assert generate(budget_server, "tiny").status_code == 200


def test_a_corrupt_model_is_reported_naming_the_file(budget_server):
    response = generate(budget_server, "broken")
    assert response.status_code == 500
    error = response.json()["error"]
    assert error.startswith("model file model.safetensors of broken:latest is corrupt")
    assert "pull the model again" in error
    assert generate(budget_server, "tiny").status_code == 200


def test_memory_fraction_setting_is_parsed():
    assert Settings.from_env({"MLX_BRIDGE_MEMORY_FRACTION": "0.5"}).memory_fraction == 0.5
    assert Settings.from_env({"MLX_BRIDGE_MEMORY_FRACTION": "2"}).memory_fraction == 0.75
