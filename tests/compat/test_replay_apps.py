"""Replays of the requests Continue.dev and Open WebUI send, taken from their source.

Continue.dev: ``core/llm/llms/Ollama.ts`` (continuedev/continue @ 0108be5e). At start-up it posts
``/api/show {"name": model}`` and parses every line of ``parameters`` with
``/^(\\S+)\\s+((?:".*")|\\S+)$/`` (a line that does not match throws and the whole read is
dropped), ``JSON.parse``-ing ``stop`` values; ``.Suffix`` in ``template`` means FIM. Chat and
completion send ``options`` (undefined keys dropped, ``mirostat`` included when set), a numeric
``keep_alive: 1800`` and ``stream``; with tools it forces ``stream: false`` and
``JSON.stringify``-s the returned ``arguments``. Model lists read ``name`` from ``/api/tags``;
embeddings post ``{"model", "input": [...]}`` to ``/api/embed``.

Open WebUI: ``backend/open_webui/routers/ollama.py`` (open-webui/open-webui). Every call carries
``Content-Type: application/json`` (GETs too), optional ``Authorization: Bearer`` and, with
``ENABLE_FORWARD_USER_INFO_HEADERS``, ``X-OpenWebUI-User-*`` headers. Versions are compared after
``re.sub(r"^v|-.*", "", v)``; ``/api/ps`` entries are joined to ``/api/tags`` by ``name`` and
their ``expires_at`` parsed with ``datetime.fromisoformat``; bodies are pydantic dumps with
``exclude_none`` (chat allows extra keys); model names get ``:latest`` appended; unload posts
``{"model", "keep_alive": 0, "prompt": ""}`` without ``stream`` and reads the reply with
``r.json()``; copy/delete expect 200.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

import requests
from helpers import WEATHER_TOOL

CONTINUE_HEADERS = {"Content-Type": "application/json"}
WEBUI_HEADERS = {
    "Content-Type": "application/json",
    "X-OpenWebUI-User-Name": "Ada Lovelace",
    "X-OpenWebUI-User-Id": "6f1c2d1e-0000-4000-8000-000000000001",
    "X-OpenWebUI-User-Email": "ada@example.com",
    "X-OpenWebUI-User-Role": "admin",
}
CONTINUE_PARAM_LINE = re.compile(r'^(\S+)\s+((?:".*")|\S+)$')


def post(server, path: str, body: dict, headers: dict, **kwargs) -> requests.Response:
    return requests.post(
        server.url + path, data=json.dumps(body), headers=headers, timeout=120, **kwargs
    )


def ndjson(response: requests.Response) -> list[dict]:
    return [json.loads(line) for line in response.iter_lines() if line]


def test_continue_show_parameters_parse_like_continue(server):
    made = post(
        server,
        "/api/create",
        {
            "model": "continue-probe",
            "from": "tiny",
            "parameters": {"num_ctx": 2048, "stop": ["<|im_end|>", "User:"]},
            "stream": False,
        },
        CONTINUE_HEADERS,
    )
    assert made.status_code == 200
    try:
        shown = post(server, "/api/show", {"name": "continue-probe"}, CONTINUE_HEADERS).json()
        stops, num_ctx = [], None
        for line in shown["parameters"].split("\n"):
            parts = CONTINUE_PARAM_LINE.match(line)
            assert parts, f"Continue cannot parse parameters line {line!r}"
            key, value = parts.groups()
            if key == "num_ctx":
                num_ctx = int(value)
            elif key == "stop":
                stops.append(json.loads(value))
        assert num_ctx == 2048 and stops == ["<|im_end|>", "User:"]
        assert ".Suffix" not in shown["template"]  # no FIM: Continue will not send suffix
    finally:
        requests.delete(server.url + "/api/delete", json={"model": "continue-probe"})


def test_continue_chat_complete_tools_embed(server):
    names = [m["name"] for m in requests.get(server.url + "/api/tags").json()["models"]]
    assert "tiny:latest" in names
    options = {"temperature": 0, "num_predict": 4, "num_ctx": 8192, "mirostat": 0}
    chat = {
        "model": "tiny",
        "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}],
        "options": options,
        "keep_alive": 1800,
        "stream": True,
    }
    lines = ndjson(post(server, "/api/chat", chat, CONTINUE_HEADERS, stream=True))
    assert all(line["message"]["role"] == "assistant" for line in lines)
    assert lines[-1]["done"] is True and "error" not in lines[-1]
    complete = {"model": "tiny", "prompt": "def f(", "options": options, "keep_alive": 1800}
    lines = ndjson(post(server, "/api/generate", {**complete, "stream": True}, CONTINUE_HEADERS))
    assert all("response" in line for line in lines) and lines[-1]["done"]
    tools = [WEATHER_TOOL]
    reply = post(
        server,
        "/api/chat",
        {
            "model": "parrot-tools",
            "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "options": {},
            "keep_alive": 1800,
            "stream": False,
            "tools": tools,
        },
        CONTINUE_HEADERS,
    ).json()
    (call,) = reply["message"]["tool_calls"]
    assert json.dumps(call["function"]["arguments"]) == '{"city": "Paris"}'
    embedded = post(
        server, "/api/embed", {"model": "all-minilm", "input": ["a", "b"]}, CONTINUE_HEADERS
    ).json()
    assert len(embedded["embeddings"]) == 2


def test_open_webui_model_list_with_headers(server):
    version = requests.get(server.url + "/api/version", headers=WEBUI_HEADERS).json()["version"]
    assert tuple(map(int, re.sub(r"^v|-.*", "", version).split("."))) >= (0, 1, 16)
    post(server, "/api/generate", {"model": "tiny:latest", "prompt": ""}, WEBUI_HEADERS)
    tags = requests.get(server.url + "/api/tags", headers=WEBUI_HEADERS).json()["models"]
    loaded = requests.get(server.url + "/api/ps", headers=WEBUI_HEADERS).json()["models"]
    expires = {m["name"]: m["expires_at"] for m in loaded if "expires_at" in m}
    joined = [m for m in tags if m["name"] in expires]
    assert "tiny:latest" in [m["model"] for m in joined]
    for model in joined:
        assert int(datetime.fromisoformat(expires[model["name"]]).timestamp()) > 0
    shown = post(server, "/api/show", {"model": "tiny:latest"}, WEBUI_HEADERS).json()
    assert shown["details"]["family"] and isinstance(shown["capabilities"], list)


def test_open_webui_chat_generate_embed_unload(server):
    chat = {
        "model": "tiny:latest",
        "messages": [{"role": "user", "content": "hi"}],
        "options": {"temperature": 0, "num_predict": 3},
        "stream": True,
        "keep_alive": "5m",
        "chat_id": "local",  # extra keys pass through (the form allows extras)
    }
    response = post(server, "/api/chat", chat, WEBUI_HEADERS, stream=True)
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    assert ndjson(response)[-1]["done"] is True
    generated = ndjson(
        post(
            server,
            "/api/generate",
            {"model": "tiny:latest", "prompt": "hi", "options": {"num_predict": 3}, "stream": True},
            WEBUI_HEADERS,
            stream=True,
        )
    )
    assert generated[-1]["done"] is True
    embedded = post(
        server, "/api/embed", {"model": "all-minilm:latest", "input": "hi"}, WEBUI_HEADERS
    ).json()
    assert len(embedded["embeddings"][0]) == 384
    # no "stream" key, read with r.json(): the reply must be one JSON object
    unload = post(
        server,
        "/api/generate",
        {"model": "tiny:latest", "keep_alive": 0, "prompt": ""},
        WEBUI_HEADERS,
    )
    assert unload.json()["done_reason"] == "unload"


def test_open_webui_copy_and_delete(server):
    copied = post(
        server, "/api/copy", {"source": "tiny:latest", "destination": "webui-copy"}, WEBUI_HEADERS
    )
    assert copied.status_code == 200
    deleted = requests.delete(
        server.url + "/api/delete",
        data=json.dumps({"model": "webui-copy:latest"}),
        headers=WEBUI_HEADERS,
    )
    assert deleted.status_code == 200
    missing = post(server, "/api/show", {"model": "webui-copy:latest"}, WEBUI_HEADERS)
    assert missing.status_code == 404 and "not found" in missing.json()["error"]
