"""The native Ollama API (``/`` and ``/api/*``). One read of this file shows the surface.

Every route that names a model starts with the forwarding step (``forward_if_remote``): a
model only the upstream Ollama has is answered there.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from .. import OLLAMA_COMPAT_VERSION
from ..errors import BadRequest
from . import schemas
from .context import get_engine, get_registry
from .embed_api import handle_embed, handle_embeddings
from .generation import handle_chat, handle_generate
from .health import group_status
from .model_views import ps_entry, show_response, tags_entry
from .models_api import (
    handle_blob,
    handle_copy,
    handle_create,
    handle_delete,
    handle_pull,
)
from .parsing import json_body, model_name, optional
from .upstream_proxy import forward_if_remote, merged_models

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
    """Local models and the upstream Ollama's, newest first; ``details.backend`` says where."""
    local = [tags_entry(m) for m in get_registry().list_models()]
    return jsonify({"models": merged_models(local, "/api/tags", "modified_at")})


@bp.route("/api/show", methods=["POST"])
def show() -> Response:
    """Model details, model_info and capabilities."""
    body = json_body(schemas.SHOW)
    name = model_name(body)
    if not name:
        raise BadRequest("model is required")
    forwarded = forward_if_remote(name)
    if forwarded is not None:
        return forwarded
    model = get_registry().resolve(name)
    return jsonify(show_response(model, verbose=optional(body, "verbose", bool, False)))


@bp.route("/api/ps", methods=["GET"])
def ps() -> Response:
    """Loaded models here and upstream, latest to expire first; ``details.backend`` says where."""
    engine = get_engine()
    running = sorted(engine.running(), key=lambda r: r.expires_at, reverse=True)
    group = group_status(engine)
    local = [ps_entry(r, group) for r in running]
    return jsonify({"models": merged_models(local, "/api/ps", "expires_at")})


@bp.route("/api/generate", methods=["POST"])
def generate() -> Response:
    """Completion (NDJSON stream by default)."""
    body = json_body(schemas.GENERATE)
    return forward_if_remote(model_name(body)) or handle_generate(body)


@bp.route("/api/chat", methods=["POST"])
def chat() -> Response:
    """Chat completion (NDJSON stream by default)."""
    body = json_body(schemas.CHAT)
    return forward_if_remote(model_name(body)) or handle_chat(body)


@bp.route("/api/embed", methods=["POST"])
def embed() -> Response:
    """Embeddings for a string or a list of strings (normalised vectors)."""
    body = json_body(schemas.EMBED)
    return forward_if_remote(model_name(body)) or handle_embed(body)


@bp.route("/api/embeddings", methods=["POST"])
def embeddings() -> Response:
    """Legacy single embedding (the model's own vector)."""
    body = json_body(schemas.EMBEDDINGS)
    return forward_if_remote(model_name(body)) or handle_embeddings(body)


@bp.route("/api/pull", methods=["POST"])
def pull() -> Response:
    """Download a model from Hugging Face (NDJSON progress by default)."""
    return handle_pull(json_body(schemas.PULL))


@bp.route("/api/create", methods=["POST"])
def create() -> Response:
    """A model from an existing one with system/template/parameters/messages (or a Modelfile)."""
    return handle_create(json_body(schemas.CREATE))


@bp.route("/api/blobs/<digest>", methods=["HEAD", "POST"])
def blobs(digest: str) -> Response:
    """Is a blob here (HEAD) / upload one (POST, raw bytes) for ``/api/create`` files."""
    return handle_blob(digest)


@bp.route("/api/copy", methods=["POST"])
def copy() -> Response:
    """A second name for a model; 200 with an empty body."""
    body = json_body(schemas.COPY)
    return forward_if_remote(optional(body, "source", str, "")) or handle_copy(body)


@bp.route("/api/delete", methods=["DELETE"])
def delete() -> Response:
    """Remove a name, and weights no other name uses; 200 with an empty body."""
    body = json_body(schemas.DELETE)
    return forward_if_remote(model_name(body)) or handle_delete(body)
