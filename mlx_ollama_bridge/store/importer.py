"""Importing models the user already has into the local store: a GGUF file, a model directory.

Weights are built under a temporary name and renamed into ``weights/`` (``atomic.staged_dir``),
and the manifest is written last, so a crash at any point leaves either no model or a whole
one. ``gguf_manifest`` and ``dir_manifest`` bring the weights in and return the manifest
without writing it (``/api/create`` adds its layers and writes once); ``import_gguf`` and
``import_model_dir`` also name the model.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ..manifest import Manifest, file_sha256, hash_model_dir
from ..model_code import CustomCodeRefused, check_model_dir
from ..names import ModelName
from ..registry import LocalModel, Registry
from .atomic import copy_tree, discard, staged_dir
from .gguf import convert_gguf
from .lock import store_lock
from .manifests import write_manifest

log = logging.getLogger(__name__)


def import_gguf(
    registry: Registry,
    gguf_path: Path,
    name: str,
    *,
    parameters: dict[str, Any] | None = None,
    system: str | None = None,
) -> LocalModel:
    """Convert a GGUF file into an MLX model directory in the store and name it ``name``.

    The weights directory is keyed by the GGUF's content hash, so importing the same file
    under two names shares one copy.
    """
    ModelName.parse(name)  # reject a bad name before spending time converting
    digest = file_sha256(gguf_path)
    with store_lock(registry):  # a concurrent delete must not prune these weights meanwhile
        manifest = gguf_manifest(
            registry, gguf_path, name, parameters=parameters, system=system, digest=digest
        )
        return write_manifest(registry, name, manifest)


def gguf_manifest(
    registry: Registry,
    gguf_path: Path,
    name: str,
    *,
    parameters: dict[str, Any] | None = None,
    system: str | None = None,
    digest: str | None = None,
) -> Manifest:
    """Convert ``gguf_path`` into the store's weights (once per content) and return the
    manifest that would name it; nothing is named yet. Takes the store lock."""
    digest = digest or file_sha256(gguf_path)
    with store_lock(registry):
        weights_dir = registry.weights_root / f"gguf-{digest[:16]}"
        if not (weights_dir / "config.json").exists():
            started = time.perf_counter()
            with staged_dir(weights_dir) as staging:
                convert_gguf(gguf_path, staging)
            log.info("converted gguf=%s in %.1fs", gguf_path.name, time.perf_counter() - started)
        try:  # the converter writes the configs itself; checked all the same
            check_model_dir(weights_dir, model=name)
        except CustomCodeRefused:
            discard(weights_dir)
            raise
        return Manifest(
            model_dir=str(weights_dir.relative_to(registry.models_dir)),
            format="gguf",
            source=f"gguf:{gguf_path.name}#sha256:{digest}",
            files=hash_model_dir(weights_dir),
            created_at=time.time(),
            system=system,
            parameters=dict(parameters or {}),
        )


def import_model_dir(registry: Registry, model_dir: Path, name: str, *, source: str) -> LocalModel:
    """Copy a Hugging Face / MLX model directory into the store's weights and name it.

    The weights directory is keyed by the files' digest, so importing the same files
    twice (or under two names) keeps one copy. A directory whose config names custom code
    is refused (400, ``model_code``) before anything is copied.
    """
    manifest = dir_manifest(registry, model_dir, name, source=source)
    with store_lock(registry):
        if not manifest.resolve_dir(registry.models_dir).is_dir():  # pruned meanwhile
            manifest = dir_manifest(registry, model_dir, name, source=source)
        return write_manifest(registry, name, manifest)


def dir_manifest(
    registry: Registry, model_dir: Path, name: str, *, source: str, hardlink: bool = False
) -> Manifest:
    """Copy ``model_dir`` into the store's weights (once per content) and return the
    manifest that would name it; nothing is named yet. Takes the store lock for the copy.
    ``hardlink``: the files are immutable (uploaded blobs), link instead of copying."""
    check_model_dir(model_dir, model=name)
    files = hash_model_dir(model_dir)
    digest = Manifest("", "mlx", source, files, 0.0).digest
    with store_lock(registry):  # a concurrent delete must not prune these weights meanwhile
        weights_dir = registry.weights_root / f"dir-{digest[:16]}"
        if not (weights_dir / "config.json").is_file():
            with staged_dir(weights_dir) as staging:
                copy_tree(model_dir, staging, hardlink=hardlink)
        return Manifest(
            model_dir=str(weights_dir.relative_to(registry.models_dir)),
            format="mlx",
            source=source,
            files=files,
            created_at=time.time(),
        )


__all__ = ["dir_manifest", "gguf_manifest", "import_gguf", "import_model_dir"]
