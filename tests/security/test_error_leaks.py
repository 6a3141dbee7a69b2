"""No error answer tells a client about the machine: no absolute path (the store, the home
directory, the Python install), no traceback, on any API (native, /v1, /v1/messages,
/v1/responses), streamed or not; the server's log keeps the detail under the request id.

One real server (gunicorn) over a store of broken models placed by hand: truncated weights,
a config that is not JSON, a missing tokenizer, missing weights, custom code. Every failure
path is driven over HTTP and every response body scanned.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from fake_models import manifest_for
from helpers import RunningServer, free_port, isolated_env, start_server, stop_server

from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.errors import BridgeError, public_text
from mlx_ollama_bridge.registry import Registry
from mlx_ollama_bridge.store.manifests import write_manifest

BROKEN = ("changed", "truncated", "badjson", "notokenizer", "noweights", "customcode")
TRACE_MARKERS = ("Traceback", 'File "', "site-packages", '.py", line')


def _break(name: str, target: Path) -> None:
    if name in ("changed", "truncated"):
        weights = target / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:200])
    elif name == "badjson":
        (target / "config.json").write_text("{not json")
    elif name == "notokenizer":
        for file in ("tokenizer.json", "tokenizer_config.json"):
            (target / file).unlink()
    elif name == "noweights":
        (target / "model.safetensors").unlink()
    elif name == "customcode":
        config = json.loads((target / "config.json").read_text())
        (target / "config.json").write_text(json.dumps({**config, "model_file": "evil.py"}))
        (target / "evil.py").write_text("raise SystemExit('ran')\n")


@pytest.fixture(scope="module")
def leaky(tmp_path_factory, tiny_model_dir) -> Iterator[tuple[RunningServer, Path]]:
    base = tmp_path_factory.mktemp("leaks")
    env = isolated_env(base)
    env.pop("HF_HUB_OFFLINE")
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"  # nobody listens: pulls fail
    models = Path(env["MLX_BRIDGE_MODELS"])
    registry = Registry(Settings.from_env({**env}))
    for name in BROKEN:
        target = models / "weights" / f"dir-{name}"
        shutil.copytree(tiny_model_dir, target)
        if name != "changed":  # consistent files: the loader itself meets the damage
            _break(name, target)
        manifest = manifest_for(target)
        if name == "changed":  # after hashing: preflight sees files unlike the manifest
            _break(name, target)
        write_manifest(registry, name, manifest)
    running = start_server(env, base / "server.log")
    yield running, base
    stop_server(running)


def requests_to_try() -> Iterator[tuple[str, str, dict]]:
    chat = [{"role": "user", "content": "hi"}]
    for name in BROKEN:
        for stream in (False, True):
            yield "POST", "/api/chat", {"model": name, "messages": chat, "stream": stream}
            yield "POST", "/api/generate", {"model": name, "prompt": "hi", "stream": stream}
            body = {"model": name, "messages": chat, "stream": stream}
            yield "POST", "/v1/chat/completions", body
            yield "POST", "/v1/completions", {"model": name, "prompt": "hi", "stream": stream}
            body = {"model": name, "max_tokens": 8, "messages": chat, "stream": stream}
            yield "POST", "/v1/messages", body
            yield "POST", "/v1/responses", {"model": name, "input": "hi", "stream": stream}
        yield "POST", "/api/embed", {"model": name, "input": "hi"}
        yield "POST", "/v1/embeddings", {"model": name, "input": "hi"}
        yield "POST", "/api/show", {"model": name}
        yield "POST", "/api/create", {"model": f"{name}-2", "from": name, "system": "x"}
        yield "POST", "/api/copy", {"source": name, "destination": f"{name}-copy"}
    missing = "sha256:" + "0" * 64
    yield "POST", "/api/create", {"model": "x", "files": {"config.json": missing}}
    yield "POST", "/api/create", {"model": "x", "files": {"../../etc/passwd": missing}}
    yield "POST", "/api/pull", {"model": "hf.co/org/repo", "stream": False}
    yield "POST", "/api/pull", {"model": "hf.co/org/repo"}
    yield "POST", "/api/pull", {"model": "nothing-known"}
    yield "DELETE", "/api/delete", {"model": "not-there"}
    yield "POST", "/api/chat", {"model": "../../etc/passwd", "messages": chat}


def test_no_error_body_leaks_the_machine(leaky):
    server, base = leaky
    secrets = [str(base), str(Path.home()), sys.prefix, str(Path(__file__).parent.parent)]
    seen_errors = 0
    for method, path, body in requests_to_try():
        reply = requests.request(method, server.url + path, json=body, timeout=120)
        text = reply.text
        where = f"{method} {path} {json.dumps(body)[:80]} -> {reply.status_code}: {text[:300]}"
        if reply.status_code < 400 and '"error"' not in text:
            continue  # a success (/api/show's FROM names the weights, as Ollama's does)
        seen_errors += 1
        for secret in secrets:
            assert secret not in text, where
        for marker in TRACE_MARKERS:
            assert marker not in text, where
    assert seen_errors > 40
    custom = requests.post(server.url + "/api/chat", json={"model": "customcode"}, timeout=60)
    assert custom.status_code == 400 and "model_file" in custom.json()["error"], custom.text
    assert requests.get(server.url + "/api/version", timeout=10).status_code == 200


def test_the_log_keeps_the_detail_under_the_request_id(leaky):
    server, base = leaky
    headers = {"X-Request-ID": "leak-probe-1"}
    body = {"model": "notokenizer", "prompt": "hi", "stream": False}
    reply = requests.post(server.url + "/api/generate", json=body, headers=headers, timeout=120)
    assert reply.status_code >= 400
    assert str(base) not in reply.text
    lines = [line for line in server.log().splitlines() if "request_id=leak-probe-1" in line]
    assert any("request failed" in line and str(base) in line for line in lines), lines


def test_public_text_keeps_routes_urls_names_and_relative_paths():
    kept = [
        "upload it to /api/blobs first",
        "see http://127.0.0.1:11435/api/tags",
        "pull hf.co/mlx-community/Qwen3-0.6B-4bit",
        "FROM ./model.gguf",
        "ratio 3/4",
    ]
    for text in kept:
        assert public_text(text) == text
    home = str(Path.home())
    assert public_text(f"open {home}/x/y.json: denied") == "open …/y.json: denied"
    assert public_text("at /tmp/a/b/dir-1: bad") == "at …/dir-1: bad"
    assert public_text("via http://bob:secret@proxy:3128/x") == "via http://proxy:3128/x"
    error = BridgeError('bad\nTraceback (most recent call last):\n  File "/x.py", line 1')
    assert error.message == "bad" and "Traceback" in error.detail


def test_ollama_client_creating_a_custom_code_model_gets_a_400(leaky, tiny_model_dir, tmp_path):
    """The issue's replay with a real client: ``ollama create`` of a safetensors directory
    whose config names ``model_file``, over real HTTP to the real server."""
    import ollama

    server, base = leaky
    source = tmp_path / "evil"
    shutil.copytree(tiny_model_dir, source)
    _break("customcode", source)
    client = ollama.Client(host=server.url)
    files = {p.name: client.create_blob(p) for p in sorted(source.iterdir()) if p.is_file()}
    with pytest.raises(ollama.ResponseError) as refused:
        client.create(model="evil-create", files=files)
    assert refused.value.status_code == 400
    assert "model_file" in refused.value.error and "CVE-2026-5843" in refused.value.error
    assert str(base) not in refused.value.error and str(tmp_path) not in refused.value.error
    assert "evil-create:latest" not in [m.model for m in client.list().models]
