"""Operations endpoints: ``GET /health`` (liveness + readiness), ``GET /diagnostics`` (a JSON
snapshot for people) and ``GET /metrics`` (Prometheus). All need the API key when one is set."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from werkzeug.exceptions import NotImplemented as NotImplemented_

from .diagnostics import diagnostics_report
from .observability import health_report, observability_state

bp = Blueprint("ops", __name__)


@bp.route("/health", methods=["GET", "HEAD"])
def health() -> Response:
    """200 ``{"status": "ok", "engine": ...}`` while serving; 503 once the engine has died."""
    body, status = health_report(current_app._get_current_object())  # type: ignore[attr-defined]
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
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    collected = observability_state(app).metrics
    if collected is None:
        raise NotImplemented_("metrics need the prometheus-client package")
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(collected.render(app), headers={"Content-Type": CONTENT_TYPE_LATEST})
