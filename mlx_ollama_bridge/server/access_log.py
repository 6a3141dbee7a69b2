"""Request ids and one access-log line per request.

The access log is a WSGI middleware around the Flask app rather than request hooks, so it
sees every request whatever answers it (a CORS 403, a routing 404, an error handler) and
logs streamed responses when the stream closes, with the real status, size and duration.
Handlers add fields through :func:`note_model` / :func:`current_access` (the body is never
read twice: the handler that parses it reports the model).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from flask import has_request_context, request

access_log = logging.getLogger("mlx_ollama_bridge.access")

REQUEST_ID_HEADER = "X-Request-ID"
_ENVIRON_KEY = "mlx_ollama_bridge.access"
_REQUEST_ID = re.compile(r"[\x20-\x7e]{1,128}")  # printable ASCII, at most 128 characters
_BARE_VALUE = re.compile(r"[\w.,:/@+\-]+")  # log values that need no quoting


@dataclass
class AccessRecord:
    """What the access log says about one request; handlers may add fields."""

    request_id: str
    method: str
    path: str
    remote: str
    started: float = field(default_factory=time.monotonic)
    status: int = 0
    bytes_sent: int = 0
    route: str = ""  # the URL rule that matched ("" before routing, e.g. unknown paths)
    fields: dict[str, Any] = field(default_factory=dict)

    def note(self, **fields: Any) -> None:
        """Add fields to the log line (e.g. ``eval_count`` once a stream has finished)."""
        self.fields.update({k: v for k, v in fields.items() if v is not None})

    def line(self, duration_ms: float) -> str:
        """The key=value log line."""
        pairs: dict[str, Any] = {
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "duration_ms": f"{duration_ms:.1f}",
            "bytes": self.bytes_sent,
            "request_id": self.request_id,
            **self.fields,
            "remote": self.remote,
        }
        return " ".join(f"{key}={_quote(value)}" for key, value in pairs.items())


def _quote(value: Any) -> str:
    """Values with spaces, quotes or control characters are JSON-quoted (no log injection)."""
    text = str(value)
    return text if _BARE_VALUE.fullmatch(text) else json.dumps(text)


def sanitize_request_id(value: str | None) -> str:
    """An incoming ``X-Request-ID`` if it is printable ASCII of at most 128 characters,
    else a fresh id (an unusable id is replaced, not repaired, so ids never collide)."""
    value = (value or "").strip()
    return value if _REQUEST_ID.fullmatch(value) else uuid.uuid4().hex


# -- helpers for handlers ----------------------------------------------------------------------


def current_access() -> AccessRecord | None:
    """This request's access record (keep it to annotate from a streaming generator)."""
    if not has_request_context():
        return None
    return request.environ.get(_ENVIRON_KEY)


def request_id() -> str | None:
    """This request's id (the one returned in ``X-Request-ID``)."""
    record = current_access()
    return record.request_id if record else None


def note_model(name: object) -> None:
    """Record the model a request named; call where the JSON body is parsed."""
    record = current_access()
    if record is not None and isinstance(name, str) and name:
        record.note(model=name[:256])


# -- the middleware ------------------------------------------------------------------------------


class AccessLogMiddleware:
    """WSGI middleware: assigns the request id, returns it, logs one line per request."""

    def __init__(
        self, wsgi_app: Callable[..., Iterable[bytes]], on_finish: Callable[[AccessRecord], None]
    ) -> None:
        self.wsgi_app = wsgi_app
        self.on_finish = on_finish

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        record = AccessRecord(
            request_id=sanitize_request_id(environ.get("HTTP_X_REQUEST_ID")),
            method=environ.get("REQUEST_METHOD", ""),
            path=environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""),
            remote=environ.get("REMOTE_ADDR", ""),
        )
        environ[_ENVIRON_KEY] = record
        environ["HTTP_X_REQUEST_ID"] = record.request_id  # what handlers see is what we log

        def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None):
            record.status = int(status.split(" ", 1)[0])
            headers = [(k, v) for k, v in headers if k.lower() != REQUEST_ID_HEADER.lower()]
            headers.append((REQUEST_ID_HEADER, record.request_id))
            return start_response(status, headers, exc_info)

        try:
            body = self.wsgi_app(environ, _start_response)
        except BaseException:
            record.status = record.status or 500
            self.on_finish(record)
            raise
        return _LoggedBody(body, record, self.on_finish)


class _LoggedBody:
    """The response iterable, counting bytes; the log line is written on ``close()``."""

    def __init__(
        self,
        body: Iterable[bytes],
        record: AccessRecord,
        on_finish: Callable[[AccessRecord], None],
    ) -> None:
        self._body = body
        self._record = record
        self._on_finish = on_finish
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            self._record.bytes_sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            if not self._done:
                self._done = True
                self._on_finish(self._record)


__all__ = [
    "REQUEST_ID_HEADER",
    "AccessLogMiddleware",
    "AccessRecord",
    "access_log",
    "current_access",
    "note_model",
    "request_id",
    "sanitize_request_id",
]
