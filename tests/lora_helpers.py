"""LoRA adapters made locally with mlx-lm's own LoRA classes, and uploading a directory's
files as blobs the way ``ollama create`` does."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten
from mlx_lm.tuner.utils import linear_to_lora_layers
from mlx_lm.utils import load_model

LORA = {"rank": 4, "scale": 2.0, "dropout": 0.0, "keys": ["self_attn.q_proj", "mlp.down_proj"]}


def make_adapter(base_dir: Path, out_dir: Path, *, seed: int = 1, peft: bool = False) -> Path:
    """A random (non-zero) LoRA adapter for ``base_dir``'s model, in mlx-lm's layout
    (``adapters.safetensors``) or Hugging Face PEFT's (``adapter_model.safetensors``)."""
    model, config = load_model(base_dir)
    model.freeze()
    layers = config["num_hidden_layers"]
    linear_to_lora_layers(model, layers, dict(LORA))
    params = tree_flatten(model.trainable_parameters())
    keys = mx.random.split(mx.random.key(seed), len(params))
    weights = {
        name: mx.random.normal(v.shape, key=k) * 0.3
        for (name, v), k in zip(params, keys, strict=True)
    }
    model.update(tree_unflatten(list(weights.items())))
    out_dir.mkdir(parents=True, exist_ok=True)
    if not peft:
        mx.save_safetensors(str(out_dir / "adapters.safetensors"), weights)
        adapter_config = {"fine_tune_type": "lora", "num_layers": layers, "lora_parameters": LORA}
    else:  # PEFT: lora_A is (r, in), lora_B is (out, r); scale = lora_alpha / r
        renamed = {
            f"base_model.model.{name[: -len('.lora_a')]}.lora_{name[-1].upper()}.weight": value.T
            for name, value in weights.items()
        }
        mx.save_safetensors(str(out_dir / "adapter_model.safetensors"), renamed)
        adapter_config = {
            "peft_type": "LORA",
            "r": LORA["rank"],
            "lora_alpha": LORA["scale"] * LORA["rank"],
            "target_modules": ["q_proj", "down_proj"],
        }
    (out_dir / "adapter_config.json").write_text(json.dumps(adapter_config))
    return out_dir
