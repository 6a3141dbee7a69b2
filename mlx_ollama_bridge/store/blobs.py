"""Uploaded blobs (``/api/blobs/:digest``) and models created from them (``/api/create`` files).

``ollama create`` with ``FROM ./model.gguf`` (or ``FROM ./a-safetensors-dir``) uploads each
file as a blob named by its SHA-256, then sends ``files``: name -> digest. A GGUF file is
converted like ``mlx-ollama-bridge import``; a safetensors directory (``config.json`` plus
``*.safetensors`` and tokenizer files) is copied into the store's weights. Blobs live in
``<models_dir>/blobs/sha256-<hex>``: a GGUF until a create converts it, a directory's files
while a model's weights (hard links to them) use them. An upload is received
into a locked temporary (``atomic.atomic_file``) and becomes the blob only once its SHA-256
checks out, so a killed server or a full disk never leaves a blob with the wrong bytes.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from ..errors import BadRequest
from ..manifest import Manifest
from ..registry import Registry
from .atomic import atomic_file, scratch_dir
from .faults import crash_point

_DIGEST = re.compile(r"sha256[:-]([0-9a-f]{64})")
_CHUNK = 1 << 20


def parse_digest(digest: str) -> str:
    """The 64 hex characters of ``sha256:<hex>`` / ``sha256-<hex>``; 400 otherwise."""
    match = _DIGEST.fullmatch(digest or "")
    if not match:
        raise BadRequest("invalid digest format")
    return match.group(1)


def blob_file(registry: Registry, digest: str) -> Path:
    """Where the blob with ``digest`` is (or would be) kept."""
    return registry.models_dir / "blobs" / f"sha256-{parse_digest(digest)}"


def save_blob(registry: Registry, digest: str, body: BinaryIO) -> bool:
    """Store ``body`` as the blob ``digest``, hashing as it streams; True if newly created.

    A blob that exists already is kept without reading the body, as Ollama does.
    """
    target = blob_file(registry, digest)
    if target.is_file():
        return False
    expected = parse_digest(digest)
    hasher = hashlib.sha256()
    with atomic_file(target) as handle:
        while chunk := body.read(_CHUNK):
            hasher.update(chunk)
            handle.write(chunk)
            crash_point("blob.upload")
        got = hasher.hexdigest()
        if got != expected:
            raise BadRequest(f'digest mismatch, expected "sha256:{expected}", got "sha256:{got}"')
    return True


def check_files(files: Any, field: str = "files") -> dict[str, str]:
    """``files`` (or ``adapters``) of /api/create: relative file names -> digests (400 for
    anything else)."""
    if not isinstance(files, dict) or not files:
        raise BadRequest(f'field "{field}" must be an object of file name -> digest')
    out = {}
    for name, digest in files.items():
        path = PurePosixPath(str(name))
        if path.is_absolute() or ".." in path.parts or "\\" in str(name) or not path.parts:
            raise BadRequest("file path must be relative")
        if not isinstance(digest, str):
            raise BadRequest("invalid digest format")
        parse_digest(digest)
        out[path.as_posix()] = digest
    return out


def manifest_from_blobs(
    registry: Registry,
    name: str,
    files: dict[str, str],
    *,
    parameters: dict[str, Any] | None = None,
    system: str | None = None,
) -> tuple[Manifest, list[Path]]:
    """Bring uploaded files (one GGUF, or a safetensors model directory) into the store's
    weights; returns the manifest that would name them (not written) and the blobs the
    caller deletes once the manifest is written: a GGUF, converted (keeping it would double
    the disk used). A directory's files are hard-linked into the weights and stay blobs, as
    Ollama keeps its layers: a concurrent create naming the same file (two models sharing a
    tokenizer) must still find it. ``manage.prune_weights`` deletes them with the weights.
    Call with the store lock held."""
    from .importer import dir_manifest, gguf_manifest  # here: the GGUF converter imports MLX

    sources = check_model_blobs(registry, files)
    ggufs = [rel for rel in sources if rel.lower().endswith(".gguf")]
    with scratch_dir(registry.models_dir) as scratch:
        for rel, path in sources.items():  # the files under their names (loaders go by suffix)
            link = Path(scratch, rel)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path)  # hard-linked, copied or converted into the weights
        if ggufs:
            gguf = Path(scratch, ggufs[0])
            manifest = gguf_manifest(registry, gguf, name, parameters=parameters, system=system)
            return manifest, [sources[ggufs[0]]]
        manifest = dir_manifest(registry, Path(scratch), name, source="blobs", hardlink=True)
    return manifest, []


def check_model_blobs(registry: Registry, files: dict[str, str]) -> dict[str, Path]:
    """The blob of each file: one GGUF, or config.json with safetensors (400 otherwise)."""
    sources = {rel: blob_file(registry, digest) for rel, digest in files.items()}
    missing = [rel for rel, path in sources.items() if not path.is_file()]
    if missing:
        raise BadRequest(f"blob for {missing[0]} not found: upload it to /api/blobs first")
    ggufs = [rel for rel in sources if rel.lower().endswith(".gguf")]
    if len(ggufs) > 1:
        raise BadRequest("one GGUF file per model (vision projectors are not supported)")
    if not ggufs and (
        "config.json" not in sources or not any(r.endswith(".safetensors") for r in sources)
    ):
        raise BadRequest("unknown type: send one GGUF file or config.json with safetensors")
    if ggufs:
        _check_gguf(sources[ggufs[0]])
    return sources


def _check_gguf(path: Path) -> None:
    with open(path, "rb") as handle:
        if handle.read(4) != b"GGUF":
            raise BadRequest("supplied file was not in GGUF format")


__all__ = [
    "blob_file",
    "check_files",
    "check_model_blobs",
    "manifest_from_blobs",
    "parse_digest",
    "save_blob",
]
