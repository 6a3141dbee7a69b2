"""The OpenAI-compatible API (``/v1/*``). One read of this file shows the surface.

Requests are translated into native bodies (``openai_translate``, ``responses_translate``)
and run through the same preparation and engine call as ``/api/chat`` and ``/api/generate``
(``generation``); the events come back as OpenAI objects (``openai_wire``), streamed as
server-sent events ending in ``data: [DONE]``, or as Responses API objects and events
(``responses_wire``; ``responses_store`` keeps them for ``previous_response_id``). Errors
use OpenAI's envelope ``{"error": {"message", "type", "param", "code"}}`` with the native
status (``errors.OPENAI``). A model only the upstream Ollama has is forwarded there first,
body unchanged (Ollama serves ``/v1`` too). ``/v1/embeddings`` goes through the native
embed path (``openai_embed``).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify
from flask import request as flask_request

from . import openai_translate as oai
from . import schemas
from .context import get_registry
from .errors import OPENAI
from .generation import (
    debug_info,
    load_or_unload,
    prepare_chat,
    prepare_generate,
    start_generation,
)
from .openai_embed import embeddings_reply
from .openai_translate import InvalidField
from .openai_wire import ChatEncoder, CompletionEncoder, envelope, usage
from .parsing import json_body, model_name
from .responses_store import response_store
from .responses_translate import parse_request as parse_responses
from .responses_wire import ResponsesEncoder
from .upstream_proxy import forward_if_remote
from .wire import respond

bp = Blueprint("openai", __name__, url_prefix="/v1")
bp.error_envelope = OPENAI  # type: ignore[attr-defined]  # read by errors.current_envelope


@bp.route("/chat/completions", methods=["POST"])
def chat_completions() -> Response:
    """Chat completion (JSON, or SSE with ``stream: true``)."""
    body = json_body(schemas.OPENAI_CHAT)
    return forward_if_remote(model_name(body)) or _chat_completion(body)


def _chat_completion(body: dict[str, Any]) -> Response:
    prepared = prepare_chat(oai.chat_to_native(body))
    request = prepared.request
    assert request is not None  # the translator insists on messages
    base = envelope("chatcmpl", "chat.completion", prepared.name)
    if request.render_only:
        info = debug_info(request)
        return jsonify({**base, "choices": [], "_debug_info": info})
    events, _load_ns = start_generation(request)
    encoder = ChatEncoder(base, include_usage=oai.include_usage(body))
    return respond(encoder, events, prepared.stream)


@bp.route("/completions", methods=["POST"])
def completions() -> Response:
    """Legacy text completion (JSON, or SSE with ``stream: true``)."""
    body = json_body(schemas.OPENAI_COMPLETION)
    return forward_if_remote(model_name(body)) or _completion(body)


def _completion(body: dict[str, Any]) -> Response:
    prepared = prepare_generate(oai.completion_to_native(body))
    base = envelope("cmpl", "text_completion", prepared.name)
    if prepared.request is None:  # an empty prompt loads the model, as the native route
        load_or_unload(prepared)
        choice = {"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}
        return jsonify({**base, "choices": [choice], "usage": usage(None)})
    if prepared.request.render_only:
        info = debug_info(prepared.request)
        return jsonify({**base, "choices": [], "_debug_info": info})
    events, _load_ns = start_generation(prepared.request)
    encoder = CompletionEncoder(base, include_usage=oai.include_usage(body))
    return respond(encoder, events, prepared.stream)


@bp.route("/responses", methods=["POST"])
def responses() -> Response:
    """Responses API: one response (JSON, or SSE with ``stream: true``), stored unless
    ``store`` is false; ``previous_response_id`` continues a stored conversation."""
    body = json_body(schemas.OPENAI_RESPONSES, zstd=True)
    return forward_if_remote(model_name(body)) or _response(body)


def _response(body: dict[str, Any]) -> Response:
    request = parse_responses(body)
    store = response_store()
    previous = request.previous_response_id
    history = store.conversation(previous) if previous else []
    prepared = prepare_chat(request.with_history(history))
    generation = prepared.request
    assert generation is not None  # with_history insists on messages
    keep = store.keeper(previous, request.turn, request.items) if request.store else None
    encoder = ResponsesEncoder(prepared.name, request, on_complete=keep)
    if generation.render_only:
        info = debug_info(generation)
        return jsonify({**encoder.response(), "_debug_info": info})
    events, _load_ns = start_generation(generation)
    return respond(encoder, events, request.stream)


@bp.route("/responses/<response_id>", methods=["GET"])
def response_get(response_id: str) -> Response:
    """A stored response (404 when it is not kept)."""
    return jsonify(response_store().get(response_id).response)


@bp.route("/responses/<response_id>/input_items", methods=["GET"])
def response_input_items(response_id: str) -> Response:
    """The input items of a stored response, paged as OpenAI's lists (``limit``, ``order``,
    ``after``)."""
    limit = flask_request.args.get("limit", "20")
    order = flask_request.args.get("order", "desc")
    if not limit.isdigit() or not 1 <= int(limit) <= 100:
        raise InvalidField("'limit' must be an integer between 1 and 100", "limit")
    if order not in ("asc", "desc"):
        raise InvalidField("'order' must be 'asc' or 'desc'", "order")
    after = flask_request.args.get("after")
    page = response_store().input_items(response_id, limit=int(limit), order=order, after=after)
    return jsonify(page)


@bp.route("/responses/<response_id>", methods=["DELETE"])
def response_delete(response_id: str) -> Response:
    """Forget a stored response (404 when it is not kept)."""
    response_store().delete(response_id)
    return jsonify({"id": response_id, "object": "response", "deleted": True})


@bp.route("/embeddings", methods=["POST"])
def embeddings() -> Response:
    """Embeddings of a string or an array of strings (float or base64 vectors)."""
    body = json_body()
    return forward_if_remote(model_name(body)) or jsonify(embeddings_reply(body))


@bp.route("/models", methods=["GET"])
def models() -> Response:
    """Local models (``data`` is ``[]``, never null, when there are none)."""
    data = [oai.model_object(m) for m in get_registry().list_models()]
    return jsonify({"object": "list", "data": data})


@bp.route("/models/<model>", methods=["GET"])
def model(model: str) -> Response:
    """One model; ``id`` echoes the name as requested. Unknown here: upstream's, or 404."""
    forwarded = forward_if_remote(model)
    return forwarded or jsonify(oai.model_object(get_registry().resolve(model), model))


__all__ = ["bp"]
