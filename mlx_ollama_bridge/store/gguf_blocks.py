"""GGUF Q4_K, Q4_0, Q4_1 and Q8_0 blocks rewritten as MLX affine quantization, exactly.

A Q4_K super-block holds 256 weights as 8 groups of 32, each ``w = d·sc·q − dmin·m`` with a
4-bit ``q``: that is MLX's affine form with group size 32 (scale ``d·sc``, bias
``−dmin·m``), so the blocks of Ollama's ``q4_K_M`` files (most of their weights) are kept as
they are instead of being dequantized and quantized again. The 6-bit sub-scales are
unpacked by the ``gguf`` package's own ``Q4_K.get_scale_min``. Q4_0 (``d·(q − 8)``), Q4_1
(``d·q + m``) and Q8_0 (``d·q``, q signed) are that form too; ``mx.load`` reads them itself,
but not from a file that also holds K-quants, where they come here.
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import Q4_K

__all__ = ["EXACT_TYPES", "blocks_to_mlx", "q4_k_to_mlx"]

_BLOCK, _BLOCK_BYTES = GGML_QUANT_SIZES[GGMLQuantizationType.Q4_K]  # 256 weights, 144 bytes
EXACT_TYPES = {"Q4_K": 4, "Q4_0": 4, "Q4_1": 4, "Q8_0": 8}  # type -> MLX bits (group size 32)


def blocks_to_mlx(kind: str, data: np.ndarray, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The MLX ``weight``, ``scales`` and ``biases`` of a tensor of one of ``EXACT_TYPES``."""
    if kind == "Q4_K":
        return q4_k_to_mlx(data, shape)
    size = GGML_QUANT_SIZES[GGMLQuantizationType[kind]][1]
    blocks = np.ascontiguousarray(data).reshape(-1, size)
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
    if kind == "Q8_0":  # signed bytes: shifted by 128, the bias takes it back
        values = (blocks[:, 2:].view(np.int8).astype(np.int16) + 128).astype(np.uint32)
        return _packed(values, d, -128 * d, 8, shape)
    qs = blocks[:, 4:] if kind == "Q4_1" else blocks[:, 2:]
    values = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.uint32)  # low, then high
    bias = blocks[:, 2:4].copy().view(np.float16).astype(np.float32) if kind == "Q4_1" else -8 * d
    return _packed(values, d, bias, 4, shape)


def _packed(
    values: np.ndarray, scales: np.ndarray, biases: np.ndarray, bits: int, shape: tuple[int, ...]
) -> dict[str, np.ndarray]:
    """MLX's layout: ``32 / bits`` values a uint32 word, element i at bits ``bits·i``."""
    per_word = 32 // bits
    values = values.reshape(-1, per_word)
    words = np.zeros(values.shape[0], np.uint32)
    for i in range(per_word):
        words |= values[:, i] << np.uint32(bits * i)
    rows, groups = shape[:-1], shape[-1] // 32
    return {
        "weight": words.reshape(*rows, shape[-1] // per_word),
        "scales": scales.reshape(*rows, groups),
        "biases": biases.reshape(*rows, groups),
    }


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
    scales = (d * sc.astype(np.float32)).reshape(-1)
    biases = (-(dmin * m.astype(np.float32))).reshape(-1)
    return _packed(values.astype(np.uint32), scales, biases, 4, shape)
