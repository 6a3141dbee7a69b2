"""A client of Ollama's registry (``registry.ollama.ai``, OCI distribution), for pulls.

What ``ollama pull`` does (Ollama's ``server/images.go``, ``download.go``, ``auth.go``):

* ``GET /v2/<namespace>/<model>/manifests/<tag>`` with ``Accept:
  application/vnd.docker.distribution.manifest.v2+json``; then each layer (and the config)
  by ``GET /v2/<namespace>/<model>/blobs/sha256:<hex>``, which may redirect to a CDN.
* A ``401`` carries ``WWW-Authenticate: Bearer realm=…,service=…,scope=…``; the token comes
  from ``GET <realm>?service=…&scope=…`` as ``{"token": …}`` and goes back as ``Authorization:
  Bearer``. The bridge has no ollama.com key, so it asks for the token anonymously (public
  models need nothing more).

What the bridge refuses, each a class of an Ollama advisory (``tests/security``):

* a token realm on another host than the registry's (CVE-2025-51471): nothing is sent there;
* a digest that is not ``sha256:`` + 64 hex characters (CVE-2024-37032), before it names a
  file; a layer ``name`` that is not a plain relative path;
* any body over its cap (manifest, token, errors), and compressed answers: requests ask for
  ``identity`` and another ``Content-Encoding`` is refused, so no gzip bomb is ever inflated
  (CVE-2024-12886); a blob is capped at the size its manifest gives;
* a blob longer or shorter than its manifest says, or whose SHA-256 differs: its partial
  file is deleted and the pull fails, before any manifest is written.

A blob downloads into ``sha256-<hex>-partial`` and continues from there (``Range``) when a
pull is repeated; it becomes ``sha256-<hex>`` only once its size and SHA-256 are right.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import httpx2

from ..names import ModelName
from .faults import crash_point
from .ollama_manifest import (
    MANIFEST_MEDIA_TYPE,
    MAX_MANIFEST_BYTES,
    Layer,
    RegistryRefused,
    RemoteManifest,
    parse_digest,
    parse_manifest,
    safe_relative,
)

MAX_SMALL_BYTES = 64 << 10  # a token answer, an error body
_MAX_REDIRECTS = 10
_CHUNK = 1 << 20
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')
_DEFAULT_PORTS = {"http": 80, "https": 443}
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


class NotInRegistry(Exception):
    """The registry has no such model or tag (HTTP 404)."""


class RegistryUnreachable(Exception):
    """The registry could not be reached (network error)."""


class RegistryClient:
    """Talks to one registry (``base_url``) for one pull; keeps the pull's bearer token."""

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._token: str | None = None
        self._client = httpx2.Client(timeout=timeout, follow_redirects=False, trust_env=True)

    def close(self) -> None:
        """Close the connections."""
        self._client.close()

    def manifest(self, name: ModelName) -> RemoteManifest:
        """The manifest of ``name``'s tag; NotInRegistry, RegistryRefused, RegistryUnreachable."""
        url = f"{self.base_url}/v2/{name.namespace}/{name.model}/manifests/{name.tag}"
        with self._open(url, {"Accept": MANIFEST_MEDIA_TYPE}, redirects=False) as response:
            return parse_manifest(_read_capped(response, MAX_MANIFEST_BYTES, "manifest"))

    def download(
        self, name: ModelName, layer: Layer, dest: Path, progress: Callable[[int], None]
    ) -> None:
        """Bring the blob of ``layer`` to ``dest`` (resuming ``<dest>-partial``), checked.

        ``progress(done)`` is called with the bytes present after each chunk; it may raise to
        stop the download (the partial file stays for the next pull).
        """
        with _blob_lock(dest):
            if dest.is_file():
                return
            partial = dest.with_name(dest.name + "-partial")
            done = partial.stat().st_size if partial.is_file() else 0
            if done > layer.size:
                partial.unlink()
                done = 0
            if done < layer.size:  # hashed as it arrives: no second read of the blob
                got = self._fetch(name, layer, partial, done, progress)
                if got != layer.digest:
                    _discard(partial)
                    raise RegistryRefused(_mismatch(layer, got))
            else:
                verify_blob(partial, layer)
            os.replace(partial, dest)

    def _fetch(
        self,
        name: ModelName,
        layer: Layer,
        partial: Path,
        done: int,
        progress: Callable[[int], None],
    ) -> str:
        """Download the rest of the blob into ``partial``; its SHA-256 (whole file)."""
        url = f"{self.base_url}/v2/{name.namespace}/{name.model}/blobs/{layer.ref}"
        headers = {"Range": f"bytes={done}-"} if done else {}
        with self._open(url, headers, redirects=True) as response:
            if response.status_code != 206:
                done = 0  # the whole blob came: start over
            remaining = layer.size - done
            announced = response.headers.get("Content-Length", "")
            if announced.isdigit() and int(announced) != remaining:
                _discard(partial)
                raise RegistryRefused(
                    f"the registry sent {announced} bytes for {layer.ref[:19]}, its manifest "
                    f"says {remaining}: refused"
                )
            hasher = hashlib.sha256()
            with open(partial, "r+b" if done else "w+b") as handle:
                for block in iter(lambda: handle.read(min(_CHUNK, done - handle.tell())), b""):
                    hasher.update(block)  # the part downloaded before
                handle.seek(done)
                handle.truncate()
                for chunk in response.iter_raw(_CHUNK):
                    done += len(chunk)
                    if done > layer.size:
                        handle.close()
                        _discard(partial)
                        raise RegistryRefused(
                            f"blob {layer.ref[:19]} is longer than the {layer.size} bytes its "
                            "manifest says: refused"
                        )
                    handle.write(chunk)
                    hasher.update(chunk)
                    progress(done)
                    crash_point("pull.download")  # the store's crash tests stop here
        if done != layer.size:
            raise RegistryUnreachable(
                f"the download of {layer.ref[:19]} stopped at {done} of {layer.size} bytes"
            )
        return hasher.hexdigest()

    # -- requests ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _open(self, url: str, headers: dict[str, str], *, redirects: bool) -> Iterator[Any]:
        """GET ``url`` (authenticating once on a 401, following redirects for blobs) and yield
        the checked, streaming response."""
        response = None
        try:
            response = self._get(url, headers, redirects)
            if response.status_code == 401:
                challenge = response.headers.get("WWW-Authenticate", "")
                response.close()
                self._token = self._fetch_token(challenge)
                response = self._get(url, headers, redirects)
            _check_status(response, url)
            yield response
        finally:
            if response is not None:
                response.close()

    def _get(self, url: str, headers: dict[str, str], redirects: bool) -> Any:
        for _ in range(_MAX_REDIRECTS + 1):
            same = _origin(url) == _origin(self.base_url)
            sent = {"Accept-Encoding": "identity", **headers}
            if same and self._token:
                sent["Authorization"] = f"Bearer {self._token}"  # never to another host
            response = self._send(url, sent)
            location = response.headers.get("Location")
            if not (300 <= response.status_code < 400 and location):
                return response
            response.close()
            target = urljoin(url, location)
            if not redirects or not _may_follow(self.base_url, target):
                raise RegistryRefused(f"the registry redirected to {_origin(target)[1]}: refused")
            url = target
        raise RegistryRefused(f"more than {_MAX_REDIRECTS} redirects")

    def _send(self, url: str, headers: dict[str, str]) -> Any:
        try:
            response = self._client.send(
                self._client.build_request("GET", url, headers=headers), stream=True
            )
        except httpx2.HTTPError as exc:
            raise RegistryUnreachable(f"cannot reach {_origin(url)[1]}: {exc}") from exc
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            response.close()
            raise RegistryRefused(
                f"the registry answered with Content-Encoding {encoding!r} (not asked for): refused"
            )
        return response

    def _fetch_token(self, challenge: str) -> str:
        """Ollama's ``getAuthorizationToken``, without a key: the realm must be the registry's
        own host (CVE-2025-51471), else nothing is sent."""
        scheme, _, params = challenge.partition(" ")
        fields = dict(_CHALLENGE.findall(params))
        realm = fields.get("realm", "")
        if scheme.lower() != "bearer" or not realm:
            raise RegistryRefused("the registry asked for authentication this bridge cannot give")
        if _origin(realm) != _origin(self.base_url):
            raise RegistryRefused(
                f"the registry's token realm is on another host ({_origin(realm)[1]}), not "
                f"{_origin(self.base_url)[1]}: refused, nothing was sent there"
            )
        query = [("service", fields.get("service", ""))]
        query += [("scope", s) for s in fields.get("scope", "").split(" ") if s]
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        response = self._send(url, {"Accept-Encoding": "identity"})
        try:
            if response.status_code == 401:
                raise RegistryRefused(
                    "the registry refused access (HTTP 401): the model is private or needs "
                    "an ollama.com key, which this bridge does not have"
                )
            _check_status(response, url)
            body = _read_capped(response, MAX_SMALL_BYTES, "token")
        finally:
            response.close()
        try:
            token = json.loads(body).get("token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token or len(token) > 16384:
            raise RegistryRefused("the registry's token answer has no token")
        return token


def _check_status(response: Any, url: str) -> None:
    status = response.status_code
    if status == 404:
        raise NotInRegistry(url)
    if status >= 400:
        body = _read_capped(response, MAX_SMALL_BYTES, "error", strict=False)
        raise RegistryRefused(f"the registry answered HTTP {status}: {_error_text(body)}")


def _error_text(body: bytes) -> str:
    try:
        errors = json.loads(body).get("errors") or []
        return "; ".join(str(e.get("message") or e.get("code")) for e in errors)[:300]
    except (ValueError, AttributeError, TypeError):
        return body[:300].decode("utf-8", "replace").strip()


def _read_capped(response: Any, limit: int, what: str, *, strict: bool = True) -> bytes:
    announced = response.headers.get("Content-Length", "")
    if strict and announced.isdigit() and int(announced) > limit:
        raise RegistryRefused(f"the registry's {what} is larger than {limit} bytes: refused")
    data = bytearray()
    for chunk in response.iter_raw(1 << 16):
        data += chunk
        if len(data) > limit:
            if not strict:
                return bytes(data[:limit])
            raise RegistryRefused(f"the registry's {what} is larger than {limit} bytes: refused")
    return bytes(data)


def verify_blob(path: Path, layer: Layer, *, discard: bool = True) -> None:
    """RegistryRefused unless ``path`` has the layer's size and SHA-256 (deleted if not,
    when ``discard``)."""
    size = path.stat().st_size
    if size != layer.size:
        if discard:
            _discard(path)
        raise RegistryRefused(
            f"blob {layer.ref[:19]} has {size} bytes, its manifest says {layer.size}"
        )
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    if digest.hexdigest() != layer.digest:
        if discard:
            _discard(path)
        raise RegistryRefused(_mismatch(layer, digest.hexdigest()))


def _mismatch(layer: Layer, got: str) -> str:
    return f'digest mismatch, expected "{layer.ref}", got "sha256:{got}": the blob was discarded'


def _discard(path: Path) -> None:
    path.unlink(missing_ok=True)


def _blob_lock(dest: Path) -> contextlib.AbstractContextManager[None]:
    """One download per blob at a time: across threads, and processes (``flock``)."""
    return name_lock(dest.parent, dest.name)


@contextlib.contextmanager
def name_lock(directory: Path, name: str) -> Iterator[None]:
    """An exclusive lock named ``name`` in ``directory`` (hidden ``.<name>.lock``), held
    across threads and processes (``flock``)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f".{name}.lock"
    with _locks_guard:
        lock = _locks.setdefault(str(path), threading.Lock())
    with lock, open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _may_follow(base_url: str, target: str) -> bool:
    """A blob may redirect within the registry, or to an https host (its CDN), as Ollama's do;
    the bearer token is never sent along (``_get``)."""
    scheme = urlsplit(target).scheme.lower()
    return _origin(target) == _origin(base_url) or scheme == "https"


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme, 0)


__all__ = [
    "MANIFEST_MEDIA_TYPE",
    "Layer",
    "NotInRegistry",
    "RegistryClient",
    "RegistryRefused",
    "RegistryUnreachable",
    "RemoteManifest",
    "parse_digest",
    "parse_manifest",
    "safe_relative",
    "name_lock",
    "verify_blob",
]
