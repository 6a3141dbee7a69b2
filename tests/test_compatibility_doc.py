"""docs/compatibility.md cannot drift: its rows are checked against the code and a live server."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from helpers import upload_blobs
from lora_helpers import make_adapter
from openai.types import completion_create_params, embedding_create_params
from openai.types.chat import completion_create_params as chat_create_params
from openai.types.responses import response_create_params
from tiny_model import build_tiny_model

from mlx_ollama_bridge.config import SETTINGS
from mlx_ollama_bridge.engine.options import IGNORED_OPTIONS, OPTION_TYPES
from mlx_ollama_bridge.server import create_app, openai_embed, schemas
from mlx_ollama_bridge.server import openai_translate as oai
from mlx_ollama_bridge.server.responses_translate import parse_request

PAGE = Path(__file__).resolve().parent.parent / "docs" / "compatibility.md"
STATUSES = {"supported", "partial", "ignored", "not supported", "bridge-only"}

# Ollama v0.32.15's routes (server/routes.go), HEAD left out as Flask adds it to GET.
OLLAMA_ROUTES = {
    ("GET", "/"), ("GET", "/api/version"), ("GET", "/api/tags"), ("POST", "/api/show"),
    ("GET", "/api/ps"), ("POST", "/api/generate"), ("POST", "/api/chat"), ("POST", "/api/embed"),
    ("POST", "/api/embeddings"), ("POST", "/api/pull"), ("POST", "/api/push"),
    ("POST", "/api/create"), ("POST", "/api/copy"), ("DELETE", "/api/delete"),
    ("HEAD", "/api/blobs/:digest"), ("POST", "/api/blobs/:digest"), ("POST", "/api/me"),
    ("POST", "/api/signout"), ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"), ("GET", "/v1/models"), ("GET", "/v1/models/:model"),
    ("POST", "/v1/responses"), ("POST", "/v1/messages"), ("GET", "/api/status"),
    ("DELETE", "/api/user/keys/:encodedKey"), ("POST", "/api/experimental/web_search"),
    ("POST", "/api/experimental/web_fetch"), ("GET", "/api/experimental/model-recommendations"),
    ("POST", "/v1/audio/transcriptions"),
}  # fmt: skip

# Every request field of Ollama's native API (api/types.go), per endpoint.
OLLAMA_FIELDS = {
    "/api/generate": "model prompt suffix system template context stream raw format images "
    "options keep_alive think truncate shift logprobs top_logprobs _debug_render_only",
    "/api/chat": "model messages tools format options stream keep_alive think truncate shift "
    "logprobs top_logprobs _debug_render_only",
    "/api/embed": "model input truncate dimensions keep_alive options",
    "/api/embeddings": "model prompt keep_alive options",
    "/api/show": "model verbose system template options",
    "/api/pull": "model insecure stream",
    "/api/create": "model from files adapters template system parameters messages license "
    "quantize stream",
    "/api/copy": "source destination",
    "/api/delete": "model",
}

# One request per field worth sending: the matrix status must match the answer.
# a 1x1 PNG (the vision model's server checks images with Pillow)
TINY_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)
PROBES = {
    ("/api/generate", "format"): {"model": "tiny", "prompt": "a", "format": "json"},
    ("/api/generate", "images"): {"model": "tiny-vision", "prompt": "a", "images": [TINY_PNG]},
    ("/api/generate", "think"): {"model": "tiny-think", "prompt": "a", "think": False},
    ("/api/generate", "logprobs"): {"model": "tiny", "prompt": "a", "logprobs": True},
    ("/api/generate", "top_logprobs"): {"model": "tiny", "prompt": "a", "top_logprobs": 3},
    ("/api/generate", "template"): {"model": "tiny", "prompt": "a", "template": "{{ .Prompt }}"},
    ("/api/chat", "format"): {
        "model": "tiny",
        "messages": [{"role": "user", "content": "a"}],
        "format": {"type": "object", "properties": {"a": {"type": "boolean"}}},
    },
    ("/api/chat", "logprobs"): {
        "model": "tiny",
        "messages": [{"role": "user", "content": "a"}],
        "logprobs": True,
    },
    ("/api/create", "adapters"): lambda url, tmp: {
        "model": "probe-adapter",
        "files": upload_blobs(url, float_tiny(tmp)),
        "adapters": upload_blobs(url, make_adapter(float_tiny(tmp), tmp / "adapter")),
    },
    ("/api/create", "quantize"): lambda url, tmp: {
        "model": "probe-quant",
        "files": upload_blobs(url, float_tiny(tmp)),
        "quantize": "q4_K_M",
    },
    ("/api/embed", "dimensions"): {"model": "all-minilm", "input": "a", "dimensions": 8},
}
GENERATION_LIMIT = {"options": {"num_predict": 2}, "stream": False}


def float_tiny(tmp: Path) -> Path:
    """The tiny model in float16 (quantize and adapters need an unquantized base)."""
    out = tmp / "float-tiny"
    return out if out.is_dir() else build_tiny_model(out, quantized=False)


def rows(section: str) -> list[list[str]]:
    """The table rows (cells stripped of backticks) under a ``## section`` heading."""
    text = PAGE.read_text().split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip().strip("`") for cell in line.strip("|").split("|")] for line in lines[1:]]


