"""Templates over real HTTP: Go-template forms in /api/show, fill-in-the-middle on
/api/generate and /v1/completions, think levels and reasoning_effort (tiny models, gunicorn)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests
from helpers import RunningServer, own_server, stop_server
from tiny_model import build_tiny_model

QWEN_FIM = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")
CODELLAMA_FIM = ("▁<PRE>", "▁<SUF>", "▁<MID>")
SHORT = {"num_predict": 4, "temperature": 0}


@pytest.fixture(scope="module")
def fim_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    base = tmp_path_factory.mktemp("fim-models")
    models = {
        "coder": build_tiny_model(base / "coder", special_tokens=QWEN_FIM),
        "codellama-base": build_tiny_model(
            base / "codellama", special_tokens=CODELLAMA_FIM, template=None
        ),
        "plain": build_tiny_model(base / "plain"),
        "notools": build_tiny_model(base / "notools", with_tools_template=False),
        "thinker": build_tiny_model(base / "thinker", thinking=True),
    }
    running = own_server(tmp_path_factory.mktemp("fim-store"), models)
    yield running
    stop_server(running)


def _post(server: RunningServer, path: str, body: dict) -> requests.Response:
    return requests.post(server.url + path, json=body, timeout=120)


def _render(server: RunningServer, body: dict) -> str:
    reply = _post(server, "/api/generate", {**body, "_debug_render_only": True})
    assert reply.status_code == 200, reply.text
    return reply.json()["_debug_info"]["rendered_template"]


def test_show_gives_the_go_form_with_suffix_and_tools(fim_server: RunningServer) -> None:
    show = _post(fim_server, "/api/show", {"model": "coder"}).json()
    assert show["capabilities"] == ["completion", "tools", "insert"]
    assert show["template"].startswith("{{- if .Suffix }}<|fim_prefix|>{{ .Prompt }}")
    assert "{{- if .Tools }}" in show["template"]
    assert 'TEMPLATE """{{- if .Suffix }}' in show["modelfile"]
    plain = _post(fim_server, "/api/show", {"model": "plain"}).json()
    assert plain["capabilities"] == ["completion", "tools"]
    assert ".Suffix" not in plain["template"] and ".Tools" in plain["template"]
    base = _post(fim_server, "/api/show", {"model": "codellama-base"}).json()
    assert base["capabilities"] == ["completion", "insert"]
    assert base["template"].startswith("{{- if .Suffix }}<PRE> {{ .Prompt }} <SUF>")


def test_suffix_renders_the_models_fim_prompt(fim_server: RunningServer) -> None:
    body = {"model": "coder", "prompt": "def add(", "suffix": "    return c", "system": "x"}
    assert _render(fim_server, body) == (
        "<|fim_prefix|>def add(<|fim_suffix|>    return c<|fim_middle|>"
    )
    body = {"model": "codellama-base", "prompt": "def add(", "suffix": "    return c"}
    assert _render(fim_server, body) == "▁<PRE> def add( ▁<SUF>    return c ▁<MID>"
    # without a suffix the ordinary prompt (here, no chat template: the prompt itself)
    assert _render(fim_server, {"model": "codellama-base", "prompt": "def add("}) == "def add("


def test_suffix_generates_streamed_and_whole(fim_server: RunningServer) -> None:
    body = {"model": "coder", "prompt": "def add(", "suffix": "    return c", "options": SHORT}
    whole = _post(fim_server, "/api/generate", {**body, "stream": False})
    assert whole.status_code == 200, whole.text
    answer = whole.json()
    assert answer["done"] and answer["eval_count"] == 4 and "context" in answer
    with requests.post(fim_server.url + "/api/generate", json=body, stream=True, timeout=120) as r:
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert "".join(line["response"] for line in lines) == answer["response"]
    assert lines[-1]["done"] and lines[-1]["done_reason"] == "length"


