"""Request ids, one access-log line per request, metrics, and the health report behind
``/health``.

The access log is a WSGI middleware around the Flask app rather than request hooks, so it
sees every request whatever answers it (a CORS 403, a routing 404, an error handler) and
logs streamed responses when the stream closes, with the real status, size and duration.
Handlers add fields through :func:`note_model` / :func:`current_access` (the body is never
read twice: the handler that parses it reports the model). The same finished-request hook
feeds the per-model usage book of the diagnostics view; generations report their time to
first token and token counts through :func:`generation_probe`.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, current_app, has_request_context, request

from .. import __version__
from ..config import Settings
from .context import EXTENSION
from .usage import UsageBook

access_log = logging.getLogger("mlx_ollama_bridge.access")
log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
_ENVIRON_KEY = "mlx_ollama_bridge.access"
_STATE = "mlx_ollama_bridge.observability"
_REQUEST_ID = re.compile(r"[\x20-\x7e]{1,128}")  # printable ASCII, at most 128 characters
_BARE_VALUE = re.compile(r"[\w.,:/@+\-]+")  # log values that need no quoting


@dataclass
class AccessRecord:
    """What the access log says about one request; handlers may add fields."""

    request_id: str
    method: str
    path: str
    remote: str
    started: float = field(default_factory=time.monotonic)
    status: int = 0
    bytes_sent: int = 0
    route: str = ""  # the URL rule that matched ("" before routing, e.g. unknown paths)
    fields: dict[str, Any] = field(default_factory=dict)

    def note(self, **fields: Any) -> None:
        """Add fields to the log line (e.g. ``eval_count`` once a stream has finished)."""
        self.fields.update({k: v for k, v in fields.items() if v is not None})

    def line(self, duration_ms: float) -> str:
        """The key=value log line."""
        pairs: dict[str, Any] = {
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "duration_ms": f"{duration_ms:.1f}",
            "bytes": self.bytes_sent,
            "request_id": self.request_id,
            **self.fields,
            "remote": self.remote,
        }
        return " ".join(f"{key}={_quote(value)}" for key, value in pairs.items())


def _quote(value: Any) -> str:
    """Values with spaces, quotes or control characters are JSON-quoted (no log injection)."""
    text = str(value)
    return text if _BARE_VALUE.fullmatch(text) else json.dumps(text)


def sanitize_request_id(value: str | None) -> str:
    """An incoming ``X-Request-ID`` if it is printable ASCII of at most 128 characters,
    else a fresh id (an unusable id is replaced, not repaired, so ids never collide)."""
    value = (value or "").strip()
    return value if _REQUEST_ID.fullmatch(value) else uuid.uuid4().hex


# -- helpers for handlers ----------------------------------------------------------------------


def current_access() -> AccessRecord | None:
    """This request's access record (keep it to annotate from a streaming generator)."""
    if not has_request_context():
        return None
    return request.environ.get(_ENVIRON_KEY)


def request_id() -> str | None:
    """This request's id (the one returned in ``X-Request-ID``)."""
    record = current_access()
    return record.request_id if record else None


def note_model(name: object) -> None:
    """Record the model a request named; call where the JSON body is parsed."""
    record = current_access()
    if record is not None and isinstance(name, str) and name:
        record.note(model=name[:256])


# -- the middleware ------------------------------------------------------------------------------


class AccessLogMiddleware:
    """WSGI middleware: assigns the request id, returns it, logs one line per request."""

    def __init__(
        self, wsgi_app: Callable[..., Iterable[bytes]], on_finish: Callable[[AccessRecord], None]
    ) -> None:
        self.wsgi_app = wsgi_app
        self.on_finish = on_finish

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        record = AccessRecord(
            request_id=sanitize_request_id(environ.get("HTTP_X_REQUEST_ID")),
            method=environ.get("REQUEST_METHOD", ""),
            path=environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""),
            remote=environ.get("REMOTE_ADDR", ""),
        )
        environ[_ENVIRON_KEY] = record
        environ["HTTP_X_REQUEST_ID"] = record.request_id  # what handlers see is what we log

        def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None):
            record.status = int(status.split(" ", 1)[0])
            headers = [(k, v) for k, v in headers if k.lower() != REQUEST_ID_HEADER.lower()]
            headers.append((REQUEST_ID_HEADER, record.request_id))
            return start_response(status, headers, exc_info)

        try:
            body = self.wsgi_app(environ, _start_response)
        except BaseException:
            record.status = record.status or 500
            self.on_finish(record)
            raise
        return _LoggedBody(body, record, self.on_finish)


