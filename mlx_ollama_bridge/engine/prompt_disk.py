"""Prompt KV caches on disk, so a restart does not pay again for long, repeated prompts.

Layout: ``<models dir>/.prompt-cache/<key>/<sha256 of the token ids>.safetensors``, written
with mlx-lm's ``save_prompt_cache`` (the token ids in its metadata). ``key`` hashes the model's
files signature and digest, its draft model's, and the KV-cache type: a changed model, a
different draft or another ``OLLAMA_KV_CACHE_TYPE`` never reads stale caches.

What is saved: the KV cache of a prompt of at least ``min_tokens`` tokens (never the generated
tokens). To avoid one file per question under the same system prompt, a prompt that shares at
least ``min_tokens`` tokens with a stored one saves only that shared prefix (the part that
repeats), and nothing when a stored entry already is that prefix.

Lookup (on a miss of the in-memory pool): the stored entry with the longest common prefix, at
least ``min_tokens`` long, is loaded and trimmed to that prefix. Files are written to a temp
name and renamed (atomic); a file that cannot be read or does not match is deleted and counts
as a miss, never as a failed request. The whole ``.prompt-cache`` directory is kept under a
byte budget, least recently used file first out (a hit refreshes a file's mtime).
Runs on the scheduler thread only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
import time
import uuid
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import (
    KVCache,
    QuantizedKVCache,
    load_prompt_cache,
    save_prompt_cache,
    trim_prompt_cache,
)

log = logging.getLogger(__name__)

DIR_NAME = ".prompt-cache"
FORMAT = "1"  # bump when the file layout or the key changes
_SUFFIX = ".safetensors"
_TMP_PREFIX = ".tmp-"
_STALE_TMP_S = 3600.0  # temp files older than this are leftovers of a crash
_META_TOKENS = "0.tokens"  # save_prompt_cache flattens [metadata, classes, ...]
_META_FORMAT = "0.bridge_format"


def store_key(*parts: Any) -> str:
    """A directory name for a model's caches: a hash of everything that must match."""
    text = json.dumps([FORMAT, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class DiskPromptCache:
    """One model's prompt caches on disk (see the module docstring)."""

    def __init__(
        self, root: Path, key: str, *, max_bytes: int, min_tokens: int, classes: list[str]
    ) -> None:
        self.root = root
        self.dir = root / key
        self.max_bytes = max_bytes
        self.min_tokens = max(min_tokens, 1)
        self._classes = classes  # layer types a valid file holds, in order
        self._index: dict[str, list[int]] | None = None  # file name -> token ids
        self._broken = False  # the directory is not writable: stop trying

    # -- lookup ------------------------------------------------------------------------------

    def load(self, tokens: list[int], *, better_than: int = 0) -> tuple[list[Any], int] | None:
        """The stored cache sharing the longest prefix with ``tokens`` (more than
        ``better_than`` and at least ``min_tokens``), trimmed to hold exactly its first ``k``
        tokens, ``k < len(tokens)``; or None."""
        best = self._best(tokens)
        if best is None:
            return None
        name, stored, common = best
        k = min(common, len(tokens) - 1)
        if k <= better_than or k < self.min_tokens:
            return None
        path = self.dir / name
        try:
            cache, metadata = load_prompt_cache(str(path), return_metadata=True)
            self._check(cache, metadata, stored)
        except Exception as exc:  # corrupt, truncated, foreign: drop it, never fail a request
            log.warning("removing unreadable prompt cache file path=%s error=%s", path, exc)
            self._remove(name)
            return None
        trim_prompt_cache(cache, len(stored) - k)
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: last out of the budget
        log.info("prompt cache loaded from disk tokens=%d file=%s", k, name)
        return cache, k

    def _best(self, tokens: list[int]) -> tuple[str, list[int], int] | None:
        best: tuple[str, list[int], int] | None = None
        for name, stored in self._entries().items():
            common = _common_prefix(stored, tokens)
            if best is None or (common, -len(stored)) > (best[2], -len(best[1])):
                best = (name, stored, common)
        return best

    def _check(self, cache: list[Any], metadata: dict[str, Any], stored: list[int]) -> None:
        if [type(c).__name__ for c in cache] != self._classes:
            raise ValueError("layer types do not match the model")
        if json.loads(metadata.get("tokens", "null")) != stored:
            raise ValueError("token ids do not match the file name")
        if any(c.offset != len(stored) for c in cache):
            raise ValueError("cache length does not match its token ids")

    # -- saving ------------------------------------------------------------------------------

    def save(self, tokens: list[int], cache: list[Any]) -> bool:
        """Save the part of ``cache`` (holding at least ``tokens``) worth keeping for
        ``tokens``, a prompt; True if a file was written. Errors are logged, never raised."""
        if self._broken or len(tokens) < self.min_tokens:
            return False
        if any(type(c) not in (KVCache, QuantizedKVCache) for c in cache):
            return False  # only plain and quantized layers can be cut to a prefix here
        if any(c.offset < len(tokens) for c in cache):
            return False
        length = self._length_to_save(tokens)
        if length == 0:
            return False
        prefix = [_prefix(c, length) for c in cache]
        size = sum(c.nbytes for c in prefix)
        if size > self.max_bytes:
            return False
        try:
            self._write(tokens[:length], prefix)
        except Exception as exc:  # disk full, read-only store, ...: the request goes on
            log.warning("could not save a prompt cache dir=%s error=%s", self.dir, exc)
            if isinstance(exc, PermissionError):
                self._broken = True
            return False
        self._enforce_budget()
        return True

    def _length_to_save(self, tokens: list[int]) -> int:
        """How many leading tokens of ``tokens`` to save; 0 = nothing new to save."""
        shared = 0
        for stored in self._entries().values():
            common = _common_prefix(stored, tokens)
            if common == len(tokens):
                return 0  # already covered by a stored entry
            if common == len(stored) and common >= self.min_tokens:
                return 0  # a stored entry is a long prefix of it: the repeated part is there
            shared = max(shared, common)
        # A long prefix shared with another prompt is what repeats (a system prompt): keep
        # that rather than this whole prompt; otherwise keep the whole prompt.
        return shared if shared >= self.min_tokens else len(tokens)

    def _write(self, tokens: list[int], cache: list[Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(struct.pack(f"<{len(tokens)}q", *tokens)).hexdigest() + _SUFFIX
        temp = self.dir / f"{_TMP_PREFIX}{uuid.uuid4().hex}{_SUFFIX}"
        mx.eval([c.state for c in cache])
        metadata = {"tokens": json.dumps(tokens), "bridge_format": FORMAT}
        try:
            save_prompt_cache(str(temp), cache, metadata)
            os.replace(temp, self.dir / name)
        finally:
            temp.unlink(missing_ok=True)
        self._entries()[name] = list(tokens)
        log.info("prompt cache saved to disk tokens=%d file=%s", len(tokens), name)

    def _enforce_budget(self) -> None:
        """Delete the least recently used files of every model until the store fits."""
        files = []
        for path in self.root.glob(f"*/*{_SUFFIX}"):
            try:
                stat = path.stat()
            except OSError:
                continue
            files.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in files)
        for _mtime, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            if path.parent == self.dir and self._index is not None:
                self._index.pop(path.name, None)
            total -= size
            log.info("prompt cache file deleted (disk budget) path=%s", path)

    # -- the index -----------------------------------------------------------------------------

    def _entries(self) -> dict[str, list[int]]:
        """File name -> token ids, read once from the files' headers."""
        if self._index is None:
            self._index = {}
            for path in sorted(self.dir.glob(f"*{_SUFFIX}")):
                if path.name.startswith(_TMP_PREFIX):
                    _remove_stale_temp(path)
                    continue
                try:
                    self._index[path.name] = _header_tokens(path)
                except Exception as exc:
                    log.warning("removing unreadable prompt cache file path=%s error=%s", path, exc)
                    path.unlink(missing_ok=True)
        return self._index

    def _remove(self, name: str) -> None:
        (self.dir / name).unlink(missing_ok=True)
        self._entries().pop(name, None)


def _header_tokens(path: Path) -> list[int]:
    """The token ids in a cache file's safetensors header, without reading its tensors."""
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > 1 << 28:
            raise ValueError("header too large")
        header = json.loads(f.read(length))
    metadata = header.get("__metadata__", {})
    if metadata.get(_META_FORMAT) != FORMAT:
        raise ValueError("not a cache file of this format")
    tokens = json.loads(metadata[_META_TOKENS])
    if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
        raise ValueError("bad token ids")
    return tokens


def _remove_stale_temp(path: Path) -> None:
    try:
        if time.time() - path.stat().st_mtime > _STALE_TMP_S:
            path.unlink()
    except OSError:
        pass


def _prefix(layer: Any, length: int) -> Any:
    """A layer holding only the first ``length`` tokens of ``layer`` (views, no copy)."""
    if isinstance(layer, QuantizedKVCache):
        out = QuantizedKVCache(group_size=layer.group_size, bits=layer.bits)
        out.keys = tuple(x[..., :length, :] for x in layer.keys)
        out.values = tuple(x[..., :length, :] for x in layer.values)
    else:
        out = KVCache()
        out.keys = layer.keys[..., :length, :]
        out.values = layer.values[..., :length, :]
    out.offset = length
    return out


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
