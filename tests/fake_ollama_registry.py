"""A stand-in for Ollama's registry on loopback, written from Ollama's client side
(``server/images.go``, ``download.go``, ``auth.go``; ``x/`` for the MLX layers).

* ``GET /v2/<namespace>/<model>/manifests/<tag>`` and ``GET|HEAD
  /v2/<namespace>/<model>/blobs/sha256:<hex>`` want ``Authorization: Bearer <token>``; without
  it they answer ``401`` with ``WWW-Authenticate: Bearer realm="<url>/v2/token",
  service="registry.ollama.ai",scope="repository:<ns>/<model>:pull"``, as the registry does;
* ``GET /v2/token?service=…&scope=…`` gives ``{"token": …}``;
* a blob answers ``307`` to ``/cdn/<hex>`` (the registry sends blobs to its CDN), which
  serves the bytes, ``Range: bytes=N-`` answering ``206``; an unknown manifest is ``404``
  with the registry's ``MANIFEST_UNKNOWN`` error.

Knobs for tests: a throttle (to interrupt a pull), and hostile answers for ``tests/security``:
a token realm on another host, a patched manifest, a gzip-bombed manifest, blobs longer than
their manifest says or with other bytes. Every request is logged (method, path, headers).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

from fake_http import content_range, range_start, serve, shut, write_chunks

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
TOKEN = "fake-registry-token"
_MANIFEST = re.compile(r"^/v2/([^/]+)/([^/]+)/manifests/([^/]+)$")
_BLOB = re.compile(r"^/v2/([^/]+)/([^/]+)/blobs/(.+)$")
_CDN = re.compile(r"^/cdn/([0-9a-f]{64})$")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Knobs:
    """Hostile or slow behaviour, off by default."""

    realm: str | None = None  # the token realm to announce (default: this server)
    throttle_s: float = 0.0  # pause after each chunk of a blob
    chunk: int = 1 << 20
    extra_blob_bytes: int = 0  # serve blobs longer than their manifest says
    corrupt_blobs: bool = False  # serve other bytes of the right length
    gzip_manifest: bytes | None = None  # answer manifests with this gzip body
    lie_content_length: bool = False  # announce a Content-Length other than the manifest's
    no_auth: bool = False  # answer without asking for a token


@dataclass
class FakeOllamaRegistry:
    """The fake registry; ``add_model`` publishes a name from its layers."""

    manifests: dict[tuple[str, str, str], bytes] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    knobs: Knobs = field(default_factory=Knobs)
    log: list[dict[str, Any]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeOllamaRegistry:
        self._server = serve(type("Handler", (_Handler,), {"registry": self}))
        return self

    def stop(self) -> None:
        shut(self._server)

    def add_model(
        self, name: str, layers: list[tuple[str, bytes, str]], config: dict[str, Any]
    ) -> bytes:
        """Publish ``name`` (``model:tag`` or ``ns/model:tag``) with ``layers`` (media type,
        bytes, layer name); returns the manifest's bytes."""
        rest, _, tag = name.rpartition(":") if ":" in name else (name, "", "latest")
        namespace, _, model = rest.rpartition("/")
        config_bytes = json.dumps(config).encode()
        self.blobs[digest_of(config_bytes)] = config_bytes
        entries = []
        for media, data, layer_name in layers:
            self.blobs[digest_of(data)] = data
            entry = {"mediaType": media, "digest": digest_of(data), "size": len(data)}
            if layer_name:
                entry["name"] = layer_name
            entries.append(entry)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {
                "mediaType": CONFIG_TYPE,
                "digest": digest_of(config_bytes),
                "size": len(config_bytes),
            },
            "layers": entries,
        }
        raw = json.dumps(manifest, indent=3).encode()
        self.manifests[(namespace or "library", model, tag or "latest")] = raw
        return raw

    def set_manifest(self, name: str, manifest: dict[str, Any]) -> None:
        """Publish a hand-made (possibly hostile) manifest under ``name``."""
        rest, _, tag = name.rpartition(":")
        self.manifests[("library", rest, tag)] = json.dumps(manifest).encode()

    def requests(self, prefix: str) -> list[dict[str, Any]]:
        return [entry for entry in self.log if entry["path"].startswith(prefix)]


