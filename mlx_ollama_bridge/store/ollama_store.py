"""Importing the models of an existing Ollama install (``~/.ollama/models``).

Ollama keeps one JSON manifest per name under ``manifests/<host>/<namespace>/<model>/<tag>``
and content-addressed blobs under ``blobs/sha256-<hex>``. A model's weights are a GGUF
``application/vnd.ollama.image.model`` layer (converted by the GGUF importer) or, for
Ollama's MLX models, ``image.tensor`` layers (assembled for mlx-lm); its template, system,
params, messages and license layers go into the bridge's manifest as Ollama wrote them
(``ollama_layers``), as a pull from the registry does. Ollama's store is only read, never
written; a registry pull also reads its blobs instead of downloading them again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import BridgeError, InvalidModelName
from ..names import ModelName
from ..registry import Registry
from .ollama_layers import import_layers, kind_of, read_modelfile_layers
from .ollama_manifest import MAX_MANIFEST_BYTES, RegistryRefused, RemoteManifest, parse_manifest

log = logging.getLogger(__name__)


@dataclass
class OllamaModel:
    """One name of an Ollama store and its manifest (None: unreadable, ``problem`` says why)."""

    name: str  # display form, e.g. "llama3.2:latest"
    manifest: RemoteManifest | None
    problem: str = ""


def ollama_models_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$OLLAMA_MODELS``, else ``~/.ollama/models`` (Ollama's default for a user install)."""
    env = os.environ if env is None else env
    if env.get("OLLAMA_MODELS"):
        return Path(env["OLLAMA_MODELS"]).expanduser()
    return Path.home() / ".ollama" / "models"


def local_manifest(root: Path, name: ModelName) -> RemoteManifest | None:
    """The manifest of ``name`` in the Ollama store at ``root`` when all its blobs are there;
    None otherwise (nothing is read outside ``root``: names and digests are checked)."""
    path = name.filepath(root / "manifests")
    try:
        if not path.is_file() or path.stat().st_size > MAX_MANIFEST_BYTES:
            return None
        manifest = parse_manifest(path.read_bytes())
    except (OSError, RegistryRefused) as exc:
        log.warning("unreadable local Ollama manifest path=%s error=%s", path, exc)
        return None
    layers = [*manifest.layers, *([manifest.config] if manifest.config else [])]
    if all(blob_path(root, layer.digest).is_file() for layer in layers):
        return manifest
    return None


def blob_path(root: Path, digest: str) -> Path:
    """Where the store at ``root`` keeps the blob of ``digest`` (64 hex, checked before)."""
    return root / "blobs" / f"sha256-{digest}"


def scan_ollama_store(root: Path) -> list[OllamaModel]:
    """Every manifest of the store at ``root``, in name order."""
    manifests = root / "manifests"
    if not manifests.is_dir():
        raise BridgeError(f"no Ollama model store at {root} (expected {manifests})")
    found = []
    for path in sorted(manifests.glob("*/*/*/*")):
        if not path.is_file():
            continue
        try:
            name = ModelName.from_parts(*path.relative_to(manifests).parts).display
        except InvalidModelName:
            log.warning("skipping an Ollama manifest with an invalid name path=%s", path)
            continue
        try:
            if path.stat().st_size > MAX_MANIFEST_BYTES:
                raise RegistryRefused("the manifest is too large")
            found.append(OllamaModel(name, parse_manifest(path.read_bytes())))
        except (OSError, RegistryRefused) as exc:
            found.append(OllamaModel(name, None, str(exc)))
    return found


def import_ollama_store(
    registry: Registry, root: Path, *, overwrite: bool = False
) -> Iterator[str]:
    """Import each model of the store; yield one line per model saying what happened."""
    for model in scan_ollama_store(root):
        if model.manifest is None:
            yield f"{model.name}: skipped (unreadable manifest: {model.problem})"
            continue
        try:
            kind = kind_of(model.manifest.layers)
        except RegistryRefused as exc:
            reason = str(exc)
            if "no model weights" in reason:
                reason = "no GGUF or MLX weights: a cloud model or a format the bridge cannot run"
            yield f"{model.name}: skipped ({reason})"
            continue
        if not overwrite and registry.stored_manifest(model.name) is not None:
            yield f"{model.name}: already in the bridge's store (skipped)"
            continue
        layers = model.manifest.layers
        paths = {layer.digest: blob_path(root, layer.digest) for layer in layers}
        missing = [digest for digest, path in paths.items() if not path.is_file()]
        if missing:
            yield f"{model.name}: skipped (blob sha256:{missing[0][:12]} is missing)"
            continue
        source = f"ollama-store:{model.name}@sha256:{model.manifest.digest}"
        try:
            extras = read_modelfile_layers(layers, lambda layer: blob_path(root, layer.digest))
            imported = import_layers(registry, model.name, kind, layers, paths, extras, source)
        except RegistryRefused as exc:
            yield f"{model.name}: skipped ({exc})"
            continue
        except BridgeError as exc:
            yield f"{model.name}: skipped ({exc.detail})"  # the CLI's: the full text
            continue
        quant = imported.details.get("quantization_level")
        yield f"{model.name}: imported ({quant})"


__all__ = [
    "OllamaModel",
    "blob_path",
    "import_ollama_store",
    "local_manifest",
    "ollama_models_dir",
    "scan_ollama_store",
]
