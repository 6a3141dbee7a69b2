"""The bridge in front of an upstream Ollama (``MLX_BRIDGE_UPSTREAM``), over real HTTP.

Two set-ups: a real second bridge standing in for Ollama (its own store: ``upstream-only``
and a clashing ``tiny``), and a scripted fake (``fake_ollama``) where timing must be
controlled: incremental streaming, a wedged upstream, a killed one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import ollama
import pytest
import requests
from fake_ollama import GATED, FakeOllama
from helpers import RunningServer, free_port, start_server, stop_server, wait_until

from mlx_ollama_bridge.client import Client, ClientError
from mlx_ollama_bridge.config import HostAddress, Settings
from mlx_ollama_bridge.manifest import Manifest, hash_model_dir
from mlx_ollama_bridge.registry import Registry
from mlx_ollama_bridge.store.manifests import write_manifest
from mlx_ollama_bridge.upstream import LOCAL_ONLY_HEADER, Upstream

UPSTREAM_ONLY = "upstream-only:latest"
FEW = {"num_predict": 3, "temperature": 0}
CHECK_S = 0.5  # fake_front's MLX_BRIDGE_UPSTREAM_CHECK_S (default 5 s)


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator:
    """A real bridge playing "Ollama on another port", with models the front lacks."""
    root = tmp_path_factory.mktemp("upstream-store")
    registry = Registry(Settings(models_dir=root / "models", config_dir=root / "config"))
    files = hash_model_dir(tiny_model_dir)
    for name in ("upstream-only", "tiny"):  # "tiny" clashes with the front's own tiny
        manifest = Manifest(
            model_dir=str(tiny_model_dir),
            format="mlx",
            source="test",
            files=files,
            created_at=time.time(),
        )
        write_manifest(registry, name, manifest)
    env = {
        "MLX_BRIDGE_MODELS": str(root / "models"),
        "MLX_BRIDGE_CONFIG_DIR": str(root / "config"),
        "HF_HUB_OFFLINE": "1",
        "MLX_BRIDGE_UPSTREAM": "off",
    }
    running = start_server(env, root / "upstream.log")
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def front(shared_store, upstream: RunningServer, tmp_path_factory) -> Iterator[RunningServer]:
    """The bridge clients talk to: the shared store, forwarding to ``upstream``."""
    log = tmp_path_factory.mktemp("front") / "front.log"
    running = start_server({**shared_store.env, "MLX_BRIDGE_UPSTREAM": upstream.url}, log)
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOllama]:
    server = FakeOllama(gate_timeout_s=10.0).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fake_front(shared_store, fake: FakeOllama, tmp_path_factory) -> Iterator[RunningServer]:
    """A bridge in front of the fake; a 3 s load timeout is its longest wait between chunks;
    it trusts the fake's last "up" for CHECK_S."""
    log = tmp_path_factory.mktemp("fake-front") / "front.log"
    env = {**shared_store.env, "MLX_BRIDGE_UPSTREAM": fake.url, "OLLAMA_LOAD_TIMEOUT": "3s"}
    env["MLX_BRIDGE_UPSTREAM_CHECK_S"] = str(CHECK_S)
    running = start_server(env, log)
    yield running
    stop_server(running)


def post(url: str, path: str, body: dict, **kwargs) -> requests.Response:
    return requests.post(url + path, data=json.dumps(body), timeout=60, **kwargs)


def ndjson(response: requests.Response) -> list[dict]:
    return [json.loads(line) for line in response.iter_lines() if line]


# -- settings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", "http://127.0.0.1:11435"),
        ("off", None),
        ("OFF", None),
        ("none", None),
        (":11500", "http://127.0.0.1:11500"),
        ("192.168.1.5", "http://192.168.1.5:11434"),
        ("https://ollama.internal/", "https://ollama.internal:443"),
    ],
)
def test_upstream_setting_parses_like_ollama_host(value, expected):
    assert Settings.from_env({"MLX_BRIDGE_UPSTREAM": value, "HOME": "/nowhere"}).upstream == (
        expected
    )


def test_upstream_pointing_at_the_bridge_itself_is_disabled():
    settings = Settings(host=HostAddress(port=11500), upstream="http://127.0.0.1:11500")
    assert Upstream.from_settings(settings) is None
    assert Upstream.from_settings(Settings(upstream=None)) is None
    assert Upstream.from_settings(Settings(upstream="http://127.0.0.1:1")).base_url.endswith(":1")


# -- a real second bridge as upstream -----------------------------------------------------


def test_chat_for_an_upstream_only_model_streams_through(front, upstream):
    body = {"model": "upstream-only", "messages": [{"role": "user", "content": "hi"}]}
    response = post(front.url, "/api/chat", {**body, "options": FEW}, stream=True)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    lines = ndjson(response)
    assert len(lines) >= 2 and all(line["model"] == "upstream-only" for line in lines)
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] == 3
    assert all(line["message"]["role"] == "assistant" for line in lines)
    direct = ndjson(post(upstream.url, "/api/chat", {**body, "options": FEW}))
    text = "".join(line["message"]["content"] for line in lines)
    assert text == "".join(line["message"]["content"] for line in direct)  # same model, greedy


