"""The few Hugging Face Hub operations a pull needs, on ``huggingface_hub``'s public API.

* ``repo_files``: the commit a revision points at and its files with sizes and, for Git
  LFS files, their SHA-256 (one ``model_info`` call);
* ``download_lfs``: a weights file's bytes into ``blobs/<sha256>.incomplete`` in the cache,
  continuing an earlier partial download with an HTTP range request (recent
  ``huggingface_hub`` versions delete their own partial files, so resuming is done here);
* ``link_file``: ``hf_hub_download`` for the rest: small files, refs and snapshot links,
  i.e. the cache layout every HF tool reads.

The endpoint (``HF_ENDPOINT``), token (``HF_TOKEN`` or ``hf auth login``) and offline switch
(``HF_HUB_OFFLINE``) are huggingface_hub's own settings. Every HTTP exchange goes through the
checks of ``hub_http``; the listing's names are checked here before any becomes a path: the
commit (40 hex), each LFS SHA-256 (64 hex), each git blob id (40 or 64 hex) and each file name
(relative, no ``..``, no backslash, no control characters).
"""

from __future__ import annotations

import fcntl
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..manifest import file_sha256
from .faults import crash_point
from .hub_http import HubRefused, hub_endpoint, install

Progress = Callable[[int], None]  # bytes of the file on disk so far


@dataclass(frozen=True)
class HubFile:
    """One file of a repo at a commit."""

    path: str  # relative to the repo root, "/"-separated
    size: int  # bytes
    sha256: str | None  # Git LFS files (the weights): the content's SHA-256
    blob_id: str | None  # the git object id


_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_OBJECT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # git: SHA-1, or SHA-256 repos
_MAX_PATH = 1024


def offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` forbids downloads."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def repo_files(repo: str, revision: str) -> tuple[str, list[HubFile]]:
    """(commit sha, files) of ``repo`` at ``revision``; raises huggingface_hub's errors."""
    from huggingface_hub import HfApi

    install()
    info = HfApi(endpoint=hub_endpoint()).model_info(repo, revision=revision, files_metadata=True)
    commit = str(info.sha or "")
    if not _HEX40.fullmatch(commit):
        raise HubRefused(f"the Hub named a commit that is not 40 hex characters: {commit[:80]!r}")
    files = [
        HubFile(
            path=check_repo_path(s.rfilename),
            size=_size(s.size or (s.lfs.size if s.lfs else 0) or 0),
            sha256=_digest(s.lfs.sha256, _HEX64, "LFS sha256") if s.lfs else None,
            blob_id=_digest(s.blob_id, _OBJECT_ID, "git blob id") if s.blob_id else None,
        )
        for s in info.siblings or []
    ]
    return commit, files


def check_repo_path(path: object) -> str:
    """A repo file name safe to use under a snapshot directory; HubRefused otherwise."""
    text = path if isinstance(path, str) else ""
    parts = text.split("/")
    bad = (
        not text
        or len(text) > _MAX_PATH
        or text.startswith("/")
        or "\\" in text
        or any(ord(c) < 32 or c == "\x7f" for c in text)
        or any(part in ("", ".", "..") for part in parts)
    )
    if bad:
        raise HubRefused(f"the Hub listed a file name that is not a safe relative path: {path!r}")
    return text


def _digest(value: object, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise HubRefused(f"the Hub sent a {what} that is not a hex digest: {str(value)[:80]!r}")
    return value


def _size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise HubRefused(f"the Hub sent a file size that is not a byte count: {value!r}")
    return value


def repo_folder(cache: Path, repo: str) -> Path:
    """``<cache>/models--<org>--<name>``, as huggingface_hub names it."""
    return cache / ("models--" + repo.replace("/", "--"))


def blob_path(cache: Path, repo: str, sha256: str, *, incomplete: bool = False) -> Path:
    """Where the cache keeps an LFS file's content (``.incomplete`` while downloading)."""
    _digest(sha256, _HEX64, "LFS sha256")  # never a path component that is not a digest
    blob = repo_folder(cache, repo) / "blobs" / sha256
    return blob.with_name(sha256 + ".incomplete") if incomplete else blob


def download_lfs(cache: Path, repo: str, commit: str, file: HubFile, progress: Progress) -> bool:
    """Download (or finish downloading) an LFS ``file`` and make it the cache blob once its
    SHA-256 checks out. False if the blob was already there (another pull made it).

    A lock file per blob keeps two pulls of one repo from writing the same partial file.
    Raises ``CorruptDownload`` (the partial file is deleted) on a checksum mismatch.
    """
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()  # progress goes to the client, not to the server's log
    assert file.sha256 is not None
    blob = blob_path(cache, repo, file.sha256)
    blob.parent.mkdir(parents=True, exist_ok=True)
    with open(blob.with_name(file.sha256 + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if blob.is_file():
            return False
        partial = blob_path(cache, repo, file.sha256, incomplete=True)
        _continue_download(repo, commit, file, partial, progress)
        digest = file_sha256(partial)
        if digest != file.sha256:
            partial.unlink(missing_ok=True)
            raise CorruptDownload(file.path, file.sha256, digest)
        partial.replace(blob)
    return True


def _continue_download(
    repo: str, commit: str, file: HubFile, partial: Path, progress: Progress
) -> None:
    from huggingface_hub import hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    start = partial.stat().st_size if partial.is_file() else 0
    if start > file.size:  # not a prefix of this file: start again
        partial.unlink()
        start = 0
    progress(start)
    if start == file.size:  # all there (a pull killed before its check): only the check left
        return
    install()
    url = hf_hub_url(repo, file.path, revision=commit, endpoint=hub_endpoint())
    with open(partial, "ab") as handle:
        writer = _CountingFile(handle, start, progress, limit=file.size)
        headers = build_hf_headers()
        http_get(url, writer, resume_size=start, headers=headers, expected_size=file.size)


class CorruptDownload(Exception):
    """A downloaded file whose SHA-256 is not the one the Hub announced."""

    def __init__(self, path: str, expected: str, got: str) -> None:
        super().__init__(f"{path}: sha256 {got[:12]}, expected {expected[:12]}")
        self.path, self.expected, self.got = path, expected, got


def link_file(cache: Path, repo: str, commit: str, file: HubFile) -> Path:
    """The file's path in the cache snapshot, downloading it if its blob is not there yet."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    install()
    path = hf_hub_download(
        repo, file.path, revision=commit, cache_dir=cache, endpoint=hub_endpoint()
    )
    return Path(path)


class _CountingFile:
    """A file object for ``http_get`` that reports how many bytes are on disk and refuses
    more than the listing announced (``limit``)."""

    def __init__(self, handle: BinaryIO, start: int, progress: Progress, *, limit: int) -> None:
        self._handle = handle
        self._written = start
        self._progress = progress
        self._limit = limit

    def write(self, data: bytes) -> int:
        if self._written + len(data) > self._limit:
            raise HubRefused(f"the Hub sent more than the {self._limit} bytes it announced")
        count = self._handle.write(data)
        self._written += count
        self._progress(self._written)
        crash_point("pull.download")
        return count

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()

    def truncate(self, size: int | None = None) -> int:
        # the server ignored the range request: http_get starts the file over
        result = self._handle.truncate(size)
        self._written = self._handle.tell() if size is None else size
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


__all__ = [
    "CorruptDownload",
    "HubFile",
    "HubRefused",
    "blob_path",
    "check_repo_path",
    "download_lfs",
    "hub_endpoint",
    "link_file",
    "offline",
    "repo_files",
    "repo_folder",
]
