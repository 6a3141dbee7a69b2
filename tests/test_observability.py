"""Request ids, the access log and ``/health`` (stub engine: nothing here generates)."""

from __future__ import annotations

import logging
import re
from types import SimpleNamespace

import pytest
import requests
from flask import Response, request
from helpers import StubEngine, make_app

from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.server.access_log import (
    AccessRecord,
    current_access,
    note_model,
    request_id,
    sanitize_request_id,
)
from mlx_ollama_bridge.server.observability import register_observability

ACCESS = "mlx_ollama_bridge.access"


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch):
    app = make_app(monkeypatch)

    @app.post("/test/echo")
    def _echo() -> Response:
        note_model((request.get_json(silent=True) or {}).get("model"))
        return Response(request_id() or "", mimetype="text/plain")

    @app.get("/test/stream")
    def _stream() -> Response:
        record = current_access()
        note_model("tiny:latest")

        def lines():
            yield "one\n"
            yield "two\n"
            record.note(eval_count=2)  # after the handler returned: kept for the log line

        return Response(lines(), mimetype="application/x-ndjson")

    return app


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == ACCESS]


# -- request ids ---------------------------------------------------------------------------


def test_request_id_is_generated_and_returned(app):
    response = app.test_client().get("/api/version")
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])
    other = app.test_client().get("/api/version")
    assert other.headers["X-Request-ID"] != response.headers["X-Request-ID"]


def test_incoming_request_id_is_honoured_and_visible_to_handlers(app):
    response = app.test_client().post("/test/echo", headers={"X-Request-ID": "req-42.a"})
    assert response.headers.getlist("X-Request-ID") == ["req-42.a"]
    assert response.text == "req-42.a"


@pytest.mark.parametrize(
    ("incoming", "kept"),
    [
        ("abc", True),
        ("a" * 128, True),
        ('with space and "quotes"', True),
        ("a" * 129, False),
        ("", False),
        ("caf\u00e9", False),
        ("tab\there", False),
    ],
)
def test_request_id_sanitising(incoming, kept):
    result = sanitize_request_id(incoming)
    assert (result == incoming) is kept
    assert 1 <= len(result) <= 128 and result.isprintable() and result.isascii()


def test_rejected_requests_get_a_request_id_and_a_log_line(app, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS)
    response = app.test_client().get(
        "/api/version",
        headers={"Origin": "https://evil.example", "X-Request-ID": "r-403"},
        buffered=True,
    )
    assert response.status_code == 403
    assert response.headers["X-Request-ID"] == "r-403"
    (line,) = _access_lines(caplog)
    assert "status=403" in line and "request_id=r-403" in line


# -- the access log ------------------------------------------------------------------------


def test_one_access_line_per_request_with_model(app, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS)
    client = app.test_client()
    client.post("/test/echo", json={"model": "smollm2:135m"}, buffered=True)
    client.get("/no/such/route", buffered=True)
    first, second = _access_lines(caplog)
    assert first.startswith("method=POST path=/test/echo status=200 duration_ms=")
    assert "model=smollm2:135m" in first
    assert re.search(r"request_id=[0-9a-f]{32}", first)
    assert "method=GET path=/no/such/route status=404" in second
    assert "model=" not in second


def test_streamed_response_is_logged_when_the_stream_closes(app, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS)
    response = app.test_client().get("/test/stream")
    assert _access_lines(caplog) == []  # still open
    assert response.get_data() == b"one\ntwo\n"
    response.close()
    (line,) = _access_lines(caplog)
    assert "status=200" in line and "bytes=8" in line
    assert "model=tiny:latest" in line and "eval_count=2" in line


def test_log_values_are_quoted_so_lines_cannot_be_forged():
    record = AccessRecord("id 1", "GET", '/a b"\nstatus=200', "127.0.0.1")
    line = record.line(1.25)
    assert "\n" not in line
    assert 'path="/a b\\"\\nstatus=200"' in line
    assert 'request_id="id 1"' in line and "duration_ms=1.2" in line


