"""Fake model directories for registry and model-details tests (no weights worth loading).

A model here is a config.json, a safetensors file whose header is written by hand (tensor
data is zeros) and a tokenizer_config.json: enough for everything that reads metadata.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

from mlx_ollama_bridge.manifest import Manifest, hash_model_dir

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TOOLS = "{% if tools %}<tools>{{ tools | tojson }}</tools>{% endif %}" + CHATML
THINKING = TOOLS + "{% if enable_thinking %}<think>\n\n</think>{% endif %}"
_DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "U32": 4, "I64": 8}


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    """A valid safetensors file: 8-byte little-endian header length, JSON header, zeros."""
    header, offset = {"__metadata__": {"format": "mlx"}}, 0
    for name, (dtype, shape) in tensors.items():
        size = _DTYPE_BYTES[dtype] * (shape[0] * shape[1] if len(shape) == 2 else shape[0])
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))


def llama_tensors(dtype: str = "F16", bits: int | None = None) -> dict[str, tuple[str, list]]:
    """Embedding 100x8 and one 8x16 projection: 800 + 128 + 8 (norm) = 936 parameters."""
    tensors = {"model.embed_tokens.weight": (dtype, [100, 8]), "model.norm.weight": (dtype, [8])}
    if bits:  # packed like mlx-lm: 32/bits values per uint32, plus scales and biases
        tensors["model.layers.0.mlp.up_proj.weight"] = ("U32", [16, 8 * bits // 32])
        tensors["model.layers.0.mlp.up_proj.scales"] = (dtype, [16, 1])
        tensors["model.layers.0.mlp.up_proj.biases"] = (dtype, [16, 1])
    else:
        tensors["model.layers.0.mlp.up_proj.weight"] = (dtype, [16, 8])
    return tensors


def make_model(
    path: Path,
    *,
    model_type: str = "llama",
    template: str | list | None = CHATML,
    dtype: str = "F16",
    bits: int | None = None,
    config: dict | None = None,
) -> Path:
    """A fake mlx-lm model directory."""
    path.mkdir(parents=True, exist_ok=True)
    base = {
        "model_type": model_type,
        "hidden_size": 8,
        "num_hidden_layers": 1,
        "intermediate_size": 16,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "vocab_size": 100,
        "bos_token_id": 1,
        "eos_token_id": [2, 3],
    }
    if bits:
        base["quantization"] = {"group_size": 8, "bits": bits}
    (path / "config.json").write_text(json.dumps({**base, **(config or {})}))
    write_safetensors(path / "model.safetensors", llama_tensors(dtype, bits))
    tokenizer_config = {"eos_token": "<|im_end|>"}
    if template is not None:
        tokenizer_config["chat_template"] = template
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return path


def manifest_for(path: Path, **extra) -> Manifest:
    return Manifest(
        model_dir=str(path),
        format="mlx",
        source="test",
        files=hash_model_dir(path),
        created_at=time.time(),
        **extra,
    )
