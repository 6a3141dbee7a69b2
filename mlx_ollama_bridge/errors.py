"""Exceptions that carry their HTTP status.

The server maps every one of them to ``{"error": message}`` in a single place; the
messages use Ollama's exact wording where clients are known to match on it.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base class: an error with a user-facing message and an HTTP status."""

    status_code: int = 500

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
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


__all__ = [
    "BadRequest",
    "BridgeError",
    "InvalidModelName",
    "ModelLoadError",
    "ModelNotFound",
    "RequestCanceled",
    "ServerBusy",
]
