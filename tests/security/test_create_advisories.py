"""Ollama's advisories about files sent to ``/api/create``, replayed over real HTTP against a
real server: crafted GGUFs, and archive paths that climb out of the store.

Each crafted file is uploaded as a blob and named in ``/api/create`` ``files``, as
``ollama create`` sends a GGUF. Ollama crashed or exhausted memory on these; the bridge
must answer a clean 400 before converting anything, keep nothing (no model listed, no
weights, no temporaries) and stay healthy (the model it had still answers).

* CVE-2024-39720, CVE-2024-12055: out-of-bounds reads (tensor data, strings and arrays past
  the end of the file, a truncated header);
* CVE-2025-0315: unbounded allocation from huge counts (keys, tensors, array items, a
  string's length);
* CVE-2025-0317: a division by zero in the padding (``general.alignment`` 0);
* CVE-2025-0312: a crash on malformed types (a value type that does not exist);
* CVE-2024-45436: Ollama unpacked a zip from ``/api/create`` without checking its member
  names (``../``) and wrote outside its directory. The bridge never unpacks an archive (a zip
  is not a model type, 400) and refuses a ``files`` name that is absolute or has ``..``.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zipfile
from pathlib import Path

import pytest
import requests
from helpers import own_server, stop_server


def _gguf(head: bytes, tail: bytes = b"") -> bytes:
    return b"GGUF" + struct.pack("<I", 3) + head + tail


def _key(name: str) -> bytes:
    return struct.pack("<Q", len(name)) + name.encode()


_ARCH = _key("general.architecture") + struct.pack("<IQ", 8, 5) + b"llama"
_TENSOR = _key("t.weight")
CRAFTED = {
    "cve_2024_39720_tensor_data_past_the_end": _gguf(
        struct.pack("<QQ", 1, 1) + _ARCH + _TENSOR, struct.pack("<I2QIQ", 2, 4, 4, 0, 2**50)
    ),
    "cve_2024_12055_string_past_the_end": _gguf(
        struct.pack("<QQ", 0, 1) + _key("k") + struct.pack("<IQ", 8, 900)
    ),
    "cve_2024_12055_truncated_header": _gguf(struct.pack("<QQ", 0, 3) + _ARCH[:20]),
    "cve_2025_0315_huge_tensor_count": _gguf(struct.pack("<QQ", 2**62, 0)),
    "cve_2025_0315_huge_key_count": _gguf(struct.pack("<QQ", 0, 2**62)),
    "cve_2025_0315_huge_string": _gguf(
        struct.pack("<QQ", 0, 1) + _key("k") + struct.pack("<IQ", 8, 2**60)
    ),
    "cve_2025_0315_huge_array": _gguf(
        struct.pack("<QQ", 0, 1) + _key("k") + struct.pack("<IIQ", 9, 6, 2**60)
    ),
    "cve_2025_0317_alignment_zero": _gguf(
        struct.pack("<QQ", 1, 2)
        + _ARCH
        + _key("general.alignment")
        + struct.pack("<II", 4, 0)
        + _TENSOR,
        struct.pack("<I2QIQ", 2, 4, 4, 0, 0) + bytes(128),
    ),
    "cve_2025_0312_unknown_value_type": _gguf(
        struct.pack("<QQ", 0, 1) + _key("k") + struct.pack("<I", 77)
    ),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("gguf-advisories")
    running = own_server(root, {"tiny": tiny_model_dir})
    running.root = root  # type: ignore[attr-defined]
    yield running
    stop_server(running)


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_a_crafted_gguf_is_a_clean_400_with_no_side_effect(server, case):
    data = CRAFTED[case]
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    reply = requests.post(f"{server.url}/api/blobs/{digest}", data=data, timeout=30)
    assert reply.status_code == 201, reply.text
    body = {"model": "crafted", "files": {"model.gguf": digest}, "stream": False}
    reply = requests.post(f"{server.url}/api/create", json=body, timeout=60)
    assert reply.status_code == 400, (case, reply.status_code, reply.text)
    assert set(reply.json()) == {"error"} and "Traceback" not in reply.text
    models = server.root / "models"
    tags = requests.get(f"{server.url}/api/tags", timeout=30).json()["models"]
    assert [m["name"] for m in tags] == ["tiny:latest"]
    assert not (models / "weights").exists() or not any((models / "weights").iterdir())
    assert not list(models.rglob(".partial-*"))
    generate = {"model": "tiny", "prompt": "hi", "stream": False, "options": {"num_predict": 1}}
    assert requests.post(f"{server.url}/api/generate", json=generate, timeout=60).status_code == 200


def test_cve_2024_45436_no_archive_is_unpacked_and_no_name_climbs_out(server):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("../../escaped.txt", "outside the store")
        zipped.writestr("config.json", "{}")
    data = archive.getvalue()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert requests.post(f"{server.url}/api/blobs/{digest}", data=data, timeout=30).ok
    config = b'{"model_type": "llama"}'
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    assert requests.post(f"{server.url}/api/blobs/{config_digest}", data=config, timeout=30).ok
    for files in (
        {"model.zip": digest},
        {"config.json": config_digest, "model.zip": digest},
        {"config.json": config_digest, "../../escaped.safetensors": digest},
        {"config.json": config_digest, "/tmp/escaped.safetensors": digest},
    ):
        body = {"model": "zipped", "files": files, "stream": False}
        reply = requests.post(f"{server.url}/api/create", json=body, timeout=60)
        assert reply.status_code == 400, (files, reply.text)
    escaped = [p for p in server.root.parent.rglob("escaped*")]
    assert escaped == [] and not Path("/tmp/escaped.safetensors").exists()
    tags = requests.get(f"{server.url}/api/tags", timeout=30).json()["models"]
    assert [m["name"] for m in tags] == ["tiny:latest"]
