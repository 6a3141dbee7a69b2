"""Convert a GGUF file into an MLX model directory ``mlx_lm.load`` accepts.

The header is read and bounded first (``gguf_reader.py``); only a file that passes is handed
to ``mx.load`` or read tensor by tensor. What differs per architecture (tensor names,
llama.cpp's transforms, config keys) is ``gguf_arch.py``; the tokenizer files are
``gguf_tokenizer.py``. Tensors in the block types ``mx.load`` reads natively (Q4_0, Q4_1,
Q8_0) keep their blocks as MLX affine quantization with group size 32, so nothing is
re-quantized; nor are Q4_K blocks, the bulk of Ollama's ``q4_K_M`` files, which are MLX
affine 4-bit with group size 32 as they are (``gguf_blocks.py``). Other quantized types
(Q6_K, Q5_K, Q5_0, IQ4…) are dequantized with llama.cpp's reference code (the ``gguf``
package) and quantized again to MLX affine, group size 32, with at least as many bits as
the source (``_REQUANT_BITS``).
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

from ..errors import BadRequest
from .atomic import library_writes
from .gguf_arch import Family, family_for, llama3_rope_scaling, mlx_config
from .gguf_blocks import EXACT_TYPES, blocks_to_mlx
from .gguf_reader import GGUFTensor, read_gguf_header, read_gguf_tensors
from .gguf_tokenizer import check_tokenizer, eos_token_ids, write_tokenizer

__all__ = ["GGUFConversion", "SUPPORTED_TENSOR_TYPES", "convert_gguf"]

GROUP_SIZE = 32  # every GGUF block type mx.load understands packs 32 weights
_MX_NATIVE = ("F32", "F16", "Q4_0", "Q4_1", "Q8_0")
# Dequantized with the gguf package, then MLX affine with these bits (never fewer than stored).
_REQUANT_BITS = {
    "Q5_0": 5,
    "Q5_1": 5,
    "Q2_K": 4,
    "Q3_K": 4,
    "Q5_K": 5,
    "Q6_K": 6,
    "IQ4_NL": 4,
    "IQ4_XS": 4,
}
_FLOATS = ("F32", "F16", "BF16")
SUPPORTED_TENSOR_TYPES = (*_MX_NATIVE, "BF16", "Q4_K", *_REQUANT_BITS)
# general.file_type (llama_ftype) ids -> Ollama's quantization label
_FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    32: "BF16",
}
_REQUIRED_KEYS = ("embedding_length", "block_count", "attention.head_count")
_VISION_PREFIXES = ("v.", "mm.")  # vision tower and projector tensors in one file (Ollama's)


@dataclass(frozen=True)
class GGUFConversion:
    """The result of :func:`convert_gguf`: where the model went and what /api/show reports."""

    path: Path
    architecture: str
    parameter_count: int
    quantization_level: str
    context_length: int
    chat_template: str | None
    model_info: dict[str, Any]


def convert_gguf(gguf_path: Path, out_dir: Path) -> GGUFConversion:
    """Convert a GGUF file of a supported architecture into an MLX model directory.

    ``out_dir`` must not exist. Everything is written to a temporary sibling directory that
    is renamed into place at the end, so a failure never leaves a partial model behind.
    Unsupported architectures, tokenizers or tensor types raise :class:`BadRequest`.
    """
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists")
    meta, tensors = read_gguf_header(gguf_path)
    family = _check_supported(meta, tensors)
    scratch = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex[:8]}.tmp")
    scratch.mkdir(parents=True)  # not mkdtemp: that would leave the model directory 0700
    try:
        weights, extras = _convert_weights(gguf_path, meta, family, tensors)
        config = _model_config(meta, family, tensors, weights, extras)
        with library_writes(scratch):  # a full disk is an OSError before the cleanup
            mx.save_safetensors(str(scratch / "model.safetensors"), weights, {"format": "mlx"})
        _write_tokenizer(scratch, meta, config)
        model_info = _model_info(meta, tensors)
        _write_json(scratch / "config.json", config)
        _write_json(scratch / "model_info.json", model_info)
        scratch.rename(out_dir)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return GGUFConversion(
        path=out_dir,
        architecture=family.arch,
        parameter_count=model_info["general.parameter_count"],
        quantization_level=_quantization_level(meta, tensors),
        context_length=config["max_position_embeddings"],
        chat_template=meta.get("tokenizer.chat_template"),
        model_info=model_info,
    )


_write_tokenizer = write_tokenizer  # a module global, so a test can make it fail


def _check_supported(meta: dict[str, Any], tensors: dict[str, GGUFTensor]) -> Family:
    """Raise :class:`BadRequest` unless this converter handles the file; return its family."""
    family = family_for(meta)
    arch = family.arch
    required = [f"{arch}.{key}" for key in _REQUIRED_KEYS] + ["tokenizer.ggml.tokens"]
    if missing := [key for key in required if key not in meta]:
        raise BadRequest(f"GGUF metadata is missing {', '.join(missing)}")
    if bad := sorted({t.type_name for t in tensors.values()} - set(SUPPORTED_TENSOR_TYPES)):
        raise BadRequest(
            f"unsupported GGUF tensor type(s) {', '.join(bad)}; supported: "
            f"{', '.join(SUPPORTED_TENSOR_TYPES)} (re-quantize e.g. to Q4_K_M or Q8_0)"
        )
    unknown = [n for n in tensors if not _known(family, n)]
    if unknown or "token_embd.weight" not in tensors:
        raise BadRequest(f"unexpected tensors for a {arch} model: {', '.join(unknown[:5])}")
    check_tokenizer(meta)
    return family


def _known(family: Family, name: str) -> bool:
    stem, _, suffix = name.rpartition(".")
    if name.startswith(_VISION_PREFIXES):
        return True  # a vision tower (Ollama's gemma3, mistral3 …): left out, text only
    if stem in family.extra_tensors or stem == "rope_freqs":
        return suffix == "weight"
    return suffix in ("weight", "bias") and family.mlx_name(stem) is not None


def _unpermute_rows(x: mx.array, n_head: int) -> mx.array:
    """Invert llama.cpp's q/k ``reshape(n_head, 2, rows // n_head // 2, ...).swapaxes(1, 2)``.

    Rows move whole, so this applies to packed weights, scales and biases alike.
    """
    split = x.reshape(n_head, x.shape[0] // n_head // 2, 2, *x.shape[1:])
    return split.swapaxes(1, 2).reshape(x.shape)


def _undo_transforms(
    family: Family, meta: dict[str, Any], stem: str, suffix: str, value: mx.array
) -> mx.array:
    """Undo what llama.cpp's converter did to this tensor for this family."""
    kind = stem.rpartition(".")[2]
    if family.permute_qk and kind in ("attn_q", "attn_k"):
        n_head = meta[f"{family.arch}.attention.head_count"]
        if kind == "attn_k":
            n_head = meta.get(f"{family.arch}.attention.head_count_kv", n_head)
        value = _unpermute_rows(value, n_head)
    if family.norm_shift and kind.endswith("norm") and suffix == "weight":
        value = value - family.norm_shift
    return value


