"""Structured output: an mlx-lm logits processor that keeps generation inside a JSON grammar.

llguidance (``json_grammar``) computes, for every step, the set of tokens that keep the output
a valid prefix of the schema; disallowed logits become -inf. End-of-sequence is allowed only
once the JSON is complete, and then it is the *only* token allowed, so generation stops there.

Two additions make the output valid within ``num_predict`` even on a random model:

* **Closing.** Near the end of the budget the processor simulates the shortest way to finish
  (prefer ``"``/``]``/``}``, then ``,``) and, when that would no longer fit, restricts sampling
  to the same preference: open strings close, arrays and objects end, optional keys are skipped.
* **Thinking.** A thinking model thinks unconstrained; the grammar starts after its think-end
  token (or at once, when the first token is not think-start). Thinking is cut short with the
  think-end token when the answer would otherwise not fit.

Runs on the scheduler thread only (like all MLX work), so the caches need no lock.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Any

import mlx.core as mx
import numpy as np
from llguidance import LLMatcher, LLTokenizer
from llguidance.hf import from_tokenizer

from ..errors import BadRequest
from .json_grammar import grammar_for_format

__all__ = [
    "JsonConstraint",
    "TokenizerIndex",
    "format_processors",
    "make_constraint",
    "tokenizer_index",
]

_MATCHER_CACHE_SIZE = 32  # compiled matchers kept per (tokenizer, schema)
_SIMULATE_WITHIN = 128  # start estimating the cost of closing this many tokens before the end
_MARGIN = 2  # extra tokens kept in reserve when deciding to close
_MAX_SIMULATION = 512  # give up estimating beyond this (the output may then be truncated)
_MAX_CHECKED = 16  # candidate tokens whose own closing cost is checked while closing
_CLOSERS = frozenset(b'"]}')
_STRUCTURAL = frozenset(b'"]},: ')


class TokenizerIndex:
    """An llguidance tokenizer plus, per token id, how it helps to finish a JSON document."""

    def __init__(self, hf_tokenizer: Any, eos_ids: list[int]) -> None:
        self.llt: LLTokenizer = from_tokenizer(hf_tokenizer, eos_token=eos_ids)
        self.vocab_size = self.llt.vocab_size
        self.eos_ids = [e for e in eos_ids if e < self.vocab_size]
        self.tiers = _closing_tiers(self.llt)
        for tier in (t for tiers in self.tiers.values() for t in tiers):
            tier[self.eos_ids] = (
                True  # end-of-sequence finishes best, whenever the grammar allows it
            )
        self.matchers: OrderedDict[str, LLMatcher] = OrderedDict()

    def matcher(self, grammar: str) -> LLMatcher:
        """A fresh matcher for ``grammar`` (a copy of a cached, compiled one)."""
        pristine = self.matchers.pop(grammar, None)
        if pristine is None:
            pristine = LLMatcher(self.llt, grammar, log_level=0)
            if pristine.is_error():
                raise BadRequest(f"unsupported JSON schema in format: {pristine.get_error()}")
        self.matchers[grammar] = pristine
        while len(self.matchers) > _MATCHER_CACHE_SIZE:
            self.matchers.popitem(last=False)
        return pristine.deep_copy()


_INDEXES: weakref.WeakKeyDictionary[Any, TokenizerIndex] = weakref.WeakKeyDictionary()


def tokenizer_index(tokenizer: Any) -> TokenizerIndex:
    """The index for an mlx-lm ``TokenizerWrapper``, built once per loaded tokenizer (~1 s
    for a 50k vocabulary) and dropped with it."""
    index = _INDEXES.get(tokenizer)
    if index is None:
        hf = getattr(tokenizer, "_tokenizer", tokenizer)
        index = TokenizerIndex(hf, sorted(int(t) for t in tokenizer.eos_token_ids))
        _INDEXES[tokenizer] = index
    return index


def make_constraint(
    tokenizer: Any,
    grammar: str,
    max_tokens: int,
    *,
    think_start: str | None = None,
    think_end: str | None = None,
    thinking_first: bool = False,
) -> JsonConstraint:
    """A logits processor for one request. ``think_*`` are the model's think tags when the
    request thinks; ``thinking_first`` when the prompt already opened the think block."""
    index = tokenizer_index(tokenizer)
    start_id, end_id = _single_token(tokenizer, think_start), _single_token(tokenizer, think_end)
    state = "json"
    if end_id is not None:
        state = "thinking" if thinking_first else ("maybe" if start_id is not None else "json")
    return JsonConstraint(index, index.matcher(grammar), max_tokens, state, start_id, end_id)


class JsonConstraint:
    """``(tokens, logits) -> logits``: masks tokens the grammar does not allow next."""

    def __init__(
        self,
        index: TokenizerIndex,
        matcher: LLMatcher,
        max_tokens: int,
        state: str,
        think_start_id: int | None,
        think_end_id: int | None,
    ) -> None:
        self.index = index
        self.matcher = matcher
        self.max_tokens = max_tokens
        self.state = state  # "maybe" (think or answer), "thinking" or "json"
        self.closing = False
        self.scan = JsonScan()
        self._think_start_id = think_start_id
        self._think_end_id = think_end_id
        self._start: int | None = None  # len(tokens) at the first call
        self._seen = 0  # generated tokens consumed so far
        self._bitmask = np.zeros((index.vocab_size + 31) // 32, dtype=np.int32)
        self._answer_cost: int | None = None
        self._cost = 0  # the last closing-cost estimate

    @property
    def done(self) -> bool:
        """True once the JSON is complete (only end-of-sequence is allowed now)."""
        return self.state == "json" and (self.matcher.is_stopped() or self.matcher.is_error())

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        if self._start is None:  # the first call (or the first after ``resume``)
            self._start = len(tokens) - self._seen
        else:
            for token in tokens[self._start + self._seen :].tolist():
                self._advance(int(token))
        remaining = self.max_tokens - self._seen
        return _apply(logits, self._allowed(remaining))

    def resume(self, generated: list[int]) -> None:
        """Carry on in a new generation (a context shift re-read the sequence): take the
        ``generated`` tokens not seen yet; the next call's tokens end with all of them."""
        for token in generated[self._seen :]:
            self._advance(int(token))
        self._start = None

    # -- state --------------------------------------------------------------------------------

    def _advance(self, token: int) -> None:
        self._seen += 1
        if self.state == "maybe":
            if token == self._think_start_id:
                self.state = "thinking"
                return
            self.state = "json"
        if self.state == "thinking":
            if token == self._think_end_id:
                self.state = "json"
            return
        self.matcher.consume_token(token)  # sampled from the mask; an error leaves EOS only
        self.scan.feed(self.index.llt.decode_bytes([token]))

    def _allowed(self, remaining: int) -> np.ndarray | None:
        """Allowed token ids as a bool vector, or None for no constraint (thinking)."""
        if self.state == "thinking":
            if remaining > self._cost_of_answer() + _MARGIN:
                return None
            return _only(self._think_end_id, self.index.vocab_size)  # finish thinking now
        if self.matcher.is_error():
            return _only(self.index.eos_ids, self.index.vocab_size)
        allowed = self._grammar_mask(self.matcher)
        if self.state == "maybe" and self._think_start_id is not None:
            allowed[self._think_start_id] = True
            return allowed
        if not self.closing and self._due(remaining):
            self._cost = closing_cost(self.matcher, self.index, self.scan)
            self.closing = self._cost + _MARGIN >= remaining
        return self._closing_mask(allowed, remaining) if self.closing else allowed

    def _due(self, remaining: int) -> bool:
        """Whether to re-estimate the closing cost now: every step once the budget nears twice
        the last estimate, every 8th before (one token rarely adds more than a few)."""
        if remaining > _SIMULATE_WITHIN:
            return False
        return remaining <= 2 * self._cost + 8 or self._seen % 8 == 0

    def _closing_mask(self, allowed: np.ndarray, remaining: int) -> np.ndarray:
        """The preferred tokens that still let the JSON finish within ``remaining`` tokens:
        a lone quote and a quote followed by a comma differ by a whole key and value."""
        preferred = _preferred(allowed, self.index.tiers[self.scan.context])
        candidates = np.flatnonzero(preferred)
        if len(candidates) > _MAX_CHECKED:
            return preferred
        fits = np.zeros_like(preferred)
        for token in candidates.tolist():
            if token in self.index.eos_ids:
                fits[token] = True
                continue
            probe, scan = self.matcher.deep_copy(), self.scan.copy()
            probe.consume_token(token)
            scan.feed(self.index.llt.decode_bytes([token]))
            fits[token] = 1 + closing_cost(probe, self.index, scan) <= remaining
        if not fits.any():  # over budget already: the shortest path loses the least
            fits[candidates[0]] = True
        return fits

    def _grammar_mask(self, matcher: LLMatcher) -> np.ndarray:
        matcher.unsafe_compute_mask_ptr(self._bitmask.ctypes.data, self._bitmask.nbytes)
        bits = np.unpackbits(self._bitmask.view(np.uint8), bitorder="little")
        return bits[: self.index.vocab_size].astype(bool)

    def _cost_of_answer(self) -> int:
        if self._answer_cost is None:
            self._answer_cost = closing_cost(self.matcher, self.index, self.scan) + 1  # + think-end
        return self._answer_cost


