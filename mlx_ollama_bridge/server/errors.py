"""The one place where exceptions become HTTP error responses.

Native routes answer ``{"error": "..."}``; unknown routes and wrong methods answer plain
text like Ollama's router (``404 page not found`` / ``405 method not allowed``). A model
that is not here is first offered to the upstream Ollama (``upstream_proxy``).
"""

from __future__ import annotations

import logging

from flask import Flask, Response, has_request_context, jsonify, request
from werkzeug.exceptions import HTTPException

from ..errors import BridgeError
from .upstream_proxy import forward_model_request

log = logging.getLogger(__name__)

_PLAIN_TEXT = {404: "404 page not found", 405: "405 method not allowed"}


def error_response(message: str, status: int) -> Response:
    """``{"error": message}`` with ``status``."""
    response = jsonify({"error": message})
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
        # A model this bridge lacks may be the upstream Ollama's: its answer, streamed.
        forwarded = forward_model_request(exc)
        if forwarded is not None:
            return forwarded
        log_failure(exc)
        return error_response(exc.message, exc.status_code)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status in _PLAIN_TEXT:
            return Response(_PLAIN_TEXT[status], status, mimetype="text/plain")
        if status == 413:
            return error_response("request body too large", 413)
        return error_response(exc.description or exc.name, status)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        rid = request.headers.get("X-Request-ID", "")
        log.exception("unhandled error request_id=%s", rid)
        return error_response(f"internal error: {type(exc).__name__}", 500)