def test_registering_twice_logs_once(monkeypatch, caplog):
    app = make_app(monkeypatch)
    register_observability(app, Settings.from_env())
    caplog.set_level(logging.INFO, logger=ACCESS)
    response = app.test_client().get("/api/version", buffered=True)
    assert len(response.headers.getlist("X-Request-ID")) == 1
    assert len(_access_lines(caplog)) == 1


# -- /health -------------------------------------------------------------------------------


def test_health_while_the_engine_runs(monkeypatch):
    engine = StubEngine(alive=True, running=["a", "b"])
    response = make_app(monkeypatch, engine).test_client().get("/health")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["engine"] == "running"
    assert body["models_loaded"] == 2
    assert body["uptime_s"] >= 0


def test_health_before_the_engine_starts_is_idle(monkeypatch):
    client = make_app(monkeypatch, StubEngine(alive=False)).test_client()
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json()["engine"] == "idle"
    assert client.head("/health").status_code == 200


def test_health_is_503_once_the_engine_thread_died(monkeypatch):
    engine = StubEngine(alive=True)
    client = make_app(monkeypatch, engine).test_client()
    assert client.get("/health").status_code == 200
    engine.alive = False  # the scheduler thread crashed
    response = client.get("/health")
    assert response.status_code == 503
    assert response.get_json()["status"] == "unavailable"
    assert response.get_json()["engine"] == "down"


# -- /metrics ------------------------------------------------------------------------------


def test_metrics_count_requests_by_route_and_status(monkeypatch):
    loaded = SimpleNamespace(name="a:latest", size_bytes=1234, active_requests=0)
    engine = StubEngine(alive=True, running=[loaded])
    client = make_app(monkeypatch, engine).test_client()
    client.get("/api/version", buffered=True)
    client.get("/api/version", headers={"Origin": "https://evil.example"}, buffered=True)
    client.get("/no/such/route", buffered=True)
    client.open("/api/version", method="BREW", buffered=True)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.text
    for sample in (
        'mlx_bridge_http_requests_total{method="GET",route="/api/version",status="200"} 1.0',
        'mlx_bridge_http_requests_total{method="GET",route="/api/version",status="403"} 1.0',
        'mlx_bridge_http_requests_total{method="GET",route="unmatched",status="404"} 1.0',
        'mlx_bridge_http_requests_total{method="OTHER",route="unmatched",status="405"} 1.0',
        'mlx_bridge_http_request_duration_seconds_count{route="/api/version"} 2.0',
        "mlx_bridge_engine_up 1.0",
        "mlx_bridge_models_loaded 1.0",
        'mlx_bridge_model_memory_bytes{model="a:latest"} 1234.0',
        "mlx_bridge_queue_depth 0.0",  # a stub engine without a queue
    ):
        assert sample in text, sample
    assert re.search(r"^mlx_bridge_resident_memory_bytes [1-9]", text, re.MULTILINE)


def test_metrics_need_the_api_key_like_everything_else(monkeypatch):
    client = make_app(monkeypatch, MLX_BRIDGE_API_KEY="k").test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer k"}).status_code == 200


# -- a real server ---------------------------------------------------------------------------


def test_real_server_returns_request_ids_and_health(server):
    from helpers import wait_until

    response = requests.get(f"{server.url}/health", headers={"X-Request-ID": "probe-1"})
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "probe-1"
    body = response.json()
    assert body["engine"] == "running"
    # readiness: a no-op went through the real scheduler thread and back
    assert body["ready"] is True
    assert body["engine_latency_ms"] > 0
    # A request is counted when its response closes, a moment after the client has it.
    counted = 'route="/health",status="200"'
    assert wait_until(lambda: counted in requests.get(f"{server.url}/metrics").text)
    metrics = requests.get(f"{server.url}/metrics")
    assert metrics.status_code == 200
    assert "mlx_bridge_engine_up 1.0" in metrics.text
    # the access line is logged as the response closes, too
    assert wait_until(lambda: "request_id=probe-1" in server.log()), server.log()[-3000:]
