"""LiteLLM's Ollama providers against the real server.

``ollama/<model>`` goes to ``/api/generate`` and ``ollama/`` embeddings to ``/api/embed``;
``ollama_chat/<model>`` goes to ``/api/chat`` (litellm ``llms/ollama/completion`` and
``llms/ollama/chat/transformation.py``).

LiteLLM caps ``openai<3`` and ``huggingface-hub<2``, which would hold the OpenAI SDK tested
elsewhere at an old major version. So LiteLLM's current release lives in its own virtual
environment, ``.cache/litellm-venv`` (``make litellm-venv``, part of ``make test``), and
``litellm_client.py`` runs there once per session against the session's server; the tests
below check what it reports. ``LITELLM_PYTHON`` names another interpreter to use.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
PYTHON = Path(
    os.environ.get("LITELLM_PYTHON", HERE.parent.parent / ".cache/litellm-venv/bin/python")
)


@pytest.fixture(scope="module")
def litellm_run(server) -> dict[str, Any]:
    """Every scenario of ``litellm_client.py``, run once in LiteLLM's interpreter."""
    if not PYTHON.exists():
        pytest.fail(f"{PYTHON} missing: run `make litellm-venv`")
    done = subprocess.run(
        [str(PYTHON), str(HERE / "litellm_client.py"), server.url],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "HF_"))},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def scenario(run: dict[str, Any], name: str) -> dict[str, Any]:
    """One scenario's result; a scenario that raised fails the test with its traceback."""
    result = run[name]
    assert "error" not in result, result["error"]
    return result


def test_current_litellm_with_its_own_openai(litellm_run):
    versions = litellm_run["versions"]
    assert int(versions["litellm"].split(".")[0]) >= 1
    assert versions["openai"], "litellm's interpreter has its own openai"


@pytest.mark.parametrize("prefix", ["ollama", "ollama_chat"])
def test_completion_and_stream_agree(litellm_run, prefix):
    reply = scenario(litellm_run, f"completion_{prefix}")
    assert isinstance(reply["content"], str)
    assert reply["completion_tokens"] == 6 and reply["prompt_tokens"] > 0
    # litellm's /api/generate provider reports "stop" whatever done_reason says; /api/chat maps it.
    assert reply["finish_reason"] == ("length" if prefix == "ollama_chat" else "stop")
    assert reply["streamed"] == reply["content"]


def test_chat_tool_call(litellm_run):
    # litellm imports its MCP handler whenever `tools` is passed: `mcp` is in its venv.
    assert scenario(litellm_run, "tool_call")["calls"] == [["get_weather", '{"city": "Paris"}']]


def test_embedding(litellm_run):
    reply = scenario(litellm_run, "embedding")
    assert reply["dimensions"] == [384, 384]
    assert reply["prompt_tokens"] > 0


def test_unknown_model_is_an_error(litellm_run):
    error = scenario(litellm_run, "unknown_model")
    assert error["not_found"], error
    assert "not found" in error["message"]