def route_set(cell: str) -> set[tuple[str, str]]:
    methods, path = cell.split(" /", 1)
    return {
        (m.strip(), "/" + path)
        for m in methods.split(",")
        if m.strip() != "HEAD" or "GET" not in methods
    }


def app_routes() -> set[tuple[str, str]]:
    """(method, path) the Flask app serves, with Ollama's ``:param`` spelling."""
    app = create_app(engine=object())
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r":\1", rule.rule)
        methods = rule.methods - {"OPTIONS"}
        if "GET" in methods:
            methods -= {"HEAD"}
        served |= {(m, path) for m in methods}
    return served


def test_every_status_is_known():
    sections = ("Endpoints", "Request fields", "OpenAI request fields", "Options")
    for section in (*sections, "Environment variables"):
        for row in rows(section):
            assert row[-2] in STATUSES, row


def test_endpoint_rows_match_the_routes():
    served = app_routes()
    documented: set[tuple[str, str]] = set()
    for cell, status, _notes in rows("Endpoints"):
        routes = route_set(cell)
        documented |= routes
        if status == "not supported":
            assert not routes & served, f"{cell} is served: update its row"
        else:
            assert routes <= served, f"{cell} is marked {status} but not served"
    assert served <= documented, f"routes missing from the page: {served - documented}"
    assert documented >= OLLAMA_ROUTES, f"Ollama routes missing: {OLLAMA_ROUTES - documented}"


def test_every_ollama_field_has_a_row():
    documented = {(endpoint, field) for endpoint, field, _s, _n in rows("Request fields")}
    expected = {(e, f) for e, names in OLLAMA_FIELDS.items() for f in names.split()}
    assert expected - documented == set()


def test_option_rows_match_engine_options():
    table = {name: (status, notes) for name, status, notes in rows("Options")}
    assert set(table) == set(OPTION_TYPES)
    for name, (status, notes) in table.items():
        if name in IGNORED_OPTIONS:
            assert (status, notes) == ("ignored", IGNORED_OPTIONS[name])
        else:
            assert status == "supported", name


def test_environment_rows_match_settings():
    table = {name: status for name, status, _notes in rows("Environment variables")}
    ours = {s.env for s in SETTINGS if s.env.startswith("OLLAMA_")}
    assert {name for name, status in table.items() if status == "supported"} == ours


@pytest.mark.parametrize(("endpoint", "field"), sorted(PROBES))
def test_field_status_matches_the_server(server, request, endpoint, field, tmp_path):
    (status,) = [s for e, f, s, _n in rows("Request fields") if (e, f) == (endpoint, field)]
    probe = PROBES[endpoint, field]
    body = dict(probe(server.url, tmp_path) if callable(probe) else probe)
    if body.get("model") == "tiny-vision":  # images: the vision model's own server
        server = request.getfixturevalue("vision_server")
    if endpoint in ("/api/generate", "/api/chat"):
        body = {**GENERATION_LIMIT, **body}
    if endpoint == "/api/create":
        body["stream"] = False
    answer = requests.post(server.url + endpoint, json=body, timeout=120)
    if endpoint == "/api/create" and answer.status_code == 200:
        requests.delete(server.url + "/api/delete", json={"model": body["model"]}, timeout=30)
    if status == "not supported":
        assert answer.status_code == 400, f"{field} works now: update its row ({answer.text})"
        assert answer.json()["error"]
    else:
        assert answer.status_code < 400, f"{field} is marked {status}: {answer.text}"


# -- /v1, field by field -----------------------------------------------------------------------


def sdk_fields(params: Any) -> set[str]:
    """The keys of one of the OpenAI SDK's ``*CreateParams`` TypedDicts."""
    return set(params.__required_keys__ | params.__optional_keys__)


# What the installed OpenAI SDK can send (``stream`` is in the streaming variant only).
SDK_FIELDS = {
    "/v1/chat/completions": sdk_fields(chat_create_params.CompletionCreateParamsStreaming),
    "/v1/completions": sdk_fields(completion_create_params.CompletionCreateParamsStreaming),
    "/v1/embeddings": sdk_fields(embedding_create_params.EmbeddingCreateParams),
    "/v1/responses": sdk_fields(response_create_params.ResponseCreateParamsStreaming),
}
PATH_ROWS = {("/v1/models/:model", "model")}  # a path parameter, not a body field


