"""Prompt-lookup speculative decoding: n-grams of the prompt are the draft, no draft model.

A request that copies most of its input (an edited code file, a rewrite, a quoted passage)
generates long runs of tokens that already appear in its prompt. Each step looks up the last
few generated tokens (an n-gram, 4 down to 2 tokens) in the prompt and the text so far, takes
the tokens that followed there as a draft, and lets the model check the whole draft in one
forward pass: ``[last token] + draft``. The model's own (greedy) choice at every position
decides; the draft tokens it agrees with are kept, the first disagreement is replaced by the
model's token and the rest is dropped (the KV cache is trimmed back). Every token is the
model's, so the output is exactly what plain greedy decoding gives; a verified draft of ``k``
tokens yields up to ``k + 1`` tokens for one forward pass.

Only greedy requests use it (a sampled token would consume the request's random stream
differently, so a ``seed`` would no longer reproduce the answer of plain decoding), and not
with structured output (its grammar advances token by token and cannot take tokens back).
The draft length adapts: it grows after a fully accepted draft and shrinks after a rejected
one, so text that does not copy its prompt costs little more than plain decoding.

Runs on the scheduler thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import trim_prompt_cache

NGRAM_SIZES = (4, 3, 2)  # longest first: a longer match is a better predictor
MIN_DRAFT = 2
MIN_PROMPT_TOKENS = 64  # below this there is little to copy


def worth_it(
    *, greedy: bool, constrained: bool, has_draft: bool, prompt_len: int, alone: bool
) -> bool:
    """The rule for using prompt lookup: a greedy request without structured output or a
    draft model, with a prompt of at least ``MIN_PROMPT_TOKENS``, that would decode alone (a
    request joining other sequences gains more from sharing their batched forward pass)."""
    return (
        greedy and not constrained and not has_draft and alone and (prompt_len >= MIN_PROMPT_TOKENS)
    )


@dataclass
class LookupTally:
    """Draft tokens of one generation: ``drafted`` proposed, ``accepted`` kept, over
    ``rounds`` forward passes for ``generated`` tokens."""

    drafted: int = 0
    accepted: int = 0
    rounds: int = 0
    generated: int = 0


class NgramIndex:
    """Where each n-gram of a token list last occurred, kept up to date as tokens are added.

    While a copy goes on (the model's last token is the next token of the source the last
    draft came from), ``draft`` keeps following that source instead of jumping to another
    place where the same few tokens occur.
    """

    def __init__(self, tokens: list[int]) -> None:
        self.tokens: list[int] = []
        self._ends: dict[tuple[int, ...], int] = {}  # n-gram -> index right after it
        self._next = -1  # the source position the model's last token should match
        for token in tokens:
            self.append(token)

    def append(self, token: int) -> None:
        """Add one token (the n-grams ending before it now point at it)."""
        tokens = self.tokens
        end = len(tokens)
        for n in NGRAM_SIZES:
            if end >= n:
                self._ends[tuple(tokens[end - n : end])] = end
        tokens.append(token)

    def draft(self, limit: int) -> tuple[int, list[int]]:
        """(source position, up to ``limit`` tokens that followed the current tail there);
        an empty list if the tail occurred nowhere before."""
        tokens = self.tokens
        size = len(tokens)
        follow = self._next
        if 0 <= follow < size - 1 and tokens[follow] == tokens[-1]:
            return follow + 1, tokens[follow + 1 : follow + 1 + limit]
        for n in NGRAM_SIZES:
            if size > n:
                start = self._ends.get(tuple(tokens[size - n :]))
                if start is not None:
                    return start, tokens[start : start + limit]
        return -1, []

    def accepted(self, start: int, kept: int) -> None:
        """The model kept ``kept`` tokens of the draft taken at ``start``; its next token
        lines up with the source at ``start + kept``."""
        self._next = start + kept if start >= 0 else -1


def lookup_tokens(
    rest: list[int],
    prompt: list[int],
    model: Any,
    cache: list[Any],
    *,
    max_draft: int,
    processors: list[Callable[[mx.array, mx.array], mx.array]],
    prefill_step: int,
    check: Callable[[], None],
    fed: list[int],
    done: Callable[[LookupTally], None],
) -> Iterator[int]:
    """Greedy token ids after ``prompt``, drafted from the prompt's own n-grams.

    ``rest`` is the end of ``prompt`` that ``cache`` does not hold yet. ``check`` runs between
    prefill chunks (it raises to cancel). Every token is appended to ``fed``. The cache holds
    ``prompt`` and then the tokens the model accepted, which may run a few tokens past or one
    short of ``fed`` (``generation.keep_cache`` lines them up). ``done`` gets the tally.
    """
    tally = LookupTally()
    index = NgramIndex(prompt)
    history = list(rest)  # what processors see: the uncached prompt, then generated tokens
    try:
        y = _prefill(rest, model, cache, prefill_step, check)
        k = max_draft
        while True:
            start, draft = index.draft(k)
            logits = model(mx.array([y, *draft], mx.uint32)[None], cache=cache)[0]
            choices = _greedy(logits, processors, history, draft)
            kept = 0
            while kept < len(draft) and choices[kept] == draft[kept]:
                kept += 1
            if len(draft) > kept:
                trim_prompt_cache(cache, len(draft) - kept)
            index.accepted(start, kept)
            if draft:  # longer drafts while they are taken whole, shorter when they are not
                k = min(k + 2, max_draft) if kept == len(draft) else max(kept, MIN_DRAFT)
            tally.rounds += 1
            tally.drafted += len(draft)
            tally.accepted += kept
            for token in choices[: kept + 1]:
                tally.generated += 1
                index.append(token)
                history.append(token)
                fed.append(token)
                yield token
            y = choices[kept]
    finally:
        done(tally)


def _prefill(
    rest: list[int], model: Any, cache: list[Any], step: int, check: Callable[[], None]
) -> int:
    """Evaluate all but the last uncached prompt token; return that last one."""
    check()
    while len(rest) > 1:
        chunk = rest[: min(step, len(rest) - 1)]
        model(mx.array(chunk, mx.uint32)[None], cache=cache)
        mx.eval([c.state for c in cache])
        rest = rest[len(chunk) :]
        mx.clear_cache()
        check()
    return rest[0]


def _greedy(
    logits: mx.array,
    processors: list[Callable[[mx.array, mx.array], mx.array]],
    history: list[int],
    draft: list[int],
) -> list[int]:
    """The model's greedy token at each position of ``[y] + draft``, with the logits
    processors applied as plain decoding would at that position."""
    if not processors:
        return mx.argmax(logits, axis=-1).tolist()
    rows = []
    for j in range(logits.shape[0]):
        seen = mx.array(history + draft[:j], mx.uint32)
        row = logits[j : j + 1]
        for processor in processors:
            row = processor(seen, row)
        rows.append(row)
    return mx.argmax(mx.concatenate(rows, axis=0), axis=-1).tolist()
