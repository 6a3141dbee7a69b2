"""The few Hugging Face Hub operations a pull needs, on ``huggingface_hub``'s public API.

* ``repo_files``: the commit a revision points at and its files with sizes and, for Git
  LFS files, their SHA-256 (one ``model_info`` call);
* ``download_lfs``: a weights file's bytes into ``blobs/<sha256>.incomplete`` in the cache,
  continuing an earlier partial download with an HTTP range request (recent
  ``huggingface_hub`` versions delete their own partial files, so resuming is done here);
* ``link_file``: ``hf_hub_download`` for the rest: small files, refs and snapshot links,
  i.e. the cache layout every HF tool reads.

The endpoint (``HF_ENDPOINT``), token (``HF_TOKEN`` or ``hf auth login``) and offline switch
(``HF_HUB_OFFLINE``) are huggingface_hub's own settings.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..manifest import file_sha256

Progress = Callable[[int], None]  # bytes of the file on disk so far


@dataclass(frozen=True)
class HubFile:
    """One file of a repo at a commit."""

    path: str  # relative to the repo root, "/"-separated
    size: int  # bytes
    sha256: str | None  # Git LFS files (the weights): the content's SHA-256
    blob_id: str | None  # the git object id


def hub_endpoint() -> str:
    """The Hub URL in use: ``HF_ENDPOINT`` (read now, not at import) or huggingface.co."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` forbids downloads."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def repo_files(repo: str, revision: str) -> tuple[str, list[HubFile]]:
    """(commit sha, files) of ``repo`` at ``revision``; raises huggingface_hub's errors."""
    from huggingface_hub import HfApi

    info = HfApi(endpoint=hub_endpoint()).model_info(repo, revision=revision, files_metadata=True)
    files = [
        HubFile(
            path=s.rfilename,
            size=int(s.size or (s.lfs.size if s.lfs else 0) or 0),
            sha256=s.lfs.sha256 if s.lfs else None,
            blob_id=s.blob_id,
        )
        for s in info.siblings or []
    ]
    return str(info.sha), files


def repo_folder(cache: Path, repo: str) -> Path:
    """``<cache>/models--<org>--<name>``, as huggingface_hub names it."""
    return cache / ("models--" + repo.replace("/", "--"))


def blob_path(cache: Path, repo: str, sha256: str, *, incomplete: bool = False) -> Path:
    """Where the cache keeps an LFS file's content (``.incomplete`` while downloading)."""
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
    url = hf_hub_url(repo, file.path, revision=commit, endpoint=hub_endpoint())
    with open(partial, "ab") as handle:
        writer = _CountingFile(handle, start, progress)
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
    path = hf_hub_download(
        repo, file.path, revision=commit, cache_dir=cache, endpoint=hub_endpoint()
    )
    return Path(path)


class _CountingFile:
    """A file object for ``http_get`` that reports how many bytes are on disk."""

    def __init__(self, handle: BinaryIO, start: int, progress: Progress) -> None:
        self._handle = handle
        self._written = start
        self._progress = progress

    def write(self, data: bytes) -> int:
        count = self._handle.write(data)
        self._written += count
        self._progress(self._written)
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
    "blob_path",
    "download_lfs",
    "hub_endpoint",
    "link_file",
    "offline",
    "repo_files",
    "repo_folder",
]
