"""New weights made from a model's own: LoRA adapters fused in, then quantized.

``/api/create`` with ``quantize`` and/or ``adapters`` writes a new weights directory next to
the base model's. Everything here is mlx-lm's own machinery: ``load_model`` (lazily),
``load_adapters`` and each LoRA layer's ``fuse`` (what ``mlx_lm.fuse`` does), then
``quantize_model`` and ``save_model``. As Ollama, only unquantized (F16, BF16, F32) models
are quantized. The quantization types are Ollama's: the GGUF names its server takes
(``q4_K_M``, ``q4_K_S``, ``q4_0``, ``q8_0``) become MLX affine quantization with GGUF's
group size of 32, and the MLX names of Ollama's MLX create (``int4``, ``int8``, ``mxfp4``,
``nvfp4``, ``mxfp8``) keep its group sizes and modes.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from ..errors import BadRequest
from .atomic import library_writes

__all__ = ["QuantType", "check_quantizable", "derive_weights", "parse_quantize", "weights_dtype"]


@dataclass(frozen=True)
class QuantType:
    """One ``quantize`` value: its name as Ollama prints it, and MLX's parameters."""

    name: str
    group_size: int
    bits: int
    mode: str
    gguf_name: bool  # a GGUF type name (Ollama's server-side quantize) or an MLX one


_TYPES = {
    "Q4_0": QuantType("Q4_0", 32, 4, "affine", True),
    "Q4_K_S": QuantType("Q4_K_S", 32, 4, "affine", True),
    "Q4_K_M": QuantType("Q4_K_M", 32, 4, "affine", True),
    "Q4_K": QuantType("Q4_K", 32, 4, "affine", True),
    "Q8_0": QuantType("Q8_0", 32, 8, "affine", True),
    "INT4": QuantType("int4", 64, 4, "affine", False),
    "INT8": QuantType("int8", 64, 8, "affine", False),
    "MXFP4": QuantType("mxfp4", 32, 4, "mxfp4", False),
    "NVFP4": QuantType("nvfp4", 16, 4, "nvfp4", False),
    "MXFP8": QuantType("mxfp8", 32, 8, "mxfp8", False),
}
_ALIASES = {"FP4": "INT4", "Q4": "INT4", "FP8": "INT8", "Q8": "INT8"}  # Ollama's x/quant
_FLOAT_NAMES = ("F32", "F16", "BF16")
_SUPPORTED = "F32, F16, BF16, Q4_0, Q4_K_S, Q4_K_M, Q8_0, int4, int8, mxfp4, nvfp4, mxfp8"
_DTYPES = {"F16": "F16", "BF16": "BF16", "F32": "F32"}
_WEIGHT_FILES = ("*.safetensors", "model.safetensors.index.json", "config.json")


def parse_quantize(value: str | None) -> QuantType | None:
    """The quantization a ``quantize`` value asks for (None: keep the weights as they are).

    F32/F16/BF16 keep an unquantized model as it is. Anything unknown is a 400 in Ollama's
    words, listing what is supported.
    """
    key = (value or "").strip().upper()
    if not key or key in _FLOAT_NAMES:
        return None
    key = _ALIASES.get(key, key)
    if key not in _TYPES:
        raise BadRequest(
            f"unsupported quantization type {value} - supported types are {_SUPPORTED}"
        )
    return _TYPES[key]