class _Handler(BaseHTTPRequestHandler):
    registry: FakeOllamaRegistry
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def _route(self, head: bool) -> None:
        fake = self.registry
        path = urlparse(self.path).path
        fake.log.append({"method": self.command, "path": path, "headers": dict(self.headers)})
        if path == "/v2/token":
            return self._json(200, {"token": TOKEN})
        if m := _CDN.fullmatch(path):
            return self._blob_bytes(fake.blobs.get("sha256:" + m.group(1)), head)
        manifest, blob = _MANIFEST.fullmatch(path), _BLOB.fullmatch(path)
        if not (manifest or blob):
            return self._json(404, {"errors": [{"code": "NOT_FOUND", "message": "not found"}]})
        match = manifest or blob
        assert match is not None
        namespace, model = match.group(1), match.group(2)
        if not fake.knobs.no_auth and self.headers.get("Authorization") != f"Bearer {TOKEN}":
            realm = fake.knobs.realm or f"{fake.url}/v2/token"
            challenge = (
                f'Bearer realm="{realm}",service="registry.ollama.ai",'
                f'scope="repository:{namespace}/{model}:pull"'
            )
            return self._json(401, _error("UNAUTHORIZED", "authentication required"), challenge)
        if manifest:
            return self._manifest((namespace, model, match.group(3)), head)
        digest = match.group(3)
        if digest not in fake.blobs:
            return self._json(404, _error("BLOB_UNKNOWN", "blob unknown to registry"))
        self.send_response(307)
        self.send_header("Location", f"{fake.url}/cdn/{digest.removeprefix('sha256:')}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _manifest(self, key: tuple[str, str, str], head: bool) -> None:
        fake = self.registry
        raw = fake.manifests.get(key)
        if raw is None:
            return self._json(404, _error("MANIFEST_UNKNOWN", "manifest unknown"))
        self.send_response(200)
        self.send_header("Content-Type", MANIFEST_TYPE)
        if fake.knobs.gzip_manifest is not None:
            raw = fake.knobs.gzip_manifest
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        if not head:
            self.wfile.write(raw)

    def _blob_bytes(self, data: bytes | None, head: bool) -> None:
        knobs = self.registry.knobs
        if data is None:
            return self._json(404, _error("BLOB_UNKNOWN", "blob unknown"))
        if knobs.corrupt_blobs:
            data = bytes(b ^ 0x55 for b in data)
        data += b"\0" * knobs.extra_blob_bytes
        start = range_start(self.headers.get("Range", ""))
        body = data[start or 0 :]
        self.send_response(200 if start is None else 206)
        self.send_header("Content-Type", "application/octet-stream")
        length = len(body) + (7 if knobs.lie_content_length else 0)
        self.send_header("Content-Length", str(length))
        if start is not None:
            self.send_header("Content-Range", content_range(start, len(data)))
        self.end_headers()
        if head:
            return
        write_chunks(self.wfile, body, knobs.chunk, knobs.throttle_s)
        if knobs.lie_content_length:
            self.close_connection = True

    def _json(self, status: int, body: dict[str, Any], challenge: str | None = None) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        if challenge:
            self.send_header("WWW-Authenticate", challenge)
        self.end_headers()
        self.wfile.write(raw)


def _error(code: str, message: str) -> dict[str, Any]:
    return {"errors": [{"code": code, "message": message, "detail": None}]}


def gzip_bomb(size: int = 64 << 20) -> bytes:
    """A small gzip body that inflates to ``size`` bytes of ``{``-padded JSON-ish text."""
    return gzip.compress(b" " * size, compresslevel=9)
