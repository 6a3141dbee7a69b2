"""Generation: starting mlx-lm's ``generate_step`` (or the draft model's speculative loop)
on a prompt, reusing cached prefixes, and offering the finished KV cache back to the pool.

Runs on the scheduler thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
from mlx_lm.generate import generate_step
from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

from ..errors import RequestCanceled
from .mlx_models import LoadedModel
from .options import Options
from .prompt_cache import cache_offset
from .prompt_lookup import LookupTally, lookup_tokens
from .sampling import LogitsProcessor, Sampler, make_processors, make_sampler
from .speculative import DraftTally, align_caches, speculative_tokens

PREFILL_STEP = 512  # prompt tokens per forward pass; cancellation is checked between them


@dataclass
class Generation:
    """A running ``generate_step``: its token ids and the KV cache it fills.

    ``fed`` lists every token yielded so far; ``generate_step`` feeds a token to the model
    before yielding it, so the cache holds ``prompt + fed`` (see ``keep_cache``).
    """

    tokens: Iterator[int]
    prompt: list[int]
    cache: list[Any] | None  # None: not offered back (no pool, or cut to the model's layers)
    reused: int = 0  # prompt tokens taken from the prompt cache, not evaluated
    fed: list[int] = field(default_factory=list)
    draft_layers: int = 0  # speculative: the cache's model layers (the draft's follow)


def start_generation(
    loaded: LoadedModel,
    prompt_tokens: list[int],
    options: Options,
    *,
    cancel: threading.Event | None = None,
    extra_processors: list[LogitsProcessor] | None = None,
    first_processors: list[LogitsProcessor] | None = None,
    num_draft_tokens: int = 3,
    on_draft_done: Callable[[DraftTally], None] = lambda _tally: None,
    prompt_lookup: int = 0,
    on_lookup_done: Callable[[LookupTally], None] = lambda _tally: None,
) -> Generation:
    """Start generating after ``prompt_tokens``; the tokens never end (the caller stops).

    The longest cached prefix is reused and only the rest of the prompt is evaluated (the
    cache never outgrows ``num_ctx``: the job shifts the context first, ``jobs``). ``cancel``
    aborts a long prompt between prefill chunks (RequestCanceled). A model with a draft
    speculates (``num_draft_tokens`` per step) and reports its tally to ``on_draft_done`` when
    it ends. ``prompt_lookup`` > 0 drafts up to that many tokens from the prompt's n-grams
    instead (``prompt_lookup``; the caller checked that the request is greedy and
    unconstrained).
    """
    pool = loaded.prompt_cache
    if pool is not None and pool.enabled:
        cache, rest = pool.fetch(prompt_tokens)
    elif pool is not None:
        cache, rest = pool.new_cache(), prompt_tokens  # no reuse, but quantized if asked
    else:
        cache, rest = None, prompt_tokens  # generate_step makes its own
    sampler = make_sampler(options)
    extra = list(extra_processors or [])
    first = list(first_processors or [])  # before the penalties: they see the raw logits
    layers = len(loaded.model.layers) if loaded.draft is not None else 0
    if layers and cache is not None and not extra and not first and len(cache) > layers:
        generation = Generation(
            iter(()),
            list(prompt_tokens),
            cache,
            len(prompt_tokens) - len(rest),
            draft_layers=layers,
        )
        generation.tokens = _speculate(
            loaded,
            rest,
            cache,
            sampler,
            options,
            cancel,
            generation.fed,
            num_draft_tokens,
            on_draft_done,
        )
        return generation
    if prompt_lookup and not layers and cache is not None and not extra and not first:
        generation = Generation(
            iter(()), list(prompt_tokens), cache, len(prompt_tokens) - len(rest)
        )
        check = _cancel_check(cancel)
        generation.tokens = lookup_tokens(
            rest,
            prompt_tokens,
            loaded.model,
            cache,
            max_draft=prompt_lookup,
            processors=make_processors(options, len(rest)),
            prefill_step=PREFILL_STEP,
            check=(lambda: check(0, 0)) if check is not None else (lambda: None),
            fed=generation.fed,
            done=on_lookup_done,
        )
        return generation
    if layers and cache is not None:
        # no draft for this one (structured output): the pool holds model+draft caches,
        # so this cache, of the model's layers only, is not offered back
        cache = cache[:layers]
    kv_kwargs = loaded.kv.generate_kwargs() if loaded.kv is not None else {}
    steps = generate_step(
        mx.array(rest),
        loaded.model,
        max_tokens=-1,
        sampler=sampler,
        # generate_step shows processors only the tokens it was given: the uncached rest
        logits_processors=first
        + make_processors(options, len(rest))
        + extra,  # structured output's token mask, last
        prompt_cache=cache,
        prefill_step_size=PREFILL_STEP,
        prompt_progress_callback=_cancel_check(cancel),
        **kv_kwargs,
    )
    kept = None if layers else cache
    generation = Generation(iter(()), list(prompt_tokens), kept, len(prompt_tokens) - len(rest))
    generation.tokens = _track(steps, generation.fed)
    return generation


def _speculate(
    loaded: LoadedModel,
    rest: list[int],
    cache: list[Any],
    sampler: Sampler,
    options: Options,
    cancel: threading.Event | None,
    fed: list[int],
    num_draft_tokens: int,
    done: Callable[[DraftTally], None],
) -> Iterator[int]:
    """The tokens of a generation with the model's draft (``speculative``)."""
    check = _cancel_check(cancel)
    return speculative_tokens(
        rest,
        loaded.model,
        loaded.draft,
        cache,
        num_draft_tokens=num_draft_tokens,
        sampler=sampler,
        # mlx-lm shows processors the last prompt token, then the generated ones
        processors=make_processors(options, 1),
        prefill_step=PREFILL_STEP,
        check=(lambda: check(0, 0)) if check is not None else (lambda: None),
        fed=fed,
        done=done,
        kv_kwargs=loaded.kv.generate_kwargs() if loaded.kv is not None else None,
    )


