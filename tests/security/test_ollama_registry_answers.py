"""A hostile Ollama registry (tests/fake_ollama_registry.py on loopback), replaying the
advisories of Ollama's own registry client:

* CVE-2025-51471: a ``WWW-Authenticate`` realm on another host; Ollama sent its signed
  token request there. The bridge sends nothing to that host.
* CVE-2024-37032: a layer digest that is not ``sha256:`` + 64 hex; Ollama joined it into a
  blob path (traversal). The bridge refuses it before any path or request is made.
* CVE-2024-12886: a gzip-bombed (or just huge) manifest; Ollama inflated it into memory.
  The bridge asks for ``identity``, refuses another encoding and caps every body.
* a blob that lies about its size or digest: refused, its partial file deleted, nothing
  listed.

Each case also checks that the store lists nothing afterwards.
"""

from __future__ import annotations

import os

import pytest
from fake_ollama_registry import FakeOllamaRegistry, Knobs, digest_of, gzip_bomb

from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.registry import Registry
from mlx_ollama_bridge.store.ollama_manifest import MAX_MANIFEST_BYTES
from mlx_ollama_bridge.store.pull import pull_events

MODEL = "application/vnd.ollama.image.model"
WEIGHTS = b"GGUF" + os.urandom(3 << 20)


@pytest.fixture
def fake(monkeypatch):
    from huggingface_hub import constants

    running = FakeOllamaRegistry().start()
    running.add_model("evil:1b", [(MODEL, WEIGHTS, "")], {"model_format": "gguf"})
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("MLX_BRIDGE_OLLAMA_REGISTRY", running.url)
    yield running
    running.stop()


def pull(name: str = "evil:1b") -> dict:
    registry = Registry(Settings.from_env())
    last = list(pull_events(registry, name))[-1]
    assert registry.list_models() == []  # nothing half-written is listed
    return last


def blob_files(home) -> list[str]:
    blobs = home / "models" / "blobs"
    return sorted(p.name for p in blobs.iterdir()) if blobs.is_dir() else []


def test_cve_2025_51471_token_realm_on_another_host_gets_nothing(fake, isolated_home):
    trap = FakeOllamaRegistry().start()
    try:
        fake.knobs = Knobs(realm=f"{trap.url}/v2/token")
        error = pull()["error"]
        assert "token realm is on another host" in error and "nothing was sent" in error
        assert trap.log == []
    finally:
        trap.stop()


def test_cve_2025_51471_with_a_built_in_alias_the_pull_moves_on(fake, isolated_home, monkeypatch):
    trap = FakeOllamaRegistry().start()
    try:
        fake.knobs = Knobs(realm=f"{trap.url}/v2/token")
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # Hugging Face: nobody there
        error = pull("qwen3:0.6b")["error"]  # a built-in alias: Hugging Face is next
        assert "cannot reach http://127.0.0.1:9" in error and trap.log == []
    finally:
        trap.stop()


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:../../../../../../tmp/owned",
        "sha256:" + "a" * 63,
        "sha256:" + "A" * 64,
        "sha512:" + "a" * 64,
        "sha256-" + "a" * 64,
    ],
)
def test_cve_2024_37032_digest_not_64_hex_touches_no_path(fake, isolated_home, digest):
    fake.set_manifest(
        "evil:1b",
        {
            "schemaVersion": 2,
            "layers": [{"mediaType": MODEL, "digest": digest, "size": 4}],
        },
    )
    error = pull()["error"]
    assert "not sha256:<64 hex>" in error
    assert fake.requests("/v2/library/evil/blobs") == [] and blob_files(isolated_home) == []
    assert not (isolated_home.parent / "owned").exists()


def test_cve_2024_37032_layer_name_with_dotdot_is_refused(fake, isolated_home):
    fake.set_manifest(
        "evil:1b",
        {
            "schemaVersion": 2,
            "layers": [
                {
                    "mediaType": "application/vnd.ollama.image.json",
                    "digest": digest_of(b"{}"),
                    "size": 2,
                    "name": "../../config.json",
                }
            ],
        },
    )
    assert "bad name" in pull()["error"] and blob_files(isolated_home) == []


def test_cve_2024_12886_gzip_bomb_manifest_is_never_inflated(fake, isolated_home):
    fake.knobs = Knobs(gzip_manifest=gzip_bomb())
    error = pull()["error"]
    assert "Content-Encoding 'gzip'" in error
    manifest_requests = fake.requests("/v2/library/evil/manifests")
    assert manifest_requests[-1]["headers"]["Accept-Encoding"] == "identity"


def test_cve_2024_12886_oversized_manifest_is_capped(fake, isolated_home):
    layer = {"mediaType": MODEL, "digest": digest_of(WEIGHTS), "size": len(WEIGHTS)}
    fake.set_manifest(
        "evil:1b", {"schemaVersion": 2, "layers": [layer], "pad": "x" * MAX_MANIFEST_BYTES}
    )
    assert "larger than" in pull()["error"]


def test_blob_longer_than_its_manifest_says_is_refused(fake, isolated_home):
    fake.knobs = Knobs(extra_blob_bytes=4096)
    assert "refused" in pull()["error"]
    assert blob_files(isolated_home) == [] or all(
        n.startswith(".") for n in blob_files(isolated_home)
    )


def test_blob_shorter_than_its_manifest_says_is_refused(fake, isolated_home):
    layer = {"mediaType": MODEL, "digest": digest_of(WEIGHTS), "size": len(WEIGHTS) + 10}
    fake.set_manifest("evil:1b", {"schemaVersion": 2, "layers": [layer]})
    assert "manifest says" in pull()["error"]
    assert not any(n.endswith("-partial") for n in blob_files(isolated_home))


def test_blob_whose_digest_differs_is_discarded(fake, isolated_home):
    fake.knobs = Knobs(corrupt_blobs=True)
    error = pull()["error"]
    assert "digest mismatch" in error and f'expected "{digest_of(WEIGHTS)}"' in error
    assert not any(n.startswith("sha256-") for n in blob_files(isolated_home))


def test_content_length_lie_is_refused(fake, isolated_home):
    fake.knobs = Knobs(lie_content_length=True)
    assert "its manifest says" in pull()["error"]
    assert not any(n.startswith("sha256-") for n in blob_files(isolated_home))
