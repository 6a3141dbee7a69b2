"""Every endpoint checks its body against its schema: bad input is a 4xx ``{"error": ...}``.

Most cases run against the session server; the body cap and the store-escape checks use a
private server over a fresh store (a small ``MLX_BRIDGE_MAX_BODY_BYTES``, files planted
next to the store that no request may touch).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from helpers import RunningServer, own_server, stop_server

from mlx_ollama_bridge.errors import BadRequest
from mlx_ollama_bridge.server import schemas

TINY = "tiny"
CAP = 64 * 1024

JSON_ROUTES = [
    ("POST", "/api/generate"),
    ("POST", "/api/chat"),
    ("POST", "/api/show"),
    ("POST", "/api/embed"),
    ("POST", "/api/embeddings"),
    ("POST", "/api/copy"),
    ("DELETE", "/api/delete"),
    ("POST", "/api/create"),
    ("POST", "/api/pull"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
]


def error_of(response: requests.Response) -> str:
    """The error text of a native or OpenAI error body."""
    error = response.json()["error"]
    return error["message"] if isinstance(error, dict) else error


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"model": "tiny", ', "invalid JSON"),
        (b'{"model": "tiny", "options": {"temperature": NaN}}', "invalid JSON"),
        (b'{"model": "tiny", "options": {"temperature": Infinity}}', "invalid JSON"),
        (b'{"model": "tiny", "options": {"temperature": -Infinity}}', "invalid JSON"),
        (b'{"model": "tiny", "options": {"temperature": 1e400}}', "invalid JSON"),
        (b'{"model": "tiny\xff\xfe"}', "invalid UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"a": ' * 1000 + b"1" + b"}" * 1000, "nested too deeply"),
        (b"[1, 2]", "cannot unmarshal array"),
        (b"", "missing request body"),
    ],
)
def test_malformed_bodies_are_400_json(server: RunningServer, method, path, raw, expected):
    response = requests.request(method, server.url + path, data=raw, timeout=30)
    assert response.status_code == 400, response.text
    assert expected in error_of(response)


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/api/generate", {"model": TINY, "prompt": 1}, 'field "prompt" must be string'),
        ("/api/generate", {"model": 7, "prompt": "x"}, 'field "model" must be string'),
        ("/api/generate", {"model": TINY, "stream": "yes"}, 'field "stream" must be bool'),
        ("/api/generate", {"model": TINY, "top_logprobs": 1.5}, 'field "top_logprobs"'),
        ("/api/generate", {"model": TINY, "top_logprobs": 99}, "between 0 and 20"),
        ("/api/generate", {"model": TINY, "raw": 1}, 'field "raw" must be bool'),
        ("/api/chat", {"model": TINY, "messages": [{"role": "user"}] * 10_001}, "too many"),
        ("/api/show", {"model": TINY, "verbose": "no"}, 'field "verbose" must be bool'),
        ("/api/embed", {"model": "all-minilm", "dimensions": -1}, 'field "dimensions"'),
        ("/api/embed", {"model": "all-minilm", "input": ["a"] * 10_001}, "too many inputs"),
        ("/api/copy", {"source": TINY, "destination": ["x"]}, 'field "destination"'),
        ("/api/pull", {"model": TINY, "insecure": "no"}, 'field "insecure" must be bool'),
        ("/api/create", {"model": "x", "from": TINY, "system": 3}, 'field "system"'),
        ("/v1/chat/completions", {"model": TINY, "messages": [], "max_tokens": -5}, "max_tokens"),
        ("/v1/chat/completions", {"model": TINY, "messages": [], "n": 2}, "'n' must be"),
        ("/v1/completions", {"model": TINY, "prompt": "x", "max_tokens": "9"}, "'max_tokens'"),
    ],
)
def test_wrong_types_and_ranges_are_400(server: RunningServer, path, body, expected):
    response = requests.post(server.url + path, json=body, timeout=30)
    assert response.status_code == 400, response.text
    assert expected in error_of(response)


@pytest.mark.parametrize(
    "options",
    [
        {"num_predict": -(1 << 40)},
        {"num_predict": 1 << 40},
        {"num_ctx": 0},
        {"num_ctx": -1},
        {"num_ctx": 1 << 40},
        {"temperature": -1},
        {"temperature": 1e300},
        {"top_p": 2},
        {"seed": 1 << 70},
    ],
)
@pytest.mark.parametrize("path", ["/api/generate", "/api/chat", "/api/embed"])
def test_out_of_range_options_are_400(server: RunningServer, path, options):
    body = {"model": TINY, "prompt": "hi", "options": options, "stream": False}
    body |= {"messages": [{"role": "user", "content": "hi"}], "input": "hi"}
    response = requests.post(server.url + path, json=body, timeout=30)
    assert response.status_code == 400, response.text
    assert "option" in error_of(response)


BAD_NAMES = [
    "../../etc/passwd",
    "/etc/passwd",
    "..",
    "a/../../b",
    "a\\..\\b",
    "tiny\x00.evil",
    "x" * 600,
    "~/model",
    "a//b",
]


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize(
    ("method", "path", "key"),
    [
        ("POST", "/api/generate", "model"),
        ("POST", "/api/chat", "model"),
        ("POST", "/api/show", "model"),
        ("POST", "/api/embed", "model"),
        ("DELETE", "/api/delete", "model"),
        ("POST", "/api/pull", "model"),
        ("POST", "/api/create", "model"),
        ("POST", "/api/copy", "destination"),
        ("POST", "/api/copy", "source"),
    ],
)
def test_path_like_names_never_succeed(server: RunningServer, method, path, key, name):
    body = {"model": TINY, "source": TINY, "destination": "copy", "from": TINY, "prompt": "x"}
    body[key] = name
    body["messages"] = [{"role": "user", "content": "x"}]
    response = requests.request(method, server.url + path, json=body, timeout=30)
    assert response.status_code in (400, 404), response.text
    assert error_of(response)


def test_control_characters_in_names_are_refused_by_the_schema():
    for name in ("a\x00b", "a\nb", "a\x7fb"):
        with pytest.raises(BadRequest):
            schemas.validate({"model": name}, schemas.GENERATE)
    schemas.validate({"model": "h" * 350 + "/ns/m:tag"}, schemas.GENERATE)  # longest kind is fine


# -- a private server: body cap and the store's walls ---------------------------------------


@pytest.fixture(scope="module")
def walled(tmp_path_factory, tiny_model_dir) -> Iterator[tuple[RunningServer, Path]]:
    """A server over ``<base>/store`` with a small body cap; ``<base>/victim`` lies outside."""
    base = tmp_path_factory.mktemp("walled")
    (base / "victim").mkdir()
    (base / "victim" / "keep.txt").write_text("keep")
    running = own_server(base / "store", {TINY: tiny_model_dir}, MLX_BRIDGE_MAX_BODY_BYTES=str(CAP))
    yield running, base
    stop_server(running)


def test_a_body_over_the_cap_is_413(walled):
    running, _ = walled
    big = {"model": TINY, "prompt": "x" * (CAP + 10)}
    response = requests.post(running.url + "/api/generate", json=big, timeout=30)
    assert (response.status_code, response.json()) == (413, {"error": "request body too large"})
    assert requests.get(running.url + "/api/tags", timeout=10).status_code == 200


def test_a_chunked_body_over_the_cap_is_413(walled):
    running, _ = walled

    def chunks() -> Iterator[bytes]:
        yield b'{"model": "tiny", "prompt": "'
        for _ in range(CAP // 1024 + 8):
            yield b"x" * 1024
        yield b'"}'

    response = requests.post(running.url + "/api/generate", data=chunks(), timeout=30)
    assert response.status_code == 413, response.text
    assert response.json() == {"error": "request body too large"}
    assert requests.get(running.url + "/api/tags", timeout=10).status_code == 200


def test_store_operations_stay_inside_the_store(walled):
    running, base = walled
    before = _outside_the_store(base)
    for name in ("../victim", "../../victim", "../victim/keep.txt", str(base / "victim")):
        for method, path, body in [
            ("DELETE", "/api/delete", {"model": name}),
            ("POST", "/api/copy", {"source": TINY, "destination": name}),
            ("POST", "/api/create", {"model": name, "from": TINY}),
            ("POST", "/api/create", {"model": "ok", "files": {name: "sha256:" + "0" * 64}}),
            ("POST", "/api/pull", {"model": name}),
        ]:
            response = requests.request(method, running.url + path, json=body, timeout=30)
            assert response.status_code in (400, 404), (method, path, name, response.text)
    blob = requests.post(running.url + "/api/blobs/sha256:..%2F..%2Fvictim", data=b"x", timeout=9)
    assert blob.status_code in (400, 404)
    assert _outside_the_store(base) == before
    assert (base / "victim" / "keep.txt").read_text() == "keep"


def _outside_the_store(base: Path) -> list[str]:
    """Everything next to the store (the store itself may gain a lock file)."""
    top = [p.name for p in base.iterdir()]
    return sorted(top + [str(p.relative_to(base)) for p in (base / "victim").rglob("*")])


@pytest.mark.parametrize("body", [{"input": [""]}, {"input": ["a", ""]}])
def test_embedding_an_empty_text_on_a_generation_model_is_not_a_500(server, body):
    response = requests.post(server.url + "/api/embed", json={"model": TINY, **body}, timeout=30)
    assert response.status_code == 200, response.text
    vectors = response.json()["embeddings"]
    assert len(vectors) == len(body["input"]) and all(len(v) == len(vectors[0]) for v in vectors)


@pytest.mark.parametrize("body", [{"input": [""]}, {"input": ["a", ""]}])
def test_embedding_an_empty_text_on_an_embedding_model(server, body):
    response = requests.post(
        server.url + "/api/embed", json={"model": "all-minilm", **body}, timeout=30
    )
    assert response.status_code < 500, response.text


def test_bad_options_on_legacy_embeddings_are_400_not_500(server):
    body = {"model": TINY, "prompt": "x", "options": {"num_ctx": 0}}
    response = requests.post(server.url + "/api/embeddings", json=body, timeout=30)
    assert response.status_code == 400, response.text
    assert "num_ctx" in response.json()["error"]
