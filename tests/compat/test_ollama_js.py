"""The official ``ollama`` JavaScript client (ollama-js, from npm) under Node, against the server.

Each scenario is a small ``.mjs`` script in ``tests/compat/js/`` that prints one JSON document;
the Makefile installs the pinned client there with ``npm ci``. A missing Node, npm or
``node_modules`` is a failure that says how to install it, never a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

JS_DIR = Path(__file__).resolve().parent / "js"


@pytest.fixture(autouse=True)
def _node_is_installed() -> None:
    """Fail, never skip: ollama-js needs Node 18+ and npm (``make js-deps``)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node/npm not installed: the ollama-js compatibility tests need Node 18+")


def run_scenario(server, name: str) -> dict:
    """Run ``js/<name>.mjs`` with ``OLLAMA_HOST`` pointing at the server; return its JSON."""
    if not (JS_DIR / "node_modules" / "ollama").is_dir():
        pytest.fail(f"ollama-js is not installed in {JS_DIR}: run `make js-deps`")
    done = subprocess.run(
        ["node", f"{name}.mjs"],
        cwd=JS_DIR,
        env={**os.environ, "OLLAMA_HOST": server.url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{name}.mjs failed:\n{done.stderr}"
    return json.loads(done.stdout)


def test_list_ps_version(server):
    out = run_scenario(server, "list")
    models = {m["model"]: m for m in out["models"]}
    assert {"tiny:latest", "smollm2:135m", "all-minilm:latest"} <= models.keys()
    assert models["tiny:latest"]["format"] == "mlx"
    assert all(len(m["digest"]) == 64 for m in models.values())
    assert isinstance(out["running"], list)
    assert out["version"].count(".") == 2


def test_show_capabilities(server):
    out = run_scenario(server, "show")
    assert out["arch"] == "llama" and out["family"] == "llama"
    assert isinstance(out["context_length"], int) and out["context_length"] > 0
    assert "completion" in out["capabilities"] and "tools" in out["capabilities"]
    assert out["has_template"]


def test_generate_stream_matches_whole(server):
    out = run_scenario(server, "generate_stream")
    assert out["streamed"] == out["whole"]
    assert out["chunks"] >= 2
    assert out["done_reason"] == "length" and out["eval_count"] == 6
    assert out["total_duration"] > 0


def test_chat_stream_and_unload(server):
    out = run_scenario(server, "chat_stream")
    assert out["streamed"] == out["whole"] and out["role"] == "assistant"
    assert out["done"] is True
    assert out["unload_reason"] == "unload"


def test_embed_and_legacy_embeddings(server):
    out = run_scenario(server, "embed")
    assert out["count"] == 2 and out["dims"] == 384
    assert out["prompt_eval_count"] > 0
    assert all(isinstance(x, float) for x in out["first"] + out["legacy"])


def test_tool_call_round_trip(server):
    out = run_scenario(server, "tools")
    expected = {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}
    assert out["calls"] == [expected]
    assert out["streamed_calls"] == [expected]
    assert out["follow_up_done"] is True


def test_unknown_model_raises_response_error(server):
    out = run_scenario(server, "errors")
    assert out["thrown"] is True and out["name"] == "ResponseError"
    assert out["status"] == 404 and "not found" in out["message"]
