"""The store lock: one writer at a time over manifests and weights, across processes.

Every change to the store (an import, a pull's manifest, a copy, a delete and its prune)
takes it, so an import in another process cannot lose its weights to a concurrent prune.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator

from ..registry import Registry

_LOCK_FILE = ".store.lock"


@contextlib.contextmanager
def store_lock(registry: Registry) -> Iterator[None]:
    """Exclusive lock over store changes, across threads and processes (``flock``)."""
    registry.models_dir.mkdir(parents=True, exist_ok=True)
    with open(registry.models_dir / _LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


__all__ = ["store_lock"]
