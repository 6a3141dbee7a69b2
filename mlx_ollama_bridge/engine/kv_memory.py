"""The one memory budget: weights, the KV caches of admitted requests, the prompt-cache pools.

Ollama sizes a runner for ``num_parallel`` sequences of ``num_ctx`` tokens and admits a model
only if weights and those KV caches fit. MLX allocates a KV cache as it fills (256 tokens at a
time), so nothing is reserved up front; instead every admitted generation reserves the KV
cache it may grow to (``num_ctx`` tokens, the most it can hold) and the reservation is
released when it ends. A request whose reservation would overflow the budget waits in the
queue; before that, the prompt-cache pools are trimmed (least recently used first), since
they only save work. The pools are therefore bounded twice: by their own byte limit and by
what the budget leaves after weights and running requests.

``auto_parallel`` picks the default number of sequences a model decodes together
(``OLLAMA_NUM_PARALLEL`` unset): the largest of 8, 4 or 1 whose KV caches fit beside the
weights, as Ollama once chose between 4 and 1.

How many bytes a token takes is measured by the backend (``prompt_cache.kv_bytes_per_token``);
this module is policy only and imports no MLX; the residency (``residency.Residency``) applies
it. Runs on the scheduler thread only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

PARALLEL_CHOICES = (8, 4, 1)  # tried largest first; 8 is where batching on a CPU still pays


def auto_parallel(limit_bytes: int, weights_bytes: int, per_sequence_bytes: int) -> int:
    """The default number of sequences decoding together: the largest of
    ``PARALLEL_CHOICES`` whose KV caches fit in the budget beside the weights."""
    room = limit_bytes - weights_bytes
    for n in PARALLEL_CHOICES:
        if n * per_sequence_bytes <= room:
            return n
    return 1


class KVLedger:
    """The KV caches reserved by admitted generations, in bytes, by job.

    Only jobs still running count (``live``): a job that left by any path stops counting even
    before ``release`` forgets it.
    """

    def __init__(self) -> None:
        self._reserved: dict[int, int] = {}

    def reserved(self, live: Iterable[Any]) -> int:
        """Bytes reserved by the ``live`` jobs."""
        return sum(self._reserved.get(id(job), 0) for job in live)

    def release(self, job: Any) -> None:
        """Forget ``job``'s reservation (no-op if it had none)."""
        self._reserved.pop(id(job), None)

    def admit(
        self, job: Any, need: int, *, limit: int, weights: int, handles: list[Any], live: list[Any]
    ) -> bool:
        """Reserve ``need`` bytes for ``job`` if weights, the live reservations, the pools and
        ``need`` fit in ``limit``, trimming the pools first if that makes it fit. False (no
        reservation) if it does not fit even with empty pools: the job waits."""
        reserved = self.reserved(live)
        if weights + reserved + need > limit:
            return False
        excess = weights + reserved + pools_bytes(handles) + need - limit
        if excess > 0:
            trim_pools(handles, excess)
        self._reserved[id(job)] = need
        return True


def fit_pools(limit: int, weights: int, reserved: int, handles: list[Any]) -> int:
    """Trim the pools until weights, reservations and pools fit in ``limit``; bytes freed."""
    excess = weights + reserved + pools_bytes(handles) - limit
    return trim_pools(handles, excess) if excess > 0 else 0


def pools_bytes(handles: Iterable[Any]) -> int:
    """Bytes held by the prompt-cache pools of these loaded models."""
    return sum(p.nbytes for p in _pools(handles))


def trim_pools(handles: Iterable[Any], excess: int) -> int:
    """Free at least ``excess`` bytes from the pools (largest pool first, least recently used
    entries first); returns the bytes freed."""
    freed = 0
    for pool in sorted(_pools(handles), key=lambda p: -p.nbytes):
        if freed >= excess:
            break
        before = pool.nbytes
        pool.trim_to_bytes(max(before - (excess - freed), 0))
        freed += before - pool.nbytes
    if freed:
        log.info("prompt caches trimmed to the memory budget freed=%d", freed)
    return freed


def _pools(handles: Iterable[Any]) -> list[Any]:
    return [h.prompt_cache for h in handles if h.prompt_cache is not None]
