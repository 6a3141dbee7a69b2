"""Exceptions that carry their HTTP status.

The server maps every one of them to ``{"error": message}`` in a single place; the
messages use Ollama's exact wording where clients are known to match on it.

A message is public by construction: :func:`public_text` takes out what would tell a client
about the machine (absolute paths, the home directory, Python tracebacks) while ``detail``
keeps the text as it was raised, for the server's log under the request id. So a library's
``[Errno 2] No such file or directory: '/Users/me/…/config.json'`` reaches a client as
``… '…/config.json'``, whichever route, wire format or stream carries it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)

_MAX_MESSAGE = 2000
_TRACEBACK = "Traceback (most recent call last)"
_FRAME_LINE = re.compile(r'^\s*File "[^"]*", line \d+.*$\n?', re.MULTILINE)
# A POSIX path of two or more parts (or one under ~), not inside a URL or a relative path.
_PATH = re.compile(r"(?<![\w.~:/\\-])(?:~|(?=/))(?:/[^\s/'\"`,;:()\[\]{}<>|]+)+/?")
_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/\s@]+@", re.IGNORECASE)
_ROUTES = ("/api/", "/v1/")  # the bridge's own routes are not the machine's layout


def public_text(text: str) -> str:
    """``text`` without absolute paths (each becomes ``…/<last part>``), tracebacks and
    credentials in URLs (``http://user:secret@host`` becomes ``http://host``)."""
    text = text[: _MAX_MESSAGE * 4]  # an echoed request body must not cost a long scan
    head, found, _ = text.partition(_TRACEBACK)
    text = (head.rstrip() or "internal error") if found else text
    text = _FRAME_LINE.sub("", text)
    home = str(Path.home())
    if len(home) > 1:  # /Users/me -> ~, but not /Users/meg
        text = re.sub(re.escape(home) + r"(?![\w.-])", "~", text)
    text = _USERINFO.sub(r"\1", text)
    text = _PATH.sub(_shorten, text)
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _shorten(match: re.Match[str]) -> str:
    path = match.group(0)
    if path.startswith(_ROUTES) or (path.count("/") < 2 and not path.startswith("~")):
        return path
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return f"…/{name}" if name and name != "~" else "…"


class BridgeError(Exception):
    """Base class: an error with a user-facing message and an HTTP status.

    ``message`` is what clients see (made public with :func:`public_text`); ``detail`` is
    the text as raised, for the log.
    """

    status_code: int = 500

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.detail = message
        self.message = public_text(message)
        if status_code is not None:
            self.status_code = status_code

    def __str__(self) -> str:
        return self.message


class BadRequest(BridgeError):
    """The request is malformed or asks for something the model cannot do (400)."""

    status_code = 400


class InvalidModelName(BadRequest):
    """A model name that breaks Ollama's name grammar (400)."""

    def __init__(self, name: str, message: str | None = None) -> None:
        super().__init__(message or f'invalid model name "{name}"')
        self.message = self.detail  # the client's own name echoed, as Ollama words it
        self.name = name


class ModelNotFound(BridgeError):
    """No local model answers to this name (404). ``name`` is echoed as the client sent it."""

    status_code = 404

    def __init__(self, name: str, message: str | None = None) -> None:
        super().__init__(message or f"model '{name}' not found")
        self.name = name


class ModelLoadError(BridgeError):
    """The model exists but could not be loaded (corrupt, unsupported, out of memory) (500)."""

    status_code = 500


class ServerBusy(BridgeError):
    """The pending-request queue is full (503), with Ollama's wording."""

    status_code = 503

    def __init__(self, message: str | None = None) -> None:
        super().__init__(
            message or "server busy, please try again.  maximum pending requests exceeded"
        )


class RequestCanceled(BridgeError):
    """The client went away before the request finished (499, nginx's convention as Ollama)."""

    status_code = 499

    def __init__(self, message: str = "request canceled") -> None:
        super().__init__(message)


class ErrorLine(dict):
    """The final ``{"error": …}`` line of a streamed create or pull, carrying the HTTP status
    a non-streamed answer gets (``status``: 400 for a refused model, else 500)."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(error=message)
        self.status = status


__all__ = [
    "BadRequest",
    "BridgeError",
    "ErrorLine",
    "InvalidModelName",
    "ModelLoadError",
    "ModelNotFound",
    "RequestCanceled",
    "ServerBusy",
    "public_text",
]


def client_error(exc: Exception, what: str) -> BridgeError:
    """``exc`` as the error a client gets: a BridgeError as it is, anything else (a bug)
    logged under ``what`` with its traceback and reported as an internal error."""
    if isinstance(exc, BridgeError):
        return exc
    log.error(what, exc_info=exc)
    return BridgeError(f"internal error: {exc}")
