"""Concurrent create, copy and delete of one name, over real HTTP to a real gunicorn server.

Several clients at once create ``race`` from a base model or from uploaded files (each
client its own weights), copy the base onto it and delete it. Every request is answered
(200; 404 for a delete that found nothing; 400 for a create whose uploaded file went with a
model another client replaced), never a 500; afterwards the store is
consistent: ``race`` is absent or a whole model that generates, every manifest's weights
are there, no weights directory is left that no manifest uses, nothing half-written remains.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import requests
from helpers import in_parallel, own_server, stop_server, upload_blobs

from mlx_ollama_bridge.manifest import read_manifest_file
from mlx_ollama_bridge.store import atomic

CLIENTS = 4
ROUNDS = 8


def variant(tiny_model_dir: Path, base: Path, tag: str) -> Path:
    """The tiny model with one file changed: its own weights directory in the store."""
    directory = base / tag
    shutil.copytree(tiny_model_dir, directory)
    (directory / "generation_config.json").write_text(json.dumps({"variant": tag}))
    return directory


def test_concurrent_create_copy_delete_of_one_name(tmp_path, tiny_model_dir):
    server = own_server(tmp_path, {})
    url = server.url
    try:
        base_files = upload_blobs(url, variant(tiny_model_dir, tmp_path / "src", "base"))
        body = {"model": "base", "files": base_files, "stream": False}
        assert requests.post(f"{url}/api/create", json=body, timeout=120).status_code == 200
        own = [variant(tiny_model_dir, tmp_path / "src", f"client{i}") for i in range(CLIENTS)]
        systems: set[str] = set()

        def client(index: int) -> list[tuple[str, int, str]]:
            rng = random.Random(index)
            seen = []
            for turn in range(ROUNDS):
                action = rng.choice(["from-base", "from-files", "copy", "delete"])
                if action == "from-base":
                    system = f"client {index} turn {turn}"
                    systems.add(system)
                    body = {"model": "race", "from": "base", "system": system, "stream": False}
                    reply = requests.post(f"{url}/api/create", json=body, timeout=120)
                elif action == "from-files":
                    files = upload_blobs(url, own[index])
                    body = {"model": "race", "files": files, "stream": False}
                    reply = requests.post(f"{url}/api/create", json=body, timeout=120)
                elif action == "copy":
                    body = {"source": "base", "destination": "race"}
                    reply = requests.post(f"{url}/api/copy", json=body, timeout=120)
                else:
                    body = {"model": "race"}
                    reply = requests.delete(f"{url}/api/delete", json=body, timeout=120)
                seen.append((action, reply.status_code, reply.text[:200]))
            return seen

        results = in_parallel([lambda i=i: client(i) for i in range(CLIENTS)])
        for action, status, text in (entry for seen in results for entry in seen):
            # Deleting or replacing a model deletes the uploaded blobs only it used, as
            # Ollama deletes its layers: a create naming one of them after that is a 400.
            lost_blob = action == "from-files" and status == 400 and "not found" in text
            gone = action == "delete" and status == 404
            assert status == 200 or gone or lost_blob, (action, status, text)
        assert sum(status == 200 for seen in results for _, status, _ in seen) > CLIENTS

        names = [m["name"] for m in requests.get(f"{url}/api/tags", timeout=30).json()["models"]]
        assert "base:latest" in names and set(names) <= {"base:latest", "race:latest"}
        for name in names:  # whatever is listed is whole
            body = {"model": name, "prompt": "hi", "stream": False, "options": {"num_predict": 1}}
            assert requests.post(f"{url}/api/generate", json=body, timeout=120).status_code == 200
        if "race:latest" in names:
            shown = requests.post(f"{url}/api/show", json={"model": "race"}, timeout=30).json()
            assert shown.get("system", "") in systems | {""}

        models = tmp_path / "models"
        manifests = [p for p in (models / "manifests").rglob("*") if p.is_file()]
        used = {read_manifest_file(p).resolve_dir(models).resolve() for p in manifests}
        weights = {p.resolve() for p in (models / "weights").iterdir()}
        assert used <= weights  # every manifest's weights are there
        assert weights <= used  # and no weights are left that nothing uses
        assert not list(models.rglob(".partial-*"))
    finally:
        stop_server(server)


@pytest.mark.parametrize("make", ["file", "directory"])
def test_a_sweep_between_creating_and_locking_a_temporary_does_not_fail_the_write(
    tmp_path, monkeypatch, make
):
    # A create sweeps the blobs directory under the store lock while an upload (which
    # takes no store lock) may have created its temporary but not yet locked it.
    real_flock = atomic.fcntl.flock
    swept: list[Path] = []

    def flock_after_a_sweep(fd: int, operation: int) -> None:
        if operation == atomic.fcntl.LOCK_EX and not swept:
            swept.extend(atomic.sweep(tmp_path))  # the temporary is unlocked: garbage
        real_flock(fd, operation)

    monkeypatch.setattr(atomic.fcntl, "flock", flock_after_a_sweep)
    target = tmp_path / "blob"
    if make == "file":
        atomic.write_atomic(target, b"data")
        assert target.read_bytes() == b"data"
    else:
        with atomic.staged_dir(target) as staging:
            staging.mkdir()
            (staging / "weights").write_bytes(b"data")
        assert (target / "weights").read_bytes() == b"data"
    assert len(swept) == 1  # the race happened, and the write still succeeded
    assert [p.name for p in tmp_path.iterdir()] == ["blob"]
