"""The one place where errors become HTTP error responses, for every API.

An :class:`Envelope` is an API's error shape: Ollama's ``{"error": "..."}``, OpenAI's
``{"error": {"message", "type", "param", "code"}}``, Anthropic's ``{"type": "error",
"error": {"type", "message"}}``. A blueprint names its envelope (``bp.error_envelope``); the
handlers below, the API-key and rate-limit guards and the stream encoders (an error after
the first byte) all build their bodies through it. Unknown routes and wrong methods answer
plain text like Ollama's router (``404 page not found`` / ``405 method not allowed``).
Nothing here forwards to the upstream Ollama: that is a step of the routes that name a model
(``upstream_proxy.forward_if_remote``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, current_app, has_request_context, jsonify, request
from werkzeug.exceptions import HTTPException

from ..errors import BridgeError

log = logging.getLogger(__name__)

_PLAIN_TEXT = {404: "404 page not found", 405: "405 method not allowed"}


@dataclass(frozen=True)
class Envelope:
    """An API's error shape: ``body(message, status, param)`` is the JSON object;
    ``stream_event`` the SSE event name of an error after streaming began (Anthropic's
    ``error``; None: a bare ``data:`` event, or an NDJSON line)."""

    name: str
    body: Callable[[str, int, str | None], dict[str, Any]]
    stream_event: str | None = None


def _ollama(message: str, status: int, param: str | None) -> dict[str, Any]:
    return {"error": message}


_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error"}


def _openai(message: str, status: int, param: str | None) -> dict[str, Any]:
    kind = _OPENAI_TYPES.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


# Anthropic's documented error types by status (docs "Errors"); 5xx other than 503: api_error.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def _anthropic(message: str, status: int, param: str | None) -> dict[str, Any]:
    kind = _ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


OLLAMA = Envelope("ollama", _ollama)
OPENAI = Envelope("openai", _openai)
ANTHROPIC = Envelope("anthropic", _anthropic, stream_event="error")


def current_envelope() -> Envelope:
    """The envelope of the blueprint serving this request (Ollama's when there is none)."""
    blueprint = current_app.blueprints.get(request.blueprint or "")
    return getattr(blueprint, "error_envelope", OLLAMA)


def error_response(
    message: str, status: int, envelope: Envelope | None = None, param: str | None = None
) -> Response:
    """``message`` with ``status`` in ``envelope`` (default: the current request's API's)."""
    envelope = envelope or current_envelope()
    response = jsonify(envelope.body(message, status, param))
    response.status_code = status
    return response


def log_failure(exc: BridgeError) -> None:
    """Log what a client is not shown: the error as raised, under the request id.

    Server errors always; client errors when the public message had to leave detail out.
    """
    if exc.status_code < 500 and exc.detail == exc.message:
        return
    rid = request.headers.get("X-Request-ID", "") if has_request_context() else ""
    level = logging.ERROR if exc.status_code >= 500 else logging.WARNING
    log.log(
        level, "request failed status=%s request_id=%s error=%s", exc.status_code, rid, exc.detail
    )


def register_error_handlers(app: Flask) -> None:
    """Install the handlers for bridge errors, HTTP errors and unexpected exceptions."""

    @app.errorhandler(BridgeError)
    def _bridge_error(exc: BridgeError) -> Response:
        log_failure(exc)
        return error_response(exc.message, exc.status_code, param=getattr(exc, "param", None))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status in _PLAIN_TEXT and current_envelope() is OLLAMA:  # as Ollama's router
            return Response(_PLAIN_TEXT[status], status, mimetype="text/plain")
        if status == 413:
            return error_response("request body too large", 413)
        return error_response(exc.description or exc.name, status)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        rid = request.headers.get("X-Request-ID", "")
        log.exception("unhandled error request_id=%s", rid)
        return error_response(f"internal error: {type(exc).__name__}", 500)


__all__ = [
    "ANTHROPIC",
    "OLLAMA",
    "OPENAI",
    "Envelope",
    "current_envelope",
    "error_response",
    "log_failure",
    "register_error_handlers",
]
