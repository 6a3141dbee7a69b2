"""What ``/api/tags`` and ``/api/show`` say about a model, derived from its own files.

Ollama reads these facts from GGUF metadata. An MLX model directory has none, so:

* a ``model_info.json`` (written by the GGUF converter) is used as it is;
* otherwise ``model_info`` is built from ``config.json`` under GGUF key names
  (``general.architecture``, ``<arch>.context_length``, ``<arch>.embedding_length`` …),
  with the parameter count read from the safetensors headers (8-byte little-endian
  length + JSON; no tensor data is read);
* ``capabilities`` follow Ollama's rules: ``embedding`` when ``<arch>.pooling_type`` is
  present, else ``completion``; ``tools`` and ``thinking`` from the chat template, with
  the same text tests Ollama applies to a GGUF's Jinja template; ``tools`` also for families
  the bridge has a tools prompt for, and ``insert`` when the vocabulary has
  fill-in-the-middle tokens (``ollama_templates``, ``fim``).
"""

from __future__ import annotations

import json
import logging
import math
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .fim import find_fim_format, marker_tokens
from .ollama_templates import TemplateForm, template_form

log = logging.getLogger(__name__)

# Ollama's llama_ftype names (fs/ggml/type.go); the position is the general.file_type id.
_FILE_TYPE_NAMES = (
    "F32 F16 Q4_0 Q4_1 Q4_1_F16 Q4_2 Q4_3 Q8_0 Q5_0 Q5_1 Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S "
    "Q4_K_M Q5_K_S Q5_K_M Q6_K IQ2_XXS IQ2_XS Q2_K_S IQ3_XS IQ3_XXS IQ1_S IQ4_NL IQ3_S "
    "IQ3_M IQ2_S IQ2_M IQ4_XS IQ1_M BF16 Q4_0_4_4 Q4_0_4_8 Q4_0_8_8 TQ1_0 TQ2_0 MXFP4_MOE "
    "NVFP4 Q1_0"
)
FILE_TYPES = tuple(_FILE_TYPE_NAMES.split())
PRIVATE_PREFIX = "mlx_bridge."  # keys of model_info.json that are ours, not GGUF metadata
# Hugging Face model_type -> the GGUF architecture name llama.cpp (and so Ollama) reports.
_ARCHITECTURES = {
    "mistral": "llama",
    "mixtral": "llama",
    "gemma3_text": "gemma3",
    "qwen2_moe": "qwen2moe",
    "qwen3_moe": "qwen3moe",
    "deepseek_v2": "deepseek2",
    "deepseek_v3": "deepseek2",
    "gpt_oss": "gptoss",
    "nomic_bert": "nomic-bert",
    "xlm-roberta": "bert",
    "roberta": "bert",
}
_ENCODERS = {"bert", "nomic-bert", "distilbert", "mpnet", "modernbert", "jina_bert"}
# GGUF key suffix -> config.json names that may hold it, most common first.
_CONFIG_KEYS = {
    "context_length": ("max_position_embeddings", "n_positions", "max_sequence_length"),
    "embedding_length": ("hidden_size", "n_embd", "d_model"),
    "block_count": ("num_hidden_layers", "n_layer", "num_layers"),
    "feed_forward_length": ("intermediate_size", "n_inner"),
    "attention.head_count": ("num_attention_heads", "n_head"),
    "attention.head_count_kv": ("num_key_value_heads",),
    "attention.key_length": ("head_dim",),
    "attention.layer_norm_rms_epsilon": ("rms_norm_eps",),
    "attention.layer_norm_epsilon": ("layer_norm_eps", "layer_norm_epsilon"),
    "rope.freq_base": ("rope_theta",),
    "vocab_size": ("vocab_size",),
    "expert_count": ("num_experts", "num_local_experts"),
    "expert_used_count": ("num_experts_per_tok",),
}
# ``<arch>.vision.*`` keys Ollama shows for a vision model (Gemma 3, Qwen 2.5 VL, Llama 4 ...)
# -> the vision_config names that may hold them. ``vision.block_count`` is what makes Ollama
# list the ``vision`` capability.
_VISION_KEYS = {
    "block_count": ("num_hidden_layers", "depth", "num_layers"),
    "embedding_length": ("hidden_size", "embed_dim", "width"),
    "feed_forward_length": ("intermediate_size",),
    "attention.head_count": ("num_attention_heads", "num_heads"),
    "attention.layer_norm_epsilon": ("layer_norm_eps",),
    "image_size": ("image_size",),
    "patch_size": ("patch_size", "spatial_patch_size"),
    "num_channels": ("num_channels", "in_channels", "in_chans"),
}
# Families that take one image per request (Ollama refuses more for mllama).
_ONE_IMAGE = {"mllama"}
MAX_IMAGES = 16  # images per request otherwise: each costs a vision-tower pass and its tokens
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"}
_TORCH_DTYPES = {"float16": "F16", "bfloat16": "BF16", "float32": "F32"}
_POOLING = {"pooling_mode_mean_tokens": 1, "pooling_mode_cls_token": 2, "pooling_mode_lasttoken": 3}
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit


