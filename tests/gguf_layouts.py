"""Tiny random mlx-lm models written as GGUF files the way llama.cpp's converter writes them.

The tensor names come from gguf-py's ``TensorNameMap`` (the table ``convert_hf_to_gguf.py``
uses), the metadata from ``GGUFWriter``'s own ``add_*`` methods, and the transforms are
llama.cpp's: Llama-family q/k row permutation, ``+ 1`` on Gemma's RMSNorm weights, experts
stacked per layer, no ``output`` tensor when embeddings are tied. The source model stays in
memory, so a converted file's logits can be checked against it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_map
from mlx_lm.utils import _get_classes
from tokenizers import pre_tokenizers

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
BPE_TOKENS = SPECIAL + sorted(pre_tokenizers.ByteLevel.alphabet()) + ["Ġt", "he"]
BPE_MERGES = ["Ġ t", "h e"]
SPM_PIECES = ["▁t", "he", "▁the", "▁", "t", "h", "e", "▁he"]
SPM_TOKENS = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + SPM_PIECES
CHAT_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"

_BASE = dict(
    hidden_size=64,
    num_hidden_layers=2,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    max_position_embeddings=512,
)
# mlx-lm model_type -> (gguf MODEL_ARCH, tokenizer kind, config overrides)
LAYOUTS: dict[str, tuple[gguf.MODEL_ARCH, str, dict[str, Any]]] = {
    "llama": (gguf.MODEL_ARCH.LLAMA, "bpe", {}),
    "mistral": (gguf.MODEL_ARCH.LLAMA, "spm", {"tie_word_embeddings": False}),
    "qwen2": (gguf.MODEL_ARCH.QWEN2, "qwen2", {"tie_word_embeddings": True}),
    "qwen3": (gguf.MODEL_ARCH.QWEN3, "qwen2", {"head_dim": 32, "tie_word_embeddings": False}),
    "gemma": (gguf.MODEL_ARCH.GEMMA, "spm", {"head_dim": 16}),
    "gemma2": (
        gguf.MODEL_ARCH.GEMMA2,
        "spm",
        {
            "head_dim": 16,
            "query_pre_attn_scalar": 16,
            "attn_logit_softcapping": 50.0,
            "final_logit_softcapping": 30.0,
        },
    ),
    "gemma3_text": (
        gguf.MODEL_ARCH.GEMMA3,
        "spm",
        {
            "num_hidden_layers": 6,  # the 6th is a global-attention layer
            "head_dim": 16,
            "query_pre_attn_scalar": 16,
            "sliding_window": 4,  # shorter than the test prompt: the window matters
            "rope_theta": 1_000_000.0,
        },
    ),
    "phi3": (gguf.MODEL_ARCH.PHI3, "spm", {"max_position_embeddings": 4096}),
    "starcoder2": (gguf.MODEL_ARCH.STARCODER2, "bpe", {"norm_epsilon": 1e-5}),
    "olmo2": (gguf.MODEL_ARCH.OLMO2, "bpe", {"tie_word_embeddings": False}),
    "granite": (
        gguf.MODEL_ARCH.GRANITE,
        "bpe",
        {
            "logits_scaling": 4.0,
            "attention_multiplier": 0.2,
            "embedding_multiplier": 6.0,
            "residual_multiplier": 0.3,
            "attention_bias": False,
            "mlp_bias": False,
        },
    ),
    "qwen2_moe": (
        gguf.MODEL_ARCH.QWEN2MOE,
        "qwen2",
        {
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 32,
            "shared_expert_intermediate_size": 48,
        },
    ),
    "mixtral": (
        gguf.MODEL_ARCH.LLAMA,
        "bpe",
        {"num_local_experts": 4, "num_experts_per_tok": 2, "num_experts": 4},
    ),
    "qwen3_moe": (
        gguf.MODEL_ARCH.QWEN3MOE,
        "qwen2",
        {
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 32,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [],
            "norm_topk_prob": True,
            "head_dim": 16,
            "tie_word_embeddings": False,
        },
    ),
}
_PERMUTED = (gguf.MODEL_ARCH.LLAMA, gguf.MODEL_ARCH.GRANITE)
_GEMMAS = (gguf.MODEL_ARCH.GEMMA, gguf.MODEL_ARCH.GEMMA2, gguf.MODEL_ARCH.GEMMA3)


def tiny_source(model_type: str, seed: int = 0, **overrides: Any) -> Any:
    """A random mlx-lm model of ``model_type`` in Hugging Face layout, norms randomised too."""
    arch, tokenizer, extra = LAYOUTS[model_type]
    vocab = len(SPM_TOKENS if tokenizer == "spm" else BPE_TOKENS)
    config = {**_BASE, "model_type": model_type, "vocab_size": vocab, **extra, **overrides}
    model_class, args_class = _get_classes(config)
    model = model_class(args_class.from_dict(config))
    mx.random.seed(seed)
    model.update(tree_map(lambda p: mx.random.normal(p.shape) * 0.2, model.parameters()))
    mx.eval(model.parameters())
    model.config = config
    return model


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """What llama.cpp's LlamaModel.permute does to q/k projection rows."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def gguf_tensors(model: Any) -> dict[str, np.ndarray]:
    """The model's weights under llama.cpp's names, transformed as its converter does."""
    model_type = model.config["model_type"]
    arch = LAYOUTS[model_type][0]
    config = model.config
    names = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    out = {}
    for name, value in tree_flatten(model.parameters()):
        array = np.array(value.astype(mx.float32))
        hf_name = name.replace(".switch_mlp.", ".experts.")  # HF experts, stacked by llama.cpp
        if ".block_sparse_moe.experts." in hf_name:  # Mixtral's HF names: w1 (gate), w3, w2
            for ours, theirs in (("gate_proj", "w1"), ("up_proj", "w3"), ("down_proj", "w2")):
                hf_name = hf_name.replace(f"experts.{ours}", f"experts.{theirs}")
        stem, _, suffix = hf_name.rpartition(".")
        target = names.get_name(stem)
        assert target is not None, f"{name} has no GGUF name for {arch.name}"
        if arch in _PERMUTED and target.endswith((".attn_q", ".attn_k")):
            heads = config["num_attention_heads"]
            if target.endswith(".attn_k"):
                heads = config["num_key_value_heads"]
            array = llama_cpp_permute(array, heads)
        if arch in _GEMMAS and hf_name.endswith("norm.weight"):
            array = array + 1
        out[f"{target}.{suffix}"] = array
    return out


