"""Build a tiny, real, mlx-vlm-loadable LLaVA model with random weights, offline, in ~1 s.

The directory looks like an ``mlx-community`` LLaVA checkpoint: ``config.json`` (``llava``:
a CLIP vision tower, a projector and a llama language model, built with mlx-vlm's own
``mlx_vlm.models.llava`` classes), ``model.safetensors``, ``tokenizer.json`` (the byte-level
BPE of ``tiny_model`` plus an ``<image>`` token), ``tokenizer_config.json`` (a ChatML
template that renders ``{"type": "image"}`` content parts as ``<image>``),
``preprocessor_config.json`` (a real ``CLIPImageProcessor``: resize, crop, normalise to
32x32) and ``processor_config.json`` (mlx-vlm's ``LlavaProcessor``: 8-pixel patches, so an
image becomes 16 image tokens). Nothing is downloaded.

The weights are random: answers are gibberish, but deterministic, and they depend on the
image (different pictures give different greedy answers), which is what the tests check.
"""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten
from tiny_model import BOS_TOKEN, EOS_TOKEN, _muted_ids, _tokenizer_config, _train_tokenizer
from tokenizers import AddedToken, Tokenizer

__all__ = [
    "GEMMA3_IMAGE_SPAN",
    "IMAGE_TOKEN",
    "IMAGE_TOKENS_PER_IMAGE",
    "b64",
    "build_tiny_gemma3",
    "build_tiny_qwen25vl",
    "build_tiny_qwen2vl",
    "build_tiny_qwen3vl",
    "build_tiny_vision_model",
    "picture",
]

IMAGE_TOKEN = "<image>"
IMAGE_SIZE, PATCH = 32, 8
IMAGE_TOKENS_PER_IMAGE = (IMAGE_SIZE // PATCH) ** 2  # CLS dropped ("default" strategy)

TEMPLATE = r"""
{%- for message in messages %}
    {{- '<|im_start|>' + message.role + '\n' }}
    {%- if message.content is string %}
        {{- message.content }}
    {%- else %}
        {%- for part in message.content %}
            {%- if part.type == 'image' %}
                {{- '<image>\n' }}
            {%- elif part.type == 'text' %}
                {{- part.text }}
            {%- endif %}
        {%- endfor %}
    {%- endif %}
    {{- '<|im_end|>\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
""".strip()

# CLIP's own preprocessing values, at a 32-pixel input.
_PREPROCESSOR = {
    "image_processor_type": "CLIPImageProcessor",
    "do_resize": True,
    "size": {"shortest_edge": IMAGE_SIZE},
    "do_center_crop": True,
    "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "do_convert_rgb": True,
    "resample": 3,
}


def build_tiny_vision_model(
    out_dir: Path,
    *,
    seed: int = 0,
    template: str | None = TEMPLATE,
    text: dict[str, Any] | None = None,
    vision: dict[str, Any] | None = None,
) -> Path:
    """Write a tiny random LLaVA checkpoint to ``out_dir`` and return ``out_dir``.

    ``template`` replaces the chat template (e.g. one that only takes string contents);
    ``text`` and ``vision`` override the two configs' shapes (the benchmark builds a
    CLIP ViT-B/16-sized tower this way; ``image_size`` and ``patch_size`` drive the
    preprocessing too).
    """
    from mlx_vlm.models import llava

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(tools=True, thinking=False)
    tokenizer.add_special_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)])
    tokenizer.save(str(out_dir / "tokenizer.json"))
    _write_json(out_dir / "tokenizer_config.json", _tokenizer_config(template))
    ids = {t: tokenizer.token_to_id(t) for t in (BOS_TOKEN, EOS_TOKEN, IMAGE_TOKEN)}
    config = _config(tokenizer.get_vocab_size(), ids)
    config["text_config"].update(text or {})
    config["vision_config"].update(vision or {})
    size, patch = config["vision_config"]["image_size"], config["vision_config"]["patch_size"]
    model_config = llava.ModelConfig.from_dict(config)
    model_config.text_config = llava.TextConfig.from_dict(config["text_config"])
    model_config.vision_config = llava.VisionConfig.from_dict(config["vision_config"])
    model = llava.Model(model_config)
    _init_weights(model, seed, _muted_ids(tokenizer))
    weights = dict(tree_flatten(model.parameters()))
    mx.eval(weights)
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    _write_json(out_dir / "config.json", config)
    preprocessor = {
        **_PREPROCESSOR,
        "size": {"shortest_edge": size},
        "crop_size": {"height": size, "width": size},
    }
    _write_json(out_dir / "preprocessor_config.json", preprocessor)
    processor = {
        "processor_class": "LlavaProcessor",
        "patch_size": patch,
        "vision_feature_select_strategy": "default",
        "image_token": IMAGE_TOKEN,
        "num_additional_image_tokens": 1,
    }
    _write_json(out_dir / "processor_config.json", processor)
    generation = {"bos_token_id": ids[BOS_TOKEN], "eos_token_id": ids[EOS_TOKEN]}
    _write_json(out_dir / "generation_config.json", generation)
    return out_dir