def closing_cost(matcher: LLMatcher, index: TokenizerIndex, scan: JsonScan) -> int:
    """Tokens needed to finish the JSON (EOS included) taking the preferred token each time;
    the matcher and scanner themselves are not changed."""
    probe, scan = matcher.deep_copy(), scan.copy()
    bitmask = np.zeros((index.vocab_size + 31) // 32, dtype=np.int32)
    for steps in range(_MAX_SIMULATION):
        if probe.is_stopped() or probe.is_error():
            return steps + 1
        probe.unsafe_compute_mask_ptr(bitmask.ctypes.data, bitmask.nbytes)
        bits = np.unpackbits(bitmask.view(np.uint8), bitorder="little")[: index.vocab_size]
        allowed = _preferred(bits.astype(bool), index.tiers[scan.context])
        if any(allowed[e] for e in index.eos_ids if e < index.vocab_size):
            return steps + 1
        candidates = np.flatnonzero(allowed)
        if len(candidates) == 0:
            return steps + 1
        probe.consume_token(int(candidates[0]))
        scan.feed(index.llt.decode_bytes([int(candidates[0])]))
    return _MAX_SIMULATION


# -- helpers ------------------------------------------------------------------------------


def _closing_tiers(llt: LLTokenizer) -> dict[str, list[np.ndarray]]:
    """Token classes in the order that finishes a document soonest, inside a string (a token
    starting with the closing quote) and outside one (``]``/``}``, then ``,`` to move on to
    required keys, then a lone quote to open a required key or string)."""
    size = llt.vocab_size
    lead, closers, commas, quotes = (np.zeros(size, dtype=bool) for _ in range(4))
    for token in range(size):
        if llt.is_special_token(token):
            continue
        data = llt.decode_bytes([token])
        chars = set(data)
        if not data or not chars <= _STRUCTURAL:
            continue
        lead[token] = data[:1] == b'"'
        closers[token] = chars <= set(b"]}")
        commas[token] = b"," in chars and data[:1] != b'"'
        quotes[token] = chars == {ord('"')}
    return {"string": [lead], "value": [closers, commas, quotes]}


def _preferred(allowed: np.ndarray, tiers: list[np.ndarray]) -> np.ndarray:
    """``allowed`` narrowed to its best non-empty tier (unchanged if no tier intersects)."""
    for tier in tiers:
        narrowed = allowed & tier
        if narrowed.any():
            return narrowed
    return allowed


class JsonScan:
    """Just enough of a JSON lexer to know whether the output is inside a string."""

    def __init__(self) -> None:
        self.in_string = False
        self.escaped = False

    def copy(self) -> JsonScan:
        """An independent copy (for simulations)."""
        other = JsonScan()
        other.in_string, other.escaped = self.in_string, self.escaped
        return other

    def feed(self, data: bytes) -> None:
        """Advance over generated bytes."""
        for byte in data:
            if self.escaped:
                self.escaped = False
            elif byte == 0x5C and self.in_string:  # backslash
                self.escaped = True
            elif byte == 0x22:  # quote
                self.in_string = not self.in_string

    @property
    def context(self) -> str:
        """The key into a TokenizerIndex's ``tiers``."""
        return "string" if self.in_string else "value"


def _only(ids: int | list[int] | None, size: int) -> np.ndarray:
    allowed = np.zeros(size, dtype=bool)
    if ids is not None:
        allowed[ids] = True
    return allowed


def _apply(logits: mx.array, allowed: np.ndarray | None) -> mx.array:
    if allowed is None:
        return logits
    width = logits.shape[-1]
    if len(allowed) < width:  # embedding rows beyond the tokenizer's vocabulary
        allowed = np.concatenate([allowed, np.zeros(width - len(allowed), dtype=bool)])
    mask = mx.array(allowed[:width])
    return mx.where(mask, logits, mx.array(-float("inf"), dtype=logits.dtype))


def _single_token(tokenizer: Any, text: str | None) -> int | None:
    if not text:
        return None
    ids = list(tokenizer.encode(text, add_special_tokens=False))
    return ids[0] if len(ids) == 1 else None


def format_processors(
    tokenizer: Any, request: Any, markup: Any, prompt_text: str, max_tokens: int
) -> list[JsonConstraint]:
    """The processor enforcing ``request.format`` (a GenerationRequest), or none.

    ``markup`` is the backend's TokenizerMarkup: a thinking request thinks unconstrained.
    """
    grammar = grammar_for_format(request.format)
    if grammar is None:
        return []
    thinks = bool(request.think) and "thinking" in request.model.capabilities
    start = markup.think_start if thinks else None
    end = markup.think_end if thinks else None
    first = bool(start) and prompt_text.rstrip().endswith(start)
    constraint = make_constraint(
        tokenizer, grammar, max_tokens, think_start=start, think_end=end, thinking_first=first
    )
    return [constraint]
