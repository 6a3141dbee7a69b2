"""GGUF Q4_K blocks rewritten as MLX 4-bit affine quantization, exactly.

A Q4_K super-block holds 256 weights as 8 groups of 32, each ``w = d·sc·q − dmin·m`` with a
4-bit ``q``: that is MLX's affine form with group size 32 (scale ``d·sc``, bias
``−dmin·m``), so the blocks of Ollama's ``q4_K_M`` files (most of their weights) are kept as
they are instead of being dequantized and quantized again. The 6-bit sub-scales are
unpacked by the ``gguf`` package's own ``Q4_K.get_scale_min``.
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import Q4_K

__all__ = ["q4_k_to_mlx"]

_BLOCK, _BLOCK_BYTES = GGML_QUANT_SIZES[GGMLQuantizationType.Q4_K]  # 256 weights, 144 bytes


def q4_k_to_mlx(data: np.ndarray, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The MLX ``weight`` (uint32, 8 weights a word), ``scales`` and ``biases`` (float32, one
    per 32 weights) of a Q4_K tensor of ``shape`` stored as ``data`` (its block bytes)."""
    blocks = np.ascontiguousarray(data).reshape(-1, _BLOCK_BYTES)
    count = blocks.shape[0]
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
    dmin = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
    sc, m = Q4_K.get_scale_min(blocks[:, 4:16].copy())
    qs = blocks[:, 16:].reshape(count, 4, 1, 32)
    # each 32 bytes hold two groups: the low nibbles, then the high ones
    values = (qs >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)) & np.uint8(0x0F)
    values = values.reshape(-1, 8).astype(np.uint32)
    words = np.zeros(values.shape[0], np.uint32)
    for i in range(8):  # MLX packs element i of a word at bits 4i
        words |= values[:, i] << np.uint32(4 * i)
    rows = shape[:-1]
    groups = shape[-1] // 32
    return {
        "weight": words.reshape(*rows, shape[-1] // 8),
        "scales": (d * sc.astype(np.float32)).reshape(*rows, groups),
        "biases": (-(dmin * m.astype(np.float32))).reshape(*rows, groups),
    }