class RecordingBody(dict):
    """A request body that remembers every key the code looks up."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)


def fields_read(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The body fields the code behind a ``/v1`` route reads: its schema, its translation to
    the native request and ``stream_options`` (embeddings: the reply, engine stubbed out)."""
    if endpoint == "/v1/embeddings":
        result = SimpleNamespace(vectors=[[1.0, 0.0]], prompt_eval_count=1)
        monkeypatch.setattr(openai_embed, "resolve_for_embedding", lambda name: object())
        monkeypatch.setattr(openai_embed, "embed_texts", lambda *args, **kwargs: result)
        body = RecordingBody(model="m", input="a")
        openai_embed.embeddings_reply(body)
        return body.read
    if endpoint == "/v1/responses":
        body = RecordingBody(model="m", input="a")
        schemas.validate(body, schemas.OPENAI_RESPONSES)
        parse_request(body)
        return body.read
    if endpoint == "/v1/chat/completions":
        body = RecordingBody(model="m", messages=[{"role": "user", "content": "a"}])
        schemas.validate(body, schemas.OPENAI_CHAT)
        oai.chat_to_native(body)
    else:
        body = RecordingBody(model="m", prompt="a")
        schemas.validate(body, schemas.OPENAI_COMPLETION)
        oai.completion_to_native(body)
    oai.include_usage(body)
    return body.read


def openai_rows() -> dict[str, dict[str, str]]:
    """``{endpoint: {field: status}}`` of the OpenAI request fields table."""
    table: dict[str, dict[str, str]] = {}
    for endpoint, field, status, _notes in rows("OpenAI request fields"):
        if (endpoint, field) not in PATH_ROWS:
            table.setdefault(endpoint, {})[field] = status
    return table


def test_every_openai_sdk_field_has_a_row():
    table = openai_rows()
    for endpoint, fields in SDK_FIELDS.items():
        missing = fields - set(table[endpoint])
        assert missing == set(), f"{endpoint}: fields of the OpenAI SDK with no row"


@pytest.mark.parametrize("endpoint", sorted(SDK_FIELDS))
def test_openai_rows_match_the_fields_the_code_reads(endpoint, monkeypatch):
    documented = openai_rows()[endpoint]
    used = {field for field, status in documented.items() if status != "ignored"}
    read = fields_read(endpoint, monkeypatch)
    assert read - used == set(), f"{endpoint}: read by the code but marked ignored or missing"
    assert used - read == set(), f"{endpoint}: documented as used but never read"


# Values for every ``ignored`` field: sent together, they must change nothing (200).
IGNORED_SAMPLES: dict[str, Any] = {
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "functions": [{"name": "f", "parameters": {"type": "object"}}],
    "function_call": "auto",
    "logprobs": True,
    "top_logprobs": 2,
    "logit_bias": {"1": -100},
    "modalities": ["text"],
    "audio": {"voice": "alloy", "format": "wav"},
    "prediction": {"type": "content", "content": "a"},
    "verbosity": "low",
    "web_search_options": {},
    "store": False,
    "metadata": {"k": "v"},
    "service_tier": "auto",
    "user": "u",
    "safety_identifier": "s",
    "moderation": {"input": {"mode": "score"}},
    "prompt_cache_key": "k",
    "prompt_cache_retention": "24h",
    "prompt_cache_options": {"ttl": "1h"},
    "best_of": 1,
    "echo": True,
    "include": ["reasoning.encrypted_content"],
    "stream_options": {"include_obfuscation": False},
    "background": False,
    "conversation": "conv_1",
    "context_management": [{"type": "compaction", "compact_threshold": 1000}],
    "prompt": {"id": "pmpt_1"},
    "max_tool_calls": 1,
    "image": {"size": "auto"},
    "access_programs": {},
    "background_options": {},
}
V1_BASE = {
    "/v1/chat/completions": {
        "model": "tiny",
        "messages": [{"role": "user", "content": "a"}],
        "max_tokens": 1,
    },
    "/v1/completions": {"model": "tiny", "prompt": "a", "max_tokens": 1},
    "/v1/embeddings": {"model": "all-minilm", "input": "a"},
    "/v1/responses": {"model": "tiny", "input": "a", "max_output_tokens": 1},
}
# The stated limits of ``partial`` and ``not supported`` rows: each answers 400.
V1_REFUSED = [
    ("/v1/chat/completions", {"n": 2}),
    ("/v1/chat/completions", {"reasoning_effort": "huge"}),
    ("/v1/completions", {"n": 2}),
    ("/v1/completions", {"suffix": "b"}),
    ("/v1/completions", {"prompt": ["a", "b"]}),
    ("/v1/embeddings", {"input": [[1, 2, 3]]}),
    ("/v1/responses", {"input": [{"type": "item_reference", "id": "msg_1"}]}),
    ("/v1/responses", {"input": [{"role": "user", "content": [{"type": "input_file"}]}]}),
    ("/v1/responses", {"tool_choice": {"type": "function", "name": "undeclared"}}),
]


@pytest.mark.parametrize("endpoint", sorted(V1_BASE))
def test_ignored_openai_fields_change_nothing(server, endpoint):
    ignored = [f for f, status in openai_rows()[endpoint].items() if status == "ignored"]
    body = {**V1_BASE[endpoint], **{field: IGNORED_SAMPLES[field] for field in ignored}}
    answer = requests.post(server.url + endpoint, json=body, timeout=120)
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(("endpoint", "change"), V1_REFUSED)
def test_openai_limits_answer_400(server, endpoint, change):
    answer = requests.post(server.url + endpoint, json={**V1_BASE[endpoint], **change}, timeout=60)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["type"] == "invalid_request_error"
