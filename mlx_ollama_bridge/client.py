"""A small HTTP client for the Ollama API (the bridge's, or a real Ollama's), used by the CLI.

Like Ollama's Go ``api.Client``: the base URL comes from ``OLLAMA_HOST`` (or ``--host``)
parsed the way Ollama parses it; a non-2xx answer raises :class:`ClientError` with the
server's ``error`` text; in an NDJSON stream, a line with an ``error`` raises the same.
Timeouts: a short one to connect, and a longer one for the silence between two chunks (a
model load is the longest legitimate silence).
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import requests

from .config import parse_ollama_host

CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 300.0  # between two chunks; Ollama's default model load timeout
API_KEY_ENV = "MLX_BRIDGE_API_KEY"  # sent as a bearer token when set (bridge with a key)


class ClientError(Exception):
    """A request failed: ``message`` is the server's ``error`` text or what went wrong.

    ``status`` is the HTTP status (None when no answer came back at all).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return self.message


def base_url(host: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The server URL for ``host`` (``OLLAMA_HOST`` forms) or ``$OLLAMA_HOST``.

    ``:port`` and ``0.0.0.0`` mean this machine, as for the ``ollama`` CLI.
    """
    env = os.environ if env is None else env
    return parse_ollama_host(host if host is not None else env.get("OLLAMA_HOST")).url


def is_loopback_url(url: str) -> bool:
    """True for ``localhost``/127.0.0.0/8/``::1`` URLs (never sent through an HTTP proxy)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Client:
    """Calls to one server at ``url`` (no trailing slash)."""

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        read_timeout_s: float = READ_TIMEOUT_S,
        label: str = "",
    ) -> None:
        self.url = url.rstrip("/")
        self.label = label  # which backend this is ("mlx", "ollama"), "" when not known
        self.timeout = (connect_timeout_s, read_timeout_s)
        self._session = requests.Session()
        self._session.trust_env = not is_loopback_url(self.url)  # as Go: no proxy for loopback
        self._session.headers.update({"Accept": "application/x-ndjson, application/json"})
        if key := os.environ.get(API_KEY_ENV, "").strip().strip("\"'"):
            self._session.headers["Authorization"] = f"Bearer {key}"
        self._session.headers.update(headers or {})

    # -- transport ---------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None) -> requests.Response:
        """Send a request and return the (streamed) response; ClientError if it is not 2xx."""
        try:
            response = self._session.request(
                method,
                self.url + path,
                data=None if body is None else json.dumps(body),
                headers={"Content-Type": "application/json"} if body is not None else None,
                timeout=self.timeout,
                stream=True,
            )
        except requests.ConnectionError as exc:
            if isinstance(exc, requests.ConnectTimeout) or "refused" in str(exc).lower():
                raise ClientError(f"could not connect to a server at {self.url}") from exc
            raise ClientError(f"connection to {self.url} failed: {_short(exc)}") from exc
        except requests.Timeout as exc:
            raise ClientError(f"{self.url} did not answer in time") from exc
        except requests.RequestException as exc:
            raise ClientError(f"request to {self.url} failed: {_short(exc)}") from exc
        if response.status_code >= 400:
            raise _error_from(response)
        return response

    def json(self, method: str, path: str, body: Any = None) -> Any:
        """A request whose answer is one JSON value (None for an empty 200, as copy/delete)."""
        response = self.request(method, path, body)
        try:
            text = response.text
        except requests.RequestException as exc:
            raise ClientError(f"reading the answer of {self.url} failed: {_short(exc)}") from exc
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ClientError(f"{self.url}{path} answered something that is not JSON") from exc

    def stream(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """POST ``body`` and yield each NDJSON line as a dict; an ``error`` line raises.

        Closing the iterator early closes the connection (the server cancels the request).
        """
        response = self.request("POST", path, body)
        try:
            yield from _ndjson(response)
        finally:
            response.close()

    # -- the Ollama API ----------------------------------------------------------------------

    def heartbeat(self) -> float:
        """``HEAD /``; the round trip in seconds."""
        started = time.perf_counter()
        self.request("HEAD", "/").close()
        return time.perf_counter() - started

    def version(self) -> str:
        """``GET /api/version``."""
        return str((self.json("GET", "/api/version") or {}).get("version", ""))

    def health(self) -> dict[str, Any]:
        """``GET /health``, its body even when it answers 503 (a broken distributed group)."""
        try:
            response = self._session.get(self.url + "/health", timeout=self.timeout)
            body = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise ClientError(f"{self.url}/health did not answer: {_short(exc)}") from exc
        if response.status_code not in (200, 503) or not isinstance(body, dict):
            raise ClientError(f"{self.url}/health answered {response.status_code}")
        return body

    def tags(self) -> list[dict[str, Any]]:
        """``GET /api/tags``: the models."""
        return list((self.json("GET", "/api/tags") or {}).get("models") or [])

    def ps(self) -> list[dict[str, Any]]:
        """``GET /api/ps``: the loaded models."""
        return list((self.json("GET", "/api/ps") or {}).get("models") or [])

    def show(self, model: str, *, verbose: bool = False) -> dict[str, Any]:
        """``POST /api/show``."""
        return self.json("POST", "/api/show", {"model": model, "verbose": verbose}) or {}

    def delete(self, model: str) -> None:
        """``DELETE /api/delete``."""
        self.json("DELETE", "/api/delete", {"model": model})

    def copy(self, source: str, destination: str) -> None:
        """``POST /api/copy``."""
        self.json("POST", "/api/copy", {"source": source, "destination": destination})

    def unload(self, model: str) -> dict[str, Any]:
        """``POST /api/generate`` with ``keep_alive: 0``: the ``done_reason: unload`` reply."""
        body = {"model": model, "keep_alive": 0, "stream": False}
        return self.json("POST", "/api/generate", body) or {}


def _ndjson(response: requests.Response) -> Iterator[dict[str, Any]]:
    """Lines of an NDJSON body as they arrive (chunks are split and joined by hand)."""
    pending = b""
    try:
        for chunk in response.iter_content(chunk_size=None):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    yield _parse_line(line)
    except requests.RequestException as exc:
        raise ClientError(f"the stream from {response.url} broke off: {_short(exc)}") from exc
    if pending.strip():
        yield _parse_line(pending)


def _parse_line(line: bytes) -> dict[str, Any]:
    try:
        item = json.loads(line)
    except ValueError as exc:
        raise ClientError(f"bad line in stream: {line[:80]!r}") from exc
    if isinstance(item, dict) and item.get("error"):
        raise ClientError(str(item["error"]))
    return item if isinstance(item, dict) else {"value": item}


def _error_from(response: requests.Response) -> ClientError:
    """The server's ``{"error": ...}`` text, or its plain-text body, or the status line."""
    try:
        text = response.text.strip()
    except requests.RequestException:
        text = ""
    finally:
        response.close()
    message = text
    try:
        body = json.loads(text)
        if isinstance(body, dict) and body.get("error"):
            message = str(body["error"])
    except ValueError:
        pass
    if not message:
        message = f"{response.status_code} {response.reason}".strip()
    if message in ("404 page not found", "405 method not allowed"):  # the router's, not a model's
        where = urlsplit(response.url)
        message = (
            f"the server at {where.scheme}://{where.netloc} does not offer "
            f"{response.request.method} {where.path} ({message})"
        )
    return ClientError(message, response.status_code)


def _short(exc: BaseException) -> str:
    """The innermost useful words of a requests/urllib3 error."""
    text = str(exc)
    for marker in ("Connection refused", "timed out", "Connection reset", "Name or service"):
        if marker in text:
            return marker.lower()
    return text.splitlines()[0][:200] if text else type(exc).__name__


__all__ = ["API_KEY_ENV", "Client", "ClientError", "base_url", "is_loopback_url"]
