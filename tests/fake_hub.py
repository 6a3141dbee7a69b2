"""A Hugging Face Hub stand-in on loopback: the few endpoints huggingface_hub calls for a pull.

* ``GET /api/models/{org}/{name}/revision/{rev}`` (``model_info``; ``?blobs=true`` adds
  sizes, git blob ids and LFS SHA-256s);
* ``HEAD|GET /{org}/{name}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag`` (the LFS
  SHA-256 or the git blob id) and ``Content-Length``; ``Range: bytes=N-`` answers 206.

Errors carry huggingface_hub's ``X-Error-Code`` header (``RepoNotFound``,
``RevisionNotFound``, ``GatedRepo``), so the library raises its real exception classes.
Knobs for tests: throttled weights (to interrupt a pull), corrupt bytes, an announced size
that cannot fit on disk, a repo whose connections drop; and hostile answers for
``tests/security``: a patched listing, patched headers, redirects to another server, gzip
bombs, weights longer than announced. Every request is logged.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

from fake_http import content_range, range_start, serve, shut, write_chunks

_INFO = re.compile(r"^/api/models/([^/]+/[^/]+)/revision/([^/]+)$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
LFS_SUFFIXES = (".safetensors",)


@dataclass
class FakeRepo:
    """One repo with one commit."""

    files: dict[str, bytes]
    commit: str
    gated: bool = False
    drop_connections: bool = False
    corrupt: bool = False  # serve flipped bytes for LFS files
    announced_size: int | None = None  # lie about LFS sizes (disk-full checks)
    throttle_s: float = 0.0  # pause after each chunk of an LFS body
    chunk: int = 1 << 14
    # hostile answers
    patch_info: Callable[[dict], None] | None = None  # edits the model_info JSON
    patch_headers: dict[str, str] = field(default_factory=dict)  # on every resolve answer
    redirect_to: str | None = None  # resolve answers 302 to this base URL + the same path
    gzip_bomb: bool = False  # listing and small files: 64 MiB of spaces, gzip-encoded
    oversize: int = 0  # LFS bodies carry this many extra bytes, chunked, no Content-Length

    def lfs(self, path: str) -> bool:
        return path.endswith(LFS_SUFFIXES)

    def etag(self, path: str) -> str:
        data = self.files[path]
        if self.lfs(path):
            return hashlib.sha256(data).hexdigest()
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def sibling(self, path: str) -> dict:
        size = len(self.files[path])
        entry: dict = {"rfilename": path, "size": size, "blobId": self.etag(path)}
        if self.lfs(path):
            announced = self.announced_size or size
            entry["size"] = announced
            entry["lfs"] = {"sha256": self.etag(path), "size": announced, "pointerSize": 134}
        return entry


@dataclass
class FakeHub:
    """The server; ``url`` goes into ``HF_ENDPOINT``."""

    repos: dict[str, FakeRepo] = field(default_factory=dict)
    log: list[dict] = field(default_factory=list)
    token: str = "hf_good_token"  # accepted for gated repos
    _server: ThreadingHTTPServer | None = None

    def add_repo(self, repo_id: str, directory: Path, **knobs) -> FakeRepo:
        files = {
            p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(directory.rglob("*"))
            if p.is_file()
        }
        commit = hashlib.sha1(repo_id.encode() + repr(sorted(files)).encode()).hexdigest()
        repo = FakeRepo(files, commit, **knobs)
        self.repos[repo_id] = repo
        return repo

    def start(self) -> FakeHub:
        self._server = serve(type("Handler", (_Handler,), {"hub": self}))
        return self

    def stop(self) -> None:
        shut(self._server)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def ranges(self, repo_id: str) -> list[str]:
        """``Range`` headers of GETs of that repo's files (``""`` when none)."""
        return [
            e["range"]
            for e in self.log
            if e["method"] == "GET" and e["path"].startswith(f"/{repo_id}/resolve/")
        ]


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub

    def log_message(self, format: str, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._route(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._route(body=False)

    def _route(self, *, body: bool) -> None:
        path = unquote(urlparse(self.path).path)
        entry = {"method": self.command, "path": path, "range": self.headers.get("Range", "")}
        entry["auth"] = self.headers.get("Authorization", "")
        self.hub.log.append(entry)
        if match := _INFO.match(path):
            self._info(*match.groups())
        elif match := _RESOLVE.match(path):
            self._resolve(*match.groups(), body=body)
        else:
            self._error(404, "RepoNotFound", "not found")

    def _repo(self, repo_id: str, revision: str) -> FakeRepo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(401, "RepoNotFound", "Repository not found")
            return None
        if repo.drop_connections:
            self.close_connection = True
            self.connection.close()
            return None
        if revision not in ("main", repo.commit):
            self._error(404, "RevisionNotFound", "Invalid rev id")
            return None
        return repo

    def _info(self, repo_id: str, revision: str) -> None:
        repo = self._repo(repo_id, revision)
        if repo is None:
            return
        info = {
            "id": repo_id,
            "modelId": repo_id,
            "sha": repo.commit,
            "private": False,
            "gated": "manual" if repo.gated else False,
            "siblings": [repo.sibling(p) for p in repo.files],
        }
        if repo.patch_info is not None:
            repo.patch_info(info)
        if repo.gzip_bomb:
            self._send(200, gzip_bomb(), {"Content-Type": "application/json", **_GZIP})
            return
        self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"})

    def _resolve(self, repo_id: str, revision: str, file: str, *, body: bool) -> None:
        repo = self._repo(repo_id, revision)
        if repo is None:
            return
        if repo.gated and self.headers.get("Authorization") != f"Bearer {self.hub.token}":
            self._error(403, "GatedRepo", "Access to model is restricted")
            return
        if file not in repo.files:
            self._error(404, "EntryNotFound", "Entry not found", commit=repo.commit)
            return
        if repo.redirect_to:
            self._send(302, b"", {"Location": repo.redirect_to + self.path})
            return
        if repo.oversize and repo.lfs(file) and body:
            self._chunked(repo.files[file] + b"\0" * repo.oversize, repo)
            return
        data = repo.files[file]
        if repo.corrupt and repo.lfs(file):
            data = bytes(b ^ 0xFF for b in data)
        start = range_start(self.headers.get("Range", "")) or 0
        headers = {
            "X-Repo-Commit": repo.commit,
            "ETag": f'"{repo.etag(file)}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        status = 200
        if start and body:
            status, headers["Content-Range"] = 206, content_range(start, len(data))
        payload = data[start:] if body else data
        headers["Content-Length"] = str(len(payload))
        if repo.gzip_bomb and not repo.lfs(file):
            payload = gzip_bomb() if body else payload
            headers.update(_GZIP, **{"Content-Length": str(len(gzip_bomb()))})
        headers.update(repo.patch_headers)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self._write_body(repo, file, payload)

    def _write_body(self, repo: FakeRepo, file: str, payload: bytes) -> None:
        throttle = repo.throttle_s if repo.lfs(file) else 0.0
        write_chunks(self.wfile, payload, repo.chunk, throttle)

    def _chunked(self, payload: bytes, repo: FakeRepo) -> None:
        self.protocol_version = "HTTP/1.1"
        self.send_response(200)
        self.send_header("X-Repo-Commit", repo.commit)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            for offset in range(0, len(payload), repo.chunk):
                part = payload[offset : offset + repo.chunk]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _error(self, status: int, code: str, message: str, commit: str | None = None) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": message}
        if commit:
            headers["X-Repo-Commit"] = commit
        body = json.dumps({"error": message}).encode()
        self._send(status, body, {**headers, "Content-Type": "application/json"})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


_GZIP = {"Content-Encoding": "gzip"}


@cache
def gzip_bomb() -> bytes:
    """64 MiB of spaces as a gzip body of about 64 KB."""
    return gzip.compress(b" " * (64 << 20), compresslevel=9)
