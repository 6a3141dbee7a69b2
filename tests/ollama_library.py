"""Library entries for the fake Ollama registry, made from the embedded SmolLM2 GGUF.

``smollm2:135m`` is published as Ollama publishes a GGUF model: the GGUF as the
``image.model`` layer, then ``template``, ``system``, ``params`` and ``license`` layers and the
docker config. Its template is the bridge's rendition of Ollama's library template for
smollm2 (``ollama_templates``; the real one cannot be fetched here, offline), its params
the library's stops. ``smollm2:135m-mlx`` is the same model as Ollama's MLX engine stores it
(``x/create``): one safetensors ``image.tensor`` layer per weight, quantized weights with
``.weight.scale`` / ``.weight.bias`` companions and ``quant_type``/``group_size`` metadata,
and the model's JSON files as ``image.json`` layers.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from fake_ollama_registry import FakeOllamaRegistry

from mlx_ollama_bridge.ollama_templates import template_form

SMOLLM2_TEMPLATE = template_form("<|im_start|>SmolLM", None).go_template or ""
SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
SMOLLM2_PARAMS = {"stop": ["<|im_start|>", "<|im_end|>"]}
LICENSE = "Apache License\nVersion 2.0, January 2004\nhttp://www.apache.org/licenses/\n"
PREFIX = "application/vnd.ollama.image."
_JSON_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json")


def modelfile_layers() -> list[tuple[str, bytes, str]]:
    return [
        (PREFIX + "template", SMOLLM2_TEMPLATE.encode(), ""),
        (PREFIX + "system", SMOLLM2_SYSTEM.encode(), ""),
        (PREFIX + "params", json.dumps(SMOLLM2_PARAMS).encode(), ""),
        (PREFIX + "license", LICENSE.encode(), ""),
    ]


def publish_smollm2(fake: FakeOllamaRegistry, gguf: Path, name: str = "smollm2:135m") -> bytes:
    """Publish the GGUF model under ``name``; returns its manifest bytes."""
    layers = [(PREFIX + "model", gguf.read_bytes(), ""), *modelfile_layers()]
    config = {
        "model_format": "gguf",
        "model_family": "llama",
        "model_families": ["llama"],
        "model_type": "134.52M",
        "file_type": "Q4_1",
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
    }
    return fake.add_model(name, layers, config)


def publish_smollm2_mlx(
    fake: FakeOllamaRegistry, mlx_dir: Path, name: str = "smollm2:135m-mlx"
) -> bytes:
    """Publish an MLX model directory (mlx-lm layout) as Ollama's tensor layers."""
    import mlx.core as mx

    config = json.loads((mlx_dir / "config.json").read_text())
    quant = config.pop("quantization", None)
    weights: dict[str, mx.array] = {}
    for file in sorted(mlx_dir.glob("*.safetensors")):
        weights.update(mx.load(str(file)))
    layers: list[tuple[str, bytes, str]] = []
    with tempfile.TemporaryDirectory() as scratch:
        for tensor in sorted(k for k in weights if not k.endswith((".scales", ".biases"))):
            base = tensor.removesuffix(".weight")
            group = {tensor: weights[tensor]}
            metadata = {}
            if f"{base}.scales" in weights:
                group[f"{tensor}.scale"] = weights[f"{base}.scales"]
                group[f"{tensor}.bias"] = weights[f"{base}.biases"]
                metadata = {
                    "quant_type": f"int{quant['bits']}",
                    "group_size": str(quant["group_size"]),
                }
            path = Path(scratch, "blob.safetensors")
            mx.save_safetensors(str(path), group, metadata=metadata)
            layers.append((PREFIX + "tensor", path.read_bytes(), tensor))
    config_bytes = json.dumps(config, indent=2).encode()
    layers.append((PREFIX + "json", config_bytes, "config.json"))
    for file in _JSON_FILES[1:]:
        if (mlx_dir / file).is_file():
            layers.append((PREFIX + "json", (mlx_dir / file).read_bytes(), file))
    layers += modelfile_layers()
    docker = {"model_format": "safetensors", "file_type": "int4", "capabilities": ["completion"]}
    return fake.add_model(name, layers, docker)