GEMMA3_TOKENS = ["<start_of_image>", "<image_soft_token>", "<end_of_image>"]
GEMMA3_TURNS = ["<start_of_turn>", "<end_of_turn>"]
GEMMA3_SOFT_TOKENS = 4  # mm_tokens_per_image: 4x4 patches pooled to 2x2
# what one image becomes: "\n\n" <start_of_image> 4 x <image_soft_token> <end_of_image> "\n\n"
GEMMA3_IMAGE_SPAN = 2 + 1 + GEMMA3_SOFT_TOKENS + 1 + 2
GEMMA3_TEMPLATE = r"""
{{- bos_token }}
{%- for message in messages %}
    {%- set role = 'model' if message.role == 'assistant' else message.role %}
    {{- '<start_of_turn>' + role + '\n' }}
    {%- if message.content is string %}
        {{- message.content }}
    {%- else %}
        {%- for part in message.content %}
            {%- if part.type == 'image' %}
                {{- '<start_of_image>' }}
            {%- elif part.type == 'text' %}
                {{- part.text }}
            {%- endif %}
        {%- endfor %}
    {%- endif %}
    {{- '<end_of_turn>\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<start_of_turn>model\n' }}
{%- endif %}
""".strip()


def build_tiny_gemma3(out_dir: Path, *, seed: int = 0) -> Path:
    """Write a tiny random Gemma 3 (mlx-vlm's ``gemma3`` classes: a SigLIP tower, the
    soft-token projector, a Gemma 3 text model with sliding-window layers) and its real
    ``Gemma3Processor`` / ``Gemma3ImageProcessor`` files; return ``out_dir``. An image
    becomes ``GEMMA3_IMAGE_SPAN`` tokens, four of them image features."""
    from mlx_vlm.models import gemma3

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(tools=False, thinking=False)
    added = GEMMA3_TOKENS + GEMMA3_TURNS
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in added])
    tokenizer.save(str(out_dir / "tokenizer.json"))
    tokenizer_config = _tokenizer_config(GEMMA3_TEMPLATE)
    tokenizer_config["eos_token"] = "<end_of_turn>"
    names = dict(zip(("boi_token", "image_token", "eoi_token"), GEMMA3_TOKENS, strict=True))
    tokenizer_config.update(names, extra_special_tokens=names)
    _write_json(out_dir / "tokenizer_config.json", tokenizer_config)
    ids = {t: tokenizer.token_to_id(t) for t in added + [BOS_TOKEN]}
    vocab = tokenizer.get_vocab_size()
    text = {
        "model_type": "gemma3_text",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "head_dim": 16,
        "num_key_value_heads": 2,
        "vocab_size": vocab,
        "sliding_window": 512,
        "sliding_window_pattern": 2,
        "mm_tokens_per_image": GEMMA3_SOFT_TOKENS,
        "max_position_embeddings": 2048,
        "query_pre_attn_scalar": 16,
    }
    vision = {
        "model_type": "siglip_vision_model",
        "num_hidden_layers": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 2,
        "patch_size": PATCH,
        "image_size": IMAGE_SIZE,
        "num_channels": 3,
        "layer_norm_eps": 1e-6,
    }
    config = {
        "architectures": ["Gemma3ForConditionalGeneration"],
        "model_type": "gemma3",
        "text_config": text,
        "vision_config": vision,
        "image_token_index": ids["<image_soft_token>"],
        "boi_token_index": ids["<start_of_image>"],
        "eoi_token_index": ids["<end_of_image>"],
        "mm_tokens_per_image": GEMMA3_SOFT_TOKENS,
        "vocab_size": vocab,
        "pad_token_id": 0,
        "bos_token_id": ids[BOS_TOKEN],
        "eos_token_id": [ids["<end_of_turn>"]],
        "hidden_size": 64,
    }
    model_config = gemma3.ModelConfig.from_dict(config)
    model_config.text_config = gemma3.TextConfig.from_dict(text)
    model_config.vision_config = gemma3.VisionConfig.from_dict(vision)
    model = gemma3.Model(model_config)
    _init_weights(model, seed, _muted_ids(tokenizer))
    weights = dict(tree_flatten(model.parameters()))
    mx.eval(weights)
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    _write_json(out_dir / "config.json", config)
    preprocessor = {
        "image_processor_type": "Gemma3ImageProcessor",
        "do_resize": True,
        "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_convert_rgb": True,
        "resample": 2,
        "do_pan_and_scan": False,
    }
    _write_json(out_dir / "preprocessor_config.json", preprocessor)
    processor = {"processor_class": "Gemma3Processor", "image_seq_length": GEMMA3_SOFT_TOKENS}
    _write_json(out_dir / "processor_config.json", processor)
    _write_json(out_dir / "generation_config.json", {"eos_token_id": [ids["<end_of_turn>"]]})
    return out_dir


