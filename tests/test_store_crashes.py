"""The store survives SIGKILL: real kills of a real server's worker (and of the import CLI)
in the middle of pull, import, create, copy, delete and blob uploads.

A crash point (``store/faults.py``) armed through ``MLX_BRIDGE_TEST_FAULTS`` makes the
process stop itself at a named moment; the test sees it stopped, checks the half-done state
on disk, and kills it with SIGKILL. gunicorn's master starts a new worker, which cleans up
at start. Then: every listed model answers a generation, nothing half-written is listed, no
``.partial-`` temporary is left, and the interrupted operation succeeds when repeated (a
pull continues where it stopped).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import requests
from fake_http import range_start
from fake_hub import FakeHub
from fake_models import write_safetensors
from fake_ollama_registry import FakeOllamaRegistry
from helpers import (
    clean_environ,
    make_store,
    start_server,
    stop_server,
    upload_blobs,
    wait_until,
)
from ollama_library import publish_smollm2

PULL_REPO = "test-org/crash-pull"
PAD_BYTES = 24 << 20  # > huggingface_hub's 10 MiB read: the kill lands mid-file


@pytest.fixture(scope="module")
def hub(tiny_model_dir, tmp_path_factory):
    running = FakeHub().start()
    repo = tmp_path_factory.mktemp("crash-repo") / "repo"
    shutil.copytree(tiny_model_dir, repo)
    # sorts before model.safetensors (downloaded first); mlx-lm loads only model*.safetensors
    write_safetensors(repo / "a-padding.safetensors", {"pad": ("F32", [PAD_BYTES // 4])})
    running.add_repo(PULL_REPO, repo)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def crashy(tmp_path_factory, tiny_model_dir, hub):
    """A real server over a store with ``tiny``, online to the fake hub, crash points on."""
    root = tmp_path_factory.mktemp("crashy")
    env = make_store(root, {"tiny": tiny_model_dir})
    env.pop("HF_HUB_OFFLINE")
    faults = root / "faults"
    faults.write_text("")
    env.update(HF_ENDPOINT=hub.url, MLX_BRIDGE_TEST_FAULTS=str(faults))
    server = start_server(env, root / "server.log")
    server.root, server.faults, server.env = root, faults, env  # type: ignore[attr-defined]
    yield server
    stop_server(server)


def stopped(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_STOPPED
    except psutil.NoSuchProcess:
        return False


def stopped_worker(server) -> int | None:
    children = psutil.Process(server.process.pid).children(recursive=True)
    return next((c.pid for c in children if stopped(c.pid)), None)


def crash_during(server, point: str, call: Callable[[], object]) -> None:
    """Run ``call`` (an HTTP request) with ``point`` armed; when the worker stops there,
    leave it stopped for ``check`` callers: returns after the kill and the new worker."""
    server.faults.write_text(point)
    thread = threading.Thread(target=_swallow, args=(call,), daemon=True)
    thread.start()
    pid = wait_until(lambda: stopped_worker(server), timeout=120)
    assert pid, f"the worker never reached {point}:\n{server.log()[-3000:]}"
    server.faults.write_text("")
    server.halted = pid  # type: ignore[attr-defined]


def kill_and_recover(server) -> None:
    """SIGKILL the stopped worker; wait for gunicorn's new one to answer."""
    os.kill(server.halted, signal.SIGKILL)
    assert wait_until(lambda: not psutil.pid_exists(server.halted) or _zombie(server.halted))
    assert wait_until(lambda: _answers(server.url), timeout=120), server.log()[-3000:]


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _answers(url: str) -> bool:
    try:
        return requests.get(url + "/api/version", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def _swallow(call: Callable[[], object]) -> None:
    with contextlib.suppress(requests.RequestException):  # the worker was killed under it
        call()


def partials(root: Path) -> list[Path]:
    return [p for p in (root / "models").rglob(".partial-*")]


def listed(server) -> list[str]:
    return [m["name"] for m in requests.get(server.url + "/api/tags", timeout=60).json()["models"]]


def assert_sound(server) -> list[str]:
    """Every listed model generates; no temporary is left; returns the names."""
    names = listed(server)
    for name in names:
        body = {"model": name, "prompt": "hi", "stream": False, "options": {"num_predict": 1}}
        reply = requests.post(server.url + "/api/generate", json=body, timeout=120)
        assert reply.status_code == 200, (name, reply.text)
    assert partials(server.root) == []
    return names


def own_variant(tiny_model_dir: Path, base: Path, tag: str) -> Path:
    """The tiny model with one file changed, so its weights directory is its own."""
    variant = base / f"variant-{tag}"
    shutil.copytree(tiny_model_dir, variant)
    (variant / "generation_config.json").write_text(json.dumps({"seed_note": tag}))
    return variant


def create(url: str, name: str, files: dict[str, str]) -> requests.Response:
    return requests.post(
        url + "/api/create", json={"model": name, "files": files, "stream": False}, timeout=120
    )


# -- the tests -----------------------------------------------------------------------------


def test_kill_while_create_stages_the_weights(crashy, tiny_model_dir, tmp_path):
    files = upload_blobs(crashy.url, own_variant(tiny_model_dir, tmp_path, "staged"))
    crash_during(crashy, "store.staged", lambda: create(crashy.url, "made:staged", files))
    held = [p for p in partials(crashy.root) if p.parent.name == "weights"]
    assert any(c.name.startswith("dir-") for p in held for c in p.iterdir())  # not renamed
    kill_and_recover(crashy)
    assert "made:staged" not in assert_sound(crashy)
    assert create(crashy.url, "made:staged", files).json() == {"status": "success"}
    assert "made:staged" in assert_sound(crashy)


def test_kill_while_create_writes_the_manifest(crashy, tiny_model_dir, tmp_path):
    files = upload_blobs(crashy.url, own_variant(tiny_model_dir, tmp_path, "manifest"))
    crash_during(crashy, "store.file", lambda: create(crashy.url, "made:manifest", files))
    temp = [p for p in partials(crashy.root) if "manifests" in p.parts]
    assert temp and json.loads(temp[0].read_text())["files"]  # written whole, not renamed
    kill_and_recover(crashy)
    assert "made:manifest" not in assert_sound(crashy)
    assert create(crashy.url, "made:manifest", files).json() == {"status": "success"}
    assert "made:manifest" in assert_sound(crashy)


def test_kill_while_copying_and_while_deleting(crashy, tiny_model_dir, tmp_path):
    body = {"source": "tiny", "destination": "tiny-copy:v1"}
    crash_during(crashy, "store.file", lambda: requests.post(crashy.url + "/api/copy", json=body))
    kill_and_recover(crashy)
    assert "tiny-copy:v1" not in assert_sound(crashy)
    assert requests.post(crashy.url + "/api/copy", json=body, timeout=60).status_code == 200

    files = upload_blobs(crashy.url, own_variant(tiny_model_dir, tmp_path, "doomed"))
    assert create(crashy.url, "doomed:latest", files).json() == {"status": "success"}
    weights = {p.name for p in (crashy.root / "models" / "weights").iterdir()}
    gone = {"model": "doomed:latest"}
    crash_during(
        crashy, "store.discard", lambda: requests.delete(crashy.url + "/api/delete", json=gone)
    )
    trash = [p for p in partials(crashy.root) if p.name.startswith(".partial-trash-")]
    assert trash and (trash[0] / "model.safetensors").is_file()  # renamed away, not deleted
    kill_and_recover(crashy)
    names = assert_sound(crashy)
    assert "doomed:latest" not in names and {"tiny:latest", "tiny-copy:v1"} <= set(names)
    left = {p.name for p in (crashy.root / "models" / "weights").iterdir()}
    assert len(left) == len(weights) - 1  # its own weights went, the shared ones stayed


def test_kill_during_a_blob_upload(crashy, tmp_path):
    data = os.urandom(3 << 20)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    url = f"{crashy.url}/api/blobs/{digest}"

    def chunks():
        for offset in range(0, len(data), 1 << 20):
            yield data[offset : offset + (1 << 20)]

    crash_during(crashy, "blob.upload", lambda: requests.post(url, data=chunks(), timeout=60))
    assert [p for p in partials(crashy.root) if p.parent.name == "blobs"]
    kill_and_recover(crashy)
    assert requests.head(url, timeout=30).status_code == 404
    assert partials(crashy.root) == []
    assert requests.post(url, data=data, timeout=60).status_code == 201
    assert requests.head(url, timeout=30).status_code == 200


def test_kill_during_a_pull_then_the_next_pull_continues(crashy, hub):
    url = crashy.url + "/api/pull"
    body = {"model": PULL_REPO, "stream": False}
    crash_during(crashy, "pull.download", lambda: requests.post(url, json=body, timeout=120))
    hf = Path(crashy.env["HF_HUB_CACHE"])
    partial = next(hf.rglob("*.incomplete"))
    assert 0 < partial.stat().st_size < PAD_BYTES
    kill_and_recover(crashy)
    assert f"{PULL_REPO}:latest" not in assert_sound(crashy)
    before = len(hub.ranges(PULL_REPO))
    assert requests.post(url, json=body, timeout=120).json() == {"status": "success"}
    resumed = [r for r in hub.ranges(PULL_REPO)[before:] if r]
    assert resumed and int(resumed[0].removeprefix("bytes=").rstrip("-")) >= 10 << 20
    assert f"{PULL_REPO}:latest" in assert_sound(crashy)
    assert not list(hf.rglob("*.incomplete"))


def test_kill_the_import_command_mid_copy(crashy, tiny_model_dir, tmp_path):
    variant = own_variant(tiny_model_dir, tmp_path, "imported")
    env = {**clean_environ(), **crashy.env}
    command = [sys.executable, "-m", "mlx_ollama_bridge", "import", str(variant), "--name", "imp"]
    crashy.faults.write_text("store.staged")
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: stopped(process.pid), timeout=120), process.communicate()
        crashy.faults.write_text("")
        assert [p for p in partials(crashy.root) if p.parent.name == "weights"]
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert "imp:latest" not in listed(crashy)
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "imp:latest" in assert_sound(crashy)  # the next writer swept the leftovers


