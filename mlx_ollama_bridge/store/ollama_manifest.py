"""Ollama registry manifests, read and checked: layers (media type, digest, size, name).

Every digest must be ``sha256:`` + 64 lowercase hex (Ollama's CVE-2024-37032: a digest that
became a path) and every layer ``name`` a plain relative path, before either is used; sizes
are bounded and the number of layers too.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
MAX_MANIFEST_BYTES = 4 << 20  # an MLX model with a layer per tensor is a few hundred KB
MAX_BLOB_BYTES = 1 << 40
MAX_LAYERS = 50_000
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")


class RegistryRefused(Exception):
    """An answer of the registry the bridge will not use; the message says why."""


@dataclass(frozen=True)
class Layer:
    """One layer of a manifest: media type, digest (64 hex), size, and the path-style
    ``name`` Ollama's MLX layers carry (``config.json``, a tensor name)."""

    media_type: str
    digest: str
    size: int
    name: str = ""

    @property
    def ref(self) -> str:
        """``sha256:<hex>``, as the registry and the progress lines write it."""
        return f"sha256:{self.digest}"


@dataclass(frozen=True)
class RemoteManifest:
    """A manifest as the registry sent it: its bytes (kept), config and layers."""

    raw: bytes
    config: Layer | None
    layers: tuple[Layer, ...]

    @property
    def digest(self) -> str:
        """SHA-256 of the manifest's bytes (how Ollama names a pulled manifest)."""
        return hashlib.sha256(self.raw).hexdigest()


def parse_digest(digest: Any) -> str:
    """The 64 hex of ``sha256:<hex>``; RegistryRefused for anything else."""
    match = _DIGEST.fullmatch(digest) if isinstance(digest, str) else None
    if match is None:
        raise RegistryRefused(
            f"the registry sent a digest that is not sha256:<64 hex>: {str(digest)[:80]!r}"
        )
    return match.group(1)


def parse_manifest(raw: bytes) -> RemoteManifest:
    """Check and read a manifest's bytes; RegistryRefused for anything malformed."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RegistryRefused(f"the registry's manifest is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("layers"), list):
        raise RegistryRefused("the registry's manifest has no layers")
    if len(data["layers"]) > MAX_LAYERS:
        raise RegistryRefused(f"the registry's manifest has over {MAX_LAYERS} layers")
    layers = tuple(_layer(entry) for entry in data["layers"])
    config = data.get("config")
    if isinstance(config, dict) and "mediaType" not in config:  # older manifests leave it out
        config = {**config, "mediaType": CONFIG_MEDIA_TYPE}
    return RemoteManifest(raw, _layer(config) if config else None, layers)


def _layer(entry: Any) -> Layer:
    if not isinstance(entry, dict):
        raise RegistryRefused("a layer of the registry's manifest is not an object")
    media, size, name = entry.get("mediaType"), entry.get("size"), entry.get("name", "")
    if not isinstance(media, str) or not isinstance(name, str):
        raise RegistryRefused("a layer of the registry's manifest has no media type")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_BLOB_BYTES:
        raise RegistryRefused(f"a layer of the registry's manifest has a bad size: {size!r}")
    if name and not safe_relative(name):
        raise RegistryRefused(f"a layer of the registry's manifest has a bad name: {name[:80]!r}")
    return Layer(media, parse_digest(entry.get("digest")), size, name)


def safe_relative(name: str) -> bool:
    """True for a plain relative POSIX path (no ``..``, no absolute path, no backslash)."""
    path = PurePosixPath(name)
    return (
        bool(name)
        and not path.is_absolute()
        and ".." not in path.parts
        and "\\" not in name
        and "\x00" not in name
    )


__all__ = [
    "CONFIG_MEDIA_TYPE",
    "MANIFEST_MEDIA_TYPE",
    "MAX_MANIFEST_BYTES",
    "Layer",
    "RegistryRefused",
    "RemoteManifest",
    "parse_digest",
    "parse_manifest",
    "safe_relative",
]