def test_v1_completions_takes_suffix(fim_server: RunningServer) -> None:
    body = {"model": "coder", "prompt": "def add(", "suffix": "    return c", "max_tokens": 3}
    reply = _post(fim_server, "/v1/completions", {**body, "temperature": 0})
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["finish_reason"] == "length"
    assert reply.json()["usage"]["completion_tokens"] == 3
    plain = _post(fim_server, "/v1/completions", {**body, "model": "plain"})
    assert plain.status_code == 400
    assert plain.json()["error"]["message"].endswith("does not support insert")


def test_suffix_on_a_model_without_fim_tokens_is_a_400(fim_server: RunningServer) -> None:
    reply = _post(fim_server, "/api/generate", {"model": "plain", "prompt": "a", "suffix": "b"})
    assert reply.status_code == 400
    assert reply.json() == {
        "error": "registry.ollama.ai/library/plain:latest does not support insert"
    }


def test_show_modelfile_creates_back(fim_server: RunningServer) -> None:
    """`ollama show --modelfile` output (a Go template) is accepted by /api/create."""
    modelfile = _post(fim_server, "/api/show", {"model": "coder"}).json()["modelfile"]
    modelfile = modelfile.replace("FROM /", "# FROM /").replace("# FROM coder", "FROM coder")
    reply = _post(
        fim_server, "/api/create", {"model": "coder-copy", "modelfile": modelfile, "stream": False}
    )
    assert reply.status_code == 200, reply.text
    copy = _post(fim_server, "/api/show", {"model": "coder-copy"}).json()
    assert copy["capabilities"] == ["completion", "tools", "insert"]


@pytest.mark.parametrize("level", ["low", "medium", "high", "max"])
def test_think_levels_on_a_thinking_model(fim_server: RunningServer, level: str) -> None:
    body = {"model": "thinker", "messages": [{"role": "user", "content": "hi"}], "think": level}
    reply = _post(fim_server, "/api/chat", {**body, "stream": False, "options": SHORT})
    assert reply.status_code == 200, reply.text
    assert reply.json()["done"]


def test_think_level_errors_as_ollama(fim_server: RunningServer) -> None:
    chat = {"messages": [{"role": "user", "content": "hi"}], "stream": False}
    bad = _post(fim_server, "/api/chat", {**chat, "model": "thinker", "think": "extreme"})
    assert bad.status_code == 400
    assert bad.json()["error"] == (
        'invalid think value: "extreme" (must be "high", "medium", "low", "max", true, or false)'
    )
    plain = _post(fim_server, "/api/chat", {**chat, "model": "plain", "think": "max"})
    assert plain.status_code == 400
    assert plain.json()["error"] == '"plain" does not support thinking'


def test_reasoning_effort_on_v1(fim_server: RunningServer) -> None:
    body = {"model": "thinker", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    for effort in ("none", "minimal", "max", "xhigh"):
        reply = _post(fim_server, "/v1/chat/completions", {**body, "reasoning_effort": effort})
        assert reply.status_code == 200, (effort, reply.text)
    bad = _post(fim_server, "/v1/chat/completions", {**body, "reasoning_effort": "huge"})
    assert bad.status_code == 400
    assert bad.json()["error"]["message"].startswith('invalid reasoning value: "huge"')


def test_version_is_the_ollama_release_served(fim_server: RunningServer) -> None:
    from mlx_ollama_bridge import OLLAMA_COMPAT_VERSION

    version = requests.get(fim_server.url + "/api/version", timeout=30).json()["version"]
    assert version == OLLAMA_COMPAT_VERSION
    major, minor, _patch = (int(part) for part in version.split("."))
    assert (major, minor) >= (0, 14)  # the Anthropic Messages API (0.14) is served


def test_tools_on_a_model_without_tool_support_is_ollamas_400(fim_server: RunningServer) -> None:
    show = _post(fim_server, "/api/show", {"model": "notools"}).json()
    assert show["capabilities"] == ["completion"] and ".Tools" not in show["template"]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    body = {"model": "notools", "messages": [{"role": "user", "content": "hi"}], "tools": tools}
    reply = _post(fim_server, "/api/chat", body)
    assert reply.status_code == 400
    assert reply.json() == {
        "error": "registry.ollama.ai/library/notools:latest does not support tools"
    }
