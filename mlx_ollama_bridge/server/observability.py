"""Wiring the access log, the metrics and the health watch into an app.

The parts: ``access_log.py`` (request ids, one line per request), ``metrics.py`` (the
Prometheus registry, also read back by ``/diagnostics``), ``health.py`` (``/health``) and
``probes.py`` (a generation's time to first token and token counts).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from flask import Flask, Response, request

from ..config import Settings
from .access_log import AccessLogMiddleware, AccessRecord, access_log, current_access
from .context import EXTENSION
from .health import EngineWatch
from .metrics import Metrics

log = logging.getLogger(__name__)

_STATE = "mlx_ollama_bridge.observability"


@dataclass
class ObservabilityState:
    """Per app: its metrics and the engine watch (start time, engine seen alive)."""

    metrics: Metrics = field(default_factory=Metrics)
    watch: EngineWatch = field(default_factory=EngineWatch)


def register_observability(app: Flask, settings: Settings) -> None:
    """Wrap the app in the access-log middleware (idempotent: a second call does nothing).

    ``settings`` is taken for symmetry with ``register_security``; nothing is tunable yet.
    """
    if _STATE in app.extensions:
        return
    state = ObservabilityState()
    app.extensions[_STATE] = state

    def _finish(record: AccessRecord) -> None:
        duration_ms = (time.monotonic() - record.started) * 1000.0
        state.watch.observe(app.extensions[EXTENSION]["engine"])
        access_log.info("%s", record.line(duration_ms))
        try:
            state.metrics.observe(record, duration_ms)
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


def find_observability_state(app: Flask) -> ObservabilityState | None:
    """The app's observability state, or None before ``register_observability``."""
    return app.extensions.get(_STATE)


__all__ = [
    "ObservabilityState",
    "find_observability_state",
    "observability_state",
    "register_observability",
]