def test_generate_show_and_query_free_non_stream_pass_through(front):
    whole = post(
        front.url,
        "/api/generate",
        {"model": UPSTREAM_ONLY, "prompt": "hi", "stream": False, "options": FEW},
    )
    assert whole.status_code == 200 and whole.json()["done"] is True
    shown = post(front.url, "/api/show", {"model": "upstream-only"})
    assert shown.status_code == 200
    assert shown.json()["model_info"]["general.architecture"] == "llama"


def test_errors_keep_their_status_and_body(front):
    missing = post(front.url, "/api/chat", {"model": "neither-has-it", "messages": []})
    assert missing.status_code == 404
    assert missing.json() == {"error": "model 'neither-has-it' not found"}
    bad = post(front.url, "/api/generate", {"model": UPSTREAM_ONLY, "prompt": "x", "think": "x"})
    assert bad.status_code == 400  # the upstream's own validation error, passed on unchanged
    assert "invalid think value" in bad.json()["error"]


def test_tags_merge_both_sides_and_say_where_each_runs(front, upstream):
    models = requests.get(front.url + "/api/tags", timeout=30).json()["models"]
    by_name = {m["name"]: m for m in models}
    assert by_name[UPSTREAM_ONLY]["details"]["backend"] == "ollama"
    assert by_name["tiny:latest"]["details"]["backend"] == "mlx"  # the bridge wins a clash
    assert by_name["smollm2:135m"]["details"]["backend"] == "mlx"
    assert [m["name"] for m in models].count("tiny:latest") == 1
    keys = {"name", "model", "modified_at", "size", "digest", "details"}
    assert all(keys <= set(m) for m in models)
    assert {"family", "parameter_size", "quantization_level"} <= set(
        by_name[UPSTREAM_ONLY]["details"]
    )
    local = requests.get(front.url + "/api/tags", headers={LOCAL_ONLY_HEADER: "1"}, timeout=30)
    assert UPSTREAM_ONLY not in {m["name"] for m in local.json()["models"]}


def test_ps_merges_loaded_models_of_both_sides(front):
    for model in ("upstream-only", "tiny"):
        loaded = post(front.url, "/api/generate", {"model": model, "keep_alive": "2m"})
        assert loaded.json()["done_reason"] == "load"
    running = requests.get(front.url + "/api/ps", timeout=30).json()["models"]
    backends = {m["name"]: m["details"]["backend"] for m in running}
    assert backends[UPSTREAM_ONLY] == "ollama" and backends["tiny:latest"] == "mlx"
    assert all({"expires_at", "size_vram", "context_length", "digest"} <= set(m) for m in running)


def test_ollama_python_client_sees_both_backends(front):
    client = ollama.Client(host=front.url)
    names = {m.model for m in client.list().models}
    assert {UPSTREAM_ONLY, "tiny:latest", "smollm2:135m"} <= names
    parts = list(
        client.chat(
            model="upstream-only",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            options=FEW,
        )
    )
    assert parts[-1].done and len(parts) >= 2
    with pytest.raises(ollama.ResponseError) as error:
        client.chat(model="nowhere", messages=[{"role": "user", "content": "hi"}])
    assert error.value.status_code == 404


def test_local_only_requests_are_never_forwarded(front):
    reply = post(
        front.url, "/api/show", {"model": "upstream-only"}, headers={LOCAL_ONLY_HEADER: "1"}
    )
    assert reply.status_code == 404


# -- a scripted upstream: timing ----------------------------------------------------------


def test_stream_chunks_arrive_before_upstream_finishes(fake_front, fake):
    fake.reset_gate()
    body = {"model": GATED, "messages": [{"role": "user", "content": "hi"}]}
    lines = Client(fake_front.url).stream("/api/chat", body)
    first = next(lines)  # the fake is now holding the rest until we release it
    assert first["message"]["content"] == "Hel"
    fake.release()
    rest = list(lines)
    assert fake.released_in_time is True
    assert [line.get("done") for line in rest] == [None, True]
    assert rest[0]["message"]["content"] == "lo"


def test_request_is_forwarded_unchanged(fake_front, fake):
    body = {"model": "ghost", "messages": [], "options": {"seed": 7}}
    reply = post(fake_front.url, "/api/chat?x=1", body, headers={"User-Agent": "probe/1"})
    assert reply.status_code == 404 and reply.json() == {"error": "model 'ghost' not found"}
    method, path, headers, sent = fake.requests[-1]
    assert (method, path, json.loads(sent)) == ("POST", "/api/chat?x=1", body)
    assert headers["User-Agent"] == "probe/1" and headers[LOCAL_ONLY_HEADER] == "1"