def weights_dtype(model_dir: Path) -> str | None:
    """F16, BF16 or F32 for an unquantized model directory (its largest tensors' type);
    None if it is quantized."""
    config = _read_config(model_dir)
    if config.get("quantization") or config.get("quantization_config"):
        return None
    counts: dict[str, int] = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        with path.open("rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(min(length, 100 << 20)))
        for name, entry in header.items():
            if name != "__metadata__" and isinstance(entry, dict):
                size = 1
                for dim in entry.get("shape", []):
                    size *= dim
                counts[entry.get("dtype", "")] = counts.get(entry.get("dtype", ""), 0) + size
    if not counts:
        return None
    top = max(counts, key=counts.__getitem__)
    return _DTYPES.get(top, "F16") if top not in ("U32", "U8", "I8") else None


def check_quantizable(model_dir: Path, quant: QuantType) -> str:
    """The base's dtype label, or a 400 as Ollama's for an already quantized model."""
    dtype = weights_dtype(model_dir)
    if dtype is None:
        raise BadRequest("quantization is only supported for F16, BF16 and F32 models")
    return dtype


def derive_weights(
    base_dir: Path,
    out_dir: Path,
    *,
    quant: QuantType | None,
    adapter_dir: Path | None,
    status: str,
) -> Iterator[dict[str, Any]]:
    """Write ``base_dir``'s model with the adapter fused and/or quantized to ``out_dir``
    (which must not exist: the caller's ``atomic.staged_dir``), yielding Ollama-style
    progress lines (``status`` with bytes done of the total)."""
    model, config = load_derived(base_dir, quant=quant, adapter_dir=adapter_dir)
    params = tree_flatten(model.parameters())
    total = sum(p.nbytes for _, p in params) or 1
    done, shown = 0, -1.0
    for _, value in params:  # evaluate one tensor at a time, reporting as Ollama does
        mx.eval(value)
        done += value.nbytes
        if done / total - shown >= 0.1 or done == total:
            shown = done / total
            yield {"status": status, "digest": "0" * 19, "total": total, "completed": done}
    _save(model, config, base_dir, out_dir, quant.name if quant else None)


def load_derived(
    base_dir: Path, *, quant: QuantType | None, adapter_dir: Path | None
) -> tuple[Any, dict[str, Any]]:
    """The base model (lazy) with the adapter fused and the quantization applied, unevaluated.

    An adapter that does not fit the base model is a 400 naming the first mismatches.
    """
    from mlx_lm.tuner.utils import load_adapters
    from mlx_lm.utils import load_model, quantize_model

    try:
        model, config = load_model(base_dir, lazy=True)
    except (ValueError, KeyError, TypeError, FileNotFoundError) as exc:
        raise BadRequest(
            f"this model cannot be quantized or given an adapter here (mlx-lm cannot load it "
            f"as a text model: {type(exc).__name__}: {str(exc)[:200]})"
        ) from exc
    if adapter_dir is not None:
        try:
            model = load_adapters(model, str(adapter_dir))
        except (ValueError, KeyError) as exc:
            lines = str(exc).splitlines()
            detail = "; ".join(line.strip() for line in lines[1:4]) or lines[0]
            raise BadRequest(f"the adapter does not fit the base model: {detail}") from exc
        fused = [
            (n, m.fuse(dequantize=False)) for n, m in model.named_modules() if hasattr(m, "fuse")
        ]
        model.update_modules(tree_unflatten(fused))
    if quant is not None:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints bits per weight
            model, config = quantize_model(
                model, config, quant.group_size, quant.bits, mode=quant.mode
            )
    return model, config


def _save(
    model: Any, config: dict[str, Any], base_dir: Path, scratch: Path, label: str | None
) -> None:
    from mlx_lm.utils import save_config, save_model

    scratch.mkdir(parents=True)
    with library_writes(scratch):  # a full disk is an OSError, not MLX's RuntimeError
        save_model(scratch, model)
    save_config(dict(config), scratch / "config.json")
    for path in base_dir.iterdir():  # tokenizer, generation config, model_info.json …
        if path.name.startswith(".") or any(path.match(p) for p in _WEIGHT_FILES):
            continue
        if path.is_file():
            shutil.copy2(path, scratch / path.name)
    info_file = scratch / "model_info.json"
    if label is not None and info_file.is_file():  # a converted GGUF's: its new label
        info = json.loads(info_file.read_text(encoding="utf-8"))
        info["mlx_bridge.quantization_level"] = label
        info_file.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def _read_config(model_dir: Path) -> dict[str, Any]:
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadRequest(f"cannot read the base model's config.json: {exc}") from exc
    return config if isinstance(config, dict) else {}
