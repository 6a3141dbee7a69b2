"""The store lock: one writer at a time over manifests and weights, across processes.

Every change to the store (an import, a pull's manifest, a create, a copy, a delete and its
prune) takes it, so an import in another process cannot lose its weights to a concurrent
prune, and a create and a delete of one name run one after the other. It is re-entrant
within a thread (a create that imports uploaded files holds it once for both steps).

Taking it first deletes what interrupted writes left behind (``atomic.sweep``): the lock
holder is the only writer, so nothing swept can be a write in progress except uploads and
downloads, which hold their own ``flock`` on their temporaries and are kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from ..registry import Registry
from .atomic import sweep

log = logging.getLogger(__name__)

_LOCK_FILE = ".store.lock"
_held = threading.local()  # per thread: models_dir -> depth of store_lock


@contextlib.contextmanager
def store_lock(registry: Registry) -> Iterator[None]:
    """Exclusive lock over store changes, across threads and processes (``flock``)."""
    key = str(registry.models_dir.absolute())
    depths: dict[str, int] = _held.__dict__.setdefault("depths", {})
    if depths.get(key):
        depths[key] += 1
        try:
            yield
        finally:
            depths[key] -= 1
        return
    registry.models_dir.mkdir(parents=True, exist_ok=True)
    with open(registry.models_dir / _LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # a new open file per holder: threads exclude too
        depths[key] = 1
        try:
            clean_interrupted(registry)
            yield
        finally:
            depths[key] = 0
            fcntl.flock(handle, fcntl.LOCK_UN)


def clean_interrupted(registry: Registry) -> list[Path]:
    """Delete the temporaries of interrupted writes in the store; call with the lock held."""
    places = [registry.models_dir, registry.models_dir / "blobs", registry.weights_root]
    if registry.manifests_root.is_dir():
        places += [p for p in registry.manifests_root.rglob("*") if p.is_dir()]
        places.append(registry.manifests_root)
    removed = [path for place in places for path in sweep(place)]
    for path in removed:
        log.info("removed what an interrupted write left path=%s", path)
    return removed


__all__ = ["clean_interrupted", "store_lock"]
