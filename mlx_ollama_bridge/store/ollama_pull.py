"""Pulling a model from Ollama's registry, with ``ollama pull``'s status lines.

A GGUF model (one ``image.model`` layer) streams what Ollama's ``PullModel`` streams::

    pulling manifest
    pulling <12 hex>          (per layer, then the config: digest, total, completed)
    verifying sha256 digest
    writing manifest
    success

and an MLX model (tensor layers) what its ``pullWithTransfer`` does: one ``pulling model``
line with digest ``sha256:model`` and the totals of all blobs, then ``writing manifest`` and
``success``. Blobs land in ``<models_dir>/blobs`` (``ollama_registry`` resumes and checks
them); a blob already in a local Ollama store (``OLLAMA_MODELS``) is read from there instead
of downloaded again. The weights are then imported (GGUF converted by the GGUF importer; MLX
layers assembled into an mlx-lm directory), the template, system, params, messages and
license layers go into the store's manifest as Ollama wrote them, and the downloaded blobs
are removed. Nothing is listed until that manifest is written.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import BridgeError
from ..names import ModelName
from ..registry import LocalModel, Registry
from .ollama_layers import import_layers, kind_of, read_modelfile_layers
from .ollama_registry import (
    Layer,
    NotInRegistry,
    RegistryClient,
    RegistryRefused,
    RegistryUnreachable,
    RemoteManifest,
    name_lock,
    verify_blob,
)
from .ollama_store import local_manifest, ollama_models_dir
from .pull_errors import PullError

log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], None]
_PROGRESS_EVERY_S = 0.06  # Ollama's ticker: one update per layer every 60 ms


class NotPulledHere(Exception):
    """The registry does not have the name (or cannot be reached): try the next source."""


def pull_from_ollama(
    registry: Registry, name: str, emit: Emit, cancel: threading.Event
) -> LocalModel:
    """Pull ``name`` from the configured Ollama registry; NotPulledHere when it has no such
    model or cannot be reached, PullError for anything else."""
    base = registry.settings.ollama_registry
    assert base is not None
    parsed = ModelName.parse(name)
    client = RegistryClient(base)
    try:
        try:
            remote = client.manifest(parsed)
        except NotInRegistry as exc:
            log.info("not in the registry url=%s", exc)
            raise NotPulledHere("pull model manifest: file does not exist") from exc  # Ollama's
        except RegistryUnreachable as exc:
            remote = local_manifest(ollama_models_dir(), parsed)  # an Ollama here has it?
            if remote is None:
                raise NotPulledHere(str(exc)) from exc
            log.info("registry unreachable, using the local Ollama store model=%s", name)
        except RegistryRefused as exc:  # e.g. a namespace it guards, a name it rejects
            if registry.names.pull_target(name) is None:
                raise
            raise NotPulledHere(f"Ollama's registry refused {parsed.display}: {exc}") from exc
        # one pull of a name at a time (across threads and processes): a second one waits,
        # then finds the model pulled and downloads nothing
        with name_lock(registry.models_dir / "blobs", "pull-" + "-".join(parsed.key)):
            return _pull(registry, client, parsed, remote, emit, cancel)
    except RegistryRefused as exc:
        raise PullError(f"pull of {parsed.display} from {base} refused: {exc}") from exc
    except RegistryUnreachable as exc:
        raise PullError(f"{exc}: pull again, it resumes where it stopped") from exc
    finally:
        client.close()


def _pull(
    registry: Registry,
    client: RegistryClient,
    name: ModelName,
    remote: RemoteManifest,
    emit: Emit,
    cancel: threading.Event,
) -> LocalModel:
    """Pull ``remote`` as ``name``, the name's pull lock held: nothing to do when it was pulled
    before, else its layers fetched (resuming) and imported, the manifest written last."""
    kind = kind_of(remote.layers)
    layers = list(remote.layers) + ([remote.config] if remote.config else [])
    source = f"ollama:{_host(client.base_url)}/{name.namespace}/{name.model}:{name.tag}"
    source += f"@sha256:{remote.digest}"
    existing = registry.stored_manifest(name.display)
    if existing is not None and existing.source == source:  # pulled before: nothing to do
        _report_done(layers, kind, emit)
        emit({"status": "success"})
        return registry.resolve(name.display)
    blobs = registry.models_dir / "blobs"
    _check_disk(blobs, layers)
    paths = _fetch_all(client, name, layers, kind, blobs, emit, cancel)
    if kind == "gguf":
        emit({"status": "verifying sha256 digest"})
    extras = read_modelfile_layers(remote.layers, lambda layer: paths[layer.digest])
    emit({"status": "writing manifest"})
    try:
        model = import_layers(registry, name.display, kind, remote.layers, paths, extras, source)
    except BridgeError as exc:
        # e.g. an architecture not converted: the next source (a built-in alias) takes over
        if registry.names.pull_target(name.display) is not None:
            _remove_ours(paths, blobs)
            raise NotPulledHere(f"{name.display} from Ollama's registry: {exc.detail}") from exc
        raise PullError(
            f"{name.display} was downloaded but cannot be imported: {exc.detail}", status_code=400
        ) from exc
    _remove_ours(paths, blobs)
    if existing is not None and kind == "gguf":  # an older version's layers went (Ollama's line)
        emit({"status": "removing unused layers"})
    emit({"status": "success"})
    log.info("pulled model=%s from=%s kind=%s", name.display, client.base_url, kind)
    return model


def _fetch_all(
    client: RegistryClient,
    name: ModelName,
    layers: list[Layer],
    kind: str,
    blobs: Path,
    emit: Emit,
    cancel: threading.Event,
) -> dict[str, Path]:
    """Each layer's file (downloaded, resumed or found in a local Ollama store)."""
    total = sum(layer.size for layer in layers)
    done_before = {"bytes": 0}
    shown = {"at": 0.0}
    ollama_blobs = ollama_models_dir() / "blobs"
    paths: dict[str, Path] = {}

    def report(layer: Layer, completed: int, force: bool = False) -> None:
        if cancel.is_set():
            raise PullError("pull canceled")
        now = time.monotonic()
        if not force and now - shown["at"] < _PROGRESS_EVERY_S:
            return
        shown["at"] = now
        if kind == "mlx":
            emit(_line("model", total, done_before["bytes"] + completed, status="pulling model"))
        else:
            emit(_line(layer.digest, layer.size, completed))

    for layer in layers:
        if layer.digest in paths:
            continue
        local = ollama_blobs / f"sha256-{layer.digest}"
        if local.is_file() and local.stat().st_size == layer.size and _intact(local, layer):
            paths[layer.digest] = local
        else:
            dest = blobs / f"sha256-{layer.digest}"
            report(layer, 0, force=True)
            client.download(name, layer, dest, lambda done, layer=layer: report(layer, done))
            paths[layer.digest] = dest
        report(layer, layer.size, force=True)
        done_before["bytes"] += layer.size
    return paths


