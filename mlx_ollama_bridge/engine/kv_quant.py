"""KV-cache quantisation (``OLLAMA_KV_CACHE_TYPE``) on mlx-lm's ``QuantizedKVCache``.

``q8_0`` and ``q4_0`` map to 8- and 4-bit affine quantisation of keys and values. As in
Ollama, the cache is quantized from the first token (mlx-lm would wait for
``quantized_kv_start`` = 5000 tokens by default): every fresh cache of a model that qualifies
is a list of ``QuantizedKVCache`` layers. Such caches trim like plain ones (only the offset
moves, and each token's keys are quantized on their own), so prompt-cache reuse stays exact:
a reused prefix holds the very values a fresh run would have computed.

A model qualifies when every layer of its cache is a plain ``KVCache`` (sliding windows and
recurrent layers cannot be quantized by mlx-lm) and its key/value head sizes are multiples of
a group size MLX supports; otherwise it runs with an f16 cache and a warning, as Ollama does
for models that do not support a quantized cache.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import KVCache, QuantizedKVCache, make_prompt_cache

from .vision_rope import ShiftedKVCache

log = logging.getLogger(__name__)

BITS = {"f16": None, "q8_0": 8, "q4_0": 4}
_GROUP_SIZES = (64, 32)  # mlx-lm's default first; MLX also supports 128, never needed here


@dataclass(frozen=True)
class KVQuant:
    """How a model's KV cache is quantized."""

    bits: int
    group_size: int
    cache_type: str  # the OLLAMA_KV_CACHE_TYPE value, e.g. "q8_0"

    def generate_kwargs(self) -> dict[str, Any]:
        """``generate_step`` / ``speculative_generate_step`` arguments: a safety net that
        quantizes any plain layer after the first step (fresh caches are quantized already)."""
        return {"kv_bits": self.bits, "kv_group_size": self.group_size, "quantized_kv_start": 0}


def kv_quant_for(cache_type: str, *models: Any) -> KVQuant | None:
    """The quantisation ``cache_type`` asks for, if every one of ``models`` (a model and its
    draft) supports it; None for f16 or a model that does not (with a warning)."""
    bits = BITS.get(cache_type)
    if bits is None:
        return None
    group_sizes = set(_GROUP_SIZES)
    for model in models:
        dims = _kv_head_dims(model)
        if dims is None:
            log.warning(
                "OLLAMA_KV_CACHE_TYPE=%s not supported by this model's cache; using f16",
                cache_type,
            )
            return None
        group_sizes &= {g for g in _GROUP_SIZES if all(d % g == 0 for d in dims)}
    if not group_sizes:
        log.warning(
            "OLLAMA_KV_CACHE_TYPE=%s: head size not a multiple of 32; using f16", cache_type
        )
        return None
    return KVQuant(bits, max(group_sizes), cache_type)


def fresh_cache(model: Any, kv: KVQuant | None) -> list[Any]:
    """An empty prompt cache for ``model``: quantized layers when ``kv`` says so."""
    if kv is None:
        return make_prompt_cache(model)
    return [
        QuantizedKVCache(group_size=kv.group_size, bits=kv.bits) for _ in make_prompt_cache(model)
    ]


def is_quantized(cache: list[Any]) -> bool:
    """True if any layer of ``cache`` is quantized."""
    return any(isinstance(c, QuantizedKVCache) for c in cache)


def _kv_head_dims(model: Any) -> set[int] | None:
    """Key and value head sizes, read off one probe token; None if a layer is not a plain
    ``KVCache`` (the only kind mlx-lm converts) or the probe fails."""
    cache = make_prompt_cache(model)
    # plain layers (a Qwen-VL's first layer is one too, carrying M-RoPE shifts: ``vision_rope``)
    if not cache or any(type(c) not in (KVCache, ShiftedKVCache) for c in cache):
        return None
    try:
        model(mx.array([[0]]), cache=cache)
        mx.eval([c.state for c in cache])
    except Exception as exc:  # an architecture that cannot run a bare token: stay f16
        log.debug("kv probe failed: %s", exc)
        return None
    return {int(x.shape[-1]) for c in cache for x in (c.keys, c.values)}
