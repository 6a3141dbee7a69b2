"""What the bridge accepts from the Hugging Face Hub over HTTP, enforced on every request.

``huggingface_hub`` sends all its requests through one shared client; :func:`install` gives
it one with two event hooks (its own default client otherwise), so every request of a pull
(the listing, each file's metadata, each download and every redirect hop) is checked:

* **Only the configured Hub is contacted** (``HF_ENDPOINT``'s origin; for the official Hub
  also its own hosts, ``*.huggingface.co`` and ``*.hf.co``, where it keeps its files). A
  redirect to anywhere else is refused before it is followed: no SSRF through a Hub answer.
* **No compressed answers** (the class of Ollama's CVE-2024-12886): requests ask for
  ``identity``; an answer with another ``Content-Encoding`` is refused, so the bytes read
  are the bytes on the wire, and those are capped: an API answer at
  :data:`MAX_API_BYTES`, a file at its ``Content-Length`` (else :data:`MAX_UNSIZED_BYTES`).
* **Names that become paths are checked**: ``X-Repo-Commit`` must be 40 hex characters and
  a file's ``ETag`` 40 or 64 (huggingface_hub names cache directories and blobs after them:
  the class of Ollama's CVE-2024-37032).
* **No Xet transfers**: Xet headers are dropped, so a file comes over plain HTTP through
  these checks instead of from a storage server the answer names.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx2  # huggingface_hub's HTTP client (its dependency)

MAX_API_BYTES = 32 << 20  # a repo listing of thousands of files is a few MB
MAX_UNSIZED_BYTES = 1 << 30  # a file sent without Content-Length (the Hub always sends one)
_OFFICIAL_HOSTS = ("huggingface.co", "hf.co")
_HEX40 = re.compile(r"[0-9a-f]{40}")
_ETAG = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_installed = threading.Lock()
_done = False


def hub_endpoint() -> str:
    """The Hub URL in use: ``HF_ENDPOINT`` (read now, not at import) or huggingface.co."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


class HubRefused(Exception):
    """An answer (or a redirect) of the Hub that the bridge will not use; says why."""


def install() -> None:
    """Make huggingface_hub's shared client the checked one (once per process)."""
    global _done
    with _installed:
        if _done:
            return
        from huggingface_hub import set_client_factory

        set_client_factory(_checked_client)
        _done = True


def _checked_client() -> Any:
    from huggingface_hub.utils._http import default_client_factory

    client = default_client_factory()
    hooks = client.event_hooks
    hooks.setdefault("request", []).append(check_request)
    hooks.setdefault("response", []).append(check_response)
    client.event_hooks = hooks
    return client


def allowed_origin(url: str, endpoint: str | None = None) -> bool:
    """True if the bridge may send a request to ``url`` for the Hub at ``endpoint``."""
    target, hub = _origin(url), _origin(endpoint or hub_endpoint())
    if target == hub:
        return True
    official = hub[1] in _OFFICIAL_HOSTS and hub[0] == "https"
    host = target[1]
    on_hub = any(host == h or host.endswith("." + h) for h in _OFFICIAL_HOSTS)
    return official and target[0] == "https" and on_hub


def check_request(request: Any) -> None:
    """Refuse a request to another host than the Hub's; ask for uncompressed bytes."""
    url = str(request.url)
    if not allowed_origin(url):
        raise HubRefused(
            f"refused to contact {_origin(url)[1]}: only the configured Hub "
            f"({hub_endpoint()}) and its own file hosts are contacted"
        )
    request.headers["Accept-Encoding"] = "identity"


def check_response(response: Any) -> None:
    """Refuse compressed answers and unsafe names; cap the body; drop Xet headers."""
    headers = response.headers
    url = str(response.request.url)
    location = headers.get("Location")
    if 300 <= response.status_code < 400 and location:
        target = urljoin(url, location)
        if not allowed_origin(target):  # said here, not only when the hop would be sent
            raise HubRefused(
                f"the Hub redirected to {_origin(target)[1]}: refused to contact another "
                f"host than the configured Hub ({hub_endpoint()}) and its own file hosts"
            )
    encoding = headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise HubRefused(f"the Hub answered with Content-Encoding {encoding!r} (not asked for)")
    commit = headers.get("X-Repo-Commit")
    if commit is not None and not _HEX40.fullmatch(commit):
        raise HubRefused(f"the Hub sent an X-Repo-Commit that is not 40 hex: {commit[:80]!r}")
    path = response.request.url.path
    if "/resolve/" in path:
        for name in ("X-Linked-Etag", "ETag"):
            value = headers.get(name)
            if value is not None and not _ETAG.fullmatch(_bare_etag(value)):
                raise HubRefused(f"the Hub sent an {name} that is not a digest: {value[:80]!r}")
    for name in [n for n in headers if n.lower().startswith("x-xet-")]:
        del headers[name]
    limit = MAX_API_BYTES if path.startswith("/api/") else MAX_UNSIZED_BYTES
    announced = headers.get("Content-Length", "")
    if announced.isdigit() and not path.startswith("/api/"):
        limit = int(announced)
    response.stream = _CappedStream(response.stream, limit, url)


def _bare_etag(value: str) -> str:
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme, 0)


class _CappedStream(httpx2.SyncByteStream):
    """A response body that raises once more than ``limit`` bytes have arrived."""

    def __init__(self, inner: Any, limit: int, url: str) -> None:
        self._inner, self._limit, self._url = inner, limit, url

    def __iter__(self) -> Iterator[bytes]:
        seen = 0
        for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise HubRefused(f"the Hub's answer is larger than {self._limit} bytes")
            yield chunk

    def close(self) -> None:
        self._inner.close()


__all__ = [
    "MAX_API_BYTES",
    "MAX_UNSIZED_BYTES",
    "HubRefused",
    "allowed_origin",
    "check_request",
    "check_response",
    "hub_endpoint",
    "install",
]
