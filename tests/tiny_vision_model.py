"""Build tiny, real, mlx-vlm-loadable vision-language models with random weights, offline,
in ~1 s each.

One builder (``build``) writes every family; a family (``Family``: LLaVA, Gemma 3,
Qwen2-VL, Qwen2.5-VL, Qwen3-VL) is data: the mlx-vlm module whose classes make the model,
the tokens added to ``tiny_model``'s tokenizer, the chat template, ``config.json`` and the
processor files, with stand-ins (``Id``, ``VOCAB``, ``Vision``) for what the tokenizer and
a caller's overrides decide.

The LLaVA looks like an ``mlx-community`` LLaVA checkpoint: ``config.json`` (``llava``:
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
import importlib
import io
import json
import math
from dataclasses import dataclass, replace
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
    "build",
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


@dataclass(frozen=True)
class Id:
    """Stands for a token's id in the built tokenizer."""

    token: str


@dataclass(frozen=True)
class Vision:
    """Stands for a value of the built vision config (after a caller's overrides)."""

    key: str


@dataclass(frozen=True)
class _Vocab:
    """Stands for the built tokenizer's vocabulary size."""


VOCAB = _Vocab()


@dataclass(frozen=True)
class Family:
    """One model family's tiny checkpoint, as data; ``build`` writes it."""

    module: str  # mlx_vlm.models.<module>: ModelConfig, TextConfig, VisionConfig, Model
    tokens: tuple[str, ...]  # special tokens added to tiny_model's tokenizer, in this order
    tools: bool  # tiny_model's tool-call tokens too
    template: str | None  # the chat template (None: none)
    tokenizer: dict[str, Any]  # tokenizer_config.json entries over tiny_model's
    config: dict[str, Any]  # config.json, its text_config and vision_config inside
    preprocessor: dict[str, Any]  # preprocessor_config.json
    processor: dict[str, Any]  # processor_config.json
    generation: dict[str, Any]  # generation_config.json


LLAVA = Family(
    module="llava",
    tokens=(IMAGE_TOKEN,),
    tools=True,
    template=TEMPLATE,
    tokenizer={},
    config={
        "architectures": ["LlavaForConditionalGeneration"],
        "model_type": "llava",
        "text_config": {
            "model_type": "llama",
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "intermediate_size": 128,
            "vocab_size": VOCAB,
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "tie_word_embeddings": True,
        },
        "vision_config": {
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
        },
        "image_token_index": Id(IMAGE_TOKEN),
        "vision_feature_select_strategy": "default",
        "vision_feature_layer": -2,
        "vocab_size": VOCAB,
        "bos_token_id": Id(BOS_TOKEN),
        "eos_token_id": Id(EOS_TOKEN),
        "torch_dtype": "float32",
    },
    preprocessor={
        **_PREPROCESSOR,
        "size": {"shortest_edge": Vision("image_size")},
        "crop_size": {"height": Vision("image_size"), "width": Vision("image_size")},
    },
    processor={
        "processor_class": "LlavaProcessor",
        "patch_size": Vision("patch_size"),
        "vision_feature_select_strategy": "default",
        "image_token": IMAGE_TOKEN,
        "num_additional_image_tokens": 1,
    },
    generation={"bos_token_id": Id(BOS_TOKEN), "eos_token_id": Id(EOS_TOKEN)},
)


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
    llava = replace(LLAVA, template=template)
    return build(llava, out_dir, seed=seed, text=text, vision=vision)


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
_GEMMA3_NAMES = dict(zip(("boi_token", "image_token", "eoi_token"), GEMMA3_TOKENS, strict=True))

