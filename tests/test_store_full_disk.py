"""A full disk: a clear 507 and nothing half-written, on a real small filesystem.

The server's store is a 6 MiB tmpfs mounted in a user and mount namespace of its own
(``unshare --user --map-root-user --mount``: no root needed where unprivileged user
namespaces are allowed). Where they are not, the kernel's file-size limit
(``RLIMIT_FSIZE``) makes the same writes fail with ``EFBIG`` instead of ``ENOSPC``; the
bridge treats both as a full disk. Either way the errors are the kernel's, not a mock's.
"""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from helpers import RunningServer, isolated_env, start_server, stop_server

DISK = 6 << 20
FILE_LIMIT = 2 << 20  # without tmpfs: smaller than a converted model, bigger than the tiny one


def _tmpfs_allowed(probe: Path) -> bool:
    probe.mkdir(parents=True, exist_ok=True)
    script = f'mount -t tmpfs -o size=1m tmpfs "{probe}"'
    command = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script]
    try:
        return subprocess.run(command, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class SmallDisk:
    """Servers whose store has ``DISK`` bytes (tmpfs), or files of at most ``FILE_LIMIT``."""

    def __init__(self, root: Path, size: int = DISK) -> None:
        self.root = root
        self.size = size
        self.models = root / "models"
        self.models.mkdir(parents=True)
        self.env = isolated_env(root)
        self.tmpfs = _tmpfs_allowed(root / "probe")
        self.server: RunningServer | None = None

    def start(self, *, limited: bool = True) -> RunningServer:
        if self.tmpfs:
            mount = f'mount -t tmpfs -o size={self.size} tmpfs "$0" && exec "$@"'
            prefix = ("unshare", "--user", "--map-root-user", "--mount", "sh", "-c", mount)
            self.server = start_server(
                self.env, self.root / "server.log", prefix=(*prefix, str(self.models))
            )
        else:
            limit = FILE_LIMIT if limited else resource.RLIM_INFINITY
            self.server = start_server(
                self.env,
                self.root / "server.log",
                preexec=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
            )
        return self.server

    def view(self) -> Path:
        """The store as the server sees it (inside its mount namespace)."""
        if self.tmpfs and self.server is not None:
            return Path(f"/proc/{self.server.process.pid}/root") / self.models.relative_to("/")
        return self.models

    def stop(self) -> None:
        if self.server is not None:
            stop_server(self.server)
            self.server = None


@pytest.fixture
def disk(tmp_path) -> Iterator[SmallDisk]:
    small = SmallDisk(tmp_path)
    small.start()
    yield small
    small.stop()


def upload(url: str, path: Path) -> tuple[requests.Response, str]:
    data = path.read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return requests.post(f"{url}/api/blobs/{digest}", data=data, timeout=120), digest


def leftovers(store: Path) -> list[str]:
    return sorted(p.name for p in store.rglob(".partial-*"))


def test_an_upload_that_does_not_fit_is_a_507_and_leaves_nothing(disk, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(DISK + (1 << 20)))
    reply, digest = upload(disk.server.url, big)
    assert reply.status_code == 507, reply.text
    error = reply.json()["error"]
    assert error.startswith(("no space left on device", "file too large")), error
    assert "nothing was kept" in error and str(disk.models) not in error
    assert requests.head(f"{disk.server.url}/api/blobs/{digest}", timeout=30).status_code == 404
    assert leftovers(disk.view()) == []
    assert not any((disk.view() / "blobs").iterdir())


def test_a_create_that_does_not_fit_is_a_507_and_lists_nothing(
    tmp_path, smollm2_gguf, tiny_model_dir
):
    # the real SmolLM2 GGUF fits; its conversion (as much again) does not
    disk = SmallDisk(tmp_path, size=smollm2_gguf.stat().st_size + (24 << 20))
    disk.start(limited=disk.tmpfs)  # a per-file limit: upload without it, create with it
    try:
        reply, gguf = upload(disk.server.url, smollm2_gguf)
        assert reply.status_code == 201, reply.text
        files = {}
        for path in sorted(tiny_model_dir.iterdir()):
            reply, files[path.name] = upload(disk.server.url, path)
            assert reply.status_code == 201, reply.text
        if not disk.tmpfs:
            disk.stop()
            disk.start()
        url = disk.server.url
        body = {"model": "big", "files": {"model.gguf": gguf}, "stream": False}
        reply = requests.post(f"{url}/api/create", json=body, timeout=600)
        assert reply.status_code == 507, reply.text
        assert "nothing was kept" in reply.json()["error"]
        assert requests.get(f"{url}/api/tags", timeout=30).json() == {"models": []}
        assert leftovers(disk.view()) == [] and not any((disk.view() / "weights").iterdir())
        # the store still works: what fits is created, listed and answers
        body = {"model": "small", "files": files, "stream": False}
        reply = requests.post(f"{url}/api/create", json=body, timeout=120)
        assert reply.json() == {"status": "success"}
        tags = requests.get(f"{url}/api/tags", timeout=30).json()["models"]
        assert [m["name"] for m in tags] == ["small:latest"]
        generate = {
            "model": "small",
            "prompt": "hi",
            "stream": False,
            "options": {"num_predict": 1},
        }
        assert requests.post(f"{url}/api/generate", json=generate, timeout=120).status_code == 200
    finally:
        disk.stop()