@dataclass(frozen=True)
class ModelDescription:
    """Everything derived from a model directory's files (cached per digest by the registry)."""

    details: dict[str, Any]  # the 6-key object of /api/tags and /api/show
    model_info: dict[str, Any]  # GGUF-style metadata, keys sorted
    capabilities: tuple[str, ...]
    chat_template: str | None
    context_length: int  # trained context in tokens; 0 = unknown
    form: TemplateForm | None = None  # Go-template form, tools prompt, FIM format


def describe_model(
    path: Path, *, format: str, parent_model: str = "", template: str | None, basename: str
) -> ModelDescription:
    """Describe the model in directory ``path``; ``template`` overrides its chat template."""
    info_file = path / "model_info.json"
    if info_file.is_file():
        info, quantization = _info_from_file(info_file)
    else:
        info, quantization = _info_from_config(path, basename)
    arch = str(info.get("general.architecture", ""))
    count = info.get("general.parameter_count")
    details = {
        "parent_model": parent_model,
        "format": format,
        "family": arch,
        "families": [arch] if arch else None,
        "parameter_size": human_number(count) if isinstance(count, int) and count > 0 else "",
        "quantization_level": quantization,
    }
    chat_template = template or read_chat_template(path)
    context = info.get(f"{arch}.context_length")
    form = template_form(chat_template, find_fim_format(marker_tokens(path)))
    return ModelDescription(
        details=details,
        model_info=dict(sorted(info.items())),
        capabilities=capabilities(info, chat_template, form),
        chat_template=chat_template,
        context_length=context if isinstance(context, int) else 0,
        form=form,
    )


def capabilities(
    model_info: dict[str, Any], chat_template: str | None, form: TemplateForm | None = None
) -> tuple[str, ...]:
    """Ollama's capability list, in its derivation order (completion, tools, insert,
    thinking)."""
    arch = model_info.get("general.architecture", "")
    if f"{arch}.pooling_type" in model_info:
        return ("embedding",)
    found = ["completion"]
    if f"{arch}.vision.block_count" in model_info:
        found.append("vision")
    template = chat_template or ""
    if "tools" in template or "tool_call" in template or (form is not None and form.tools):
        found.append("tools")
    if form is not None and form.fim is not None:
        found.append("insert")
    if _has_thinking(template) or arch == "gptoss":
        found.append("thinking")
    return tuple(found)


def image_limit(model_info: dict[str, Any]) -> int:
    """How many images one request may carry to this model: ``MAX_IMAGES`` for most, one
    for the families Ollama limits to one."""
    return 1 if model_info.get("general.architecture") in _ONE_IMAGE else MAX_IMAGES


