"""The layers of an Ollama model, read: media types, Modelfile layers, MLX tensor layers.

An Ollama manifest lists its parts as layers (Ollama's ``server/images.go``, ``x/create``):

* ``application/vnd.ollama.image.model``: GGUF weights (converted to MLX by ``store/gguf``);
* ``application/vnd.ollama.image.tensor`` (one per tensor, a safetensors file named by its
  layer ``name``) with ``application/vnd.ollama.image.json`` files (``config.json``,
  ``tokenizer.json`` …, by ``name``): an MLX model as Ollama's MLX engine stores it. Quantized
  weights carry ``<w>.weight.scale`` / ``<w>.weight.bias`` and ``quant_type``/``group_size``
  metadata, which become mlx-lm's ``<w>.scales`` / ``<w>.biases`` and ``quantization``;
* ``template`` (a Go template), ``system``, ``params`` (JSON), ``messages`` (JSON) and
  ``license``: kept as Ollama wrote them, in the store's manifest.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..registry import LocalModel, Registry
from .atomic import library_writes, scratch_dir
from .importer import dir_manifest, gguf_manifest
from .lock import store_lock
from .manage import prune_weights
from .manifests import write_manifest
from .ollama_manifest import Layer, RegistryRefused, safe_relative

log = logging.getLogger(__name__)

MODEL = "application/vnd.ollama.image.model"
TENSOR = "application/vnd.ollama.image.tensor"
JSON_FILE = "application/vnd.ollama.image.json"
TEMPLATE = "application/vnd.ollama.image.template"
PROMPT = "application/vnd.ollama.image.prompt"  # the older name of the template layer
SYSTEM = "application/vnd.ollama.image.system"
PARAMS = "application/vnd.ollama.image.params"
MESSAGES = "application/vnd.ollama.image.messages"
LICENSE = "application/vnd.ollama.image.license"
UNSUPPORTED = {
    "application/vnd.ollama.image.adapter": "a LoRA adapter layer",
    "application/vnd.ollama.image.projector": "a vision projector",
    "application/vnd.ollama.image.embed": "an embedding layer",
    "application/vnd.ollama.image.draft": "a draft model",
}
TEXT_LAYERS = (TEMPLATE, PROMPT, SYSTEM, PARAMS, MESSAGES, LICENSE)
MAX_TEXT_BYTES = 1 << 20  # a template, system prompt or license is a few KB
_QUANT_MODES = {  # Ollama's quant_type -> (bits, mlx mode)
    "int4": (4, "affine"),
    "int8": (8, "affine"),
    "mxfp4": (4, "mxfp4"),
    "nvfp4": (4, "nvfp4"),
    "mxfp8": (8, "mxfp8"),
}


@dataclass
class ModelfileLayers:
    """The Modelfile-level layers of a model, as Ollama wrote them."""

    template: str | None = None
    system: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    license: list[str] = field(default_factory=list)


def kind_of(layers: tuple[Layer, ...]) -> str:
    """``"gguf"`` or ``"mlx"``; RegistryRefused for what the bridge cannot run."""
    for layer in layers:
        if layer.media_type in UNSUPPORTED:
            raise RegistryRefused(
                f"this model has {UNSUPPORTED[layer.media_type]}, which the bridge cannot run yet"
            )
    media = {layer.media_type for layer in layers}
    if TENSOR in media:
        return "mlx"
    models = [layer for layer in layers if layer.media_type == MODEL]
    if len(models) == 1:
        return "gguf"
    raise RegistryRefused("the registry's manifest has no model weights the bridge can use")


def read_modelfile_layers(layers: tuple[Layer, ...], blob: Any) -> ModelfileLayers:
    """Read the text layers (``blob(layer)`` is its file); bad JSON is refused."""
    found = ModelfileLayers()
    for layer in layers:
        if layer.media_type not in TEXT_LAYERS:
            continue
        if layer.size > MAX_TEXT_BYTES:
            raise RegistryRefused(f"the {layer.media_type.rsplit('.', 1)[-1]} layer is too large")
        text = Path(blob(layer)).read_text(encoding="utf-8", errors="replace")
        if layer.media_type in (TEMPLATE, PROMPT):
            found.template = text
        elif layer.media_type == SYSTEM:
            found.system = text
        elif layer.media_type == LICENSE:
            found.license.append(text)
        elif layer.media_type == PARAMS:
            found.parameters = _parameters(text)
        else:
            found.messages = _messages(text)
    return found


def _parameters(text: str) -> dict[str, Any]:
    data = _layer_json(text, "params", dict, "a JSON object")
    scalar = (str, int, float, bool)
    kept = {}
    for key, value in data.items():
        if isinstance(value, scalar) or (
            isinstance(value, list) and all(isinstance(v, scalar) for v in value)
        ):
            kept[str(key)] = value
        else:
            log.warning("ignoring a params value that is not a scalar or list key=%s", key)
    return kept


def _messages(text: str) -> list[dict[str, Any]]:
    data = _layer_json(text, "messages", list, "a JSON list")
    return [
        {"role": str(m.get("role", "")), "content": str(m.get("content") or "")}
        for m in data
        if isinstance(m, dict)
    ]


def _layer_json(text: str, layer: str, kind: type, shape: str) -> Any:
    """``text`` parsed as JSON; RegistryRefused naming ``layer`` unless it is a ``kind``."""
    try:
        data = json.loads(text)
    except ValueError:
        raise RegistryRefused(f"the {layer} layer is not JSON") from None
    if not isinstance(data, kind):
        raise RegistryRefused(f"the {layer} layer is not {shape}")
    return data


def assemble_mlx_dir(layers: tuple[Layer, ...], blob: Any, out: Path) -> None:
    """Write the model directory mlx-lm loads from Ollama's MLX layers into ``out``.

    JSON layers become files under their names; each tensor layer's safetensors file is
    rewritten with mlx-lm's names (one ``model-NNNNN.safetensors`` per layer) and the
    quantization found in their metadata goes into ``config.json``.
    """
    import mlx.core as mx  # here: only MLX pulls need it

    quantization: dict[str, Any] | None = None
    index = 0
    for layer in layers:
        if layer.media_type == JSON_FILE:
            if not safe_relative(layer.name) or not layer.name:
                raise RegistryRefused(f"a json layer has a bad name: {layer.name[:80]!r}")
            target = out / layer.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(Path(blob(layer)).read_bytes())
        elif layer.media_type == TENSOR:
            tensors, metadata = mx.load(
                str(blob(layer)), format="safetensors", return_metadata=True
            )
            quantization = _quantization(metadata) or quantization
            renamed = {_mlx_name(name): array for name, array in tensors.items()}
            index += 1
            with library_writes(out):  # a full disk is an OSError, not MLX's RuntimeError
                mx.save_safetensors(str(out / f"model-{index:05d}.safetensors"), renamed)
    config_path = out / "config.json"
    if not config_path.is_file():
        raise RegistryRefused("the MLX model has no config.json layer")
    if quantization is not None:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config.setdefault("quantization", quantization)
        config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")


def _mlx_name(name: str) -> str:
    """Ollama's quantized companions -> mlx-lm's (``x.weight.scale`` -> ``x.scales``)."""
    if name.endswith(".weight.scale"):
        return name[: -len(".weight.scale")] + ".scales"
    if name.endswith(".weight.bias"):
        return name[: -len(".weight.bias")] + ".biases"
    return name


def _quantization(metadata: dict[str, str]) -> dict[str, Any] | None:
    quant = str(metadata.get("quant_type", "")).lower()
    if not quant:
        return None
    if quant not in _QUANT_MODES:
        raise RegistryRefused(f"unsupported MLX quantization {quant!r}")
    bits, mode = _QUANT_MODES[quant]
    group = int(metadata.get("group_size") or 64)
    found: dict[str, Any] = {"group_size": group, "bits": bits}
    if mode != "affine":
        found["mode"] = mode
    return found


def import_layers(
    registry: Registry,
    name: str,
    kind: str,
    layers: tuple[Layer, ...],
    paths: dict[str, Path],
    extras: ModelfileLayers,
    source: str,
) -> LocalModel:
    """Import an Ollama model's weights (``paths``: each layer's file) under ``name``, with
    its Modelfile layers in the manifest: written once, under one store lock, so a crash or
    a concurrent delete never sees a half-made model."""
    with store_lock(registry):
        if kind == "gguf":
            weights = next(layer for layer in layers if layer.media_type == MODEL)
            with scratch_dir(registry.models_dir) as scratch:
                gguf = Path(scratch, "model.gguf")  # the converter goes by suffix
                gguf.symlink_to(paths[weights.digest])
                base = gguf_manifest(
                    registry, gguf, name, parameters=extras.parameters, system=extras.system
                )
        else:
            with scratch_dir(registry.models_dir) as scratch:
                assemble_mlx_dir(layers, lambda layer: paths[layer.digest], Path(scratch))
                base = dir_manifest(registry, Path(scratch), name, source=source)
        manifest = replace(
            base,
            source=source,
            system=extras.system,
            parameters=dict(extras.parameters),
            messages=list(extras.messages),
            go_template=extras.template,
            license=list(extras.license),
        )
        replaced = registry.stored_manifest(name)
        model = write_manifest(registry, name, manifest)
        if replaced is not None:  # a newer version of the name: its old weights if unused
            prune_weights(registry, [replaced.resolve_dir(registry.models_dir)])
        return model


__all__ = [
    "LICENSE",
    "MODEL",
    "PARAMS",
    "SYSTEM",
    "TEMPLATE",
    "TENSOR",
    "JSON_FILE",
    "ModelfileLayers",
    "assemble_mlx_dir",
    "import_layers",
    "kind_of",
    "read_modelfile_layers",
]
