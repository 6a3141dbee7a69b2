"""Checks before a model is loaded: does it fit the memory budget, are its files intact?

The budget is ``MLX_BRIDGE_MEMORY_FRACTION`` of physical RAM (psutil). A model's need is its
size on disk, which for MLX safetensors is close to what it takes in (unified) memory. A model
that cannot fit even alone is refused with a clear message instead of swapping the machine;
otherwise the scheduler evicts idle models until it fits.

File checks are cheap: every file of the manifest exists with its recorded size, every
safetensors file is as long as its header says, and a file changed after its manifest was
written is hashed again and compared. A failure names the file and says to pull again.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelLoadError
from ..manifest import file_sha256

if TYPE_CHECKING:
    from ..config import Settings
    from ..registry import LocalModel

DEFAULT_MEMORY_FRACTION = 0.75  # macOS lets the GPU wire about this much of RAM by default
_GB = 1e9
_MTIME_SLACK_S = 2.0  # filesystems with coarse timestamps


@dataclass(frozen=True)
class MemoryBudget:
    """How much memory loaded models may take, in bytes."""

    total_bytes: int  # physical RAM
    fraction: float

    @classmethod
    def from_settings(cls, settings: Settings, total_bytes: int | None = None) -> MemoryBudget:
        """Budget from ``settings.memory_fraction`` and psutil's physical memory."""
        if total_bytes is None:
            import psutil

            total_bytes = int(psutil.virtual_memory().total)
        return cls(total_bytes, settings.memory_fraction)

    @property
    def limit_bytes(self) -> int:
        """The budget in bytes."""
        return int(self.total_bytes * self.fraction)

    def check_alone(self, name: str, need_bytes: int) -> None:
        """Refuse (ModelLoadError) a model bigger than the whole budget."""
        if need_bytes > self.limit_bytes:
            raise ModelLoadError(
                f"model requires more system memory ({need_bytes / _GB:.1f} GB) than is "
                f"available ({self.limit_bytes / _GB:.1f} GB): {name} needs ~"
                f"{need_bytes / _GB:.1f} GB, the budget is {self.limit_bytes / _GB:.1f} GB "
                f"({self.fraction:.0%} of {self.total_bytes / _GB:.0f} GB RAM); free memory "
                "or raise MLX_BRIDGE_MEMORY_FRACTION"
            )

    def fits(self, resident_bytes: int, need_bytes: int) -> bool:
        """True if a model of ``need_bytes`` fits beside ``resident_bytes`` already loaded."""
        return resident_bytes + need_bytes <= self.limit_bytes


def check_model_files(model: LocalModel) -> None:
    """Raise ModelLoadError naming the first missing, truncated or changed file."""
    manifest = model.manifest
    for name, entry in sorted(manifest.files.items()):
        path = model.path / name
        problem = _file_problem(path, entry, manifest.created_at, manifest.source)
        if problem:
            raise ModelLoadError(
                f"model file {name} of {model.name.display} is corrupt ({problem}); "
                f"pull the model again (or re-import it): mlx-ollama-bridge pull "
                f"{model.name.display}"
            )


def _file_problem(path: Path, entry: dict, created_at: float, source: str) -> str | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return "the file is missing"
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    size = entry.get("size")
    if isinstance(size, int) and stat.st_size != size:
        return f"{stat.st_size} bytes on disk, {size} expected: truncated or changed"
    if path.suffix == ".safetensors" and (problem := _safetensors_problem(path, stat.st_size)):
        return problem
    changed_later = stat.st_mtime > created_at + _MTIME_SLACK_S
    expected = entry.get("sha256")
    # a file written after the manifest recorded its hash is hashed again
    rehash = changed_later and expected and not source.startswith("path:")
    if rehash and file_sha256(path) != expected:
        return "its sha256 does not match the manifest"
    return None


def _safetensors_problem(path: Path, size: int) -> str | None:
    """A safetensors file must hold the data its header describes."""
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > size:
                return "its header is cut off"
            header = json.loads(handle.read(length))
    except (OSError, struct.error, ValueError) as exc:
        return f"unreadable safetensors header: {exc}"
    ends = [
        t["data_offsets"][1]
        for k, t in header.items()
        if k != "__metadata__" and isinstance(t, dict) and "data_offsets" in t
    ]
    expected = 8 + length + max(ends, default=0)
    if size < expected:
        return f"{size} bytes, its header describes {expected}: truncated"
    return None


__all__ = ["DEFAULT_MEMORY_FRACTION", "MemoryBudget", "check_model_files"]
