"""What differs between GGUF architectures: tensor names, llama.cpp's transforms, config keys.

llama.cpp's ``convert_hf_to_gguf.py`` (with gguf-py's ``tensor_mapping``) is the authority
on how a Hugging Face model becomes a GGUF file. This module undoes it for each family
mlx-lm can run: it names every GGUF tensor stem (``blk.3.attn_q``) by its mlx-lm module path
(``model.layers.3.self_attn.q_proj``), says which transforms llama.cpp applied (the rope row
permutation of q/k for the Llama family, ``+ 1`` on Gemma's RMSNorm weights), and turns the
``<arch>.*`` metadata keys back into the ``config.json`` mlx-lm reads.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadRequest

__all__ = ["FAMILIES", "Family", "family_for", "llama3_rope_scaling", "mlx_config"]

Meta = dict[str, Any]

_ATTENTION = dict(
    attn_q="self_attn.q_proj",
    attn_k="self_attn.k_proj",
    attn_v="self_attn.v_proj",
    attn_output="self_attn.o_proj",
)
_GATED_MLP = dict(ffn_gate="mlp.gate_proj", ffn_up="mlp.up_proj", ffn_down="mlp.down_proj")
_PRE_NORMS = dict(attn_norm="input_layernorm", ffn_norm="post_attention_layernorm")
_QK_NORMS = dict(attn_q_norm="self_attn.q_norm", attn_k_norm="self_attn.k_norm")
_LLAMA = {**_ATTENTION, **_GATED_MLP, **_PRE_NORMS}
_GEMMA2 = {
    **_ATTENTION,
    **_GATED_MLP,
    "attn_norm": "input_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
_EXPERTS = dict(
    ffn_gate_inp="mlp.gate",  # the router
    ffn_gate_exps="mlp.switch_mlp.gate_proj",  # experts stacked: (n_expert, out, in)
    ffn_up_exps="mlp.switch_mlp.up_proj",
    ffn_down_exps="mlp.switch_mlp.down_proj",
)
_SHARED_EXPERT = dict(
    ffn_gate_shexp="mlp.shared_expert.gate_proj",
    ffn_up_shexp="mlp.shared_expert.up_proj",
    ffn_down_shexp="mlp.shared_expert.down_proj",
    ffn_gate_inp_shexp="mlp.shared_expert_gate",
)
_GLOBALS = dict(token_embd="model.embed_tokens", output_norm="model.norm", output="lm_head")
_LAYER_RE = re.compile(r"blk\.(\d+)\.(\w+)")


@dataclass(frozen=True)
class Family:
    """One GGUF ``general.architecture`` as mlx-lm runs it."""

    arch: str  # general.architecture
    model_type: str  # mlx-lm's module
    hf_class: str  # config.json "architectures"
    layers: dict[str, str]  # GGUF layer tensor stem -> mlx-lm path under model.layers.N
    permute_qk: bool = False  # llama.cpp permuted q/k rows (LlamaModel.permute)
    norm_shift: float = 0.0  # llama.cpp stored RMSNorm weights + this (Gemma's 1 + w)
    config: Callable[[Meta, str], dict[str, Any]] = lambda meta, arch: {}
    extra_tensors: frozenset[str] = field(default_factory=frozenset)  # read into the config

    def mlx_name(self, stem: str) -> str | None:
        """mlx-lm's module path for a GGUF tensor stem (no ``.weight``), None if unknown."""
        match = _LAYER_RE.fullmatch(stem)
        if match and match[2] in self.layers:
            return f"model.layers.{match[1]}.{self.layers[match[2]]}"
        return _GLOBALS.get(stem)


def _get(meta: Meta, arch: str, key: str, default: Any = None) -> Any:
    return meta.get(f"{arch}.{key}", default)


def _head_dim(meta: Meta, arch: str) -> int:
    return _get(meta, arch, "attention.key_length") or (
        meta[f"{arch}.embedding_length"] // meta[f"{arch}.attention.head_count"]
    )