QWEN_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
QWEN_TEMPLATE = TEMPLATE.replace("'<image>\\n'", "'<|vision_start|><|image_pad|><|vision_end|>'")


def build_tiny_qwen25vl(out_dir: Path, *, seed: int = 0) -> Path:
    """Write a tiny random Qwen2.5-VL (mlx-vlm's ``qwen2_5_vl`` classes: a windowed ViT with
    2x2 patch merging, a Qwen2 text model with M-RoPE) and its real ``Qwen2VLImageProcessor``
    files (images resized to 3136-12544 pixels, so a small image is 4 image tokens);
    return ``out_dir``."""
    from mlx_vlm.models import qwen2_5_vl

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(tools=True, thinking=False)
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in QWEN_TOKENS]
    )
    tokenizer.save(str(out_dir / "tokenizer.json"))
    tokenizer_config = _tokenizer_config(QWEN_TEMPLATE)
    names = {
        "image_token": "<|image_pad|>",
        "video_token": "<|video_pad|>",
        "vision_bos_token": "<|vision_start|>",
        "vision_eos_token": "<|vision_end|>",
    }
    tokenizer_config.update(image_token="<|image_pad|>", extra_special_tokens=names)
    _write_json(out_dir / "tokenizer_config.json", tokenizer_config)
    ids = {t: tokenizer.token_to_id(t) for t in QWEN_TOKENS + [BOS_TOKEN, EOS_TOKEN]}
    vocab = tokenizer.get_vocab_size()
    text = {
        "model_type": "qwen2_5_vl",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6,
        "vocab_size": vocab,
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
        "tie_word_embeddings": True,
        "max_position_embeddings": 2048,
    }
    vision = {
        "model_type": "qwen2_5_vl",
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "out_hidden_size": 64,
        "num_heads": 2,
        "patch_size": 14,
        "spatial_patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [1],
        "in_channels": 3,
    }
    config = {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "model_type": "qwen2_5_vl",
        "text_config": text,
        "vision_config": vision,
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "bos_token_id": ids[BOS_TOKEN],
        "eos_token_id": ids[EOS_TOKEN],
        **{k: v for k, v in text.items() if k != "model_type"},
    }
    model_config = qwen2_5_vl.ModelConfig.from_dict(config)
    model_config.text_config = qwen2_5_vl.TextConfig.from_dict(text)
    model_config.vision_config = qwen2_5_vl.VisionConfig.from_dict(vision)
    model = qwen2_5_vl.Model(model_config)
    _init_weights(model, seed, _muted_ids(tokenizer))
    weights = dict(tree_flatten(model.parameters()))
    mx.eval(weights)
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    _write_json(out_dir / "config.json", config)
    preprocessor = {
        "image_processor_type": "Qwen2VLImageProcessor",
        "do_resize": True,
        "min_pixels": 3136,
        "max_pixels": 12544,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": _PREPROCESSOR["image_mean"],
        "image_std": _PREPROCESSOR["image_std"],
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "do_convert_rgb": True,
    }
    _write_json(out_dir / "preprocessor_config.json", preprocessor)
    _write_json(out_dir / "processor_config.json", {"processor_class": "Qwen2_5_VLProcessor"})
    _write_json(out_dir / "generation_config.json", {"eos_token_id": ids[EOS_TOKEN]})
    return out_dir


