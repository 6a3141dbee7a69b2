"""Copy and delete models in the store (``/api/copy``, ``/api/delete``); ``create.py`` creates.

Names are manifests; weights are directories under ``<models_dir>/weights`` that several
manifests may share. Deleting a name removes its manifest and then only those weights
directories of the store that no remaining manifest uses. Weights outside ``weights/``
(the Hugging Face cache, a user's own directory) are never deleted. Store changes take the
store lock (``lock.py``), so an import in another process cannot lose its weights to a
concurrent prune.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from ..errors import InvalidModelName, ModelNotFound
from ..manifest import read_manifest_file
from ..names import ModelName
from ..registry import LocalModel, Registry
from .atomic import discard
from .faults import crash_point
from .lock import store_lock
from .manifests import delete_manifest, write_manifest

log = logging.getLogger(__name__)


def copy_model(registry: Registry, source: str, destination: str) -> LocalModel:
    """Give ``source``'s model a second name (manifests only: weights are shared)."""
    check_name(source, f'source "{source}" is invalid')
    check_name(destination, f'destination "{destination}" is invalid')
    with store_lock(registry):  # the source cannot be deleted while it is copied
        try:
            model = registry.resolve(source)
        except ModelNotFound:
            raise ModelNotFound(source, f'model "{source}" not found') from None
        if ModelName.parse(source).key == ModelName.parse(destination).key:
            return model  # Ollama: copying a model onto itself changes nothing
        replaced = registry.stored_manifest(destination)
        copied = write_manifest(registry, destination, dataclasses.replace(model.manifest))
        if replaced is not None:
            prune_weights(registry, [replaced.resolve_dir(registry.models_dir)])
    log.info("copied model source=%s destination=%s", source, copied.name.display)
    return copied


def delete_model(registry: Registry, name: str) -> list[Path]:
    """Remove ``name``; returns the weights directories freed (none if still shared)."""
    check_name(name, f'name "{name}" is invalid')
    with store_lock(registry):
        manifest = registry.stored_manifest(name)  # None if unreadable: delete it all the same
        delete_manifest(registry, name)  # ModelNotFound if there is no such name
        crash_point("store.unlinked")  # a crash here leaves weights no name uses: recover()
        if manifest is None:
            return []
        return prune_weights(registry, [manifest.resolve_dir(registry.models_dir)])


def prune_weights(
    registry: Registry, candidates: list[Path], *, drop_blobs: bool = True
) -> list[Path]:
    """Delete those ``candidates`` that are store weights directories no manifest uses, and
    (``drop_blobs``) the uploaded blobs only they used. Call with the store lock held.
    """
    root = registry.weights_root.resolve()
    used = _referenced_dirs(registry)
    removed = []
    for candidate in candidates:
        directory = candidate.resolve()
        if directory.parent != root or directory in used or not directory.is_dir():
            continue  # outside weights/ (HF cache, user dirs), still used, or already gone
        linked = _inodes(directory)
        discard(directory)  # renamed away first: a crash never leaves half of it in use
        if drop_blobs:
            _drop_blobs(registry, linked)
        removed.append(directory)
        log.info("removed unused weights dir=%s", directory)
    return removed


def recover(registry: Registry) -> list[Path]:
    """At the worker's start: delete what interrupted writes left behind: temporaries (taking
    the store lock sweeps them) and weights directories no manifest names (a delete killed
    between its manifest and its weights). Skipped while any manifest cannot be read, whose
    weights those might be."""
    with store_lock(registry):
        if not registry.weights_root.is_dir():
            return []
        if _unreadable_manifests(registry):
            log.warning("a manifest cannot be read: unused weights are kept for now")
            return []
        stored = [p for p in registry.weights_root.iterdir() if not p.name.startswith(".")]
        # blobs stay: these weights may be a killed create's, which its client will retry
        return prune_weights(registry, sorted(stored), drop_blobs=False)


def check_name(name: str, message: str) -> None:
    """400 ``message`` unless ``name`` follows Ollama's name grammar."""
    try:
        ModelName.parse(name)
    except InvalidModelName:
        raise InvalidModelName(name, message) from None


def _inodes(directory: Path) -> set[tuple[int, int]]:
    """(device, inode) of the files of ``directory`` that are hard links (to blobs)."""
    found = set()
    for path in directory.rglob("*"):
        stat = path.lstat()
        if path.is_file() and not path.is_symlink() and stat.st_nlink > 1:
            found.add((stat.st_dev, stat.st_ino))
    return found


def _drop_blobs(registry: Registry, linked: set[tuple[int, int]]) -> None:
    """Delete the uploaded blobs whose only other link was in weights just discarded
    (Ollama deletes a model's layers that no other model uses). Fresh uploads, linked
    nowhere yet, are kept."""
    if not linked:
        return
    for blob in (registry.models_dir / "blobs").glob("sha256-*"):
        stat = blob.stat()
        if (stat.st_dev, stat.st_ino) in linked and stat.st_nlink == 1:
            blob.unlink(missing_ok=True)
            log.info("removed blob no model uses blob=%s", blob.name)


def _unreadable_manifests(registry: Registry) -> list[Path]:
    bad = []
    for path in registry.manifests_root.glob("*/*/*/*"):
        if path.is_file() and not path.name.startswith("."):
            try:
                read_manifest_file(path)
            except (OSError, ValueError):
                bad.append(path)
    return bad


def _referenced_dirs(registry: Registry) -> set[Path]:
    """Weights directories named by any readable manifest (cheap: no model details)."""
    used = set()
    for path in registry.manifests_root.glob("*/*/*/*"):
        if path.is_file() and not path.name.startswith("."):
            try:
                manifest = read_manifest_file(path)
            except (OSError, ValueError):
                continue
            used.add(manifest.resolve_dir(registry.models_dir).resolve())
    return used


__all__ = ["check_name", "copy_model", "delete_model", "prune_weights", "recover"]