def _attention_scalar(meta: Meta, arch: str) -> int:
    """Gemma's ``query_pre_attn_scalar`` as llama.cpp derives it (GGUF has no key for it):
    hidden / heads for the 27B models (46 and 62 layers), else the head dimension."""
    if _get(meta, arch, "block_count") in (46, 62):
        return meta[f"{arch}.embedding_length"] // meta[f"{arch}.attention.head_count"]
    return _head_dim(meta, arch)


def _gemma2(meta: Meta, arch: str) -> dict[str, Any]:
    return {
        "attn_logit_softcapping": _get(meta, arch, "attn_logit_softcapping", 50.0),
        "final_logit_softcapping": _get(meta, arch, "final_logit_softcapping", 30.0),
        "query_pre_attn_scalar": _attention_scalar(meta, arch),
        "sliding_window": _get(meta, arch, "attention.sliding_window", 4096),
    }


def _gemma3(meta: Meta, arch: str) -> dict[str, Any]:
    config = {
        "query_pre_attn_scalar": _attention_scalar(meta, arch),
        "sliding_window": _get(meta, arch, "attention.sliding_window", 512),
        # llama.cpp hard-codes these two for Gemma 3: a global layer every 6th, local rope 10k
        "sliding_window_pattern": 6,
        "rope_local_base_freq": _get(meta, arch, "rope.local.freq_base", 10000.0),  # Ollama's
    }
    pattern = _get(meta, arch, "attention.sliding_window_pattern")
    if isinstance(pattern, list) and pattern:  # newer files: one flag per layer
        config["sliding_window_pattern"] = pattern.index(False) + 1 if False in pattern else 1
    return config


def _phi3(meta: Meta, arch: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "original_max_position_embeddings": _get(
            meta, arch, "rope.scaling.original_context_length", _get(meta, arch, "context_length")
        ),
    }
    if (rotary := _get(meta, arch, "rope.dimension_count")) is not None:
        config["partial_rotary_factor"] = rotary / _head_dim(meta, arch)
    return config


def _starcoder2(meta: Meta, arch: str) -> dict[str, Any]:
    return {"norm_epsilon": _get(meta, arch, "attention.layer_norm_epsilon", 1e-5)}


def _granite(meta: Meta, arch: str) -> dict[str, Any]:
    return {
        "logits_scaling": _get(meta, arch, "logit_scale", 1.0),
        "attention_multiplier": _get(meta, arch, "attention.scale", 1.0),
        "embedding_multiplier": _get(meta, arch, "embedding_scale", 1.0),
        "residual_multiplier": _get(meta, arch, "residual_scale", 1.0),
        "attention_bias": False,
        "mlp_bias": False,
    }


def _moe(meta: Meta, arch: str) -> dict[str, Any]:
    return {
        "num_experts": _get(meta, arch, "expert_count"),
        "num_experts_per_tok": _get(meta, arch, "expert_used_count"),
        "moe_intermediate_size": _get(meta, arch, "expert_feed_forward_length"),
    }


def _qwen2moe(meta: Meta, arch: str) -> dict[str, Any]:
    shared = _get(meta, arch, "expert_shared_feed_forward_length")
    return {**_moe(meta, arch), "shared_expert_intermediate_size": shared}


def _qwen3moe(meta: Meta, arch: str) -> dict[str, Any]:
    # llama.cpp's qwen3moe graph always renormalises the top-k weights, every layer is MoE
    return {
        **_moe(meta, arch),
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "norm_topk_prob": True,
    }