def test_kill_between_a_deletes_manifest_and_its_weights(crashy, tiny_model_dir, tmp_path):
    files = upload_blobs(crashy.url, own_variant(tiny_model_dir, tmp_path, "orphan"))
    assert create(crashy.url, "orphan:latest", files).json() == {"status": "success"}
    weights = {p.name for p in (crashy.root / "models" / "weights").iterdir()}
    delete = crashy.url + "/api/delete"
    gone = {"model": "orphan:latest"}
    crash_during(crashy, "store.unlinked", lambda: requests.delete(delete, json=gone, timeout=60))
    assert {p.name for p in (crashy.root / "models" / "weights").iterdir()} == weights
    kill_and_recover(crashy)  # the new worker deletes the weights no manifest names
    assert "orphan:latest" not in assert_sound(crashy)
    left = {p.name for p in (crashy.root / "models" / "weights").iterdir()}
    assert len(left) == len(weights) - 1


@pytest.fixture(scope="module")
def registry_crashy(tmp_path_factory, tiny_model_dir, smollm2_gguf):
    """A real server pulling from a fake Ollama registry publishing SmolLM2's GGUF."""
    fake = FakeOllamaRegistry().start()
    publish_smollm2(fake, smollm2_gguf)
    root = tmp_path_factory.mktemp("registry-crashy")
    env = make_store(root, {"tiny": tiny_model_dir})
    faults = root / "faults"
    faults.write_text("")
    env.pop("HF_HUB_OFFLINE")  # the registry pull honours it too
    env.update(MLX_BRIDGE_OLLAMA_REGISTRY=fake.url, MLX_BRIDGE_TEST_FAULTS=str(faults))
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # Hugging Face: nobody there
    server = start_server(env, root / "server.log")
    server.root, server.faults, server.fake = root, faults, fake  # type: ignore[attr-defined]
    yield server
    stop_server(server)
    fake.stop()


def test_kill_during_an_ollama_registry_pull_then_it_continues(registry_crashy):
    server, fake = registry_crashy, registry_crashy.fake
    body = {"model": "smollm2:135m", "stream": False}
    url = server.url + "/api/pull"
    crash_during(server, "pull.download", lambda: requests.post(url, json=body, timeout=600))
    (partial,) = (server.root / "models" / "blobs").glob("*-partial")
    kill_and_recover(server)
    assert "smollm2:135m" not in assert_sound(server)
    assert partial.is_file()  # kept for the next pull
    fake.log.clear()
    assert requests.post(url, json=body, timeout=600).json() == {"status": "success"}
    ranges = [e["headers"].get("Range") for e in fake.log if e["path"].startswith("/cdn/")]
    assert any((range_start(r or "") or 0) > 0 for r in ranges), ranges
    assert "smollm2:135m" in assert_sound(server)
