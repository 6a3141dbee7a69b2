"""Resident models: loading (with eviction), keep-alive expiry and unloading.

A part of the scheduler (mixed into ``Scheduler``), run only on its thread; kept apart so
that each file stays one readable page.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import BridgeError
from .backend import LoadedModel, MLXBackend
from .embed_job import EmbeddingJob
from .jobs import GenerationJob
from .loader import Loader
from .preflight import MemoryBudget, check_model_files
from .requests import Failed

if TYPE_CHECKING:
    from ..config import Settings
    from ..registry import LocalModel

_Job = GenerationJob | EmbeddingJob
log = logging.getLogger("mlx_ollama_bridge.engine.scheduler")  # one logger for the scheduler


@dataclass
class Resident:
    """A loaded model and its keep-alive state (monotonic clock)."""

    model: LocalModel
    name: str
    handle: LoadedModel
    keep_alive_s: float
    num_ctx: int
    active: int = 0
    expires_at: float = math.inf
    jobs: list[_Job] = field(default_factory=list)


class Residency:
    """Loaded-model bookkeeping for the scheduler thread."""

    _settings: Settings
    _backend: MLXBackend
    _loader: Loader
    _budget: MemoryBudget
    _clock: Callable[[], float]
    _lock: threading.Lock
    _resident: dict[str, Resident]

    def _ensure_loaded(
        self, model: LocalModel, keep_alive_s: float | None, num_ctx: int
    ) -> Resident | None:
        """Return the resident model, loading it (and evicting idle ones) if needed."""
        key = model_key(model)
        resident = self._resident.get(key)
        effective_ctx = self._effective_ctx(model, num_ctx)
        if resident is not None:
            resident.name = model.name.display
            resident.num_ctx = effective_ctx if not resident.active else resident.num_ctx
            if keep_alive_s is not None:
                resident.keep_alive_s = keep_alive_s
            return resident
        check_model_files(model)  # missing/truncated/changed files: a clear error, not a crash
        self._budget.check_alone(model.name.display, model.size)
        if not self._make_room(model.size):
            return None
        log.info("loading model=%s path=%s", model.name.display, model.path)
        handle = self._loader.load(model)
        keep = self._settings.keep_alive_s if keep_alive_s is None else keep_alive_s
        resident = Resident(model, model.name.display, handle, keep, effective_ctx)
        with self._lock:
            self._resident[key] = resident
        log.info("loaded model=%s bytes=%d ctx=%d", resident.name, handle.size_bytes, effective_ctx)
        return resident

    def _effective_ctx(self, model: LocalModel, num_ctx: int) -> int:
        """``num_ctx`` capped at the model's trained context length, as Ollama does."""
        requested = num_ctx or self._settings.context_length
        trained = model.context_length or requested
        return max(4, min(requested, trained))

    def _make_room(self, need_bytes: int) -> bool:
        """Evict idle models (soonest to expire first) until the count limit and the memory
        budget leave room; False if only busy models are in the way (the caller waits)."""
        limit = self._settings.max_loaded_models or 3

        def crowded() -> bool:
            used = sum(r.handle.size_bytes for r in self._resident.values())
            return len(self._resident) >= limit or not self._budget.fits(used, need_bytes)

        while self._resident and crowded():
            idle = [(r.expires_at, k) for k, r in self._resident.items() if not r.active]
            if not idle:
                return False
            self._unload(min(idle)[1], reason="evicted")
        return True

    def _start_idle_timer(self, resident: Resident) -> None:
        resident.expires_at = self._clock() + resident.keep_alive_s

    def _expire_idle(self) -> None:
        now = self._clock()
        for key, resident in list(self._resident.items()):
            if not resident.active and resident.expires_at <= now:
                self._unload(key, reason="expired")

    def _unload(self, key: str, *, reason: str) -> None:
        with self._lock:
            resident = self._resident.pop(key, None)
        if resident is None:
            return
        for job in resident.jobs:
            job.replies.put(Failed(BridgeError("model was unloaded")))
            job.close()
        self._backend.unload(resident.handle)
        log.info("unloaded model=%s reason=%s", resident.name, reason)


def model_key(model: LocalModel) -> str:
    return str(model.path)
