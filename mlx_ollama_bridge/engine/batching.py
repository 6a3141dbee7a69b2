"""Continuous batching for one loaded model, on mlx-lm's ``BatchGenerator``.

Requests for the same model decode together: each scheduler step runs one forward pass for
every sequence in the batch (plus, when there is room, one prefill chunk of a newly admitted
prompt), so new requests join between steps and finished ones leave. Each sequence keeps its
own sampler (temperature, top-k/p, seed) and logits processors (penalties, structured
output). End of sequence, stop strings and length limits are the job's business
(``jobs.GenerationJob.accept``); the lane only produces tokens and hands the KV cache of a
finished sequence to the model's prompt-cache pool.

Runs on the scheduler thread only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
from mlx_lm.generate import BatchGenerator

from . import lean_batch
from .mlx_models import LoadedModel
from .sampling import LogitsProcessor, Sampler

_UNBOUNDED = 1 << 31  # the job decides when a sequence is long enough


@dataclass
class Slot:
    """One sequence in a lane."""

    uid: int
    reused: int  # prompt tokens taken from the prompt cache, not evaluated
    prompt_len: int  # the rest of the cache is generated text (not worth keeping on disk)


class BatchLane:
    """The sequences of one loaded model that decode together."""

    def __init__(self, loaded: LoadedModel, width: int, prefill_step: int) -> None:
        self._loaded = loaded
        self._generator = BatchGenerator(
            loaded.model,
            max_tokens=_UNBOUNDED,
            completion_batch_size=max(width, 1),
            prefill_batch_size=max(width, 1),
            prefill_step_size=prefill_step,
        )
        lean_batch.install(self._generator)
        # On the CPU each step has run by the time mlx-lm returns: hand out the token it
        # computed rather than the one before (``lean_batch``); a GPU keeps the pipeline.
        self._fresh = mx.default_device() == mx.cpu
        self._uids: set[int] = set()

    def __len__(self) -> int:
        return len(self._uids)

    def add(
        self,
        prompt_tokens: list[int],
        sampler: Sampler,
        processors: list[LogitsProcessor],
    ) -> Slot:
        """Queue a prompt; its prefill runs in later ``step`` calls, chunk by chunk.

        The longest cached prefix is taken from the model's prompt-cache pool, so only the
        rest of the prompt is evaluated.
        """
        pool = self._loaded.prompt_cache
        cache: list[Any] | None = None
        rest = prompt_tokens
        if pool is not None and pool.enabled:
            cache, rest = pool.fetch(prompt_tokens)
        reused = len(prompt_tokens) - len(rest)
        (uid,) = self._generator.insert(
            [list(rest)],
            max_tokens=[_UNBOUNDED],
            caches=[cache] if cache is not None else None,
            # what the cache already holds: processors see prompt + generated tokens
            all_tokens=[list(prompt_tokens[:reused])],
            samplers=[sampler],
            logits_processors=[processors],
        )
        self._uids.add(uid)
        return Slot(uid, reused, len(prompt_tokens))

    def step(self) -> dict[int, int]:
        """One decode step for every generating sequence (and one prefill chunk for those
        still reading their prompt). Returns the new token of each sequence that has one."""
        _progress, responses = self._generator.next()
        if self._fresh:
            fresh = lean_batch.fresh_tokens(self._generator)
            return {uid: token for uid, token in fresh.items() if uid in self._uids}
        return {r.uid: int(r.token) for r in responses}

    def finish(self, slot: Slot, *, keep_cache: bool) -> bool:
        """Take a sequence out of the batch; with ``keep_cache``, offer its KV cache to the
        prompt-cache pool (keyed by exactly the tokens it holds). True if it was kept."""
        if slot.uid not in self._uids:
            return False
        self._uids.discard(slot.uid)
        pool = self._loaded.prompt_cache
        keep = keep_cache and pool is not None and pool.enabled
        extracted = self._generator.remove([slot.uid], return_prompt_caches=keep)
        if not keep or slot.uid not in extracted:
            return False
        cache, tokens = extracted[slot.uid]
        assert pool is not None
        return pool.insert(list(tokens), cache, prompt_len=slot.prompt_len)

    def close(self) -> None:
        """Drop every sequence and the generator's buffers."""
        if self._uids:
            self._generator.remove(list(self._uids))
            self._uids.clear()
        self._generator.close()