def build_tiny_qwen2vl(out_dir: Path, *, seed: int = 0) -> Path:
    """Write a tiny random Qwen2-VL (mlx-vlm's ``qwen2_vl`` classes: a full-attention ViT with
    2x2 patch merging, a Qwen2 text model with M-RoPE) with the Qwen2.5-VL files' tokenizer
    and image processor; return ``out_dir``."""
    from mlx_vlm.models import qwen2_vl

    out_dir = build_tiny_qwen25vl(out_dir, seed=seed)  # the tokenizer and its files
    config = json.loads((out_dir / "config.json").read_text(encoding="utf-8"))
    text = {**config["text_config"], "model_type": "qwen2_vl"}
    vision = {
        "model_type": "qwen2_vl",
        "depth": 2,
        "embed_dim": 32,
        "hidden_size": 64,
        "num_heads": 2,
        "mlp_ratio": 2,
        "patch_size": 14,
        "spatial_patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "in_channels": 3,
    }
    config.update(
        architectures=["Qwen2VLForConditionalGeneration"],
        model_type="qwen2_vl",
        text_config=text,
        vision_config=vision,
    )
    model_config = qwen2_vl.ModelConfig.from_dict(config)
    model_config.text_config = qwen2_vl.TextConfig.from_dict(text)
    model_config.vision_config = qwen2_vl.VisionConfig.from_dict(vision)
    model = qwen2_vl.Model(model_config)
    _init_weights(model, seed, _muted_ids(Tokenizer.from_file(str(out_dir / "tokenizer.json"))))
    weights = dict(tree_flatten(model.parameters()))
    mx.eval(weights)
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    _write_json(out_dir / "config.json", config)
    _write_json(out_dir / "processor_config.json", {"processor_class": "Qwen2VLProcessor"})
    return out_dir


