"""Importing models the user already has into the local store: a GGUF file, a model directory."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from ..manifest import Manifest, file_sha256, hash_model_dir
from ..model_code import CustomCodeRefused, check_model_dir
from ..names import ModelName
from ..registry import LocalModel, Registry
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
        return _import_locked(registry, gguf_path, digest, name, parameters, system)


def _import_locked(
    registry: Registry,
    gguf_path: Path,
    digest: str,
    name: str,
    parameters: dict[str, Any] | None,
    system: str | None,
) -> LocalModel:
    weights_dir = registry.weights_root / f"gguf-{digest[:16]}"
    if not (weights_dir / "config.json").exists():
        weights_dir.parent.mkdir(parents=True, exist_ok=True)
        if weights_dir.exists():  # a leftover from an interrupted import
            shutil.rmtree(weights_dir)
        started = time.perf_counter()
        convert_gguf(gguf_path, weights_dir)
        log.info("converted gguf=%s in %.1fs", gguf_path.name, time.perf_counter() - started)
    try:  # the converter writes the configs itself; checked all the same
        check_model_dir(weights_dir, model=name)
    except CustomCodeRefused:
        shutil.rmtree(weights_dir, ignore_errors=True)
        raise
    manifest = Manifest(
        model_dir=str(weights_dir.relative_to(registry.models_dir)),
        format="gguf",
        source=f"gguf:{gguf_path.name}#sha256:{digest}",
        files=hash_model_dir(weights_dir),
        created_at=time.time(),
        system=system,
        parameters=dict(parameters or {}),
    )
    return write_manifest(registry, name, manifest)


def import_model_dir(registry: Registry, model_dir: Path, name: str, *, source: str) -> LocalModel:
    """Copy a Hugging Face / MLX model directory into the store's weights and name it.

    The weights directory is keyed by the files' digest, so importing the same files
    twice (or under two names) keeps one copy. A directory whose config names custom code
    is refused (400, ``model_code``) before anything is copied.
    """
    check_model_dir(model_dir, model=name)
    files = hash_model_dir(model_dir)
    digest = Manifest("", "mlx", source, files, 0.0).digest
    with store_lock(registry):  # a concurrent delete must not prune these weights meanwhile
        return _copy_locked(registry, model_dir, name, source, files, digest)


def _copy_locked(
    registry: Registry, model_dir: Path, name: str, source: str, files: dict, digest: str
) -> LocalModel:
    weights_dir = registry.weights_root / f"dir-{digest[:16]}"
    if not (weights_dir / "config.json").is_file():
        weights_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = weights_dir.with_name(f".{weights_dir.name}.tmp")  # hidden: never listed
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(model_dir, staging, ignore=shutil.ignore_patterns(".*"))
        shutil.rmtree(weights_dir, ignore_errors=True)  # a leftover of an interrupted import
        staging.rename(weights_dir)
    manifest = Manifest(
        model_dir=str(weights_dir.relative_to(registry.models_dir)),
        format="mlx",
        source=source,
        files=files,
        created_at=time.time(),
    )
    return write_manifest(registry, name, manifest)