def _convert_weights(
    gguf_path: Path, meta: dict[str, Any], family: Family, tensors: dict[str, GGUFTensor]
) -> tuple[dict[str, mx.array], dict[str, mx.array]]:
    """The tensors under mlx-lm's names with llama.cpp's transforms undone; and the extra
    tensors (Phi-3's rope factors) the config takes instead."""
    converted: dict[str, mx.array] = {}
    extras: dict[str, mx.array] = {}
    for key, value, bits in _source_tensors(gguf_path, tensors):
        stem, _, suffix = key.rpartition(".")
        if key.startswith(_VISION_PREFIXES):
            continue
        if stem in family.extra_tensors or stem == "rope_freqs":
            extras[stem] = value
            continue
        value = _undo_transforms(family, meta, stem, suffix, value)
        parts = {suffix: value}
        if bits is not None:
            weight, scales, biases = mx.quantize(value, group_size=GROUP_SIZE, bits=bits)
            parts = {"weight": weight, "scales": scales, "biases": biases}
        target = family.mlx_name(stem)
        for part, array in parts.items():
            if part in ("scales", "biases"):
                array = array.astype(mx.float32)  # fp16 scales are many times slower on CPU
            converted[f"{target}.{part}"] = array
        if bits is not None:
            mx.eval(list(parts.values()))  # one dequantized tensor at a time in memory
    return converted, extras


def _source_tensors(
    gguf_path: Path, tensors: dict[str, GGUFTensor]
) -> Iterator[tuple[str, mx.array, int | None]]:
    """(name, array, bits to quantize it to or None) for each tensor of the file."""
    if {t.type_name for t in tensors.values()} <= set(_MX_NATIVE):
        for key, value in _load_gguf_tensors(gguf_path).items():
            yield key, value, None
        return
    for name, type_name, data in read_gguf_tensors(gguf_path):
        shape = tensors[name].shape
        if type_name in ("F32", "F16"):
            yield name, mx.array(np.asarray(data).reshape(shape)), None
            continue
        if type_name in EXACT_TYPES and name.endswith(".weight"):  # kept exactly: MLX affine
            stem = name[: -len(".weight")]
            for part, array in blocks_to_mlx(type_name, np.asarray(data), shape).items():
                yield f"{stem}.{part}", mx.array(array), None
            continue
        values = dequantize(np.asarray(data), GGMLQuantizationType[type_name]).reshape(shape)
        array = mx.array(values)
        if type_name == "BF16":
            yield name, array.astype(mx.bfloat16), None
        elif len(shape) >= 2 and shape[-1] % GROUP_SIZE == 0:
            yield name, array, _REQUANT_BITS.get(type_name, 8)
        else:
            yield name, array.astype(mx.float16), None