GEMMA3 = Family(
    module="gemma3",
    tokens=(*GEMMA3_TOKENS, *GEMMA3_TURNS),
    tools=False,
    template=GEMMA3_TEMPLATE,
    tokenizer={
        "eos_token": "<end_of_turn>",
        **_GEMMA3_NAMES,
        "extra_special_tokens": _GEMMA3_NAMES,
    },
    config={
        "architectures": ["Gemma3ForConditionalGeneration"],
        "model_type": "gemma3",
        "text_config": {
            "model_type": "gemma3_text",
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "intermediate_size": 128,
            "num_attention_heads": 4,
            "head_dim": 16,
            "num_key_value_heads": 2,
            "vocab_size": VOCAB,
            "sliding_window": 512,
            "sliding_window_pattern": 2,
            "mm_tokens_per_image": GEMMA3_SOFT_TOKENS,
            "max_position_embeddings": 2048,
            "query_pre_attn_scalar": 16,
        },
        "vision_config": {
            "model_type": "siglip_vision_model",
            "num_hidden_layers": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_attention_heads": 2,
            "patch_size": PATCH,
            "image_size": IMAGE_SIZE,
            "num_channels": 3,
            "layer_norm_eps": 1e-6,
        },
        "image_token_index": Id("<image_soft_token>"),
        "boi_token_index": Id("<start_of_image>"),
        "eoi_token_index": Id("<end_of_image>"),
        "mm_tokens_per_image": GEMMA3_SOFT_TOKENS,
        "vocab_size": VOCAB,
        "pad_token_id": 0,
        "bos_token_id": Id(BOS_TOKEN),
        "eos_token_id": [Id("<end_of_turn>")],
        "hidden_size": 64,
    },
    preprocessor={
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
    },
    processor={"processor_class": "Gemma3Processor", "image_seq_length": GEMMA3_SOFT_TOKENS},
    generation={"eos_token_id": [Id("<end_of_turn>")]},
)


def build_tiny_gemma3(out_dir: Path, *, seed: int = 0) -> Path:
    """Write a tiny random Gemma 3 (mlx-vlm's ``gemma3`` classes: a SigLIP tower, the
    soft-token projector, a Gemma 3 text model with sliding-window layers) and its real
    ``Gemma3Processor`` / ``Gemma3ImageProcessor`` files; return ``out_dir``. An image
    becomes ``GEMMA3_IMAGE_SPAN`` tokens, four of them image features."""
    return build(GEMMA3, out_dir, seed=seed)


QWEN_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
QWEN_TEMPLATE = TEMPLATE.replace("'<image>\\n'", "'<|vision_start|><|image_pad|><|vision_end|>'")
_QWEN_NAMES = {
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "vision_bos_token": "<|vision_start|>",
    "vision_eos_token": "<|vision_end|>",
}
_QWEN_IDS = {
    "image_token_id": Id("<|image_pad|>"),
    "video_token_id": Id("<|video_pad|>"),
    "vision_start_token_id": Id("<|vision_start|>"),
    "vision_end_token_id": Id("<|vision_end|>"),
    "bos_token_id": Id(BOS_TOKEN),
    "eos_token_id": Id(EOS_TOKEN),
}
_QWEN25_TEXT = {
    "model_type": "qwen2_5_vl",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-6,
    "vocab_size": VOCAB,
    "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
    "tie_word_embeddings": True,
    "max_position_embeddings": 2048,
}

QWEN25VL = Family(
    module="qwen2_5_vl",
    tokens=tuple(QWEN_TOKENS),
    tools=True,
    template=QWEN_TEMPLATE,
    tokenizer={"image_token": "<|image_pad|>", "extra_special_tokens": _QWEN_NAMES},
    config={
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "model_type": "qwen2_5_vl",
        "text_config": _QWEN25_TEXT,
        "vision_config": {
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
        },
        **_QWEN_IDS,
        **{k: v for k, v in _QWEN25_TEXT.items() if k != "model_type"},
    },
    preprocessor={  # images resized to 3136-12544 pixels: a small image is 4 image tokens
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
    },
    processor={"processor_class": "Qwen2_5_VLProcessor"},
    generation={"eos_token_id": Id(EOS_TOKEN)},
)

# Qwen2-VL: Qwen2.5-VL's tokenizer, text model and image processor; a full-attention ViT
QWEN2VL = replace(
    QWEN25VL,
    module="qwen2_vl",
    config={
        **QWEN25VL.config,
        "architectures": ["Qwen2VLForConditionalGeneration"],
        "model_type": "qwen2_vl",
        "text_config": {**_QWEN25_TEXT, "model_type": "qwen2_vl"},
        "vision_config": {
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
        },
    },
    processor={"processor_class": "Qwen2VLProcessor"},
)

# Qwen3-VL: Qwen2.5-VL's tokenizer; a Qwen3 text model, 16-pixel patches, 4096-16384 pixels
QWEN3VL = replace(
    QWEN25VL,
    module="qwen3_vl",
    config={
        "architectures": ["Qwen3VLForConditionalGeneration"],
        "model_type": "qwen3_vl",
        "text_config": {
            "model_type": "qwen3_vl",
            "hidden_size": 64,
            "num_hidden_layers": 3,
            "intermediate_size": 128,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "rms_norm_eps": 1e-6,
            "vocab_size": VOCAB,
            "rope_theta": 5000000.0,
            "rope_scaling": {"rope_type": "default", "mrope_section": [2, 3, 3]},
            "tie_word_embeddings": True,
            "max_position_embeddings": 2048,
        },
        "vision_config": {
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
        },
        **_QWEN_IDS,
    },
    preprocessor={
        **QWEN25VL.preprocessor,
        "image_processor_type": "Qwen3VLImageProcessor",
        "patch_size": 16,
        "min_pixels": 4096,
        "max_pixels": 16384,
    },
    processor={"processor_class": "Qwen3VLProcessor"},
)


