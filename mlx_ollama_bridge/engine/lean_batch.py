"""The decode step of a batch lane, without the work the bridge never reads.

mlx-lm's ``GenerationBatch`` normalises every row's logits into log-probabilities each step
(an exponential over the whole vocabulary per row: 6 ms of a 120 ms step for eight rows on
the CPU) and hands them out with each token. The bridge never reads them: ``logprobs``
come from a capturing logits processor (``logprobs.py``), and its samplers only need the
logits up to a constant per row (argmax, top-k, min-p and the categorical draw are
unchanged by one; top-p divides by the total mass). So this step gives greedy rows the raw
logits and the others the logits minus the row's maximum (non-positive, so temperature
scaling cannot overflow the exponentials), the same tokens for a tenth of the work.

On the CPU, ``mx.async_eval`` does not return before the step it is given has run (MLX
bounds the operations in flight), so mlx-lm's one-step pipeline only holds each token back
until the next one is computed: a request's first token came one decode step late. There,
``fresh_tokens`` hands out the tokens the step just computed instead (see ``BatchLane``).
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
from mlx_lm.generate import BatchGenerator, GenerationBatch
from mlx_lm.sample_utils import greedy_sampler


class LeanGenerationBatch(GenerationBatch):
    """``GenerationBatch`` whose step skips the log-softmax (see the module docstring)."""

    def _step(self) -> tuple[list[int], list[Any]]:
        self._current_tokens = self._next_tokens
        self._current_logprobs = self._next_logprobs
        inputs = self._current_tokens

        logits = self.model(inputs[:, None], cache=self.prompt_cache)[:, -1, :]

        token_context = []
        if any(self.logits_processors):
            rows = []
            for e in range(len(self.uids)):
                row = logits[e : e + 1]
                processors = self.logits_processors[e] or ()
                if processors:
                    context = self._token_context[e].update_and_fetch(inputs[e : e + 1])
                    token_context.append(context)
                    for processor in processors:
                        row = processor(context, row)
                rows.append(row)
            logits = mx.concatenate(rows, axis=0)

        samplers = [self.fallback_sampler if s is None else s for s in self.samplers]
        if all(s is greedy_sampler for s in samplers):
            sampled = greedy_sampler(logits)
        else:
            shifted = logits - mx.max(logits, axis=-1, keepdims=True)
            if all(s is samplers[0] for s in samplers):
                sampled = samplers[0](shifted)
            else:
                sampled = mx.concatenate(
                    [s(shifted[e : e + 1]) for e, s in enumerate(samplers)], axis=0
                )

        self._next_tokens = sampled
        self._next_logprobs = [None] * len(self.uids)  # never read by the bridge
        # the logits too: a distributed group's other ranks sample without reading them,
        # yet their forward pass (and its collectives) must run
        mx.async_eval(self._next_tokens, logits, token_context)

        mx.eval(inputs)
        tokens = inputs.tolist()
        for held, token in zip(self.tokens, tokens, strict=True):
            held.append(token)
        return tokens, self._current_logprobs


def install(generator: BatchGenerator) -> None:
    """Make ``generator`` decode with :class:`LeanGenerationBatch`. Sequences join its
    generation batch through ``extend``, so swapping the empty batch it starts with is
    enough (mlx-lm's own class still samples each sequence's first token)."""
    current = generator._generation_batch
    if len(current):
        raise RuntimeError("install the lean step before any sequence joins")
    generator._generation_batch = LeanGenerationBatch.empty(current.model, generator.sampler)


def fresh_tokens(generator: BatchGenerator) -> dict[int, int]:
    """Each decoding sequence's newest sampled token, not yet handed out by mlx-lm (it will
    be, one ``next`` later). Reading it waits for the step that computes it; on the CPU that
    step has already run."""
    batch = generator._generation_batch
    if not len(batch) or batch._next_tokens is None:
        return {}
    return dict(zip(batch.uids, batch._next_tokens.tolist(), strict=True))
