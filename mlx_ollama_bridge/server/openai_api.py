"""The OpenAI-compatible API (``/v1/*``). One read of this file shows the surface.

Requests are translated into native bodies (``openai_translate``) and run through the same
preparation and engine call as ``/api/chat`` and ``/api/generate`` (``generation``); the
events come back as OpenAI objects, streamed as server-sent events ending in
``data: [DONE]``. Errors use OpenAI's envelope ``{"error": {"message", "type", "param",
"code"}}`` with the native status (400 ``invalid_request_error``, 404 ``not_found_error``,
others ``api_error``). ``/v1/embeddings`` goes through the native embed path
(``openai_embed``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, jsonify
from werkzeug.exceptions import HTTPException

from ..engine import Failed, Finished, TextChunk
from ..engine.requests import Event, ThinkingChunk, ToolCalls
from ..errors import BridgeError
from . import openai_translate as oai
from . import schemas
from .context import get_registry
from .generation import (
    collect,
    load_or_unload,
    prepare_chat,
    prepare_generate,
    render_prompt,
    start_generation,
)
from .openai_embed import embeddings_reply
from .parsing import json_body
from .streaming import dumps
from .upstream_proxy import forward_model_request

log = logging.getLogger(__name__)

bp = Blueprint("openai", __name__, url_prefix="/v1")

_ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error"}


@bp.route("/chat/completions", methods=["POST"])
def chat_completions() -> Response:
    """Chat completion (JSON, or SSE with ``stream: true``)."""
    body = json_body(schemas.OPENAI_CHAT)
    prepared = prepare_chat(oai.chat_to_native(body))
    request = prepared.request
    assert request is not None  # the translator insists on messages
    base = oai.envelope("chatcmpl", "chat.completion", prepared.name)
    if request.render_only:
        info = {"rendered_template": render_prompt(request), "image_count": 0}
        return jsonify({**base, "choices": [], "_debug_info": info})
    events, _load_ns = start_generation(request)
    if prepared.stream:
        return _sse(_chat_chunks(events, base, oai.include_usage(body)))
    return jsonify(_chat_completion(events, base))


@bp.route("/completions", methods=["POST"])
def completions() -> Response:
    """Legacy text completion (JSON, or SSE with ``stream: true``)."""
    body = json_body(schemas.OPENAI_COMPLETION)
    prepared = prepare_generate(oai.completion_to_native(body))
    base = oai.envelope("cmpl", "text_completion", prepared.name)
    if prepared.request is None:  # an empty prompt loads the model, as the native route
        load_or_unload(prepared)
        choice = {"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}
        return jsonify({**base, "choices": [choice], "usage": oai.usage(None)})
    if prepared.request.render_only:
        info = {"rendered_template": render_prompt(prepared.request), "image_count": 0}
        return jsonify({**base, "choices": [], "_debug_info": info})
    events, _load_ns = start_generation(prepared.request)
    if prepared.stream:
        return _sse(_completion_chunks(events, base, oai.include_usage(body)))
    return jsonify(_completion(events, base))


@bp.route("/embeddings", methods=["POST"])
def embeddings() -> Response:
    """Embeddings of a string or an array of strings (float or base64 vectors)."""
    return jsonify(embeddings_reply(json_body()))


@bp.route("/models", methods=["GET"])
def models() -> Response:
    """Local models (``data`` is ``[]``, never null, when there are none)."""
    data = [oai.model_object(m) for m in get_registry().list_models()]
    return jsonify({"object": "list", "data": data})


@bp.route("/models/<model>", methods=["GET"])
def model(model: str) -> Response:
    """One model; ``id`` echoes the name as requested. Unknown: 404."""
    return jsonify(oai.model_object(get_registry().resolve(model), model))


# -- errors -------------------------------------------------------------------------------


def error_body(message: str, status: int, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error envelope."""
    kind = _ERROR_TYPES.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


def _error_response(message: str, status: int, param: str | None = None) -> Response:
    response = jsonify(error_body(message, status, param))
    response.status_code = status
    return response


