"""Sampling: Ollama's sampling options as an mlx-lm sampler and logits processors."""

from __future__ import annotations

import os
from collections.abc import Callable

import mlx.core as mx
from mlx_lm.sample_utils import (
    apply_min_p,
    apply_top_k,
    apply_top_p,
    greedy_sampler,
    make_logits_processors,
)

from .options import Options

Sampler = Callable[[mx.array], mx.array]
LogitsProcessor = Callable[[mx.array, mx.array], mx.array]


def make_sampler(options: Options) -> Sampler:
    """Map Ollama's sampling options onto mlx-lm's filters with a per-request PRNG key.

    Order as Ollama's sampler: top_k, then temperature, then top_p and min_p on the
    tempered distribution. A key owned by the request (rather than MLX's global state) makes
    ``seed`` reproducible even while other requests sample in between.
    """
    if options.temperature <= 0:
        return greedy_sampler
    top_k, top_p, min_p = options.top_k, options.top_p, options.min_p
    seed = options.seed if options.seed >= 0 else int.from_bytes(os.urandom(4), "little")
    state = {"key": mx.random.key(seed % (1 << 63))}
    inv_temp = 1.0 / options.temperature

    def sampler(logprobs: mx.array) -> mx.array:
        if 0 < top_k < logprobs.shape[-1]:
            logprobs = apply_top_k(logprobs, top_k)
        logits = logprobs * inv_temp
        if 0 < top_p < 1.0:
            logits = apply_top_p(logits, top_p)
        if min_p > 0:
            logits = apply_min_p(logits, min_p)
        state["key"], subkey = mx.random.split(state["key"])
        return mx.random.categorical(logits, key=subkey)

    return sampler


def make_processors(options: Options, prompt_length: int) -> list[LogitsProcessor]:
    """Repeat / presence / frequency penalties over the last ``repeat_last_n`` generated tokens.

    Only generated tokens count: penalising the prompt pushes small models away from the
    very words a question asks about (Ollama's own engine applies no penalties at all).
    """
    window = options.repeat_window()
    if window == 0:
        return []
    processors = make_logits_processors(
        repetition_penalty=options.repeat_penalty if options.repeat_penalty != 1.0 else None,
        repetition_context_size=window,
        presence_penalty=options.presence_penalty or None,
        presence_context_size=window,
        frequency_penalty=options.frequency_penalty or None,
        frequency_context_size=window,
    )
    return [_generated_only(p, prompt_length) for p in processors]


def _generated_only(processor: LogitsProcessor, prompt_length: int) -> LogitsProcessor:
    def apply(tokens: mx.array, logits: mx.array) -> mx.array:
        return processor(tokens[prompt_length:], logits)

    return apply