def _intact(path: Path, layer: Layer) -> bool:
    """A local Ollama store's blob is used only once its SHA-256 is checked."""
    try:
        verify_blob(path, layer, discard=False)
    except RegistryRefused:
        log.warning("a local Ollama blob differs from its digest, downloading path=%s", path)
        return False
    return True


def _remove_ours(paths: dict[str, Path], blobs: Path) -> None:
    """Delete the downloaded blobs (imported, or useless); a local Ollama store's blobs are
    only read."""
    for path in set(paths.values()):
        if path.parent == blobs:
            path.unlink(missing_ok=True)


def _report_done(layers: list[Layer], kind: str, emit: Emit) -> None:
    if kind == "mlx":
        total = sum(layer.size for layer in layers)
        emit(_line("model", total, total, status="pulling model"))
    else:
        for layer in layers:
            emit(_line(layer.digest, layer.size, layer.size))
        emit({"status": "verifying sha256 digest"})
    emit({"status": "writing manifest"})


def _check_disk(blobs: Path, layers: list[Layer]) -> None:
    missing = 0
    for layer in layers:
        if (blobs / f"sha256-{layer.digest}").is_file():
            continue
        partial = blobs / f"sha256-{layer.digest}-partial"
        missing += layer.size - (partial.stat().st_size if partial.is_file() else 0)
    probe = blobs
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if missing * 2 > free:  # the blobs, then the converted weights
        raise PullError(
            f"not enough disk space: the pull needs about {missing * 2 / 1e9:.1f} GB, "
            f"{free / 1e9:.1f} GB is free in {blobs}"
        )


def _line(digest: str, total: int, completed: int, *, status: str | None = None) -> dict[str, Any]:
    line: dict[str, Any] = {
        "status": status or f"pulling {digest[:12]}",
        "digest": f"sha256:{digest}",
        "total": total,
    }
    if completed:  # Go's omitempty
        line["completed"] = completed
    return line


def _host(base_url: str) -> str:
    return base_url.split("://", 1)[-1]


__all__ = ["NotPulledHere", "pull_from_ollama"]
