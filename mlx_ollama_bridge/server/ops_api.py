"""Operations endpoints: ``GET /health`` (liveness + readiness), ``GET /diagnostics`` (a JSON
snapshot for people) and ``GET /metrics`` (Prometheus). All need the API key when one is set."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST

from .context import peek_engine
from .diagnostics import diagnostics_report
from .health import health_report
from .observability import observability_state

bp = Blueprint("ops", __name__)


@bp.route("/health", methods=["GET", "HEAD"])
def health() -> Response:
    """200 ``{"status": "ok", "engine": ...}`` while serving; 503 once the engine has died."""
    watch = observability_state(current_app).watch
    body, status = health_report(peek_engine(), watch)
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/diagnostics", methods=["GET"])
def diagnostics() -> Response:
    """Loaded models, memory, queue depth, engine counters, per-model usage, settings."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    response = jsonify(diagnostics_report(app))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/metrics", methods=["GET"])
def metrics() -> Response:
    """Prometheus text format: requests, durations, engine state, loaded models, memory."""
    state = observability_state(current_app)
    body = state.metrics.render(peek_engine(), state.watch)
    return Response(body, headers={"Content-Type": CONTENT_TYPE_LATEST})
