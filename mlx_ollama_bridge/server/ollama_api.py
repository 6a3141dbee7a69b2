"""The native Ollama API (``/`` and ``/api/*``). One read of this file shows the surface."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from .. import OLLAMA_COMPAT_VERSION
from ..errors import BadRequest
from .context import get_engine, get_registry
from .generation import handle_chat, handle_generate
from .model_views import ps_entry, show_response, tags_entry
from .parsing import json_body, model_name, optional

bp = Blueprint("ollama", __name__)


@bp.route("/", methods=["GET", "HEAD"])
def root() -> Response:
    """Heartbeat: the Go CLI sends ``HEAD /`` before every command."""
    return Response("Ollama is running", mimetype="text/plain")


@bp.route("/api/version", methods=["GET", "HEAD"])
def version() -> Response:
    """A realistic Ollama version: clients compare it as semver."""
    return jsonify({"version": OLLAMA_COMPAT_VERSION})


@bp.route("/api/tags", methods=["GET", "HEAD"])
def tags() -> Response:
    """Local models, newest first."""
    return jsonify({"models": [tags_entry(m) for m in get_registry().list_models()]})


@bp.route("/api/show", methods=["POST"])
def show() -> Response:
    """Model details, model_info and capabilities."""
    body = json_body()
    name = model_name(body)
    if not name:
        raise BadRequest("model is required")
    model = get_registry().resolve(name)
    return jsonify(show_response(model, verbose=optional(body, "verbose", bool, False)))


@bp.route("/api/ps", methods=["GET"])
def ps() -> Response:
    """Loaded models, latest to expire first."""
    running = sorted(get_engine().running(), key=lambda r: r.expires_at, reverse=True)
    return jsonify({"models": [ps_entry(r) for r in running]})


@bp.route("/api/generate", methods=["POST"])
def generate() -> Response:
    """Completion (NDJSON stream by default)."""
    return handle_generate(json_body())


@bp.route("/api/chat", methods=["POST"])
def chat() -> Response:
    """Chat completion (NDJSON stream by default)."""
    return handle_chat(json_body())


def request_label() -> str:
    """``METHOD path`` of the current request, for logs."""
    return f"{request.method} {request.path}"