def _load_gguf_tensors(gguf_path: Path) -> dict[str, mx.array]:
    """``mx.load`` picks the format from the file's extension; Ollama's blobs have none."""
    try:
        if gguf_path.suffix.lower() == ".gguf":
            return mx.load(str(gguf_path))
        with tempfile.TemporaryDirectory() as tmp:
            alias = Path(tmp) / "model.gguf"
            alias.symlink_to(gguf_path.resolve())
            return mx.load(str(alias))
    except (RuntimeError, ValueError) as exc:
        raise BadRequest(f"cannot load the tensors of {gguf_path.name}: {exc}") from exc


def _quantization(weights: dict[str, mx.array]) -> dict[str, Any] | None:
    """mlx-lm's ``quantization`` config: the most common bit width plus per-module overrides."""
    bits = {}
    for key, scales in weights.items():
        if key.endswith(".scales"):
            path = key[: -len(".scales")]
            bits[path] = weights[f"{path}.weight"].shape[-1] * 32 // (scales.shape[-1] * GROUP_SIZE)
    if not bits:
        return None
    default = Counter(bits.values()).most_common(1)[0][0]
    overrides = {p: {"group_size": GROUP_SIZE, "bits": b} for p, b in bits.items() if b != default}
    # Modules without .scales (F16/F32 matrices) are left unquantized by mlx-lm's loader.
    return {"group_size": GROUP_SIZE, "bits": default, **overrides}


def _model_config(
    meta: dict[str, Any],
    family: Family,
    tensors: dict[str, GGUFTensor],
    weights: dict[str, mx.array],
    extras: dict[str, mx.array],
) -> dict[str, Any]:
    config = mlx_config(family, meta, {name: t.shape for name, t in tensors.items()})
    config["eos_token_id"] = eos_token_ids(meta)
    if (bos_id := meta.get("tokenizer.ggml.bos_token_id")) is not None:
        config["bos_token_id"] = bos_id
    if "rope_freqs" in extras:  # Llama 3.1+: llama.cpp stores the factors, not the recipe
        factors = [float(x) for x in extras["rope_freqs"].tolist()]
        config["rope_scaling"] = llama3_rope_scaling(factors, meta, family.arch)
    if "rope_factors_long" in extras:  # Phi-3's LongRoPE, stored as tensors by llama.cpp
        config["rope_scaling"] = {
            "type": "longrope",
            "long_factor": extras["rope_factors_long"].tolist(),
            "short_factor": extras.get("rope_factors_short", extras["rope_factors_long"]).tolist(),
        }
    if (quantization := _quantization(weights)) is not None:
        config["quantization"] = quantization
    return config


def _quantization_level(meta: dict[str, Any], tensors: dict[str, GGUFTensor]) -> str:
    """Ollama's label: from general.file_type, else the type holding most matrix weights."""
    if (label := _FILE_TYPES.get(meta.get("general.file_type", -1))) is not None:
        return label
    sizes: Counter[str] = Counter()
    for tensor in tensors.values():
        sizes[tensor.type_name] += math.prod(tensor.shape) if len(tensor.shape) >= 2 else 0
    return sizes.most_common(1)[0][0]


def _model_info(meta: dict[str, Any], tensors: dict[str, GGUFTensor]) -> dict[str, Any]:
    """Ollama's /api/show ``model_info``: the metadata minus bulky or private entries."""
    arch = meta.get("general.architecture")
    vision = (f"{arch}.vision.", f"{arch}.mm.")  # the tower is not converted: not shown
    info = {
        key: [] if isinstance(value, list) and len(value) > 5 else value
        for key, value in sorted(meta.items())
        if key not in ("general.name", "tokenizer.chat_template") and not key.startswith(vision)
    }
    info["general.parameter_count"] = sum(
        math.prod(t.shape) for name, t in tensors.items() if not name.startswith(_VISION_PREFIXES)
    )
    if "general.file_type" not in info:
        level = _quantization_level(meta, tensors)
        file_type = {v: k for k, v in _FILE_TYPES.items()}.get(level)
        if file_type is not None:
            info["general.file_type"] = file_type
    return info


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