def build_tiny_qwen25vl(out_dir: Path, *, seed: int = 0) -> Path:
    """Write a tiny random Qwen2.5-VL (mlx-vlm's ``qwen2_5_vl`` classes: a windowed ViT with
    2x2 patch merging, a Qwen2 text model with M-RoPE) and its real ``Qwen2VLImageProcessor``
    files (images resized to 3136-12544 pixels, so a small image is 4 image tokens);
    return ``out_dir``."""
    return build(QWEN25VL, out_dir, seed=seed)


def build_tiny_qwen2vl(out_dir: Path, *, seed: int = 0) -> Path:
    """Write a tiny random Qwen2-VL (mlx-vlm's ``qwen2_vl`` classes: a full-attention ViT with
    2x2 patch merging, a Qwen2 text model with M-RoPE) with the Qwen2.5-VL files' tokenizer
    and image processor; return ``out_dir``."""
    return build(QWEN2VL, out_dir, seed=seed)


def build_tiny_qwen3vl(out_dir: Path, *, seed: int = 0) -> Path:
    """Write a tiny random Qwen3-VL (mlx-vlm's ``qwen3_vl`` classes: a ViT whose layers 0 and 1
    also feed the language model's first layers (DeepStack), a Qwen3 text model with M-RoPE)
    and its processor files (16-pixel patches, 2x2 merging, 4096-16384 pixels); return
    ``out_dir``."""
    return build(QWEN3VL, out_dir, seed=seed)


def build(
    family: Family,
    out_dir: Path,
    *,
    seed: int = 0,
    text: dict[str, Any] | None = None,
    vision: dict[str, Any] | None = None,
) -> Path:
    """Write ``family``'s tiny random checkpoint to ``out_dir`` and return ``out_dir``;
    ``text`` and ``vision`` override entries of its two configs."""
    arch = importlib.import_module(f"mlx_vlm.models.{family.module}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(tools=family.tools, thinking=False)
    added = [AddedToken(t, special=True, normalized=False) for t in family.tokens]
    tokenizer.add_special_tokens(added)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    tokenizer_config = {**_tokenizer_config(family.template), **family.tokenizer}
    _write_json(out_dir / "tokenizer_config.json", tokenizer_config)
    config = _fill(family.config, tokenizer, {})
    text_config, vision_config = config["text_config"], config["vision_config"]
    text_config.update(text or {})
    vision_config.update(vision or {})
    # some families' from_dict rewrite config's text_config (written so, as mlx-vlm does)
    model_config = arch.ModelConfig.from_dict(config)
    if isinstance(model_config.text_config, dict):  # most leave the two parts as dicts
        model_config.text_config = arch.TextConfig.from_dict(text_config)
    if isinstance(model_config.vision_config, dict):
        model_config.vision_config = arch.VisionConfig.from_dict(vision_config)
    mx.random.seed(seed)  # the 1-D parameters keep their construction-time (random) values
    model = arch.Model(model_config)
    _init_weights(model, seed, _muted_ids(tokenizer))
    weights = dict(tree_flatten(model.parameters()))
    mx.eval(weights)
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    _write_json(out_dir / "config.json", config)
    for name, data in (
        ("preprocessor_config.json", family.preprocessor),
        ("processor_config.json", family.processor),
        ("generation_config.json", family.generation),
    ):
        _write_json(out_dir / name, _fill(data, tokenizer, vision_config))
    return out_dir


def _fill(value: Any, tokenizer: Tokenizer, vision: dict[str, Any]) -> Any:
    """A copy of ``value`` with its stand-ins (``Id``, ``VOCAB``, ``Vision``) replaced."""
    if isinstance(value, Id):
        return tokenizer.token_to_id(value.token)
    if isinstance(value, Vision):
        return vision[value.key]
    if isinstance(value, _Vocab):
        return tokenizer.get_vocab_size()
    if isinstance(value, dict):
        return {key: _fill(item, tokenizer, vision) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, tokenizer, vision) for item in value]
    return value


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