def write_gguf(
    path: Path,
    model: Any,
    *,
    file_type: int = 0,
    extra: Callable[[gguf.GGUFWriter], None] | None = None,
    **tensor_types: Any,
) -> Path:
    """Write ``model`` as llama.cpp writes a GGUF (F32 tensors unless ``tensor_types`` names a
    GGML type for a tensor name, whose data is then quantized with gguf-py); ``extra`` adds
    keys and tensors of its own."""
    config = model.config
    arch, tokenizer, _ = LAYOUTS[config["model_type"]]
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    _hparams(writer, config, arch)
    writer.add_file_type(file_type)
    _vocab(writer, tokenizer)
    if extra is not None:
        extra(writer)
    for name, array in gguf_tensors(model).items():
        kind = tensor_types.get(name)
        if kind is None:
            writer.add_tensor(name, array)
        else:
            writer.add_tensor(name, gguf.quants.quantize(array, kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _hparams(writer: gguf.GGUFWriter, config: dict[str, Any], arch: gguf.MODEL_ARCH) -> None:
    """The keys TextModel.set_gguf_parameters and the architecture's own converter write."""
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    if arch != gguf.MODEL_ARCH.GEMMA2:  # Gemma2Model writes no rope base (llama.cpp: 10000)
        writer.add_rope_freq_base(config["rope_theta"])
    if arch == gguf.MODEL_ARCH.STARCODER2:
        writer.add_layer_norm_eps(config["norm_epsilon"])
    else:
        writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    if "head_dim" in config:
        writer.add_key_length(config["head_dim"])
        writer.add_value_length(config["head_dim"])
    if "num_experts" in config:
        writer.add_expert_count(config["num_experts"])
        writer.add_expert_used_count(config["num_experts_per_tok"])
    if "moe_intermediate_size" in config:
        writer.add_expert_feed_forward_length(config["moe_intermediate_size"])
    if "shared_expert_intermediate_size" in config:
        writer.add_expert_shared_feed_forward_length(config["shared_expert_intermediate_size"])
    if arch == gguf.MODEL_ARCH.GEMMA2:
        writer.add_attn_logit_softcapping(config["attn_logit_softcapping"])
        writer.add_final_logit_softcapping(config["final_logit_softcapping"])
        writer.add_sliding_window(4096)
    if arch == gguf.MODEL_ARCH.GEMMA3:
        writer.add_sliding_window(config["sliding_window"])
    if arch == gguf.MODEL_ARCH.PHI3:
        head_dim = config["hidden_size"] // config["num_attention_heads"]
        writer.add_rope_dimension_count(head_dim)
        writer.add_sliding_window(config["max_position_embeddings"])
    if arch == gguf.MODEL_ARCH.GRANITE:
        writer.add_attention_scale(config["attention_multiplier"])
        writer.add_embedding_scale(config["embedding_multiplier"])
        writer.add_residual_scale(config["residual_multiplier"])
        writer.add_logit_scale(config["logits_scaling"])


def _vocab(writer: gguf.GGUFWriter, kind: str) -> None:
    if kind == "spm":  # SentencePiece as _set_vocab_sentencepiece writes it
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(SPM_TOKENS)
        scores = [0.0] * 259 + [-float(i) for i in range(len(SPM_PIECES))]
        writer.add_token_scores(scores)
        types = [2, 3, 3] + [6] * 256 + [1] * len(SPM_PIECES)  # unknown, control, byte, normal
        writer.add_token_types(types)
        writer.add_unk_token_id(0)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
        writer.add_add_space_prefix(False)
    else:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("smollm" if kind == "bpe" else "qwen2")
        writer.add_token_list(BPE_TOKENS)
        writer.add_token_types([3] * 3 + [1] * (len(BPE_TOKENS) - 3))
        writer.add_token_merges(BPE_MERGES)
        writer.add_bos_token_id(0)
        writer.add_eos_token_id(2)
    writer.add_chat_template(CHAT_TEMPLATE)
