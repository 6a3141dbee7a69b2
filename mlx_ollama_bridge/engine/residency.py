"""The resident set: loaded models, keep-alive expiry, loading (with eviction) and unloading.

A ``Residency`` owns the loaded models, the ``Loader``, the memory budget (``preflight``) and
the clock; the scheduler owns one and calls it on its own thread (``snapshot`` is safe from
any thread). Policies as Ollama's ``server/sched.go``: a model stays loaded while requests
use it; when its last request finishes its keep-alive timer starts; ``keep_alive`` on a
request sets the model's duration for later (sticky); at most ``max_loaded_models`` within
the budget stay resident, and to make room idle models are evicted shortest keep-alive first
(``sched.go``'s ``ByDurationAndName``), the one idle longest first among equals; busy ones
are never evicted (the request waits).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import BridgeError, ServerBusy
from .interface import Backend, Job
from .kv_memory import KVLedger, auto_parallel, fit_pools, pools_bytes
from .loader import Loader, LoadTicket
from .preflight import MemoryBudget, check_model_files
from .requests import Failed, RunningModel

if TYPE_CHECKING:
    from ..config import Settings
    from ..registry import LocalModel

log = logging.getLogger("mlx_ollama_bridge.engine.scheduler")  # one logger for the scheduler


@dataclass
class Resident:
    """A loaded model and its keep-alive state (on the residency's clock)."""

    model: LocalModel
    name: str
    handle: Any  # the backend's handle (``interface.ModelHandle``)
    keep_alive_s: float
    num_ctx: int
    active: int = 0
    expires_at: float = math.inf
    jobs: list[Job] = field(default_factory=list)
    load_duration_ns: int = 0  # how long its load took


class Residency:
    """Which models are loaded, for how long, and loading the next one."""

    def __init__(
        self,
        settings: Settings,
        backend: Backend,
        *,
        clock: Callable[[], float],
        budget: MemoryBudget,
        on_load_done: Callable[[], None] | None = None,
    ) -> None:
        self._settings = settings
        self._backend = backend
        self._loader = Loader(backend.load, settings.load_timeout_s, on_done=on_load_done)
        self._budget = budget
        self._kv = KVLedger()  # KV caches of admitted generations, under the same budget
        self.clock = clock
        self._lock = threading.Lock()  # guards _resident for snapshots from HTTP threads
        self._resident: dict[str, Resident] = {}
        # at most one entry: loads run one at a time
        self._loading: dict[str, tuple[LoadTicket, LocalModel]] = {}
        self._memory: dict[str, int] = {}  # the last ``publish_memory`` (HTTP threads read it)
        self.publish_memory()

    # -- reading (``snapshot`` from any thread; the rest on the scheduler thread) ----------

    def snapshot(self) -> list[Resident]:
        """The resident models now."""
        with self._lock:
            return list(self._resident.values())

    def running(self) -> list[RunningModel]:
        """The resident models as ``/api/ps`` shows them (expiry in wall-clock seconds)."""
        now, now_wall = self.clock(), time.time()
        out = []
        for r in self.snapshot():
            remaining = r.keep_alive_s if r.active else r.expires_at - now
            out.append(
                RunningModel(
                    model=r.model,
                    name=r.name,
                    size_bytes=r.handle.size_bytes,
                    size_vram_bytes=r.handle.size_bytes if r.handle.on_gpu else 0,
                    expires_at=now_wall + remaining if math.isfinite(remaining) else math.inf,
                    context_length=r.num_ctx,
                    active_requests=r.active,
                )
            )
        return out

    def get(self, model: LocalModel) -> Resident | None:
        """``model``'s resident entry, if it is loaded."""
        return self._resident.get(model_key(model))

    def items(self) -> list[tuple[str, Resident]]:
        """(key, resident) pairs, a copy (stepping may unload)."""
        return list(self._resident.items())

    def busy(self) -> bool:
        """True if some resident model has jobs to step."""
        return any(r.jobs for r in self._resident.values())

    def loading(self) -> bool:
        """True while a load runs."""
        return bool(self._loading)

    def load_deadline(self) -> float:
        """Seconds until the running load's deadline (``math.inf``: none, or no deadline)."""
        now = time.monotonic()  # tickets' deadlines are real time, whatever the clock
        return min((t.deadline - now for t, _ in self._loading.values()), default=math.inf)

    def is_loading(self, model: LocalModel) -> bool:
        """True while ``model``'s load runs."""
        return model_key(model) in self._loading

    def next_expiry(self) -> float:
        """Seconds on the clock until the next idle model expires (``math.inf``: none)."""
        deadlines = [r.expires_at for r in self._resident.values() if not r.active]
        finite = [d for d in deadlines if math.isfinite(d)]
        return min(finite) - self.clock() if finite else math.inf

    # -- loading -----------------------------------------------------------------------------

    def ensure_loaded(
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
        loading = self._loading.get(key)
        if loading is None:
            if self._loading:  # another model is loading: wait for it
                return None
            check_model_files(model)  # missing/truncated/changed files: a clear error
            need = footprint(model)
            self._budget.check_alone(model.name.display, need)
            if not self._make_room(need):
                return None
            log.info("loading model=%s path=%s", model.name.display, model.path)
            self._loading[key] = (self._loader.start(model, self._preparer(model)), model)
            return None
        if not loading[0].ready():
            return None
        return self._finish_load(key, keep_alive_s, effective_ctx)

    def adopt_finished_loads(self) -> None:
        """Make a finished load resident though no request asked for it since (its client
        left while it loaded): it stays for the default keep-alive, like any idle model,
        and the next load can start. Call after every request had its chance to take it."""
        for key, (ticket, model) in list(self._loading.items()):
            if not ticket.ready():
                continue
            try:
                resident = self._finish_load(key, None, self._effective_ctx(model, 0))
            except BridgeError:  # the loader logged it and remembers the model as bad
                continue
            self.start_idle_timer(resident)

    def _finish_load(self, key: str, keep_alive_s: float | None, num_ctx: int) -> Resident:
        """The resident made of a finished load; raises its ModelLoadError."""
        ticket, model = self._loading.pop(key)
        handle = self._loader.finish(ticket)  # raises ModelLoadError
        keep = self._settings.keep_alive_s if keep_alive_s is None else keep_alive_s
        resident = Resident(model, model.name.display, handle, keep, num_ctx)
        resident.load_duration_ns = ticket.duration_ns
        with self._lock:
            self._resident[key] = resident
        log.info("loaded model=%s bytes=%d ctx=%d", resident.name, handle.size_bytes, num_ctx)
        return resident

    def _preparer(self, model: LocalModel) -> Callable[[Any], None]:
        """The backend's finishing step for ``model`` (its draft, KV type, prompt caches)."""
        draft = model.draft.path if model.draft is not None else None
        prepare = self._backend.prepare
        return lambda handle: prepare(handle, digest=model.digest, draft_path=draft)

    def _effective_ctx(self, model: LocalModel, num_ctx: int) -> int:
        """``num_ctx`` capped at the model's trained context length, as Ollama does."""
        requested = num_ctx or self._settings.context_length
        trained = model.context_length or requested
        return max(4, min(requested, trained))

    def _make_room(self, weights_bytes: int) -> bool:
        """Evict idle models until the count limit and the memory budget leave room for a
        model's weights, counting the KV caches of running requests and the prompt-cache
        pools (trimmed first: they only save work); False if only busy models are in the way
        (the caller waits)."""
        limit = self._settings.max_loaded_models or 3
        handles = [r.handle for r in self._resident.values()]
        reserved = self._kv.reserved(self._live_jobs())
        fit_pools(self._budget.limit_bytes - weights_bytes, self._weights(), reserved, handles)
        need_bytes = weights_bytes + reserved + pools_bytes(handles)

        def crowded() -> bool:
            return len(self._resident) >= limit or not self._budget.fits(
                self._weights(), need_bytes
            )

        while self._resident and crowded():
            idle = self._idle_keys()
            if not idle:
                return False
            self.unload(idle[0], reason="evicted")
        return True

    def _idle_keys(self, *, besides: Resident | None = None) -> list[str]:
        """Idle models in eviction order: shortest keep-alive first (``sched.go``), then the
        one idle longest."""
        idle = [
            (r.keep_alive_s, r.expires_at, k)
            for k, r in self._resident.items()
            if not r.active and r is not besides
        ]
        return [k for _, _, k in sorted(idle)]

    def _weights(self) -> int:
        return sum(r.handle.size_bytes for r in self._resident.values())

    # -- the budget: sequences, KV reservations, prompt-cache pools (``kv_memory``) -----------

    def admit_kv(self, job: Job, resident: Resident) -> bool:
        """Reserve the KV cache ``job`` may grow to (``num_ctx`` tokens); False = wait (an
        idle model may have been evicted to make room). ServerBusy when it cannot fit even
        with nothing else running."""
        per_token = self._backend.kv_bytes_per_token(resident.handle)
        if not per_token:
            return True
        need = per_token * resident.num_ctx
        handles = [r.handle for r in self._resident.values()]
        weights, live, limit = self._weights(), self._live_jobs(), self._budget.limit_bytes
        if self._kv.admit(job, need, limit=limit, weights=weights, handles=handles, live=live):
            return True
        if self._kv.reserved(live):
            return False  # running requests will give theirs back
        idle = self._idle_keys(besides=resident)
        if idle:  # idle models are all that can make room
            self.unload(idle[0], reason="evicted for a KV cache")
            return False
        raise ServerBusy(
            f"server busy: the KV cache of {resident.num_ctx} tokens ({need / 1e9:.2f} GB) "
            f"does not fit the memory budget ({limit / 1e9:.2f} GB) beside the model "
            f"({weights / 1e9:.2f} GB); lower num_ctx or raise MLX_BRIDGE_MEMORY_FRACTION"
        )

    def forget_kv(self, job: Job) -> None:
        """Drop the reservation of a job that was refused after ``admit_kv``."""
        self._kv.release(job)

    def memory_stats(self) -> dict[str, int]:
        """The budget and what holds it, in bytes, as of the last ``publish_memory`` (safe
        from any thread)."""
        with self._lock:
            return dict(self._memory)

    def publish_memory(self) -> None:
        """Take the memory figures at a quiet point of the scheduler thread. Read at any other
        moment they could count one cache twice: a finished job's KV cache joins its model's
        prompt-cache pool a moment before the job's reservation is released."""
        handles = [r.handle for r in self._resident.values()]
        memory = {
            "memory_budget_bytes": self._budget.limit_bytes,
            "weights_bytes": sum(h.size_bytes for h in handles),
            "kv_reserved_bytes": self._kv.reserved(self._live_jobs()),
            "prompt_cache_bytes": pools_bytes(handles),
        }
        with self._lock:
            self._memory = memory

    def _live_jobs(self) -> list[Job]:
        return [job for r in self._resident.values() for job in r.jobs]

    def _fit_pools(self) -> None:
        """Trim the prompt-cache pools to what the budget leaves after the weights and the KV
        caches of running requests."""
        handles = [r.handle for r in self._resident.values()]
        reserved = self._kv.reserved(self._live_jobs())
        fit_pools(self._budget.limit_bytes, self._weights(), reserved, handles)

    def parallel(self, resident: Resident) -> int:
        """Sequences the model decodes together: ``OLLAMA_NUM_PARALLEL``, or 0 = chosen from
        the memory budget (``kv_memory.auto_parallel``); 1 for a model without a KV cache."""
        if self._settings.num_parallel:
            return self._settings.num_parallel
        per_token = self._backend.kv_bytes_per_token(resident.handle)
        if not per_token:
            return 1
        size = resident.handle.size_bytes
        return auto_parallel(self._budget.limit_bytes, size, per_token * resident.num_ctx)

    # -- jobs and keep-alive -----------------------------------------------------------------

    def admit(self, resident: Resident, job: Job, keep_alive_s: float | None) -> None:
        """``job`` runs on ``resident`` now: no expiry while it does; its keep_alive sticks."""
        resident.active += 1
        resident.jobs.append(job)
        resident.expires_at = math.inf
        if keep_alive_s is not None:
            resident.keep_alive_s = keep_alive_s

    def release(self, key: str, resident: Resident, job: Job) -> None:
        """``job`` left ``resident``: its KV reservation goes back (the pools are trimmed to
        the budget, its cache may have joined one); after the last job, unload (keep_alive 0)
        or start the keep-alive timer."""
        self._kv.release(job)
        resident.jobs.remove(job)
        resident.active -= 1
        self._fit_pools()
        if resident.active == 0:
            if resident.keep_alive_s <= 0:
                self.unload(key, reason="keep_alive=0")
            else:
                self.start_idle_timer(resident)

    def start_idle_timer(self, resident: Resident) -> None:
        """Expire ``resident`` after its keep-alive from now."""
        resident.expires_at = self.clock() + resident.keep_alive_s

    def expire_idle(self) -> None:
        """Unload every idle model whose keep-alive has passed."""
        now = self.clock()
        for key, resident in list(self._resident.items()):
            if not resident.active and resident.expires_at <= now:
                self.unload(key, reason="expired")

    def request_unload(self, model: LocalModel) -> None:
        """``keep_alive: 0`` without a prompt: unload now if idle, else after its last job."""
        key = model_key(model)
        resident = self._resident.get(key)
        if resident is None:
            return
        resident.keep_alive_s = 0.0
        if not resident.active:
            self.unload(key, reason="keep_alive=0")

    def unload(self, key: str, *, reason: str) -> None:
        """Unload the model at ``key``; its jobs (if any) fail."""
        with self._lock:
            resident = self._resident.pop(key, None)
        if resident is None:
            return
        for job in resident.jobs:
            self._kv.release(job)
            job.replies.put(Failed(BridgeError("model was unloaded")))
            job.close()
        self._backend.unload(resident.handle)
        log.info("unloaded model=%s reason=%s", resident.name, reason)

    def unload_all(self, reason: str) -> None:
        """Unload every model (shutdown)."""
        for key in list(self._resident):
            self.unload(key, reason=reason)


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