def batchable(loaded: LoadedModel) -> bool:
    """True if ``loaded`` can decode in a batch lane (``batching``); models that
    generate with a draft model or a quantized KV cache stay on ``start_generation``."""
    return loaded.encoder is None and loaded.draft is None and loaded.kv is None


def keep_cache(loaded: LoadedModel, generation: Generation) -> bool:
    """Offer a finished generation's KV cache to the model's pool, keyed by exactly the
    tokens it holds. False if it is not reusable or does not match."""
    pool, cache = loaded.prompt_cache, generation.cache
    if pool is None or cache is None:
        return False
    tokens = generation.prompt + generation.fed
    if generation.draft_layers:
        aligned = align_caches(cache, generation.draft_layers, tokens)
        if aligned is None:
            return False
        tokens = aligned
    else:
        # the cache holds a prefix of the tokens, or (prompt lookup: drafts accepted past what
        # the job took) the tokens and a few more, always in order
        offset = cache_offset(cache)
        if offset > len(tokens) and can_trim_prompt_cache(cache):
            trim_prompt_cache(cache, offset - len(tokens))
        tokens = tokens[: max(offset, 0)]
    return pool.insert(tokens, cache, prompt_len=len(generation.prompt))


def _track(steps: Iterator[tuple[Any, Any]], fed: list[int]) -> Iterator[int]:
    try:
        for token, _logprobs in steps:
            fed.append(int(token))
            yield fed[-1]
    finally:
        # Close generate_step here, on the scheduler thread, rather than whenever the
        # garbage collector gets to it on whatever thread: its exit touches MLX streams.
        close = getattr(steps, "close", None)
        if close is not None:
            close()


def _cancel_check(cancel: threading.Event | None) -> Callable[[int, int], None] | None:
    if cancel is None:
        return None

    def check(_done: int, _total: int) -> None:
        if cancel.is_set():
            raise RequestCanceled()

    return check
