"""LoRA adapters for ``/api/create`` (``adapters``, Modelfile ``ADAPTER``), read and checked.

``ollama create`` uploads an adapter's files as blobs and names them in ``adapters``
(file name -> digest), as it does for a model's ``files``. Two safetensors layouts are
accepted: mlx-lm's own (``adapter_config.json`` with ``lora_parameters`` and ``num_layers``,
``adapters.safetensors`` with ``…lora_a``/``…lora_b``) and Hugging Face PEFT's, which Unsloth
and most trainers write (``adapter_config.json`` with ``r``/``lora_alpha``,
``adapter_model.safetensors`` with ``…lora_A.weight``/``…lora_B.weight``). Either is written
out as an mlx-lm adapter directory, which ``derive.py`` loads with mlx-lm's own
``load_adapters`` and fuses into the weights. Everything wrong with the files is a 400.
"""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path
from typing import Any

import mlx.core as mx

from ..errors import BadRequest

__all__ = ["write_mlx_adapter"]

_MAX_HEADER = 100 << 20  # a safetensors JSON header; real adapters have kilobytes
_DTYPES = {"F16", "BF16", "F32", "F64"}
_PEFT_KEY = re.compile(r"(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.default)?\.weight")


def write_mlx_adapter(files: dict[str, Path], into: Path, num_layers: int) -> None:
    """Check the uploaded adapter ``files`` (name -> path) and write them to ``into`` as an
    mlx-lm adapter directory (``adapter_config.json``, ``adapters.safetensors``).

    ``num_layers`` is the base model's layer count (a PEFT adapter may cover any of them).
    """
    if any(name.lower().endswith(".gguf") for name in files):
        raise BadRequest(
            "GGUF adapters are not supported: send the adapter's safetensors and "
            "adapter_config.json (as Hugging Face PEFT or mlx-lm write them)"
        )
    weights = [name for name in files if name.endswith(".safetensors")]
    config_file = next((p for n, p in files.items() if Path(n).name == "adapter_config.json"), None)
    if len(weights) != 1 or config_file is None:
        raise BadRequest(
            "an adapter is one adapter_config.json and one .safetensors file "
            f"(got {', '.join(sorted(files)) or 'none'})"
        )
    config = _read_config(config_file)
    tensors = _read_safetensors(files[weights[0]])
    if "lora_parameters" in config:  # mlx-lm's layout
        if config.get("fine_tune_type", "lora") not in ("lora", "dora"):
            raise BadRequest("adapter_config.json: only LoRA/DoRA adapters can be applied")
        out_config, out_tensors = _mlx_layout(config, tensors)
    else:
        out_config, out_tensors = _peft_layout(config, tensors, num_layers)
    into.mkdir(parents=True, exist_ok=True)
    (into / "adapter_config.json").write_text(json.dumps(out_config), encoding="utf-8")
    mx.save_safetensors(str(into / "adapters.safetensors"), out_tensors)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_bytes()[: 1 << 20].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"adapter_config.json is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise BadRequest("adapter_config.json must be a JSON object")
    return config


def _read_safetensors(path: Path) -> dict[str, mx.array]:
    """The tensors of a safetensors file whose header was checked against its size first."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 2 <= length <= min(_MAX_HEADER, size - 8):
            raise BadRequest("malformed adapter safetensors: bad header length")
        try:
            header = json.loads(handle.read(length).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadRequest(f"malformed adapter safetensors: {exc}") from exc
    if not isinstance(header, dict):
        raise BadRequest("malformed adapter safetensors: the header is not an object")
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = entry["data_offsets"]
            count = math.prod(entry["shape"])
            fits = 0 <= begin <= end <= size - 8 - length and entry["dtype"] in _DTYPES
        except (TypeError, KeyError, ValueError):
            fits, count = False, 0
        if not fits or count < 0:
            raise BadRequest(f"malformed adapter safetensors: tensor {name!r}")
    try:
        return mx.load(str(path), format="safetensors")
    except (RuntimeError, ValueError) as exc:
        raise BadRequest(f"malformed adapter safetensors: {exc}") from exc


def _mlx_layout(
    config: dict[str, Any], tensors: dict[str, mx.array]
) -> tuple[dict[str, Any], dict[str, mx.array]]:
    params = config["lora_parameters"]
    if not isinstance(params, dict) or not {"rank", "scale"} <= params.keys():
        raise BadRequest("adapter_config.json: lora_parameters needs rank and scale")
    if not isinstance(config.get("num_layers"), int):
        raise BadRequest("adapter_config.json: num_layers must be an integer")
    if not tensors or not all(k.endswith((".lora_a", ".lora_b", ".m")) for k in tensors):
        raise BadRequest("the adapter safetensors holds no lora_a/lora_b tensors")
    return config, tensors


def _peft_layout(
    config: dict[str, Any], tensors: dict[str, mx.array], num_layers: int
) -> tuple[dict[str, Any], dict[str, mx.array]]:
    """PEFT's (r×in, out×r) pairs as mlx-lm's (in×r, r×out), and ``alpha / r`` as the scale."""
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise BadRequest(f"adapter type {config.get('peft_type')!r}: only LoRA is supported")
    rank = config.get("r")
    if not isinstance(rank, int) or rank <= 0:
        raise BadRequest("adapter_config.json: r (the LoRA rank) must be a positive integer")
    alpha = config.get("lora_alpha", rank)
    if not isinstance(alpha, int | float):
        raise BadRequest("adapter_config.json: lora_alpha must be a number")
    scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    out: dict[str, mx.array] = {}
    modules = set()
    for key, value in tensors.items():
        match = _PEFT_KEY.fullmatch(key)
        if match is None or value.ndim != 2:
            raise BadRequest(f"unexpected tensor {key!r} in a LoRA adapter")
        path, which = match[1], match[2]
        out[f"{path}.lora_{which.lower()}"] = value.T
        layer = re.match(r"model\.layers\.\d+\.(.+)", path)
        modules.add(layer[1] if layer else path)
    if not out:
        raise BadRequest("the adapter safetensors holds no LoRA tensors")
    lora = {"rank": rank, "scale": scale, "dropout": 0.0, "keys": sorted(modules)}
    return {"fine_tune_type": "lora", "num_layers": num_layers, "lora_parameters": lora}, out
