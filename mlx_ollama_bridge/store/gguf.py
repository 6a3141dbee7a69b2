"""Convert a llama-architecture GGUF file into an MLX model directory ``mlx_lm.load`` accepts.

The header is read and bounded first (``gguf_reader.py``); only a file that passes is handed
to ``mx.load`` for its tensors. The quantized tensors keep their GGUF blocks: ``mx.load``
already reads Q4_0/Q4_1/Q8_0 as MLX affine quantization with group size 32, so no weight is
re-quantized. The rest is
renaming, undoing llama.cpp's rope row permutation of q/k, and rebuilding the Hugging Face
tokenizer and config files from the GGUF metadata.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from ..errors import BadRequest
from .gguf_reader import GGUFTensor, read_gguf_header

__all__ = ["GGUFConversion", "convert_gguf"]

GROUP_SIZE = 32  # every GGUF block type mx.load understands packs 32 weights
SUPPORTED_ARCHITECTURES = ("llama",)
SUPPORTED_TENSOR_TYPES = ("F32", "F16", "Q4_0", "Q4_1", "Q8_0")
# general.file_type (llama_ftype) ids of the files whose tensors we can read.
_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0"}
_REQUIRED_KEYS = ("embedding_length", "feed_forward_length", "block_count", "attention.head_count")

_GLOBAL_NAMES = dict(token_embd="model.embed_tokens", output_norm="model.norm", output="lm_head")
_LAYER_NAMES = dict(
    attn_q="self_attn.q_proj",
    attn_k="self_attn.k_proj",
    attn_v="self_attn.v_proj",
    attn_output="self_attn.o_proj",
    ffn_gate="mlp.gate_proj",
    ffn_up="mlp.up_proj",
    ffn_down="mlp.down_proj",
    attn_norm="input_layernorm",
    ffn_norm="post_attention_layernorm",
)
_LAYER_RE = re.compile(r"blk\.(\d+)\.(\w+)")

# tokenizer.ggml.pre values per pre-tokenizer family (as grouped in llama.cpp's llama-vocab.cpp)
_GPT2_PRE = ("default", "gpt2", "gpt-2")
_DIGIT_GPT2_PRE = ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva")
_LLAMA3_PRE = ("llama3", "llama-bpe", "smaug-bpe", "falcon3", "dbrx")
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_EOS_KEYS = tuple(f"tokenizer.ggml.{k}_token_id" for k in ("eos", "eot", "eom"))
_CONTROL, _USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values


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
    """Convert a llama-family GGUF file into an MLX model directory at ``out_dir``.

    ``out_dir`` must not exist. Everything is written to a temporary sibling directory that
    is renamed into place at the end, so a failure never leaves a partial model behind.
    Unsupported architectures, tokenizers or tensor types raise :class:`BadRequest`.
    """
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists")
    meta, tensors = read_gguf_header(gguf_path)
    arch = _check_supported(meta, tensors)
    scratch = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex[:8]}.tmp")
    scratch.mkdir(parents=True)  # not mkdtemp: that would leave the model directory 0700
    try:
        weights = _convert_weights(gguf_path, meta, arch)
        config = _model_config(meta, arch, tensors, weights)
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
        architecture=arch,
        parameter_count=model_info["general.parameter_count"],
        quantization_level=_quantization_level(meta, tensors),
        context_length=config["max_position_embeddings"],
        chat_template=meta.get("tokenizer.chat_template"),
        model_info=model_info,
    )


def _check_supported(meta: dict[str, Any], tensors: dict[str, GGUFTensor]) -> str:
    """Raise :class:`BadRequest` unless this converter handles the file; return its arch."""
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        supported = ", ".join(SUPPORTED_ARCHITECTURES)
        raise BadRequest(f"unsupported GGUF architecture {arch!r} (supported: {supported})")
    required = [f"{arch}.{key}" for key in _REQUIRED_KEYS] + ["tokenizer.ggml.tokens"]
    if missing := [key for key in required if key not in meta]:
        raise BadRequest(f"GGUF metadata is missing {', '.join(missing)}")
    if meta.get(f"{arch}.expert_count"):
        raise BadRequest("mixture-of-experts GGUF models (e.g. Mixtral) are not supported")
    if bad := sorted({t.type_name for t in tensors.values()} - set(SUPPORTED_TENSOR_TYPES)):
        raise BadRequest(
            f"unsupported GGUF tensor type(s) {', '.join(bad)}; supported: "
            f"{', '.join(SUPPORTED_TENSOR_TYPES)} (re-quantize e.g. to Q4_0 or Q8_0)"
        )
    unknown = [n for n in tensors if not n.endswith(".weight") or not _mlx_name(n[:-7])]
    if unknown or "token_embd.weight" not in tensors:
        raise BadRequest(f"unexpected tensors for a {arch} model: {', '.join(unknown[:5])}")
    if (model := meta.get("tokenizer.ggml.model")) != "gpt2":
        raise BadRequest(f"unsupported GGUF tokenizer {model!r}: only gpt2 (byte-level BPE)")
    _pre_tokenizer(meta.get("tokenizer.ggml.pre", "default"))  # raises if unknown
    return arch


def _mlx_name(stem: str) -> str | None:
    """mlx-lm's llama module path for a GGUF tensor name without its ``.weight`` suffix."""
    match = _LAYER_RE.fullmatch(stem)
    if match and match[2] in _LAYER_NAMES:
        return f"model.layers.{match[1]}.{_LAYER_NAMES[match[2]]}"
    return _GLOBAL_NAMES.get(stem)


