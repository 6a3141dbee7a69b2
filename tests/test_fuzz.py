"""Property-based fuzzing of every JSON endpoint against a real server (hypothesis).

Bodies are drawn both in the right shape (known fields with valid and invalid values) and
as arbitrary JSON. Whatever comes in: no 5xx, every error is ``{"error": ...}`` JSON, every
stream is well-formed NDJSON/SSE, and the server keeps answering. Generation stays cheap:
``num_predict`` is forced small whenever ``options`` is an object or absent. Read-only
routes use the session server; copy/delete/create use a private store they may wreck.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from helpers import RunningServer, own_server, stop_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = settings(
    max_examples=100,
    deadline=None,
    database=None,  # no .hypothesis directory in the repo
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 70), max_value=1 << 70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
names = st.sampled_from(["tiny", "tiny:latest", "nope", "all-minilm", "", "../x", "a/b/c/d"])
names = names | st.text(max_size=40)
texts = st.text(max_size=40) | json_values
options = st.fixed_dictionaries(
    {},
    optional={
        "temperature": st.floats(-1, 3) | json_values,
        "top_k": st.integers(-5, 100) | json_values,
        "top_p": st.floats(-1, 2),
        "seed": st.integers(-(1 << 64), 1 << 64),
        "num_ctx": st.integers(-10, 1 << 25),
        "stop": st.lists(st.text(max_size=5), max_size=3) | json_values,
        "repeat_penalty": st.floats(-2, 5),
    },
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "tool", "", "x"]) | texts},
        optional={"content": texts, "images": json_values, "tool_calls": json_values},
    )
    | json_values,
    max_size=4,
)
blocks = st.lists(
    st.fixed_dictionaries({"type": st.just("text"), "text": texts})
    | st.fixed_dictionaries({"type": st.just("image"), "source": json_values})
    | st.fixed_dictionaries(
        {"type": st.just("tool_use")}, optional={"id": texts, "name": texts, "input": json_values}
    )
    | st.fixed_dictionaries(
        {"type": st.just("tool_result")}, optional={"tool_use_id": texts, "content": texts}
    )
    | st.fixed_dictionaries({"type": st.just("thinking"), "thinking": texts})
    | json_values,
    max_size=3,
)
anthropic_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "x"]) | texts},
        optional={"content": texts | blocks},
    )
    | json_values,
    max_size=3,
)
anthropic = {
    "model": names,
    "messages": anthropic_messages | json_values,
    "system": texts | blocks,
    "tools": st.lists(
        st.fixed_dictionaries({"name": texts}, optional={"input_schema": json_values}), max_size=2
    )
    | json_values,
    "thinking": st.fixed_dictionaries({"type": st.sampled_from(["enabled", "disabled", "x"])})
    | json_values,
}
common = {
    "model": names,
    "stream": st.booleans() | json_values,
    "keep_alive": st.sampled_from(["5m", "0", -1, 0, "bogus", 1e30]) | json_values,
    "options": options | json_values,
}

content_parts = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["input_text", "output_text", "input_image", "input_file"])},
        optional={"text": texts, "image_url": texts},
    )
    | json_values,
    max_size=3,
)
response_items = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(
                ["message", "function_call", "function_call_output", "reasoning", "x"]
            )
            | json_values,
            "role": st.sampled_from(["user", "assistant", "developer", "system"]) | texts,
            "content": content_parts | texts,
            "name": texts,
            "namespace": texts,
            "arguments": st.sampled_from(["{}", '{"a": 1}', "{", "[]"]) | texts,
            "call_id": st.sampled_from(["c1", "c2"]) | texts,
            "output": content_parts | texts,
            "summary": json_values,
            "encrypted_content": texts,
        },
    ),
    max_size=4,
)
response_tools = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["function", "namespace", "custom", "web_search", "x"])},
        optional={"name": texts, "parameters": json_values, "tools": json_values},
    ),
    max_size=3,
)

SHAPES: dict[str, dict[str, st.SearchStrategy]] = {
    "/api/generate": {
        **common,
        "prompt": texts,
        "system": texts,
        "raw": st.booleans() | json_values,
        "context": st.lists(st.integers(-5, 1 << 32), max_size=5) | json_values,
        "format": st.sampled_from(["json", "", {}]) | json_values,
        "think": st.sampled_from([True, False, "high", "x"]) | json_values,
        "top_logprobs": st.integers(-3, 30) | json_values,
        "suffix": texts,
    },
    "/api/chat": {**common, "messages": messages | json_values, "tools": json_values},
    "/api/show": {"model": names, "verbose": st.booleans() | json_values},
    "/api/embed": {
        **common,
        "input": st.lists(st.text(max_size=20), max_size=3) | texts,
        "dimensions": st.integers(-5, 1000) | json_values,
        "truncate": st.booleans() | json_values,
    },
    "/api/embeddings": {**common, "prompt": texts},
    "/api/pull": {"model": names, "stream": st.booleans(), "insecure": json_values},
    "/v1/chat/completions": {
        "model": names,
        "messages": messages | json_values,
        "stream": st.booleans() | json_values,
        "max_tokens": st.integers(-5, 4) | json_values,
        "temperature": st.floats(-1, 3) | json_values,
        "stop": json_values,
        "response_format": json_values,
        "stream_options": json_values,
    },
    "/v1/messages": {
        **anthropic,
        "max_tokens": st.integers(-5, 4) | json_values,
        "stream": st.booleans() | json_values,
        "temperature": st.floats(-1, 3) | json_values,
        "top_k": st.integers(-5, 100) | json_values,
        "stop_sequences": json_values,
    },
    "/v1/messages/count_tokens": anthropic,
    "/v1/responses": {
        "model": names,
        "input": response_items | texts,
        "instructions": texts,
        "tools": response_tools | json_values,
        "tool_choice": st.sampled_from(["auto", "none", "required"]) | json_values,
        "reasoning": st.fixed_dictionaries({}, optional={"effort": texts}) | json_values,
        "text": st.fixed_dictionaries({}, optional={"format": json_values}) | json_values,
        "previous_response_id": texts,
        "store": st.booleans() | json_values,
        "stream": st.booleans() | json_values,
        "max_output_tokens": st.integers(-5, 4) | json_values,
        "temperature": st.floats(-1, 3) | json_values,
    },
    "/v1/completions": {
        "model": names,
        "prompt": texts,
        "stream": st.booleans() | json_values,
        "max_tokens": st.integers(-5, 4) | json_values,
        "suffix": texts,
        "stop": json_values,
    },
}
STORE_SHAPES: dict[str, dict[str, st.SearchStrategy]] = {
    "/api/copy": {"source": names, "destination": names},
    "/api/delete": {"model": names},
    "/api/create": {
        "model": names,
        "from": names,
        "system": texts,
        "template": texts,
        "parameters": options | json_values,
        "messages": messages | json_values,
        "files": json_values,
        "modelfile": st.sampled_from(["FROM tiny\nPARAMETER temperature 0.5", "FROM ../x"]) | texts,
        "stream": st.booleans() | json_values,
    },
}
METHODS = {"/api/delete": "DELETE"}


def bodies(shape: dict[str, st.SearchStrategy]) -> st.SearchStrategy[Any]:
    """Bodies of the right shape (any subset of the known fields) or arbitrary JSON."""
    shaped = st.fixed_dictionaries({}, optional=shape).map(_cheap)
    return shaped | json_values.map(_cheap)


def _cheap(body: Any) -> Any:
    """Keep generation short: small num_predict wherever options would be honoured."""
    if isinstance(body, dict):
        opts = body.get("options")
        if opts is None or isinstance(opts, dict):
            body["options"] = {**(opts or {}), "num_predict": 3}
        if body.get("max_tokens") is None or isinstance(body.get("max_tokens"), bool):
            body["max_tokens"] = 3
        limit = body.get("max_output_tokens")  # /v1/responses
        if limit is None or isinstance(limit, bool):
            body["max_output_tokens"] = 3
    return body


def check(running: RunningServer, path: str, body: Any) -> None:
    """One request: no 5xx, JSON errors, well-formed streams."""
    method = METHODS.get(path, "POST")
    data = json.dumps(body).encode()
    with requests.request(method, running.url + path, data=data, stream=True, timeout=60) as r:
        raw = r.content
        kind = r.headers.get("Content-Type", "")
        if r.status_code >= 400:
            assert "error" in json.loads(raw), raw[:500]
            if _deliberate_500(path, body, r.status_code):
                _well_formed(json.loads(raw), body)
                return
        assert r.status_code < 500, (body, r.status_code, raw[:500])
        if r.status_code >= 400:
            return
        if "ndjson" in kind:
            for line in raw.splitlines():
                _well_formed(json.loads(line), body)
        elif "event-stream" in kind:  # OpenAI's data-only events, or Anthropic's named ones
            for frame in raw.decode().split("\n\n"):
                data = [line for line in frame.splitlines() if line.startswith("data: ")]
                if data and data[0] != "data: [DONE]":
                    _well_formed(json.loads(data[0].removeprefix("data: ")), body)
        elif raw:
            _well_formed(json.loads(raw), body)


def _deliberate_500(path: str, body: Any, status: int) -> bool:
    """Ollama answers a failed pull/create with ``stream: false`` with 500 (test_pull pins it)."""
    waited = isinstance(body, dict) and body.get("stream") is False
    return status == 500 and waited and path in ("/api/pull", "/api/create")


def _well_formed(obj: Any, body: Any) -> None:
    assert isinstance(obj, dict)
    error = obj.get("error")
    if error is not None:  # an error line ends a stream; it must not hide a crash
        text = error["message"] if isinstance(error, dict) else error
        assert "internal error" not in text, (body, text)


@pytest.fixture(scope="module")
def store_server(tmp_path_factory, tiny_model_dir) -> Iterator[RunningServer]:
    base = tmp_path_factory.mktemp("fuzz-store")
    running = own_server(base / "store", {"tiny": tiny_model_dir, "other": tiny_model_dir})
    yield running
    stop_server(running)


def fuzz(running: RunningServer, path: str, shape: Any) -> None:
    """Send generated bodies of ``shape`` to ``path``; the server must answer each sanely
    and still serve afterwards."""

    @FUZZ
    @given(body=bodies(shape))
    def run(body: Any) -> None:
        check(running, path, body)

    run()
    assert requests.get(running.url + "/api/tags", timeout=10).status_code == 200


@pytest.mark.parametrize("path", sorted(SHAPES))
def test_fuzzed_bodies_never_crash_the_server(server: RunningServer, path: str) -> None:
    fuzz(server, path, SHAPES[path])


@pytest.mark.parametrize("path", sorted(STORE_SHAPES))
def test_fuzzed_store_changes_never_crash_the_server(store_server, path: str) -> None:
    fuzz(store_server, path, STORE_SHAPES[path])
