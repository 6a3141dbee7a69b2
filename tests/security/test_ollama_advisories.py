"""Ollama's published advisories replayed against the bridge, one test each: a clean 4xx,
no side effect, a healthy server afterwards. (Others live beside them: gzip bombs in
test_hub_answers.py and test_upstream_answers.py, custom model code in
test_custom_model_code.py, crafted GGUF headers in tests/test_gguf.py.)
"""

from __future__ import annotations

import gzip
import json
import re

import pytest
from fake_hub import FakeHub
from helpers import StubEngine

from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.registry import Registry
from mlx_ollama_bridge.server import create_app
from mlx_ollama_bridge.store.ollama_store import scan_ollama_store
from mlx_ollama_bridge.store.pull import pull_events


@pytest.fixture
def client(isolated_home):
    return create_app(Settings.from_env(), engine=StubEngine()).test_client()


def healthy(client) -> None:
    assert client.get("/api/version").status_code == 200
    assert client.get("/api/tags").get_json() == {"models": []}


# CVE-2024-37032 (Probllama): a digest with path characters reaches the filesystem.
@pytest.mark.parametrize(
    "digest",
    ["sha256:../../../../etc/passwd", "sha256:" + "g" * 64, "sha256-" + "0" * 63, "md5:00"],
)
def test_cve_2024_37032_digest_traversal_in_create_files(client, isolated_home, digest):
    body = {"model": "x", "files": {"config.json": digest}, "stream": False}
    reply = client.post("/api/create", json=body)
    assert reply.status_code == 400 and reply.get_json() == {"error": "invalid digest format"}
    healthy(client)


@pytest.mark.parametrize("digest", ["sha256:..%2F..%2Fescaped", "sha256:" + "Z" * 64, "x"])
def test_cve_2024_37032_digest_traversal_in_blob_upload(client, isolated_home, digest):
    reply = client.post(f"/api/blobs/{digest}", data=b"data")
    assert reply.status_code in (400, 404)
    assert not list(isolated_home.rglob("escaped*"))
    healthy(client)


@pytest.mark.parametrize(
    "digest", ["sha256:../../../../secret", "sha256:" + "z" * 64, "sha256:" + "0" * 64 + "/.."]
)
def test_cve_2024_37032_digest_traversal_in_an_ollama_store(tmp_path, digest):
    """An Ollama store's manifest is read, never trusted: a bad layer digest makes the model
    a problem the import reports, before any layer is opened."""
    root = tmp_path / "ollama"
    manifest = root / "manifests" / "registry.ollama.ai" / "library" / "evil" / "latest"
    manifest.parent.mkdir(parents=True)
    (tmp_path / "secret").write_text('{"temperature": 9}')
    layer = {"mediaType": "application/vnd.ollama.image.params", "digest": digest, "size": 18}
    manifest.write_text(json.dumps({"layers": [layer]}))
    (model,) = scan_ollama_store(root)
    assert model.manifest is None and "digest that is not sha256:<64 hex>" in model.problem


# CVE-2024-39719: /api/create told whether a path exists on the server.
# CVE-2024-39721: /api/create FROM /dev/random read forever.
@pytest.mark.parametrize("field", ["from", "modelfile"])
def test_cve_2024_39719_and_39721_create_never_opens_a_server_path(client, tmp_path, field):
    existing = tmp_path / "exists.gguf"
    existing.write_bytes(b"GGUF")
    answers = []
    for path in (str(existing), str(tmp_path / "missing.gguf"), "/dev/random", "/etc/passwd"):
        value = path if field == "from" else f"FROM {path}"
        reply = client.post("/api/create", json={"model": "x", field: value, "stream": False})
        text = re.sub(r"\(.*?\)", "(<path>)", reply.get_json()["error"], count=1)
        answers.append((reply.status_code, text))
    assert len(set(answers)) == 1  # the same answer whether the path exists, and no read
    assert answers[0][0] == 400 and "read by the client" in answers[0][1]
    healthy(client)


# CVE-2024-28224: DNS rebinding lets a web page reach the local API.
def test_cve_2024_28224_dns_rebinding(client):
    reply = client.get("/api/tags", headers={"Host": "evil.example:11434"})
    assert reply.status_code == 403 and reply.data == b""
    healthy(client)


# CVE-2025-51471: a registry's WWW-Authenticate realm sent the user's token to another host.
def test_cve_2025_51471_the_hub_token_never_leaves_the_hub(tiny_model_dir, monkeypatch):
    from huggingface_hub import constants

    hub, trap = FakeHub().start(), FakeHub().start()
    try:
        hub.add_repo("gated-org/gated", tiny_model_dir, gated=True, redirect_to=trap.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_ENDPOINT", hub.url.replace("127.0.0.1", "localhost"))
        monkeypatch.setenv("HF_TOKEN", hub.token)
        registry = Registry(Settings.from_env())
        last = list(pull_events(registry, "hf.co/gated-org/gated"))[-1]
    finally:
        hub.stop()
        trap.stop()
    assert "error" in last and "refused" in last["error"]
    assert trap.log == []  # neither the token nor any request reached the other host
    assert any(e["auth"] == f"Bearer {hub.token}" for e in hub.log)
    assert not registry.list_models()


# Zip bombs in requests: a compressed request body is decompressed only within the body cap.
def test_a_zstd_request_bomb_is_cut_at_the_body_cap(client):
    import zstandard

    bomb = zstandard.ZstdCompressor(level=3).compress(
        b'{"model": "x", "input": "' + b" " * (96 << 20)  # over the 64 MiB body cap
    )
    assert len(bomb) < 64 << 10
    headers = {"Content-Encoding": "zstd", "Content-Type": "application/json"}
    reply = client.post("/v1/responses", data=bomb, headers=headers)
    assert reply.status_code == 413
    healthy(client)


def test_a_gzip_request_body_is_not_inflated(client):
    bomb = gzip.compress(b'{"model": "x", "prompt": "' + b" " * (64 << 20) + b'"}')
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    reply = client.post("/api/generate", data=bomb, headers=headers)
    assert reply.status_code == 400  # read as the bytes sent: not JSON
    healthy(client)
