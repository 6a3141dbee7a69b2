"""Forwarding to the upstream Ollama, and merging its lists into ``/api/tags`` and ``/api/ps``.

Forwarding is the first step of every route that names a model (``/api/chat``,
``/v1/chat/completions``, ``/v1/messages``, ``/api/show`` …): :func:`forward_if_remote`
resolves the name locally; a model this bridge lacks, with a live upstream, is the
upstream's, and the original request (method, path, query, body bytes, content headers) is
resent there. The answer goes back as it arrives, chunk by chunk, status code and body
unchanged. Upstream down, off, or the request marked local-only: the route goes on and
answers its own 404.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

from flask import Response, current_app, request

from ..errors import InvalidModelName, ModelNotFound
from ..upstream import (
    LOCAL_ONLY_HEADER,
    Upstream,
    UpstreamUnavailable,
    iter_body,
    rfc3339_seconds,
)
from .announce import end_announcement
from .context import get_registry, get_settings
from .errors import OLLAMA as OLLAMA_ENVELOPE
from .errors import Envelope, current_envelope, error_response

log = logging.getLogger(__name__)

_KEY = "mlx_ollama_bridge.upstream"
_CREATE_LOCK = threading.Lock()
BACKEND_KEY = "backend"  # in each entry's details: where the model runs
MLX, OLLAMA = "mlx", "ollama"

_REQUEST_HEADERS = ("Content-Type", "Content-Encoding", "Accept", "User-Agent", "X-Request-Id")
_RESPONSE_HEADERS = ("Content-Type", "Cache-Control", "Retry-After", "X-Request-Id")


def get_upstream() -> Upstream | None:
    """The app's upstream (made on first use from the settings), or None when it is off."""
    state = current_app.extensions.get(_KEY)
    if state is None:
        with _CREATE_LOCK:
            state = current_app.extensions.get(_KEY)
            if state is None:
                state = current_app.extensions[_KEY] = [Upstream.from_settings(get_settings())]
    return state[0]


def local_only() -> bool:
    """True if the client asked for this bridge's own models only (loop guard, ``switch mlx``)."""
    return bool(request.headers.get(LOCAL_ONLY_HEADER))


def _live_upstream() -> Upstream | None:
    if local_only():
        return None
    upstream = get_upstream()
    return upstream if upstream is not None and upstream.is_up() else None


# -- forwarding ---------------------------------------------------------------------------


def forward_if_remote(name: str) -> Response | None:
    """The upstream Ollama's answer to the current request when ``name`` is not a model here
    and the upstream is live; None when this bridge serves it (or answers the 404 itself).

    Called by each route that names a model, before it does anything else with the request.
    A name that breaks the grammar stays here: its 400 is the route's.
    """
    if not name or local_only() or get_upstream() is None:
        return None
    try:
        get_registry().resolve(name)
        return None
    except InvalidModelName:
        return None
    except ModelNotFound:
        pass
    return _forward(name)


def _forward(name: str) -> Response | None:
    upstream = _live_upstream()
    if upstream is None:
        return None
    end_announcement()  # the upstream generates this one, not the engine
    path = request.full_path if request.query_string else request.path
    headers = {k: request.headers[k] for k in _REQUEST_HEADERS if k in request.headers}
    body = request.get_data(cache=True)  # parsing.json_body cached the bytes it read
    try:
        reply = upstream.open(request.method, path, body, headers)
    except UpstreamUnavailable as err:
        if not err.connected:  # gone since the last probe: answer as if it were down
            log.warning("upstream unreachable url=%s error=%s", upstream.base_url, err)
            return None
        log.warning("upstream timed out url=%s error=%s", upstream.base_url, err)
        message = f"upstream Ollama at {upstream.public_url} did not answer in time"
        return error_response(message, 502)
    log.info("forwarded to upstream model=%s path=%s status=%s", name, path, reply.status_code)
    kept = {k: reply.headers[k] for k in _RESPONSE_HEADERS if k in reply.headers}
    framing = _stream_framing(kept.get("Content-Type", ""))
    return Response(
        _relay(reply, upstream.public_url, framing),
        status=reply.status_code,
        headers=kept,
        direct_passthrough=True,  # hand each chunk to the server as is: no buffering
    )


def _stream_framing(content_type: str) -> tuple[str, Envelope] | None:
    """How a broken stream of this type ends: NDJSON with Ollama's error line, SSE with an
    error event in the called API's envelope (read now, while the request is current)."""
    if content_type.startswith("application/x-ndjson"):
        return "ndjson", OLLAMA_ENVELOPE
    if content_type.startswith("text/event-stream"):
        return "sse", current_envelope()
    return None


def _relay(reply: Any, base_url: str, framing: tuple[str, Envelope] | None) -> Iterator[bytes]:
    """Upstream's body as it arrives; a broken stream ends with an error line or event, as
    the bridge's own streams do once they have started."""
    try:
        yield from iter_body(reply)
    except UpstreamUnavailable as err:
        log.warning("upstream stream broke url=%s error=%s", base_url, err)
        if framing is None:
            return
        kind, envelope = framing
        message = f"upstream Ollama at {base_url} stopped responding ({err})"
        data = json.dumps(envelope.body(message, 502, None))
        if kind == "ndjson":
            yield (data + "\n").encode()
        else:
            event = f"event: {envelope.stream_event}\n" if envelope.stream_event else ""
            yield f"\n{event}data: {data}\n\n".encode()


# -- merged lists -------------------------------------------------------------------------


def merged_models(local: list[dict[str, Any]], path: str, sort_key: str) -> list[dict[str, Any]]:
    """``local`` entries plus upstream's from ``path`` (``/api/tags`` or ``/api/ps``).

    Every entry's ``details`` says where it runs; on a name clash the bridge's entry wins.
    Sorted by ``sort_key`` (an RFC 3339 time) newest first, as Ollama sorts both lists.
    """
    for entry in local:
        _mark(entry, MLX)
    upstream = _live_upstream()
    if upstream is None:
        return local
    reply = upstream.get_json(path)
    theirs = reply.get("models") if isinstance(reply, dict) else None
    if not isinstance(theirs, list):
        return local
    ours = {str(entry.get("name", "")).lower() for entry in local}
    extra = [
        _mark(entry, OLLAMA)
        for entry in theirs
        if isinstance(entry, dict) and str(entry.get("name", "")).lower() not in ours
    ]
    return sorted(local + extra, key=lambda e: rfc3339_seconds(e.get(sort_key)), reverse=True)


def _mark(entry: dict[str, Any], backend: str) -> dict[str, Any]:
    details = entry.get("details")
    if not isinstance(details, dict):
        details = entry["details"] = {}
    details[BACKEND_KEY] = backend
    return entry


__all__ = [
    "BACKEND_KEY",
    "forward_if_remote",
    "get_upstream",
    "local_only",
    "merged_models",
]
