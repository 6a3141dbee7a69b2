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
this module is policy only and imports no MLX. Runs on the scheduler thread only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..errors import ServerBusy

if TYPE_CHECKING:
    from ..config import Settings
    from .preflight import MemoryBudget
    from .residency import Resident

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
    return [p for h in handles if (p := getattr(h, "prompt_cache", None)) is not None]


class MemoryAdmission:
    """The scheduler's side of the budget (mixed into ``Scheduler`` before ``Residency``):
    parallel sequences, KV reservations at admission, pools trimmed to fit, and room for a
    new model's weights that counts the KV caches and pools too. Scheduler thread only."""

    _settings: Settings
    _backend: Any
    _budget: MemoryBudget
    _kv: KVLedger
    _resident: dict[str, Resident]

    def _unload(self, key: str, *, reason: str) -> None:
        """Release the KV reservations of the model's jobs, then unload it (``Residency``)."""
        resident = self._resident.get(key)
        for job in resident.jobs if resident is not None else []:
            self._kv.release(job)
        super()._unload(key, reason=reason)  # type: ignore[misc]

    def _parallel(self, resident: Resident) -> int:
        """Sequences the model decodes together: ``OLLAMA_NUM_PARALLEL``, or when it is 0
        the most the memory budget allows (``auto_parallel``)."""
        if self._settings.num_parallel:
            return self._settings.num_parallel
        handle = resident.handle
        if getattr(handle, "encoder", None) is not None:
            return 1
        per_sequence = self._kv_bytes_per_token(handle) * resident.num_ctx
        return auto_parallel(self._budget.limit_bytes, handle.size_bytes, per_sequence)

    def _kv_bytes_per_token(self, handle: Any) -> int:
        measure = getattr(self._backend, "kv_bytes_per_token", None)
        return measure(handle) if measure is not None else 0  # 0: a stand-in backend

    def _admit_kv(self, job: Any, resident: Resident) -> bool:
        """Reserve the KV cache ``job`` may grow to (``num_ctx`` tokens); False = wait.
        Raises ServerBusy when it cannot fit even with nothing else running."""
        per_token = self._kv_bytes_per_token(resident.handle)
        if not per_token:
            return True
        need = per_token * resident.num_ctx
        handles = [r.handle for r in self._resident.values()]
        weights = sum(h.size_bytes for h in handles)
        live = self._live_jobs()
        limit = self._budget.limit_bytes
        if self._kv.admit(job, need, limit=limit, weights=weights, handles=handles, live=live):
            return True
        if self._kv.reserved(live):
            return False  # running requests will give theirs back
        idle = [
            (r.expires_at, key)
            for key, r in self._resident.items()
            if not r.active and r is not resident
        ]
        if idle:  # idle models are all that can make room: the one expiring soonest goes
            self._unload(min(idle)[1], reason="evicted for a KV cache")
            return False
        raise ServerBusy(
            f"server busy: the KV cache of {resident.num_ctx} tokens ({need / 1e9:.2f} GB) "
            f"does not fit the memory budget ({limit / 1e9:.2f} GB) beside the model "
            f"({weights / 1e9:.2f} GB); lower num_ctx or raise MLX_BRIDGE_MEMORY_FRACTION"
        )

    def memory_stats(self) -> dict[str, int]:
        """The budget and what holds it, in bytes (a snapshot; safe from any thread)."""
        residents = list(self._resident.values())
        handles = [r.handle for r in residents]
        return {
            "memory_budget_bytes": self._budget.limit_bytes,
            "weights_bytes": sum(h.size_bytes for h in handles),
            "kv_reserved_bytes": self._kv.reserved(j for r in residents for j in list(r.jobs)),
            "prompt_cache_bytes": pools_bytes(handles),
        }

    def _live_jobs(self) -> list[Any]:
        return [job for r in self._resident.values() for job in r.jobs]

    def _fit_pools(self) -> None:
        """Trim the prompt-cache pools to what the budget leaves after the weights and the KV
        caches of running requests."""
        handles = [r.handle for r in self._resident.values()]
        weights = sum(h.size_bytes for h in handles)
        fit_pools(self._budget.limit_bytes, weights, self._kv.reserved(self._live_jobs()), handles)

    def _make_room(self, need_bytes: int) -> bool:
        """Room for a model's weights, counting the KV caches of running requests and the
        prompt-cache pools (trimmed first: they only save work)."""
        handles = [r.handle for r in self._resident.values()]
        weights = sum(h.size_bytes for h in handles)
        reserved = self._kv.reserved(self._live_jobs())
        fit_pools(self._budget.limit_bytes - need_bytes, weights, reserved, handles)
        return super()._make_room(need_bytes + reserved + pools_bytes(handles))  # type: ignore[misc]
