"""Importing the models of an existing Ollama install (``~/.ollama/models``).

Ollama keeps one JSON manifest per name under ``manifests/<host>/<namespace>/<model>/<tag>``
and content-addressed blobs under ``blobs/sha256-<hex>``; the manifest's
``application/vnd.ollama.image.model`` layer is a GGUF file. Each such model is converted
with the GGUF importer under the same Ollama name, with its PARAMETERs and SYSTEM prompt.
Ollama's store is only read, never written.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BridgeError, InvalidModelName
from ..names import ModelName
from ..registry import Registry
from .importer import import_gguf

log = logging.getLogger(__name__)

_HEX64 = re.compile(r"[0-9a-f]{64}")
_MODEL = "application/vnd.ollama.image.model"
_PARAMS = "application/vnd.ollama.image.params"
_SYSTEM = "application/vnd.ollama.image.system"


@dataclass
class OllamaModel:
    """One name of an Ollama store and the blobs it points at."""

    name: str  # display form, e.g. "llama3.2:latest"
    gguf: Path | None  # None: no GGUF weights (a cloud model, or Ollama's newer formats)
    parameters: dict[str, Any] = field(default_factory=dict)
    system: str | None = None


def ollama_models_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$OLLAMA_MODELS``, else ``~/.ollama/models`` (Ollama's default for a user install)."""
    env = os.environ if env is None else env
    if env.get("OLLAMA_MODELS"):
        return Path(env["OLLAMA_MODELS"]).expanduser()
    return Path.home() / ".ollama" / "models"


def scan_ollama_store(root: Path) -> list[OllamaModel]:
    """Every readable manifest of the store at ``root``, in name order."""
    manifests = root / "manifests"
    if not manifests.is_dir():
        raise BridgeError(f"no Ollama model store at {root} (expected {manifests})")
    found = []
    for path in sorted(manifests.glob("*/*/*/*")):
        if not path.is_file():
            continue
        try:
            name = ModelName.from_parts(*path.relative_to(manifests).parts).display
            found.append(_read_manifest(root, name, path))
        except (InvalidModelName, OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("skipping unreadable Ollama manifest path=%s error=%s", path, exc)
    return found


def import_ollama_store(
    registry: Registry, root: Path, *, overwrite: bool = False
) -> Iterator[str]:
    """Import each GGUF model of the store; yield one line per model saying what happened."""
    for model in scan_ollama_store(root):
        if model.gguf is None:
            yield f"{model.name}: skipped (no GGUF weights: a cloud model or a newer format)"
            continue
        if not overwrite and registry.stored_manifest(model.name) is not None:
            yield f"{model.name}: already in the bridge's store (skipped)"
            continue
        try:
            imported = import_gguf(
                registry, model.gguf, model.name, parameters=model.parameters, system=model.system
            )
        except BridgeError as exc:
            yield f"{model.name}: skipped ({exc.detail})"  # the CLI's: the full text
            continue
        quant = imported.details.get("quantization_level")
        yield f"{model.name}: imported ({quant})"


def _read_manifest(root: Path, name: str, path: Path) -> OllamaModel:
    layers = json.loads(path.read_text()).get("layers") or []
    model = OllamaModel(name=name, gguf=None)
    for layer in layers:
        media, blob = layer["mediaType"], _blob_path(root, layer["digest"])
        if media == _MODEL:
            model.gguf = blob
        elif media == _PARAMS:
            model.parameters = dict(json.loads(blob.read_text()))
        elif media == _SYSTEM:
            model.system = blob.read_text()
    return model


def _blob_path(root: Path, digest: str) -> Path:
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != "sha256" or not _HEX64.fullmatch(hexdigest):  # CVE-2024-37032's class
        raise ValueError(f"bad layer digest {digest!r}")
    return root / "blobs" / f"sha256-{hexdigest}"
