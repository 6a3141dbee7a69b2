"""Copy, delete and create models in the store (``/api/copy``, ``/api/delete``, ``/api/create``).

Names are manifests; weights are directories under ``<models_dir>/weights`` that several
manifests may share. Deleting a name removes its manifest and then only those weights
directories of the store that no remaining manifest uses. Weights outside ``weights/``
(the Hugging Face cache, a user's own directory) are never deleted. Store changes take the
store lock (``lock.py``), so an import in another process cannot lose its weights to a
concurrent prune.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadRequest, InvalidModelName, ModelNotFound
from ..manifest import read_manifest_file
from ..model_code import check_model_dir
from ..names import ModelName
from ..registry import LocalModel, Registry
from .atomic import discard
from .lock import store_lock
from .manifests import delete_manifest, write_manifest

log = logging.getLogger(__name__)


def copy_model(registry: Registry, source: str, destination: str) -> LocalModel:
    """Give ``source``'s model a second name (manifests only: weights are shared)."""
    _check_name(source, f'source "{source}" is invalid')
    _check_name(destination, f'destination "{destination}" is invalid')
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
    _check_name(name, f'name "{name}" is invalid')
    with store_lock(registry):
        manifest = registry.stored_manifest(name)  # None if unreadable: delete it all the same
        delete_manifest(registry, name)  # ModelNotFound if there is no such name
        if manifest is None:
            return []
        return prune_weights(registry, [manifest.resolve_dir(registry.models_dir)])


def prune_weights(registry: Registry, candidates: list[Path]) -> list[Path]:
    """Delete those ``candidates`` that are store weights directories no manifest uses.

    Call with the store lock held.
    """
    root = registry.weights_root.resolve()
    used = _referenced_dirs(registry)
    removed = []
    for candidate in candidates:
        directory = candidate.resolve()
        if directory.parent != root or directory in used or not directory.is_dir():
            continue  # outside weights/ (HF cache, user dirs), still used, or already gone
        discard(directory)  # renamed away first: a crash never leaves half of it in use
        removed.append(directory)
        log.info("removed unused weights dir=%s", directory)
    return removed


@dataclass
class CreateSpec:
    """A validated ``/api/create`` request (parameters already typed by the server).

    Exactly one of ``base`` (an existing model) and ``files`` (uploaded blobs) is set.
    """

    name: str
    base: str | None = None
    files: dict[str, str] | None = None  # file name -> sha256 digest of an uploaded blob
    system: str | None = None
    template: str | None = None
    parameters: dict[str, Any] | None = None
    messages: list[dict[str, Any]] | None = None


def create_model(registry: Registry, spec: CreateSpec) -> tuple[LocalModel, list[str]]:
    """Make ``spec.name`` from a base model or uploaded files, with new system, template,
    parameters and messages.

    Parameters merge over the base model's (the request wins); the others replace the
    base's when given. Returns the new model and Ollama-style status lines. The whole
    create holds the store lock and writes the manifest once, last: a concurrent delete or
    create of the same name runs before or after it, and a crash leaves the old model or
    the new one.
    """
    _check_name(spec.name, "invalid model name")
    used_blobs: list[Path] = []
    with store_lock(registry):
        replaced = registry.stored_manifest(spec.name)
        if spec.files:
            from .blobs import manifest_from_blobs

            base_manifest, used_blobs = manifest_from_blobs(registry, spec.name, spec.files)
            statuses, parent = [f"creating new layer sha256:{base_manifest.digest}"], ""
        else:
            base = _resolve_base(registry, spec.base or "")
            check_model_dir(base.path, model=base.name.display)  # stored before the check
            base_manifest, parent = base.manifest, base.name.display
            statuses = [f"using existing layer sha256:{base.digest}"]
        manifest = dataclasses.replace(
            base_manifest,
            created_at=time.time(),
            parent_model=parent,
            system=spec.system if spec.system is not None else base_manifest.system,
            template=spec.template if spec.template is not None else base_manifest.template,
            parameters={**base_manifest.parameters, **(spec.parameters or {})},
            messages=list(spec.messages) if spec.messages is not None else base_manifest.messages,
        )
        new_layers = [spec.template, spec.system, spec.parameters, spec.messages]
        statuses += [f"creating new layer sha256:{_digest(x)}" for x in new_layers if x is not None]
        model = write_manifest(registry, spec.name, manifest)
        if replaced is not None:
            prune_weights(registry, [replaced.resolve_dir(registry.models_dir)])
    for blob in used_blobs:
        blob.unlink(missing_ok=True)  # consumed: the store has its own copy now
    log.info("created model=%s from=%s", model.name.display, spec.base or "files")
    return model, [*statuses, "writing manifest", "success"]


def _resolve_base(registry: Registry, base: str) -> LocalModel:
    try:
        return registry.resolve(base)
    except InvalidModelName:
        raise BadRequest(f'invalid base model name "{base}"') from None
    except ModelNotFound:
        raise ModelNotFound(base, f'model "{base}" not found, try pulling it first') from None


def _check_name(name: str, message: str) -> None:
    try:
        ModelName.parse(name)
    except InvalidModelName:
        raise InvalidModelName(name, message) from None


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


def _digest(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


__all__ = [
    "CreateSpec",
    "copy_model",
    "create_model",
    "delete_model",
    "prune_weights",
]