def test_v1_requests_for_an_upstream_only_model_are_forwarded(fake_front, fake):
    body = {"model": "gated", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    reply = post(fake_front.url, "/v1/chat/completions", body)
    assert reply.status_code == 200
    assert reply.json() == {"object": "fake", "path": "/v1/chat/completions", "model": "gated"}
    method, path, _headers, sent = fake.requests[-1]
    assert (method, path, json.loads(sent)) == ("POST", "/v1/chat/completions", body)
    seen = len(fake.requests)
    local = post(fake_front.url, "/v1/chat/completions", {**body, "model": "tiny", "max_tokens": 2})
    assert local.status_code == 200 and local.json()["object"] == "chat.completion"
    assert all(path != "/v1/chat/completions" for _m, path, _h, _b in fake.requests[seen:])


def test_v1_responses_for_an_upstream_only_model_are_forwarded(fake_front, fake):
    body = {"model": "gated", "input": "hi", "store": False}
    reply = post(fake_front.url, "/v1/responses", body)
    assert reply.json() == {"object": "fake", "path": "/v1/responses", "model": "gated"}
    method, path, _headers, sent = fake.requests[-1]
    assert (method, path, json.loads(sent)) == ("POST", "/v1/responses", body)


def test_anthropic_messages_for_an_upstream_only_model_are_forwarded(fake_front, fake):
    body = {"model": "gated", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    reply = post(fake_front.url, "/v1/messages?beta=true", body)
    assert reply.status_code == 200
    assert reply.json() == {"object": "fake", "path": "/v1/messages?beta=true", "model": "gated"}
    missing = post(fake_front.url, "/v1/messages", {**body, "model": "tiny", "max_tokens": 0})
    assert missing.status_code == 400  # a local model: the bridge's own Anthropic error
    assert missing.json()["error"]["type"] == "invalid_request_error"


def test_v1_chat_streams_through_from_a_real_upstream(front):
    body = {"model": "upstream-only", "messages": [{"role": "user", "content": "hi"}]}
    reply = post(front.url, "/v1/chat/completions", {**body, "max_tokens": 3, "stream": True})
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("text/event-stream")
    events = [line for line in reply.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0][len("data: ") :])["model"] == "upstream-only"


def test_upstream_silent_mid_stream_ends_with_an_error_line(fake_front, fake):
    fake.reset_gate()
    body = {"model": GATED, "messages": [{"role": "user", "content": "hi"}]}
    lines = Client(fake_front.url).stream("/api/chat", body)
    assert next(lines)["message"]["content"] == "Hel"
    with pytest.raises(ClientError, match="stopped responding"):
        list(lines)  # the front's 3 s read timeout ends it (the fake would finish it at 10 s)
    fake.release()


def test_upstream_silent_mid_sse_stream_ends_with_an_anthropic_error_event(fake_front, fake):
    fake.reset_gate()
    body = {"model": GATED, "max_tokens": 5, "stream": True, "messages": [{"role": "user"}]}
    with requests.post(fake_front.url + "/v1/messages", json=body, stream=True, timeout=30) as r:
        frames = [f for f in r.text.split("\n\n") if f.strip()]  # ends at the 3 s read timeout
    fake.release()
    assert frames[0].startswith("event: message_start\n")
    event, data = frames[-1].strip().split("\n")
    assert event == "event: error"
    error = json.loads(data.removeprefix("data: "))
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert "stopped responding" in error["error"]["message"]


def test_wedged_then_killed_upstream_does_not_hang_the_front(fake_front, fake):
    fake.hang = True
    # the front's cached "up" came with its newest request to the fake: once that is older
    # than CHECK_S, the front's next request checks again and meets the wedged upstream
    assert wait_until(lambda: time.monotonic() - fake.last_request_at > CHECK_S)
    # the wedged fake never answers: a front that waited on it would hang every call below
    # until the request's own timeout; it answers instead, after its short probe timeouts
    tags = requests.get(fake_front.url + "/api/tags", timeout=30)
    assert tags.status_code == 200 and "tiny:latest" in {m["name"] for m in tags.json()["models"]}
    missing = post(fake_front.url, "/api/chat", {"model": GATED, "messages": []})
    assert missing.status_code == 404 and "not found" in missing.json()["error"]
    own = post(
        fake_front.url,
        "/api/generate",
        {"model": "tiny", "prompt": "hi", "stream": False, "options": FEW},
    )
    assert own.status_code == 200 and own.json()["done"] is True
    fake.hang = False
    fake.stop()  # killed: connections are refused from now on
    for _ in range(2):  # whether the front still believes it is up or not
        gone = post(fake_front.url, "/api/chat", {"model": GATED, "messages": []})
        assert gone.status_code == 404


def test_upstream_down_from_the_start(shared_store, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    running = start_server({**shared_store.env, "MLX_BRIDGE_UPSTREAM": dead}, tmp_path / "log")
    try:
        names = {
            m["name"] for m in requests.get(running.url + "/api/tags", timeout=30).json()["models"]
        }
        assert "tiny:latest" in names
        missing = post(running.url, "/api/show", {"model": "upstream-only"})
        assert missing.status_code == 404
    finally:
        stop_server(running)