def _vision_info(arch: str, vision: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """``<arch>.vision.*`` keys from a ``vision_config`` (as Ollama's GGUFs carry them)."""
    info: dict[str, Any] = {}
    for suffix, names in _VISION_KEYS.items():
        value = next((vision[n] for n in names if n in vision), None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            info[f"{arch}.vision.{suffix}"] = value
    info.setdefault(f"{arch}.vision.block_count", 0)  # a vision model all the same
    info.setdefault(f"{arch}.vision.num_channels", 3)
    tokens = config.get("mm_tokens_per_image")
    if isinstance(tokens, int) and not isinstance(tokens, bool):
        info[f"{arch}.mm.tokens_per_image"] = tokens
    return info


def _has_thinking(template: str) -> bool:
    """Ollama's test: <think>…</think> tags, or reasoning split off at </think>."""
    if "<think>" in template and "</think>" in template:
        return True
    splits = "content.split('</think>')" in template or 'content.split("</think>")' in template
    return splits and "reasoning_content" not in template


def human_number(count: int) -> str:
    """Ollama's ``format.HumanNumber``: 134515008 -> ``134.52M``, 7615616512 -> ``7.6B``."""
    for scale, suffix, decimals in ((10**9, "B", 1), (10**6, "M", 2)):
        if count >= scale:
            number = count / scale
            return (
                f"{number:.0f}{suffix}" if number.is_integer() else f"{number:.{decimals}f}{suffix}"
            )
    return f"{count / 1000:.0f}K" if count >= 1000 else str(count)


def read_chat_template(path: Path) -> str | None:
    """The model's Jinja chat template: chat_template.jinja, chat_template.json, or
    tokenizer_config.json (a string, or a list of named templates: "default" or the first).
    """
    try:
        return (path / "chat_template.jinja").read_text(encoding="utf-8") or None
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("unreadable chat template dir=%s error=%s", path, exc)
    for name in ("chat_template.json", "tokenizer_config.json"):
        template = _read_json(path / name).get("chat_template")
        if isinstance(template, list):
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default", next(iter(named.values()), None))
        if isinstance(template, str) and template:
            return template
    return None


def _info_from_file(info_file: Path) -> tuple[dict[str, Any], str]:
    """model_info.json as written by the GGUF converter, and the quantization label."""
    data = _read_json(info_file)
    label = data.get(PRIVATE_PREFIX + "quantization_level")
    file_type = data.get("general.file_type")
    if not isinstance(label, str):
        known = isinstance(file_type, int) and 0 <= file_type < len(FILE_TYPES)
        label = FILE_TYPES[file_type] if known else ""
    return {k: v for k, v in data.items() if not k.startswith(PRIVATE_PREFIX)}, label


def _info_from_config(path: Path, basename: str) -> tuple[dict[str, Any], str]:
    """GGUF-style metadata from config.json plus the safetensors headers."""
    config = _read_json(path / "config.json")
    text_config = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    model_type = str(config.get("model_type") or text_config.get("model_type") or "")
    arch = _ARCHITECTURES.get(model_type, model_type)
    info: dict[str, Any] = {"general.architecture": arch, "general.basename": basename}
    for suffix, names in _CONFIG_KEYS.items():
        value = next((c[n] for n in names for c in (config, text_config) if n in c), None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            info[f"{arch}.{suffix}"] = value
    for key in ("bos", "eos", "pad"):
        token = config.get(f"{key}_token_id")
        token = token[0] if isinstance(token, list) and token else token
        if isinstance(token, int) and not isinstance(token, bool):
            info[f"tokenizer.ggml.{'padding' if key == 'pad' else key}_token_id"] = token
    if (pooling := _pooling_type(path, arch)) is not None:
        info[f"{arch}.pooling_type"] = pooling
    vision = config.get("vision_config")
    if isinstance(vision, dict):
        info.update(_vision_info(arch, vision, config))
    count, dtype = _count_parameters(path, _quantization(config))
    if count:
        info["general.parameter_count"] = count
    label = _quantization_label(config, dtype)
    if label in ("F32", "F16", "BF16"):
        info["general.file_type"] = FILE_TYPES.index(label)
    return info, label


def _pooling_type(path: Path, arch: str) -> int | None:
    """llama.cpp's pooling type for embedding models (1 mean, 2 cls, 3 last), else None."""
    modules = _read_json_list(path / "modules.json")
    pooling = [m for m in modules if str(m.get("type", "")).endswith(".Pooling")]
    if pooling:
        config = _read_json(path / str(pooling[0].get("path", "1_Pooling")) / "config.json")
        return next((v for k, v in _POOLING.items() if config.get(k)), 1)
    return 1 if modules or arch in _ENCODERS else None


def _quantization(config: dict[str, Any]) -> dict[str, Any]:
    quant = config.get("quantization") or config.get("quantization_config")
    return quant if isinstance(quant, dict) else {}


def _quantization_label(config: dict[str, Any], dtype: str | None) -> str:
    """``4bit``/``8bit`` (``MXFP4``) for quantized models, else the dominant float dtype."""
    quant = _quantization(config)
    if (mode := str(quant.get("mode", "")).lower()) in ("mxfp4", "nvfp4", "mxfp8"):
        return mode.upper()
    if isinstance(quant.get("bits"), int):
        return f"{quant['bits']}bit"
    return dtype or _TORCH_DTYPES.get(str(config.get("torch_dtype")), "")


def _count_parameters(path: Path, quant: dict[str, Any]) -> tuple[int, str | None]:
    """(parameter count, dominant float dtype) from the headers of ``*.safetensors``.

    Quantized weights are packed into uint32: each one holds ``32 / bits`` parameters.
    Their ``.scales`` and ``.biases`` are bookkeeping, not parameters; integer buffers
    such as BERT's ``position_ids`` are not parameters either.
    """
    total, by_dtype = 0, Counter()
    for file in sorted(path.glob("*.safetensors")):
        try:
            tensors = read_safetensors_header(file)
        except (OSError, ValueError) as exc:
            log.warning("unreadable safetensors header file=%s error=%s", file, exc)
            continue
        for name, tensor in tensors.items():
            if name == "__metadata__" or name.endswith((".scales", ".biases")):
                continue
            count, dtype = math.prod(tensor.get("shape", [])), tensor.get("dtype")
            if dtype == "U32" and (bits := _bits(quant, name)):
                count = count * 32 // bits
            elif dtype not in _FLOAT_DTYPES:
                continue
            total += count
            by_dtype[dtype] += count
    floats = [(n, d) for d, n in by_dtype.items() if d in _FLOAT_DTYPES]
    return total, max(floats)[1] if floats else None


def _bits(quant: dict[str, Any], tensor_name: str) -> int | None:
    """Bit width of a packed weight: a per-module override, else the model's default."""
    module = quant.get(tensor_name.rsplit(".", 1)[0])
    bits = module.get("bits") if isinstance(module, dict) else quant.get("bits")
    return bits if isinstance(bits, int) and bits > 0 else None


def read_safetensors_header(file: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file: tensor name -> dtype, shape, data_offsets."""
    with open(file, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise ValueError("file too short for a safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        if length > _MAX_HEADER_BYTES:
            raise ValueError(f"safetensors header too large ({length} bytes)")
        header = json.loads(handle.read(length))
    if not isinstance(header, dict):
        raise ValueError("safetensors header is not a JSON object")
    return header


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; {} if it is missing or unreadable (logged)."""
    data = _load_json(path)
    return data if isinstance(data, dict) else {}


def _read_json_list(path: Path) -> list[dict[str, Any]]:
    data = _load_json(path)
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("unreadable json file=%s error=%s", path, exc)
        return None


__all__ = [
    "FILE_TYPES",
    "ModelDescription",
    "capabilities",
    "describe_model",
    "human_number",
    "read_chat_template",
    "read_safetensors_header",
]
