"""The local store's manifest: one small JSON file per model name.

Store layout (``models_dir`` is the ``MLX_BRIDGE_MODELS`` setting)::

    <models_dir>/manifests/<host>/<namespace>/<model>/<tag>   # one JSON manifest per name
    <models_dir>/weights/<slug>/                              # mlx-lm loadable model dirs

A manifest names the weights directory it uses (relative paths are relative to
``models_dir``, so a store can be moved), records every file of it with size and SHA-256,
and carries the Modelfile-level extras Ollama keeps in separate layers: system prompt,
template override, default parameters and pre-seeded messages. Several names may share
one weights directory. The model's digest is the SHA-256 of the canonical JSON of its
``files`` map: stable across re-imports and changed by any change to a file.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_VERSION = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")
_HASH_LIMIT_BYTES = 1 << 20  # quick_files_map: larger non-blob files get a stat fingerprint
FORMATS = ("gguf", "mlx")  # gguf = converted from a GGUF file; mlx = an MLX/HF model dir
_BLOCK_BYTES = 1 << 20


@dataclass
class Manifest:
    """What the store knows about one named model."""

    model_dir: str  # mlx-lm loadable directory; relative = relative to models_dir
    format: str  # "gguf" or "mlx"
    source: str  # e.g. "gguf:SmolLM2-135M-Instruct.Q4_1.gguf", "hf:mlx-community/..."
    files: dict[str, dict]  # file name relative to model_dir -> {"size": int, "sha256": str}
    created_at: float  # unix seconds
    parent_model: str = ""
    system: str | None = None
    template: str | None = None  # chat template override (Jinja), None = the model's own
    parameters: dict = field(default_factory=dict)  # default options, Ollama PARAMETER names
    messages: list = field(default_factory=list)  # pre-seeded [{"role", "content"}]
    go_template: str | None = None  # Ollama's template layer, as Ollama wrote it (pulls)
    license: list = field(default_factory=list)  # Ollama's license layers (pulls)

    @property
    def digest(self) -> str:
        """Lowercase hex SHA-256 of the canonical JSON of ``files`` (sorted, compact)."""
        canonical = json.dumps(self.files, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @property
    def listed_digest(self) -> str:
        """The digest ``/api/tags`` lists: for a model pulled from Ollama's registry (or a
        local Ollama store) the SHA-256 of its registry manifest, as Ollama lists it (update
        checks compare it; a model created from it has its own); else :attr:`digest`."""
        if self.source.startswith(("ollama:", "ollama-store:")) and not self.parent_model:
            _, _, pulled = self.source.rpartition("@sha256:")
            if _SHA256.fullmatch(pulled):
                return pulled
        return self.digest

    @property
    def size(self) -> int:
        """Total size of the model's files in bytes."""
        return sum(int(entry.get("size", 0)) for entry in self.files.values())

    def resolve_dir(self, models_dir: Path) -> Path:
        """The absolute model directory (``model_dir`` relative to ``models_dir`` if relative)."""
        path = Path(self.model_dir).expanduser()
        return path if path.is_absolute() else Path(models_dir) / path

    def to_json(self) -> str:
        """The manifest file's text (pretty-printed JSON, keys in a fixed order)."""
        return json.dumps({"version": MANIFEST_VERSION, **asdict(self)}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        """Parse a manifest file; raises ``ValueError`` if it is not a valid manifest.

        Unknown keys are ignored so that newer manifests stay readable.
        """
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("manifest is not a JSON object")
        _check_types(data)
        known = cls.__dataclass_fields__
        # null for a collection means "empty", as Go's JSON decoder would leave it
        return cls(**{k: v for k, v in data.items() if k in known and v is not None})


_REQUIRED = {"model_dir": str, "format": str, "source": str, "files": dict}
_OPTIONAL = {
    "parent_model": str,
    "system": str,
    "template": str,
    "parameters": dict,
    "messages": list,
    "go_template": str,
    "license": list,
}


def _check_types(data: dict[str, Any]) -> None:
    for key, kind in _REQUIRED.items():
        if not isinstance(data.get(key), kind):
            raise ValueError(f"manifest field {key!r} missing or not a {kind.__name__}")
    created = data.get("created_at")
    if not isinstance(created, (int, float)) or isinstance(created, bool):
        raise ValueError("manifest field 'created_at' missing or not a number")
    for key, kind in _OPTIONAL.items():
        if data.get(key) is not None and not isinstance(data[key], kind):
            raise ValueError(f"manifest field {key!r} is not a {kind.__name__}")
    for name, entry in data["files"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("size"), int):
            raise ValueError(f"manifest entry for file {name!r} has no integer size")


def hash_model_dir(model_dir: Path) -> dict[str, dict]:
    """The ``files`` map of a model directory: relative POSIX path -> size and SHA-256.

    Walks sub-directories (sentence-transformers keeps ``1_Pooling/config.json``), follows
    symlinks (Hugging Face cache snapshots are symlinks to blobs) and skips hidden entries
    such as ``.gitattributes`` or an interrupted import's ``.tmp`` directory. Files are
    hashed in 1 MiB blocks, so memory use does not grow with the model.
    """
    root = Path(model_dir)
    files: dict[str, dict] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        files[relative.as_posix()] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
    return files


def file_sha256(path: Path) -> str:
    """Lowercase hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def quick_files_map(root: Path) -> dict[str, dict]:
    """A ``files`` map cheap enough to build per request, for directories outside the store.

    Hugging Face cache files are symlinks to blobs named by their SHA-256, which is used
    as is; other files up to 1 MiB are hashed; larger ones get a SHA-256 of their size and
    mtime, which still changes whenever the file does.
    """
    files: dict[str, dict] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        stat = path.stat()
        blob = path.resolve().name
        if _SHA256.fullmatch(blob):
            digest = blob
        elif stat.st_size <= _HASH_LIMIT_BYTES:
            digest = file_sha256(path)
        else:
            digest = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
        files[relative.as_posix()] = {"size": stat.st_size, "sha256": digest}
    return files


def read_manifest_file(path: Path) -> Manifest:
    """Read a manifest file; raises ``OSError`` or ``ValueError`` if it is unusable."""
    return Manifest.from_json(Path(path).read_bytes())


__all__ = [
    "FORMATS",
    "MANIFEST_VERSION",
    "Manifest",
    "file_sha256",
    "hash_model_dir",
    "quick_files_map",
    "read_manifest_file",
]