@bp.errorhandler(BridgeError)
def _bridge_error(exc: BridgeError) -> Response:
    forwarded = forward_model_request(exc)  # the upstream Ollama may have this model
    if forwarded is not None:
        return forwarded
    if exc.status_code >= 500:
        log.error("request failed: %s", exc.message)
    return _error_response(exc.message, exc.status_code, getattr(exc, "param", None))


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    message = "request body too large" if status == 413 else exc.description or exc.name
    return _error_response(message, status)


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error")
    return _error_response(f"internal error: {type(exc).__name__}", 500)


# -- chat ---------------------------------------------------------------------------------


def _chat_completion(events: Iterator[Event], base: dict[str, Any]) -> dict[str, Any]:
    outcome = collect(events)
    message: dict[str, Any] = {"role": "assistant", "content": outcome.content}
    if outcome.thinking:
        message["reasoning"] = outcome.thinking
    if outcome.tool_calls:
        message["tool_calls"] = [oai.openai_tool_call(c) for c in outcome.tool_calls]
    done = outcome.finished.done_reason if outcome.finished else None
    reason = oai.finish_reason(done, bool(outcome.tool_calls))
    choice = {"index": 0, "message": message, "finish_reason": reason}
    return {**base, "choices": [choice], "usage": oai.usage(outcome.finished)}


def _chat_chunks(
    events: Iterator[Event], base: dict[str, Any], with_usage: bool
) -> Iterator[dict[str, Any]]:
    base = {**base, "object": "chat.completion.chunk"}
    called, finished = False, None
    for event in events:
        delta: dict[str, Any] = {"role": "assistant", "content": ""}
        if isinstance(event, TextChunk):
            delta["content"] = event.text
        elif isinstance(event, ThinkingChunk):
            delta["reasoning"] = event.text
        elif isinstance(event, ToolCalls):
            called = True
            delta["tool_calls"] = [oai.openai_tool_call(c) for c in event.calls]
        elif isinstance(event, Failed):
            yield error_body(event.error.message, event.error.status_code)
            return
        elif isinstance(event, Finished):
            finished = event
            continue
        yield {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    reason = oai.finish_reason(finished.done_reason if finished else None, called)
    last = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": reason}
    yield {**base, "choices": [last]}
    if with_usage:
        yield {**base, "choices": [], "usage": oai.usage(finished)}


# -- completions --------------------------------------------------------------------------


def _completion(events: Iterator[Event], base: dict[str, Any]) -> dict[str, Any]:
    outcome = collect(events)  # a thinking model's reasoning is not part of ``text``
    reason = outcome.finished.done_reason if outcome.finished else None
    choice = {"text": outcome.content, "index": 0, "logprobs": None, "finish_reason": reason}
    return {**base, "choices": [choice], "usage": oai.usage(outcome.finished)}


def _completion_chunks(
    events: Iterator[Event], base: dict[str, Any], with_usage: bool
) -> Iterator[dict[str, Any]]:
    finished = None
    for event in events:
        if isinstance(event, TextChunk):
            choice = {"text": event.text, "index": 0, "logprobs": None, "finish_reason": None}
            yield {**base, "choices": [choice]}
        elif isinstance(event, Failed):
            yield error_body(event.error.message, event.error.status_code)
            return
        elif isinstance(event, Finished):
            finished = event
    reason = finished.done_reason if finished else None
    yield {**base, "choices": [{"text": "", "index": 0, "logprobs": None, "finish_reason": reason}]}
    if with_usage:
        yield {**base, "choices": [], "usage": oai.usage(finished)}


# -- SSE ----------------------------------------------------------------------------------


def _sse(objects: Iterator[dict[str, Any]]) -> Response:
    """``text/event-stream``: ``data: <json>`` events, then ``data: [DONE]`` unless it failed."""
    return Response(_sse_lines(objects), mimetype="text/event-stream")


def _sse_lines(objects: Iterator[dict[str, Any]]) -> Iterator[str]:
    failed = False
    try:
        for obj in objects:
            failed = "error" in obj
            yield f"data: {dumps(obj)}\n\n"
        if not failed:
            yield "data: [DONE]\n\n"
    finally:
        objects.close()  # type: ignore[attr-defined]  # a gone client cancels the job


__all__ = ["bp", "error_body"]
