"""Speculative decoding: a small draft model proposes tokens, the model checks them in one pass.

mlx-lm's ``speculative_generate_step`` does the work; this module feeds it the bridge's
cache, sampler and processors, lets a long prompt be canceled between prefill chunks (mlx-lm
has no progress callback here), and counts how many proposals were accepted (its
``from_draft`` flag). Every token comes out of the model's own sampling, so greedy output is
the same with and without a draft, and sampled output follows the same distribution.

Used only when the alias names a draft that is present locally, the KV cache can be trimmed
and there is no structured-output constraint (its grammar state advances token by token and
cannot take back rejected proposals).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
from mlx_lm.generate import speculative_generate_step

log = logging.getLogger(__name__)

_UNBOUNDED = 1 << 62  # mlx-lm's speculative loop cannot take max_tokens=-1; the job stops it


@dataclass
class DraftTally:
    """Proposals of one generation: ``drafted`` by the draft model, ``accepted`` by the model,
    out of ``generated`` tokens in all."""

    drafted: int = 0
    accepted: int = 0
    generated: int = 0

    @property
    def rate(self) -> float:
        """Accepted share of the proposals (0 when nothing was proposed)."""
        return self.accepted / self.drafted if self.drafted else 0.0


def speculative_tokens(
    prompt: list[int],
    model: Any,
    draft_model: Any,
    cache: list[Any],
    *,
    num_draft_tokens: int,
    sampler: Callable[[mx.array], mx.array],
    processors: list[Callable[[mx.array, mx.array], mx.array]],
    prefill_step: int,
    check: Callable[[], None],
    fed: list[int],
    done: Callable[[DraftTally], None],
    kv_kwargs: dict[str, Any] | None = None,
) -> Iterator[int]:
    """Token ids after ``prompt`` (the part not in ``cache``), generated with the draft.

    ``cache`` is the model's layers then the draft's, updated in place. ``check`` runs between
    prefill chunks (it raises to cancel). Every token is appended to ``fed``; ``done`` gets
    the tally when the stream ends or is closed (on the thread that closes it).
    """
    layers = len(model.layers)
    tally = DraftTally()
    steps = None
    try:
        rest = _prefill(prompt, model, draft_model, cache, layers, prefill_step, check)
        steps = speculative_generate_step(
            mx.array(rest, mx.uint32),
            model,
            draft_model,
            num_draft_tokens=num_draft_tokens,
            max_tokens=_UNBOUNDED,
            sampler=sampler,
            logits_processors=processors or None,
            prompt_cache=cache,
            prefill_step_size=prefill_step,
            **(kv_kwargs or {}),
        )
        new_round = True
        for token, _logprobs, from_draft in steps:
            if new_round:  # each verification round starts with a full set of proposals
                tally.drafted += num_draft_tokens
            tally.generated += 1
            tally.accepted += bool(from_draft)
            new_round = not from_draft  # the model's own token ends a round
            fed.append(int(token))
            yield fed[-1]
    finally:
        if steps is not None:
            steps.close()  # rewinds the caches to the tokens actually accepted
        done(tally)


def _prefill(
    prompt: list[int],
    model: Any,
    draft_model: Any,
    cache: list[Any],
    layers: int,
    step: int,
    check: Callable[[], None],
) -> list[int]:
    """Evaluate all but the last prompt token into both caches, a chunk at a time."""
    check()
    while len(prompt) > 1:
        chunk = mx.array(prompt[: min(step, len(prompt) - 1)])[None]
        model(chunk, cache=cache[:layers])
        draft_model(chunk, cache=cache[layers:])
        mx.eval([c.state for c in cache])
        prompt = prompt[chunk.shape[1] :]
        mx.clear_cache()
        check()
    return prompt


def align_caches(cache: list[Any], layers: int, tokens: list[int]) -> list[int] | None:
    """After a speculative run the draft's cache can be a token behind the model's: trim both
    to the tokens they share and return those tokens (None if they are not a prefix)."""
    main, draft = cache[:layers], cache[layers:]
    offsets = {c.offset for c in main} | {c.offset for c in draft}
    length = min(offsets)
    if length <= 0 or length > len(tokens):
        return None
    for layer in cache:
        layer.trim(layer.offset - length)
    return tokens[:length]
