"""3-D rotary positions (M-RoPE) for Qwen2-VL, Qwen2.5-VL and Qwen3-VL behind ``VisionLM``.

These language models give every token three positions (time, height, width). A text token
at index ``i`` has ``i + delta`` on all three, where ``delta`` is what the images before it
shifted the text by; an image token has its image's first position plus its place in the
image's (merged) patch grid, and the text after an image continues past the grid's largest
extent, not past the image's token count. mlx-vlm computes this for a whole prompt with the
model's ``get_rope_index``; the bridge runs prompts in chunks, from a prompt cache, one token
at a time when decoding, so the same positions are put together here:

- per image (``image_rope``), once, at registration: mlx-vlm's own ``get_rope_index`` on the
  image alone (a vision-start token and its image tokens) gives each image token's offset
  from the image's first position, and the image's ``delta``;
- per call (``positions``): the tokens of the chunk and the cache's offset give the rest.
  The shift in force at each index is kept on the sequence's first cache layer
  (``SHIFTS``, a tuple of ``(index, delta)``): it travels with the cache into the prompt-cache
  pool (which deep-copies caches), and entries past a trimmed cache's offset are ignored.

In a batch lane mlx-lm merges sequences' caches into one ``BatchKVCache`` per layer, and
filters, extends and splits it as sequences come and go; the first layer is a
``ShiftedKVCache`` whose batched form (``ShiftedBatchKVCache``) keeps each row's shifts
through all of those, so these models batch like any other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import BatchKVCache, KVCache

from .vision_prompt import IMAGE_TOKEN_BASE

__all__ = [
    "SHIFTS",
    "ImageRope",
    "ShiftedBatchKVCache",
    "ShiftedKVCache",
    "has_mrope",
    "image_rope",
    "positions",
]

SHIFTS = "bridge_mrope_shifts"  # the attribute on a sequence's first cache layer


@dataclass(frozen=True)
class ImageRope:
    """Where one image's tokens sit in M-RoPE's three position axes."""

    offsets: np.ndarray  # (3, n): each image token's positions less the image's first index
    delta: int  # the shift the image adds to the text after it (grid extent - token count)


# Families whose mlx-vlm ``get_rope_index`` has the Qwen2-VL form this module relies on (read
# in mlx-vlm 0.7.10). Other families with a ``get_rope_index`` (GLM-4V, ERNIE-VL, Qwen3.5…)
# keep their language model's own default positions: their form was not checked.
MROPE_FAMILIES = {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe"}


def has_mrope(vlm: Any) -> bool:
    """True if the mlx-vlm model's language model takes Qwen-VL's 3-D positions."""
    language = getattr(vlm, "language_model", None)
    config = getattr(vlm, "config", None)
    return (
        getattr(config, "model_type", None) in MROPE_FAMILIES
        and hasattr(language, "get_rope_index")
        and getattr(config, "vision_start_token_id", None) is not None
    )


def image_rope(vlm: Any, image_token_id: int, count: int, inputs: dict[str, Any]) -> ImageRope:
    """The positions of an image of ``count`` tokens whose processor output is ``inputs``
    (its ``image_grid_thw``), by mlx-vlm's ``get_rope_index`` on the image alone."""
    grid = inputs.get("image_grid_thw")
    if grid is None:
        return ImageRope(np.tile(np.arange(count), (3, 1)), 0)
    start = int(vlm.config.vision_start_token_id)
    ids = mx.array([[start] + [image_token_id] * count])
    position_ids, deltas = vlm.language_model.get_rope_index(ids, mx.array(grid).reshape(-1, 3))
    grid_positions = np.array(position_ids)[:, 0, 1:].astype(np.int64)
    return ImageRope(grid_positions - 1, int(np.array(deltas).reshape(-1)[0]))


class ShiftedKVCache(KVCache):
    """A sequence's first-layer cache whose batched form keeps the sequence's shifts."""

    @classmethod
    def merge(cls, caches: list[Any]) -> ShiftedBatchKVCache:
        """One batch cache of ``caches`` (mlx-lm's merge), each row with its shifts."""
        batch = BatchKVCache.merge(caches)
        batch.__class__ = ShiftedBatchKVCache  # mlx-lm builds the base class
        batch.shifts = [tuple(getattr(c, SHIFTS, ())) for c in caches]
        return batch


class ShiftedBatchKVCache(BatchKVCache):
    """mlx-lm's batch cache, with each row's shifts following the row."""

    shifts: list[tuple]

    def filter(self, batch_indices: Any) -> None:
        """Keep the rows ``batch_indices`` (mlx-lm's filter), and their shifts."""
        super().filter(batch_indices)
        self.shifts = [self.shifts[i] for i in np.array(batch_indices).reshape(-1).tolist()]

    def extend(self, other: Any) -> None:
        """Append ``other``'s rows (mlx-lm's extend), and their shifts."""
        super().extend(other)
        self.shifts = self.shifts + list(getattr(other, "shifts", [()] * len(other.offset)))

    def extract(self, idx: int) -> ShiftedKVCache:
        """Row ``idx`` as a sequence's cache (mlx-lm's extract), with its shifts."""
        single = super().extract(idx)
        single.__class__ = ShiftedKVCache
        setattr(single, SHIFTS, self.shifts[idx])
        return single


def positions(
    tokens: np.ndarray, cache: Any, rope: Callable[[int], ImageRope], stride: int
) -> mx.array:
    """The (3, batch, length) positions of ``tokens`` (host ids) evaluated next on
    ``cache``; records the shifts of images ending here on the cache (``SHIFTS``)."""
    first = cache[0] if cache else None
    batched = isinstance(first, ShiftedBatchKVCache)
    if batched:
        starts = np.array(first.offset).reshape(-1).tolist()
        kept = list(first.shifts)
    else:
        starts = [int(first.offset) if first is not None else 0] * tokens.shape[0]
        kept = [tuple(getattr(first, SHIFTS, ()))] * tokens.shape[0]
    rows, found = [], []
    for row, start, shifts in zip(tokens, starts, kept, strict=True):
        out, shifts = _row(row, int(start), shifts, rope, stride)
        rows.append(out)
        found.append(shifts)
    if batched:
        first.shifts = found
    elif first is not None:
        setattr(first, SHIFTS, found[0])
    return mx.array(np.stack(rows, axis=1).astype(np.int32))


def _row(
    tokens: np.ndarray, start: int, kept: tuple, rope: Callable[[int], ImageRope], stride: int
) -> tuple[np.ndarray, tuple]:
    """One sequence's (3, length) positions from index ``start``, and its shifts after."""
    shifts = [s for s in kept if s[0] <= start]
    delta = shifts[-1][1] if shifts else 0
    ids = tokens.reshape(-1).astype(np.int64)
    index = np.arange(start, start + ids.size, dtype=np.int64)
    out = np.tile(index, (3, 1))
    images = np.nonzero(ids >= IMAGE_TOKEN_BASE)[0]
    if images.size == 0:
        out += delta
    else:
        done = 0  # tokens placed so far; text runs take the shift in force
        for j in images.tolist():
            out[:, done:j] += delta
            handle, k = divmod(int(ids[j]) - IMAGE_TOKEN_BASE, stride)
            image = rope(handle)
            # the image's first index plus the shift before it, plus the token's grid place
            out[:, j] = int(index[j]) - k + delta + image.offsets[:, k]
            if k == image.offsets.shape[1] - 1:
                delta += image.delta
                shifts.append((int(index[j]) + 1, delta))
            done = j + 1
        out[:, done:] += delta
    return out, tuple(shifts)