def _unpermute_rows(x: mx.array, n_head: int) -> mx.array:
    """Invert llama.cpp's q/k ``reshape(n_head, 2, rows // n_head // 2, ...).swapaxes(1, 2)``.

    Rows move whole, so this applies to packed weights, scales and biases alike.
    """
    split = x.reshape(n_head, x.shape[0] // n_head // 2, 2, *x.shape[1:])
    return split.swapaxes(1, 2).reshape(x.shape)


def _convert_weights(gguf_path: Path, meta: dict[str, Any], arch: str) -> dict[str, mx.array]:
    """Load the GGUF tensors and rename them for mlx-lm's llama, un-permuting q/k rows."""
    try:
        weights = _load_gguf_tensors(gguf_path)
    except (RuntimeError, ValueError) as exc:
        raise BadRequest(f"cannot load the tensors of {gguf_path.name}: {exc}") from exc
    n_head = meta[f"{arch}.attention.head_count"]
    heads = {"attn_q": n_head, "attn_k": meta.get(f"{arch}.attention.head_count_kv", n_head)}
    converted = {}
    for key, value in weights.items():
        stem, _, suffix = key.rpartition(".")
        if (kind := stem.rpartition(".")[2]) in heads:
            value = _unpermute_rows(value, heads[kind])
        if suffix in ("scales", "biases"):
            value = value.astype(mx.float32)  # fp16 scales are many times slower on MLX CPU
        converted[f"{_mlx_name(stem)}.{suffix}"] = value
    return converted


def _load_gguf_tensors(gguf_path: Path) -> dict[str, mx.array]:
    """``mx.load`` picks the format from the file's extension; Ollama's blobs have none."""
    if gguf_path.suffix.lower() == ".gguf":
        return mx.load(str(gguf_path))
    with tempfile.TemporaryDirectory() as tmp:
        alias = Path(tmp) / "model.gguf"
        alias.symlink_to(gguf_path.resolve())
        return mx.load(str(alias))


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
    meta: dict[str, Any], arch: str, tensors: dict[str, GGUFTensor], weights: dict[str, mx.array]
) -> dict[str, Any]:
    n_head, hidden = meta[f"{arch}.attention.head_count"], meta[f"{arch}.embedding_length"]
    config: dict[str, Any] = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": meta[f"{arch}.feed_forward_length"],
        "num_hidden_layers": meta[f"{arch}.block_count"],
        "num_attention_heads": n_head,
        "num_key_value_heads": meta.get(f"{arch}.attention.head_count_kv", n_head),
        "head_dim": meta.get(f"{arch}.attention.key_length", hidden // n_head),
        "rms_norm_eps": meta.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5),
        "rope_theta": meta.get(f"{arch}.rope.freq_base", 10000.0),
        "max_position_embeddings": meta.get(f"{arch}.context_length", 2048),
        "vocab_size": tensors["token_embd.weight"].shape[0],
        "tie_word_embeddings": "output.weight" not in tensors,
        # eos plus end-of-turn ids, so generation stops at the end of a chat turn
        "eos_token_id": list(dict.fromkeys(meta[k] for k in _EOS_KEYS if meta.get(k) is not None)),
    }
    if (bos_id := meta.get("tokenizer.ggml.bos_token_id")) is not None:
        config["bos_token_id"] = bos_id
    if meta.get(f"{arch}.rope.scaling.type") == "linear":
        config["rope_scaling"] = {"type": "linear", "factor": meta[f"{arch}.rope.scaling.factor"]}
    if (quantization := _quantization(weights)) is not None:
        config["quantization"] = quantization
    return config