FAMILIES: dict[str, Family] = {
    family.arch: family
    for family in (
        Family("llama", "llama", "LlamaForCausalLM", _LLAMA, permute_qk=True),
        Family("qwen2", "qwen2", "Qwen2ForCausalLM", _LLAMA),
        Family("qwen3", "qwen3", "Qwen3ForCausalLM", {**_LLAMA, **_QK_NORMS}),
        Family("gemma", "gemma", "GemmaForCausalLM", _LLAMA, norm_shift=1.0),
        Family("gemma2", "gemma2", "Gemma2ForCausalLM", _GEMMA2, norm_shift=1.0, config=_gemma2),
        Family(
            "gemma3",
            "gemma3_text",
            "Gemma3ForCausalLM",
            {**_GEMMA2, **_QK_NORMS},
            norm_shift=1.0,
            config=_gemma3,
        ),
        Family(
            "phi3",
            "phi3",
            "Phi3ForCausalLM",
            {
                "attn_qkv": "self_attn.qkv_proj",
                "attn_output": "self_attn.o_proj",
                "ffn_up": "mlp.gate_up_proj",  # llama.cpp keeps Phi-3's fused gate_up as ffn_up
                "ffn_down": "mlp.down_proj",
                **_PRE_NORMS,
            },
            config=_phi3,
            extra_tensors=frozenset({"rope_factors_long", "rope_factors_short"}),
        ),
        Family(
            "starcoder2",
            "starcoder2",
            "Starcoder2ForCausalLM",
            {**_ATTENTION, "ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj", **_PRE_NORMS},
            config=_starcoder2,
        ),
        Family(
            "olmo2",
            "olmo2",
            "Olmo2ForCausalLM",
            {
                **_ATTENTION,
                **_GATED_MLP,
                **_QK_NORMS,
                "post_attention_norm": "post_attention_layernorm",
                "post_ffw_norm": "post_feedforward_layernorm",
            },
        ),
        Family(
            "granite", "granite", "GraniteForCausalLM", _LLAMA, permute_qk=True, config=_granite
        ),
        Family(
            "qwen2moe",
            "qwen2_moe",
            "Qwen2MoeForCausalLM",
            {**_ATTENTION, **_PRE_NORMS, **_EXPERTS, **_SHARED_EXPERT},
            config=_qwen2moe,
        ),
        Family(
            "qwen3moe",
            "qwen3_moe",
            "Qwen3MoeForCausalLM",
            {**_ATTENTION, **_PRE_NORMS, **_QK_NORMS, **_EXPERTS},
            config=_qwen3moe,
        ),
    )
}
_MOE = ("qwen2moe", "qwen3moe", "llama")
# llama.cpp writes Mixtral as a llama with experts (stacked, as ffn_*_exps)
MIXTRAL = Family(
    "llama",
    "mixtral",
    "MixtralForCausalLM",
    {
        **_ATTENTION,
        **_PRE_NORMS,
        **{k: "block_sparse_moe." + v.removeprefix("mlp.") for k, v in _EXPERTS.items()},
    },
    permute_qk=True,
    config=lambda meta, arch: {
        "num_local_experts": _get(meta, arch, "expert_count"),
        "num_experts_per_tok": _get(meta, arch, "expert_used_count"),
    },
)


def family_for(meta: Meta) -> Family:
    """The family of a file's ``general.architecture``; 400 naming the supported ones."""
    arch = meta.get("general.architecture")
    family = FAMILIES.get(arch) if isinstance(arch, str) else None
    if family is None:
        supported = ", ".join(FAMILIES)
        raise BadRequest(f"unsupported GGUF architecture {arch!r} (supported: {supported})")
    if meta.get(f"{arch}.expert_count") and arch == "llama":
        return MIXTRAL
    if meta.get(f"{arch}.expert_count") and arch not in _MOE:
        raise BadRequest(
            "mixture-of-experts GGUF models (e.g. Mixtral) are not supported for "
            f"{arch}; mixture-of-experts architectures converted: {', '.join(_MOE)}"
        )
    return family


