"""Writing and deleting the store's manifests (the registry only reads them).

A manifest is written atomically under the name's existing on-disk spelling, so readers
see the old manifest or the new one, never a partial file. Callers that also touch weights
hold :func:`~mlx_ollama_bridge.store.lock.store_lock` around the write.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import ModelNotFound
from ..manifest import Manifest
from ..names import ModelName
from ..registry import LocalModel, Registry
from .atomic import fsync_dir, write_atomic

log = logging.getLogger(__name__)


def write_manifest(registry: Registry, name: str, manifest: Manifest) -> LocalModel:
    """Store ``manifest`` under ``name`` (atomically), reusing an existing spelling."""
    parsed = ModelName.parse(name)
    model_dir = manifest.resolve_dir(registry.models_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory not found: {model_dir}")
    path, _ = registry.store_path(parsed)
    write_manifest_file(path, manifest)
    model = registry.stored_model(path, manifest)
    log.info("wrote manifest model=%s digest=%s", model.name.display, manifest.digest[:12])
    return model


def delete_manifest(registry: Registry, name: str) -> None:
    """Remove ``name`` from the store (its weights stay: other names may share them)."""
    path, exists = registry.store_path(ModelName.parse(name))
    if not exists:
        raise ModelNotFound(name)
    path.unlink()
    fsync_dir(path.parent)
    for parent in path.parents:  # prune now-empty model/namespace/host directories
        if parent == registry.manifests_root:
            break
        try:
            parent.rmdir()
        except OSError:
            break
    log.info("deleted manifest path=%s", path)


def write_manifest_file(path: Path, manifest: Manifest) -> None:
    """Write ``manifest`` to ``path`` atomically (``atomic.write_atomic``): readers, and a
    store after a crash, see the old manifest or the new one, never a partial file."""
    write_atomic(Path(path), manifest.to_json())


__all__ = ["delete_manifest", "write_manifest", "write_manifest_file"]
