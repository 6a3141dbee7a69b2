"""Prompt (KV) cache reuse across turns, on mlx-lm's ``LRUPromptCache``.

Chat clients resend the whole conversation every turn. Each loaded model keeps a small pool
of KV caches keyed by the exact tokens they hold (prompt + every token fed back while
generating, an end-of-turn token included); a new request starts from the cache with the
longest common prefix and evaluates only the rest. The pool is bounded by entry count and
bytes, least recently used first out. Runs on the scheduler thread only.
"""

from __future__ import annotations

from typing import Any

from mlx_lm.models.cache import (
    LRUPromptCache,
    can_trim_prompt_cache,
    make_prompt_cache,
    trim_prompt_cache,
)

_KEY = "model"  # one pool per loaded model, so the trie's model key is a constant
DEFAULT_MAX_BYTES = 1 << 30  # per model


class PromptCachePool:
    """The KV caches of one loaded model, reusable by prefix."""

    def __init__(self, model: Any, max_entries: int, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._model = model
        self._lru = LRUPromptCache(max_size=max_entries, max_bytes=max_bytes)
        # Reusing a longer entry, or an exact one, means trimming; models whose caches
        # cannot be trimmed (sliding windows, SSM layers) do not take part.
        self.enabled = max_entries > 0 and can_trim_prompt_cache(make_prompt_cache(model))

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def nbytes(self) -> int:
        """Bytes held by the pool's caches."""
        return self._lru.nbytes

    def fetch(self, tokens: list[int]) -> tuple[list[Any], list[int]]:
        """A cache for ``tokens`` and the tokens still to evaluate (at least one)."""
        if not self.enabled or not tokens:
            return make_prompt_cache(self._model), tokens
        cache, rest = self._lru.fetch_nearest_cache(_KEY, tokens)
        if cache is None:
            return make_prompt_cache(self._model), tokens
        if not rest:
            # Exact hit: the model needs one token in to produce the next logits.
            if not can_trim_prompt_cache(cache):
                return make_prompt_cache(self._model), tokens
            trim_prompt_cache(cache, 1)
            rest = tokens[-1:]
        return cache, list(rest)

    def insert(self, tokens: list[int], cache: list[Any]) -> bool:
        """Keep ``cache`` for later, keyed by ``tokens``; only if it holds exactly them."""
        if not self.enabled or not tokens or not cache:
            return False
        if cache_offset(cache) != len(tokens):
            return False
        self._lru.insert_cache(_KEY, list(tokens), cache)
        return True

    def clear(self) -> None:
        """Drop every cache."""
        self._lru.trim_to(n_sequences=0)


def cache_offset(cache: list[Any]) -> int:
    """How many tokens a prompt cache holds (its first layer's offset)."""
    return int(getattr(cache[0], "offset", -1)) if cache else 0