def build_tiny_qwen3vl(out_dir: Path, *, seed: int = 0) -> Path:
    """Write a tiny random Qwen3-VL (mlx-vlm's ``qwen3_vl`` classes: a ViT whose layers 0 and 1
    also feed the language model's first layers (DeepStack), a Qwen3 text model with M-RoPE)
    and its processor files (16-pixel patches, 2x2 merging, 4096-16384 pixels); return
    ``out_dir``."""
    from mlx_vlm.models import qwen3_vl

    out_dir = build_tiny_qwen25vl(out_dir, seed=seed)  # the tokenizer and its files
    config = json.loads((out_dir / "config.json").read_text(encoding="utf-8"))
    text = {
        "model_type": "qwen3_vl",
        "hidden_size": 64,
        "num_hidden_layers": 3,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "rms_norm_eps": 1e-6,
        "vocab_size": config["text_config"]["vocab_size"],
        "rope_theta": 5000000.0,
        "rope_scaling": {"rope_type": "default", "mrope_section": [2, 3, 3]},
        "tie_word_embeddings": True,
        "max_position_embeddings": 2048,
    }
    vision = {
        "model_type": "qwen3_vl",
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "out_hidden_size": 64,
        "num_heads": 2,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "num_position_embeddings": 16,
        "deepstack_visual_indexes": [0, 1],
        "in_channels": 3,
    }
    keep = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    config = {
        "architectures": ["Qwen3VLForConditionalGeneration"],
        "model_type": "qwen3_vl",
        "text_config": text,
        "vision_config": vision,
        **{k: config[k] for k in (*keep, "bos_token_id", "eos_token_id")},
    }
    model_config = qwen3_vl.ModelConfig.from_dict(config)
    model = qwen3_vl.Model(model_config)
    _init_weights(model, seed, _muted_ids(Tokenizer.from_file(str(out_dir / "tokenizer.json"))))
    weights = dict(tree_flatten(model.parameters()))
    mx.eval(weights)
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    _write_json(out_dir / "config.json", config)
    preprocessor = json.loads((out_dir / "preprocessor_config.json").read_text(encoding="utf-8"))
    preprocessor.update(
        image_processor_type="Qwen3VLImageProcessor",
        patch_size=16,
        min_pixels=4096,
        max_pixels=16384,
    )
    _write_json(out_dir / "preprocessor_config.json", preprocessor)
    _write_json(out_dir / "processor_config.json", {"processor_class": "Qwen3VLProcessor"})
    return out_dir


def _config(vocab: int, ids: dict[str, int]) -> dict[str, Any]:
    text = {
        "model_type": "llama",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "vocab_size": vocab,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
    }
    vision = {
        "model_type": "clip_vision_model",
        "num_hidden_layers": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 2,
        "image_size": IMAGE_SIZE,
        "patch_size": PATCH,
        "projection_dim": 32,
        "num_channels": 3,
        "layer_norm_eps": 1e-5,
    }
    return {
        "architectures": ["LlavaForConditionalGeneration"],
        "model_type": "llava",
        "text_config": text,
        "vision_config": vision,
        "image_token_index": ids[IMAGE_TOKEN],
        "vision_feature_select_strategy": "default",
        "vision_feature_layer": -2,
        "vocab_size": vocab,
        "bos_token_id": ids[BOS_TOKEN],
        "eos_token_id": ids[EOS_TOKEN],
        "torch_dtype": "float32",
    }


def _init_weights(model: Any, seed: int, muted_ids: list[int]) -> None:
    """Explicit keys per matrix (deterministic); added tokens and odd bytes muted as in
    ``tiny_model`` so greedy answers are printable ASCII and never stop early."""
    params = tree_flatten(model.parameters())
    keys = mx.random.split(mx.random.key(seed), len(params))
    fresh = []
    for (name, value), key in zip(params, keys, strict=True):
        if value.ndim < 2:
            fresh.append((name, value))
            continue
        fresh.append((name, mx.random.normal(value.shape, key=key) / math.sqrt(value.shape[-1])))
    model.update(tree_unflatten(fresh))
    embed = model.language_model.model.embed_tokens.weight
    embed[mx.array(muted_ids)] = embed[mx.array(muted_ids)] * 0.01
    model.language_model.model.embed_tokens.weight = embed


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def picture(
    colour: tuple[int, int, int], size: tuple[int, int] = (64, 48), fmt: str = "PNG"
) -> bytes:
    """A solid-colour image, encoded (PNG unless ``fmt`` says otherwise)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, fmt)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    """``data`` as standard base64 text (Ollama's ``images`` entries)."""
    return base64.b64encode(data).decode()
