"""Faults with a real server process: SIGTERM mid-stream, SIGHUP, a model deleted in use.

Covered elsewhere: upstream down mid-stream (``test_upstream``), not enough disk space for a
pull (``test_pull``: a file bigger than the free space is refused before download), client
disconnects mid-stream (``test_soak``).
"""

from __future__ import annotations

import hashlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests
from helpers import RunningServer, own_server, stop_server, wait_until

LONG = {"model": "tiny", "prompt": "go", "options": {"num_predict": 300, "temperature": 0}}
GRACEFUL_S = 30  # gunicorn_app's graceful_timeout


@pytest.fixture
def private(tmp_path: Path, tiny_model_dir: Path) -> Iterator[tuple[RunningServer, Path]]:
    """A server over a fresh store with ``tiny``; stopped afterwards if still running."""
    running = own_server(tmp_path / "store", {"tiny": tiny_model_dir})
    yield running, tmp_path / "store"
    if running.process.poll() is None:
        stop_server(running)


def stream_lines(response: requests.Response) -> Iterator[dict]:
    """The NDJSON lines of a streaming response."""
    for line in response.iter_lines():
        if line:
            yield json.loads(line)


def test_sigterm_during_a_stream_finishes_it_gracefully(private):
    running, store = private
    url = running.url + "/api/generate"
    with requests.post(url, json=LONG, stream=True, timeout=GRACEFUL_S + 10) as response:
        lines = stream_lines(response)
        first = next(lines)
        assert first["done"] is False
        running.process.send_signal(signal.SIGTERM)
        rest = list(lines)  # a cut-off stream would raise ChunkedEncodingError here
    last = rest[-1] if rest else first
    assert last.get("done") is True or "error" in last, last
    assert running.process.wait(timeout=GRACEFUL_S) == 0
    assert _half_written(store) == []
    # The exiting worker stopped the engine (unloading its model) before Python finalized.
    log = running.log()
    assert "unloaded model=tiny" in log and "scheduler stopped" in log
    # ... and ended without interpreter finalization, where MLX's threads could abort it
    assert "terminate called" not in log and "SIGABRT" not in log


def test_sigterm_ends_a_stream_longer_than_the_grace_with_an_error_line(tmp_path, tiny_model_dir):
    # a grace of 5 s: the stream is ended after 2.5 s, gunicorn's kill would come at 5 s
    running = own_server(
        tmp_path / "store", {"tiny": tiny_model_dir}, MLX_BRIDGE_GRACEFUL_TIMEOUT_S="5"
    )
    endless = {**LONG, "options": {"num_predict": 1_000_000, "temperature": 0}}
    try:
        url = running.url + "/api/generate"
        with requests.post(url, json=endless, stream=True, timeout=30) as response:
            lines = stream_lines(response)
            assert next(lines)["done"] is False
            running.process.send_signal(signal.SIGTERM)
            rest = list(lines)  # a stream cut by the kill would raise here
        assert rest[-1] == {"error": "server shutting down"}
        assert running.process.wait(timeout=10) == 0
    finally:
        if running.process.poll() is None:
            stop_server(running)


def test_sighup_reloads_the_worker_and_the_next_request_works(private):
    running, _ = private
    assert _generate(running).status_code == 200
    old = _worker_pids(running)
    running.process.send_signal(signal.SIGHUP)
    replaced = wait_until(lambda: (new := _worker_pids(running)) and not new & old, 60)
    assert replaced, f"worker not replaced: {old} -> {_worker_pids(running)}"
    response = _generate(running)
    assert response.status_code == 200, response.text
    assert response.json()["done"] is True


def test_a_model_deleted_while_in_use_finishes_then_is_gone(private, tiny_model_dir):
    running, store = private
    _create_from_blobs(running, "victim", tiny_model_dir)
    weights = {p for p in (store / "models" / "weights").iterdir()}
    assert weights, "create from files keeps its weights in the store"
    url = running.url + "/api/generate"
    with requests.post(url, json={**LONG, "model": "victim"}, stream=True, timeout=60) as response:
        lines = stream_lines(response)
        assert next(lines)["done"] is False
        deleted = requests.delete(running.url + "/api/delete", json={"model": "victim"}, timeout=30)
        assert deleted.status_code == 200, deleted.text
        rest = list(lines)
    assert rest and (rest[-1].get("done") is True or "error" in rest[-1]), rest[-1:]
    assert not any(p.exists() for p in weights)  # its weights went with the name
    gone = requests.post(url, json={**LONG, "model": "victim", "stream": False}, timeout=30)
    assert gone.status_code == 404, gone.text
    assert "not found" in gone.json()["error"]
    assert _generate(running).status_code == 200  # the other model is unaffected


def _generate(running: RunningServer) -> requests.Response:
    body = {"model": "tiny", "prompt": "hi", "stream": False, "options": {"num_predict": 4}}
    return requests.post(running.url + "/api/generate", json=body, timeout=60)


def _worker_pids(running: RunningServer) -> set[int]:
    return {p.pid for p in psutil.Process(running.process.pid).children()}


def _create_from_blobs(running: RunningServer, name: str, model_dir: Path) -> None:
    """``ollama create`` from files: upload each as a blob, then create with ``files``."""
    files = {}
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        data = path.read_bytes()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        upload = requests.post(f"{running.url}/api/blobs/{digest}", data=data, timeout=60)
        assert upload.status_code in (200, 201), upload.text
        files[path.relative_to(model_dir).as_posix()] = digest
    body = {"model": name, "files": files, "stream": False}
    created = requests.post(running.url + "/api/create", json=body, timeout=120)
    assert created.status_code == 200, created.text


def _half_written(store: Path) -> list[Path]:
    """Temp files or unreadable manifests left in the store."""
    leftovers = [p for p in store.rglob("*") if p.name.startswith((".tmp", ".upload-"))]
    for manifest in (store / "models" / "manifests").rglob("*"):
        if manifest.is_file() and not manifest.name.startswith("."):
            try:
                json.loads(manifest.read_text())
            except ValueError:
                leftovers.append(manifest)
    return leftovers