class _LoggedBody:
    """The response iterable, counting bytes; the log line is written on ``close()``."""

    def __init__(
        self,
        body: Iterable[bytes],
        record: AccessRecord,
        on_finish: Callable[[AccessRecord], None],
    ) -> None:
        self._body = body
        self._record = record
        self._on_finish = on_finish
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            self._record.bytes_sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            if not self._done:
                self._done = True
                self._on_finish(self._record)


# -- state, health -------------------------------------------------------------------------------


_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_DURATION_BUCKETS_S = (0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# First tokens come after queueing, loading and prompt evaluation: ms on a warm small model,
# tens of seconds for a cold load of a large one.
_TTFT_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """Prometheus metrics of one app (its own registry, so tests can build many apps)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mlx_bridge_http_requests",
            "HTTP requests answered.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "mlx_bridge_http_request_duration_seconds",
            "Time from request to the last byte sent (streams included).",
            ["route"],
            buckets=_DURATION_BUCKETS_S,
            registry=self.registry,
        )
        self.engine_up = Gauge(
            "mlx_bridge_engine_up", "1 while the engine thread runs.", registry=self.registry
        )
        self.models_loaded = Gauge(
            "mlx_bridge_models_loaded", "Models loaded in memory.", registry=self.registry
        )
        self.rss = Gauge(
            "mlx_bridge_resident_memory_bytes",
            "Resident memory of the worker, in bytes.",
            registry=self.registry,
        )
        self.uptime = Gauge(
            "mlx_bridge_uptime_seconds", "Seconds since the app started.", registry=self.registry
        )
        # Generation metrics: ``model`` is a resolved local model (bounded by the store),
        # ``endpoint`` the URL rule (/api/generate, /api/chat, /v1/...).
        self.prompt_tokens = Counter(
            "mlx_bridge_prompt_tokens",
            "Prompt tokens of finished generations (prompt_eval_count, cache hits included).",
            ["model"],
            registry=self.registry,
        )
        self.generated_tokens = Counter(
            "mlx_bridge_generated_tokens",
            "Tokens generated by finished generations (eval_count).",
            ["model"],
            registry=self.registry,
        )
        self.ttft = Histogram(
            "mlx_bridge_time_to_first_token_seconds",
            "Time from request arrival to the first generated output (queue and load included).",
            ["model", "endpoint"],
            buckets=_TTFT_BUCKETS_S,
            registry=self.registry,
        )
        self.generation_duration = Histogram(
            "mlx_bridge_generation_duration_seconds",
            "Time from request arrival to the end of a finished generation.",
            ["model", "endpoint"],
            buckets=_DURATION_BUCKETS_S,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "mlx_bridge_queue_depth",
            "Requests waiting for the engine (submitted, not yet admitted).",
            registry=self.registry,
        )
        self.model_memory = Gauge(
            "mlx_bridge_model_memory_bytes",
            "Memory of each loaded model, in bytes.",
            ["model"],
            registry=self.registry,
        )
        self.model_active = Gauge(
            "mlx_bridge_model_active_requests",
            "Requests running on each loaded model.",
            ["model"],
            registry=self.registry,
        )

    def observe(self, record: AccessRecord, duration_ms: float) -> None:
        """Count one finished request (labels are bounded: unknown methods become OTHER)."""
        method = record.method if record.method in _KNOWN_METHODS else "OTHER"
        route = record.route or "unmatched"
        self.requests.labels(method, route, str(record.status)).inc()
        self.duration.labels(route).observe(duration_ms / 1000.0)

    def render(self, app: Flask) -> bytes:
        """The Prometheus text exposition, with the gauges read now."""
        from prometheus_client import generate_latest

        report, _ = health_report(app)
        self.engine_up.set(1 if report["engine"] == "running" else 0)
        self.models_loaded.set(report["models_loaded"])
        self.uptime.set(report["uptime_s"])
        self.rss.set(rss_bytes())
        self.queue_depth.set(queue_depth(app))
        # Unloaded models must disappear from the per-model gauges, not stay at their last value.
        self.model_memory.clear()
        self.model_active.clear()
        for running in loaded_models(app):
            self.model_memory.labels(running.name).set(running.size_bytes)
            self.model_active.labels(running.name).set(running.active_requests)
        return generate_latest(self.registry)


def _make_metrics() -> Metrics | None:
    try:
        return Metrics()
    except ImportError:
        log.warning("prometheus-client is not installed: GET /metrics is disabled")
        return None


def rss_bytes() -> int:
    """Resident memory of this process (the gunicorn worker), in bytes; 0 if unreadable."""
    import psutil

    try:
        return psutil.Process().memory_info().rss
    except psutil.Error:
        return 0


@dataclass
class ObservabilityState:
    """Per-app: start time, metrics, per-model usage, and whether the engine thread was
    ever seen running."""

    started: float = field(default_factory=time.monotonic)
    engine_seen_alive: bool = False  # set once, from any thread: a plain bool is enough
    metrics: Metrics | None = None
    usage: UsageBook = field(default_factory=UsageBook)


def register_observability(app: Flask, settings: Settings) -> None:
    """Wrap the app in the access-log middleware (idempotent: a second call does nothing).

    ``settings`` is taken for symmetry with ``register_security``; nothing is tunable yet.
    """
    if _STATE in app.extensions:
        return
    state = ObservabilityState(metrics=_make_metrics())
    app.extensions[_STATE] = state

    def _finish(record: AccessRecord) -> None:
        duration_ms = (time.monotonic() - record.started) * 1000.0
        _observe_engine(app, state)
        access_log.info("%s", record.line(duration_ms))
        try:
            if state.metrics is not None:
                state.metrics.observe(record, duration_ms)
            model = record.fields.get("model")
            if isinstance(model, str):
                state.usage.record_request(model, record.status)
        except Exception:  # a metrics bug must not break serving
            log.exception("metrics update failed")

    @app.after_request
    def _note_route(response: Response) -> Response:
        record = current_access()
        if record is not None and request.url_rule is not None:
            record.route = request.url_rule.rule
        return response

    app.wsgi_app = AccessLogMiddleware(app.wsgi_app, _finish)  # type: ignore[method-assign]


def observability_state(app: Flask) -> ObservabilityState:
    """The app's observability state (register_observability must have run)."""
    return app.extensions[_STATE]


def _engine(app: Flask) -> Any:
    return app.extensions[EXTENSION]["engine"]


def loaded_models(app: Flask) -> list[Any]:
    """The engine's ``RunningModel`` snapshots; [] if the engine cannot say."""
    try:
        return list(_engine(app).running())
    except Exception:
        log.exception("engine snapshot failed")
        return []


def queue_depth(app: Flask) -> int:
    """Requests waiting for the engine; 0 for an engine without a queue (test stubs)."""
    try:
        depth = getattr(_engine(app), "queue_depth", None)
        return int(depth()) if callable(depth) else 0
    except Exception:
        log.exception("engine queue depth failed")
        return 0


# -- generations ---------------------------------------------------------------------------------


@dataclass
class GenerationProbe:
    """Records one generation: time to first output, then tokens and duration at the end.

    Holds the state itself (not the app): a streamed answer is generated after the view
    returned, outside the app context.
    """

    state: ObservabilityState
    model: str
    endpoint: str
    started: float  # time.monotonic() when the request arrived
    _first_seen: bool = False

    def first_output(self) -> None:
        """The first content, thinking or tool-call event (later calls do nothing)."""
        if self._first_seen:
            return
        self._first_seen = True
        ttft_s = time.monotonic() - self.started
        try:
            self.state.usage.record_first_token(self.model, ttft_s)
            if self.state.metrics is not None:
                self.state.metrics.ttft.labels(self.model, self.endpoint).observe(ttft_s)
        except Exception:  # a metrics bug must not break serving
            log.exception("metrics update failed")

    def finished(self, prompt_tokens: int, eval_tokens: int) -> None:
        """The generation ended normally (its ``Finished`` event, Ollama's counts)."""
        self.first_output()  # no output at all: the end is the first thing the client gets
        duration_s = time.monotonic() - self.started
        try:
            self.state.usage.record_generation(self.model, prompt_tokens, eval_tokens)
            metrics = self.state.metrics
            if metrics is not None:
                metrics.prompt_tokens.labels(self.model).inc(prompt_tokens)
                metrics.generated_tokens.labels(self.model).inc(eval_tokens)
                metrics.generation_duration.labels(self.model, self.endpoint).observe(duration_s)
        except Exception:
            log.exception("metrics update failed")


def generation_probe(model: str) -> GenerationProbe | None:
    """A probe for a generation of ``model`` (a resolved name) in the current request;
    None outside a request or before ``register_observability``."""
    if not has_request_context():
        return None
    state = current_app.extensions.get(_STATE)
    if state is None:
        return None
    record = current_access()
    rule = request.url_rule
    return GenerationProbe(
        state=state,
        model=model,
        endpoint=rule.rule if rule is not None else "unmatched",
        started=record.started if record is not None else time.monotonic(),
    )


def _observe_engine(app: Flask, state: ObservabilityState) -> bool:
    """Whether the engine thread runs now; remembers that it once did (to tell idle from dead)."""
    try:
        alive = bool(_engine(app).is_alive())
    except Exception:
        log.exception("engine liveness check failed")
        alive = False
    if alive:
        state.engine_seen_alive = True
    return alive


_PING_TIMEOUT_S = 2.0


def health_report(app: Flask) -> tuple[dict[str, Any], int]:
    """``/health`` body and status: 200 while the engine runs or has not started yet (it
    starts on first use), 503 once its thread has died."""
    state = app.extensions.get(_STATE) or ObservabilityState()
    alive = _observe_engine(app, state)
    engine = "running" if alive else ("down" if state.engine_seen_alive else "idle")
    models_loaded = len(loaded_models(app))
    healthy = engine != "down"
    try:
        stats = getattr(_engine(app), "stats", None)
    except Exception:  # no engine attached (some unit tests)
        stats = None
    body = {
        "status": "ok" if healthy else "unavailable",
        "engine": engine,
        "models_loaded": models_loaded,
        "uptime_s": round(time.monotonic() - state.started, 3),
        "version": __version__,
    }
    if callable(stats):  # prompt tokens evaluated vs reused from the prompt cache, cancels
        body["engine_stats"] = stats()
    if alive:  # readiness: how soon the engine thread would take a new request
        ping = getattr(_engine(app), "ping", None)
        latency = ping(_PING_TIMEOUT_S) if callable(ping) else None
        body["ready"] = latency is not None
        body["engine_latency_ms"] = round(latency * 1000, 3) if latency is not None else None
    else:
        body["ready"] = engine == "idle"  # starts on first use
    return body, 200 if healthy else 503


__all__ = [
    "REQUEST_ID_HEADER",
    "AccessLogMiddleware",
    "AccessRecord",
    "GenerationProbe",
    "Metrics",
    "ObservabilityState",
    "current_access",
    "generation_probe",
    "health_report",
    "loaded_models",
    "note_model",
    "observability_state",
    "queue_depth",
    "register_observability",
    "request_id",
    "rss_bytes",
    "sanitize_request_id",
]