def _quantization_level(meta: dict[str, Any], tensors: dict[str, GGUFTensor]) -> str:
    """Ollama's label: from general.file_type, else the type holding most matrix weights."""
    if (label := _FILE_TYPES.get(meta.get("general.file_type", -1))) is not None:
        return label
    sizes: Counter[str] = Counter()
    for tensor in tensors.values():
        sizes[tensor.type_name] += math.prod(tensor.shape) if len(tensor.shape) == 2 else 0
    return sizes.most_common(1)[0][0]


def _model_info(meta: dict[str, Any], tensors: dict[str, GGUFTensor]) -> dict[str, Any]:
    """Ollama's /api/show ``model_info``: the metadata minus bulky or private entries."""
    info = {
        key: [] if isinstance(value, list) and len(value) > 5 else value
        for key, value in sorted(meta.items())
        if key not in ("general.name", "tokenizer.chat_template")
    }
    info["general.parameter_count"] = sum(math.prod(t.shape) for t in tensors.values())
    if "general.file_type" not in info:
        level = _quantization_level(meta, tensors)
        info["general.file_type"] = {v: k for k, v in _FILE_TYPES.items()}[level]
    return info


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
    """The Hugging Face equivalent of llama.cpp's pre-tokenizer ``pre``."""
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in _GPT2_PRE:
        return byte_level
    if pre in _DIGIT_GPT2_PRE:  # digits are split one by one before the GPT-2 regex
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if pre in _LLAMA3_PRE:
        split = pre_tokenizers.Split(Regex(_LLAMA3_REGEX), behavior="isolated", invert=False)
        no_regex = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        return pre_tokenizers.Sequence([split, no_regex])
    supported = ", ".join(_GPT2_PRE + _DIGIT_GPT2_PRE + _LLAMA3_PRE)
    raise BadRequest(f"unsupported GGUF pre-tokenizer {pre!r} (supported: {supported})")


def _build_tokenizer(meta: dict[str, Any]) -> Tokenizer:
    """A byte-level BPE ``tokenizers.Tokenizer`` from the GGUF vocabulary and merges."""
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    types: list[int] = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    vocab = {token: index for index, token in reversed(list(enumerate(tokens)))}  # first id wins
    merges = [tuple(merge.split(" ", 1)) for merge in meta.get("tokenizer.ggml.merges", [])]
    pre = meta.get("tokenizer.ggml.pre", "default")
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=pre in _LLAMA3_PRE))
    tokenizer.pre_tokenizer = _pre_tokenizer(pre)
    tokenizer.decoder = decoders.ByteLevel()
    # Control tokens must never be split, merged into neighbours, or shown when decoding.
    kinds = dict(zip(tokens, types, strict=False))
    control = [t for t, k in kinds.items() if k == _CONTROL]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    user = [t for t, k in kinds.items() if k == _USER_DEFINED]
    tokenizer.add_tokens([AddedToken(t, normalized=False) for t in user])
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    if _adds_bos(meta):
        bos_id = meta["tokenizer.ggml.bos_token_id"]
        bos = tokens[bos_id]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1", special_tokens=[(bos, bos_id)]
        )
    return tokenizer


def _adds_bos(meta: dict[str, Any]) -> bool:
    """Whether encoding prepends BOS; llama.cpp's default is on only for the Llama 3 family."""
    default = meta.get("tokenizer.ggml.pre", "default") in _LLAMA3_PRE
    wanted = meta.get("tokenizer.ggml.add_bos_token", default)
    return bool(wanted) and meta.get("tokenizer.ggml.bos_token_id") is not None


def _write_tokenizer(out: Path, meta: dict[str, Any], config: dict[str, Any]) -> None:
    """tokenizer.json, tokenizer_config.json and generation_config.json for transformers."""
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    _build_tokenizer(meta).save(str(out / "tokenizer.json"))
    tokenizer_config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": config["max_position_embeddings"],
        "clean_up_tokenization_spaces": False,
        "add_bos_token": _adds_bos(meta),
    }
    generation = {"eos_token_id": config["eos_token_id"]}
    for role in ("bos", "eos", "pad", "unk"):
        token_id = meta.get(f"tokenizer.ggml.{role}_token_id")
        if token_id is not None and 0 <= token_id < len(tokens):
            tokenizer_config[f"{role}_token"] = tokens[token_id]
            if role in ("bos", "pad"):
                generation[f"{role}_token_id"] = token_id
    if (template := meta.get("tokenizer.chat_template")) is not None:
        tokenizer_config["chat_template"] = template
    _write_json(out / "tokenizer_config.json", tokenizer_config)
    _write_json(out / "generation_config.json", generation)
