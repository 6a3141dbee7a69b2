"""Prompt (KV) cache reuse across turns, on mlx-lm's ``LRUPromptCache``.

Chat clients resend the whole conversation every turn. Each loaded model keeps a small pool
of KV caches keyed by the exact tokens they hold (prompt + every token fed back while
generating; a batch lane on the CPU hands out its last token before feeding it, so that one
is not held); a new request starts from the cache with the longest common prefix and
evaluates only the rest. The pool is bounded by entry count and bytes, least recently used
first out. Runs on the scheduler thread only.

A model with a draft (speculative decoding) keeps the model's and the draft's caches in one
list, model layers first, both holding the same tokens. Quantized KV caches
(``OLLAMA_KV_CACHE_TYPE``) take part like plain ones: they trim by moving their offset, and
each token's keys and values are quantized on their own, so a reused prefix equals what a
fresh run computes. Behind the pool, an optional ``DiskPromptCache`` keeps long prompts across
restarts: ``insert`` may save one, ``fetch`` may load one when memory has nothing as long.
"""

from __future__ import annotations

import logging
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm.models.cache import (
    LRUPromptCache,
    can_trim_prompt_cache,
    make_prompt_cache,
    trim_prompt_cache,
)

from .kv_quant import KVQuant, fresh_cache
from .prompt_disk import DiskPromptCache
from .vision_prompt import IMAGE_TOKEN_BASE

log = logging.getLogger(__name__)

_KEY = "model"  # one pool per loaded model, so the trie's model key is a constant
DEFAULT_MAX_BYTES = 1 << 30  # per model


class PromptCachePool:
    """The KV caches of one loaded model (and its draft), reusable by prefix."""

    def __init__(
        self,
        model: Any,
        max_entries: int,
        max_bytes: int = DEFAULT_MAX_BYTES,
        *,
        draft_model: Any = None,
        kv: KVQuant | None = None,
        disk: DiskPromptCache | None = None,
    ) -> None:
        self._model = model
        self._draft = draft_model
        self._kv = kv
        self._lru = LRUPromptCache(max_size=max_entries, max_bytes=max_bytes)
        # Reusing a longer entry, or an exact one, means trimming; models whose caches
        # cannot be trimmed (sliding windows, SSM layers) do not take part.
        self.enabled = max_entries > 0 and can_trim_prompt_cache(self.new_cache())
        self.disk = disk if self.enabled else None

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def nbytes(self) -> int:
        """Bytes held by the pool's caches."""
        return self._lru.nbytes

    def new_cache(self) -> list[Any]:
        """An empty cache of the pool's shape: model layers, then draft layers if any."""
        cache = fresh_cache(self._model, self._kv)
        if self._draft is not None:
            cache += fresh_cache(self._draft, self._kv)
        return cache

    def fetch(self, tokens: list[int]) -> tuple[list[Any], list[int]]:
        """A cache for ``tokens`` and the tokens still to evaluate (at least one)."""
        if not self.enabled or not tokens:
            return self.new_cache(), tokens
        cache, rest = self._lru.fetch_nearest_cache(_KEY, tokens)
        reused = len(tokens) - len(rest) if cache is not None else 0
        if self.disk is not None and reused < len(tokens) - 1:
            found = self.disk.load(tokens, better_than=reused)
            if found is not None:
                cache, reused = found
                rest = tokens[reused:]
        if cache is None:
            return self.new_cache(), tokens
        if not rest:
            # Exact hit: the model needs one token in to produce the next logits.
            if not can_trim_prompt_cache(cache):
                return self.new_cache(), tokens
            trim_prompt_cache(cache, 1)
            rest = tokens[-1:]
        return cache, list(rest)

    def insert(self, tokens: list[int], cache: list[Any], *, prompt_len: int | None = None) -> bool:
        """Keep ``cache`` for later, keyed by ``tokens``; only if it holds exactly them.

        With a disk store, the first ``prompt_len`` tokens (the prompt; default all) may
        also be saved to disk for the next server (see ``prompt_disk``).
        """
        if not self.enabled or not tokens or not cache:
            return False
        if cache_offset(cache) != len(tokens):
            log.debug("cache not kept: offset=%d tokens=%d", cache_offset(cache), len(tokens))
            return False
        # The last step was evaluated asynchronously: materialise the cache before it is kept
        # (and deep-copied by later requests), so no lazy graph outlives its generator.
        mx.eval([c.state for c in cache])
        # image tokens name images by a handle of this process: not for the next server
        if self.disk is not None and max(tokens) < IMAGE_TOKEN_BASE:
            length = len(tokens) if prompt_len is None else min(prompt_len, len(tokens))
            self.disk.save(list(tokens[:length]), cache)
        self._lru.insert_cache(_KEY, list(tokens), cache)
        return True

    def trim_to_bytes(self, nbytes: int) -> None:
        """Drop least recently used caches until the pool holds at most ``nbytes``."""
        if self._lru.nbytes > nbytes:
            self._lru.trim_to(n_bytes=nbytes)
            mx.clear_cache()  # give the buffers back rather than keep them in MLX's cache

    def trim_to_count(self, entries: int) -> None:
        """Drop least recently used caches until at most ``entries`` are left (a distributed
        group's other ranks follow rank 0's pool this way, ``group_follower``)."""
        if len(self._lru) > entries:
            self._lru.trim_to(n_sequences=entries)

    def clear(self) -> None:
        """Drop every cache held in memory (the disk store stays)."""
        self._lru.trim_to(n_sequences=0)


def cache_offset(cache: list[Any]) -> int:
    """How many tokens a prompt cache holds (its first layer's offset)."""
    return int(getattr(cache[0], "offset", -1)) if cache else 0


def kv_bytes_per_token(loaded: Any) -> int:
    """Bytes one token takes in the KV cache of ``loaded`` (a ``LoadedModel``): every layer's
    keys and values (and a draft model's, with the KV-cache type in use). Measured once, by
    one forward pass of one token on a fresh cache, and remembered on the model."""
    known = loaded.kv_bytes_per_token
    if known or loaded.model is None:
        return known  # 0 once unloaded
    pool = loaded.prompt_cache
    cache = pool.new_cache() if pool is not None else make_prompt_cache(loaded.model)
    layers = len(loaded.model.layers) if loaded.draft is not None else len(cache)
    token = mx.array([[0]], mx.uint32)
    loaded.model(token, cache=cache[:layers])
    if loaded.draft is not None and len(cache) > layers:
        loaded.draft(token, cache=cache[layers:])
    mx.eval([c.state for c in cache])
    per_token = max(sum(_layer_bytes_per_token(c) for c in cache), 1)
    loaded.kv_bytes_per_token = per_token
    log.info("kv cache bytes per token model=%s bytes=%d", loaded.path.name, per_token)
    return per_token


def _layer_bytes_per_token(layer: Any) -> int:
    """One token's bytes in a layer's cache; a layer of fixed size (SSM state) counts whole."""
    keys = getattr(layer, "keys", None)
    values = getattr(layer, "values", None)
    if keys is None or values is None:
        return int(getattr(layer, "nbytes", 0))
    arrays = [a for _, a in tree_flatten((keys, values)) if isinstance(a, mx.array)]
    # the sequence axis is -2 for plain, quantized (data, scales, biases) and rotating caches
    return sum(a.nbytes // max(a.shape[-2], 1) for a in arrays if a.ndim >= 2)
