"""Replays of the exact request sequences other Ollama clients send.

The Go ``ollama`` CLI (cmd/cmd.go, api/client.go) sends zero-valued fields (``"model": ""``
beside ``"name"``, ``"options": null``, empty strings), ``HEAD /`` before every command, and
reads ``digest[:12]`` and ``model_info["general.architecture"]`` without checks. Open WebUI
checks ``/api/version``, parses ``expires_at`` with ``datetime.fromisoformat``, preloads with an
empty prompt and unloads with ``keep_alive: 0``.
"""

from __future__ import annotations

import json
from datetime import datetime

import requests
from helpers import METRICS

GO_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/x-ndjson",
    "User-Agent": "ollama/0.13.5 (amd64 linux) Go/go1.24.1",
}


def go_post(server, path: str, body: dict, stream: bool = False) -> requests.Response:
    return requests.post(
        server.url + path, data=json.dumps(body), headers=GO_HEADERS, stream=stream, timeout=120
    )


def ndjson(response: requests.Response) -> list[dict]:
    return [json.loads(line) for line in response.iter_lines() if line]


def test_ollama_run_interactive_sequence(server):
    assert requests.head(server.url + "/", headers=GO_HEADERS).status_code == 200
    show = go_post(
        server,
        "/api/show",
        {
            "model": "",
            "name": "tiny",
            "system": "",
            "template": "",
            "verbose": False,
            "options": None,
        },
    )
    assert show.status_code == 200
    info = show.json()["model_info"]
    assert isinstance(info["general.architecture"], str)
    load = go_post(
        server,
        "/api/generate",
        {
            "model": "tiny",
            "prompt": "",
            "suffix": "",
            "system": "",
            "template": "",
            "context": None,
            "stream": None,
            "raw": False,
            "format": None,
            "images": None,
            "options": None,
            "keep_alive": None,
            "think": None,
        },
    )
    assert load.json()["done_reason"] == "load"
    history = [{"role": "user", "content": "hello"}]
    for _turn in range(2):
        lines = ndjson(
            go_post(
                server,
                "/api/chat",
                {
                    "model": "tiny",
                    "messages": history,
                    "format": "",
                    "options": {"num_predict": 4},
                    "stream": True,
                    "keep_alive": None,
                    "tools": None,
                    "think": None,
                },
                stream=True,
            )
        )
        assert lines[-1]["done"] is True
        history += [
            {"role": "assistant", "content": "".join(line["message"]["content"] for line in lines)},
            {"role": "user", "content": "more"},
        ]


def test_ollama_run_one_shot_verbose_fields(server):
    lines = ndjson(
        go_post(
            server,
            "/api/generate",
            {
                "model": "tiny",
                "prompt": "hi",
                "suffix": "",
                "system": "",
                "template": "",
                "options": {"num_predict": 3},
                "raw": False,
            },
            stream=True,
        )
    )
    final = lines[-1]
    for key in METRICS:
        assert isinstance(final[key], int) and final[key] > 0


def test_ollama_list_and_ps_columns(server):
    models = requests.get(server.url + "/api/tags", headers=GO_HEADERS).json()["models"]
    assert all(len(m["digest"]) >= 12 and ":" in m["name"] for m in models)
    go_post(server, "/api/generate", {"model": "tiny", "keep_alive": "1m"})
    running = requests.get(server.url + "/api/ps", headers=GO_HEADERS).json()["models"]
    entry = next(m for m in running if m["name"] == "tiny:latest")
    assert len(entry["digest"][:12]) == 12 and entry["context_length"] > 0
    assert 0 <= entry["size_vram"] <= entry["size"]


def test_ollama_stop_sequence(server):
    go_post(server, "/api/generate", {"model": "tiny", "keep_alive": "1m"})
    assert go_post(server, "/api/show", {"model": "tiny"}).status_code == 200
    reply = go_post(server, "/api/generate", {"model": "tiny", "keep_alive": 0})
    assert reply.json()["done_reason"] == "unload"
    assert "tiny:latest" not in [
        m["name"] for m in requests.get(server.url + "/api/ps").json()["models"]
    ]
    missing = go_post(server, "/api/generate", {"model": "ghost", "keep_alive": 0})
    assert missing.status_code == 404 and "not found" in missing.json()["error"]


def test_open_webui_sequence(server):
    version = requests.get(server.url + "/api/version").json()["version"]
    assert [int(p) for p in version.split(".")] >= [0, 1, 16]
    tags = requests.get(server.url + "/api/tags").json()["models"]
    assert {"tiny:latest", "smollm2:135m"} <= {m["model"] for m in tags}
    preload = requests.post(server.url + "/api/generate", json={"model": "tiny:latest"}).json()
    assert preload["done_reason"] == "load"
    for entry in requests.get(server.url + "/api/ps").json()["models"]:
        datetime.fromisoformat(entry["expires_at"])
    chat = {
        "model": "tiny:latest",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "options": {"num_predict": 3},
        "keep_alive": "5m",
    }
    lines = ndjson(requests.post(server.url + "/api/chat", json=chat, stream=True))
    assert lines[-1]["done"] is True and all("message" in line for line in lines)
    eject = requests.post(
        server.url + "/api/generate", json={"model": "tiny:latest", "keep_alive": 0}
    ).json()
    assert eject["done_reason"] == "unload"


def test_copilot_style_capability_reads(server):
    """VS Code Copilot's BYOK provider: version >= 0.6.4, then /api/show per model."""
    parts = [int(p) for p in requests.get(server.url + "/api/version").json()["version"].split(".")]
    assert parts >= [0, 6, 4]
    for model in requests.get(server.url + "/api/tags").json()["models"]:
        shown = requests.post(server.url + "/api/show", json={"model": model["model"]}).json()
        info = shown["model_info"]
        assert isinstance(info.get(info["general.architecture"] + ".context_length"), int)
        assert isinstance(shown["capabilities"], list)
