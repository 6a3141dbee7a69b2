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
from .backend import MLXBackend
from .embed_job import EmbeddingJob
from .jobs import GenerationJob
from .loader import Loader, LoadTicket
from .mlx_models import LoadedModel
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
    load_duration_ns: int = 0  # how long its load took


class Residency:
    """Loaded-model bookkeeping for the scheduler thread."""

    _settings: Settings
    _backend: MLXBackend
    _loader: Loader
    _budget: MemoryBudget
    _clock: Callable[[], float]
    _lock: threading.Lock
    _resident: dict[str, Resident]
    _loading: dict[str, LoadTicket]  # at most one entry: loads run one at a time

    def _ensure_loaded(
        self, model: LocalModel, keep_alive_s: float | None, num_ctx: int
    ) -> Resident | None:
        """The resident model, or None while it loads or waits for room (ask again after the
        next step). Raises BridgeError when it cannot be loaded.

        Loading runs on a helper thread, one model at a time (so the memory budget sees
        every model it admits); meanwhile the scheduler keeps stepping the others.
        """
        key = model_key(model)
        resident = self._resident.get(key)
        effective_ctx = self._effective_ctx(model, num_ctx)
        if resident is not None:
            resident.name = model.name.display
            resident.num_ctx = effective_ctx if not resident.active else resident.num_ctx
            if keep_alive_s is not None:
                resident.keep_alive_s = keep_alive_s
            return resident
        ticket = self._loading.get(key)
        if ticket is None:
            if self._loading:  # another model is loading: wait for it
                return None
            check_model_files(model)  # missing/truncated/changed files: a clear error
            need = footprint(model)
            self._budget.check_alone(model.name.display, need)
            if not self._make_room(need):
                return None
            log.info("loading model=%s path=%s", model.name.display, model.path)
            self._loading[key] = self._loader.start(model, self._preparer(model))
            return None
        if not ticket.ready():
            return None
        del self._loading[key]
        handle = self._loader.finish(ticket)  # raises ModelLoadError
        keep = self._settings.keep_alive_s if keep_alive_s is None else keep_alive_s
        resident = Resident(model, model.name.display, handle, keep, effective_ctx)
        resident.load_duration_ns = ticket.duration_ns
        with self._lock:
            self._resident[key] = resident
        log.info("loaded model=%s bytes=%d ctx=%d", resident.name, handle.size_bytes, effective_ctx)
        return resident

    def _is_loading(self, model: LocalModel) -> bool:
        """True while ``model``'s load runs."""
        return model_key(model) in self._loading

    def _preparer(self, model: LocalModel) -> Callable[[LoadedModel], None] | None:
        """The backend's finishing step for ``model`` (its draft, KV type, prompt caches)."""
        prepare = getattr(self._backend, "prepare", None)
        if prepare is None:  # a stand-in backend in tests
            return None
        draft = model.draft.path if model.draft is not None else None
        return lambda handle: prepare(handle, digest=model.digest, draft_path=draft)

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
    """One resident per model directory, and per draft: a name whose alias adds a draft is
    loaded apart from the same weights without one."""
    if model.draft is None:
        return str(model.path)
    return f"{model.path}+draft:{model.draft.path}"


def footprint(model: LocalModel) -> int:
    """Bytes ``model`` needs loaded: its files, plus its draft's unless it drafts for itself."""
    draft = model.draft
    if draft is None or draft.path == model.path:
        return model.size
    return model.size + draft.size