def mlx_config(family: Family, meta: Meta, shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """``config.json`` for mlx-lm from the file's metadata and its tensors' shapes by name."""
    arch = family.arch
    n_head, hidden = meta[f"{arch}.attention.head_count"], meta[f"{arch}.embedding_length"]
    if isinstance(n_head, list):
        raise BadRequest(f"per-layer head counts ({arch}) are not supported")
    n_kv = _get(meta, arch, "attention.head_count_kv", n_head)
    if isinstance(n_kv, list):
        raise BadRequest(f"per-layer key/value head counts ({arch}) are not supported")
    config: dict[str, Any] = {
        "model_type": family.model_type,
        "architectures": [family.hf_class],
        "hidden_size": hidden,
        "intermediate_size": _get(meta, arch, "feed_forward_length", 0),
        "num_hidden_layers": meta[f"{arch}.block_count"],
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "head_dim": _head_dim(meta, arch),
        "rms_norm_eps": _get(meta, arch, "attention.layer_norm_rms_epsilon", 1e-5),
        "rope_theta": _get(meta, arch, "rope.freq_base", 10000.0),
        "max_position_embeddings": _get(meta, arch, "context_length", 2048),
        "vocab_size": shapes["token_embd.weight"][0],
        "tie_word_embeddings": "output.weight" not in shapes,
        # llama.cpp's converter writes biases only where the model has them
        "attention_bias": any(s.endswith(".attn_q.bias") for s in shapes),
        "mlp_bias": any(s.endswith(".ffn_down.bias") for s in shapes),
    }
    config["rope_scaling"] = _rope_scaling(meta, arch)
    config.update(family.config(meta, arch))
    return config


def _rope_scaling(meta: Meta, arch: str) -> dict[str, Any] | None:
    """Linear and YaRN rope scaling from the metadata (llama.cpp's and Ollama's keys)."""
    kind = _get(meta, arch, "rope.scaling.type")
    factor = _get(meta, arch, "rope.scaling.factor")
    if kind == "linear" and factor:
        return {"type": "linear", "factor": factor}
    if kind == "yarn" and factor:
        scaling = {"rope_type": "yarn", "factor": factor}
        original = _get(meta, arch, "rope.scaling.original_context_length")
        if original:
            scaling["original_max_position_embeddings"] = original
        for key in ("beta_fast", "beta_slow"):
            value = _get(
                meta, arch, f"rope.scaling.{key}", _get(meta, arch, f"rope.scaling.yarn_{key}")
            )
            if value:
                scaling[key] = value
        return scaling
    return None


def llama3_rope_scaling(factors: list[float], meta: Meta, arch: str) -> dict[str, Any]:
    """Llama 3.1+'s ``rope_scaling`` from the ``rope_freqs`` tensor llama.cpp computed from
    it (the parameters themselves are not in the file): the known recipes are tried and
    the one that reproduces every factor is taken; 400 if none does."""
    factor = max(factors)
    dims = 2 * len(factors)
    base = _get(meta, arch, "rope.freq_base", 10000.0)
    originals = [_get(meta, arch, "rope.scaling.original_context_length") or 8192, 8192, 4096]
    for original in dict.fromkeys(originals):
        for low, high in ((1.0, 4.0), (1.0, 2.0), (2.0, 4.0)):
            expected = _llama3_factors(dims, base, factor, low, high, original)
            if all(
                abs(a - b) <= 1e-3 * max(1.0, abs(b))
                for a, b in zip(factors, expected, strict=True)
            ):
                return {
                    "rope_type": "llama3",
                    "factor": factor,
                    "low_freq_factor": low,
                    "high_freq_factor": high,
                    "original_max_position_embeddings": original,
                }
    raise BadRequest("cannot recover the rope scaling of this GGUF from its rope_freqs tensor")


def _llama3_factors(
    dims: int, base: float, factor: float, low: float, high: float, original: int
) -> list[float]:
    """What llama.cpp's LlamaModel writes as rope_freqs for these parameters."""
    out = []
    for i in range(0, dims, 2):
        wavelen = 2 * math.pi * base ** (i / dims)
        if wavelen < original / high:
            out.append(1.0)
        elif wavelen > original / low:
            out.append(factor)
        else:
            smooth = (original / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return out
