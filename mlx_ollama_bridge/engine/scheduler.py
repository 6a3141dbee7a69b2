"""The scheduler: one thread that owns MLX, loaded models, keep-alive and the request queue.

Semantics follow Ollama's ``server/sched.go``: models stay loaded while requests use them;
when the last request finishes, the model's keep-alive timer starts and the model is
unloaded when it expires; ``keep_alive`` on a request updates the model's (sticky) duration;
at most ``max_loaded_models`` within the memory budget (``preflight``) stay resident, idle ones
evicted soonest-to-expire first; the pending queue is bounded (503 when full). Embedding jobs
share the queue and the residents. HTTP threads talk to the thread through queues.

Up to ``num_parallel`` generations per model (by default chosen from memory, ``kv_memory``)
decode together in the model's batch lane (continuous batching: one forward pass per step for
all of them); every model with work gets
one step per loop, so a stream of one model never waits for another model's whole answer.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import BridgeError, RequestCanceled, ServerBusy
from .backend import MLXBackend
from .batching import BatchLane
from .embed_job import EmbeddingJob, EmbeddingRequest, EmbeddingResult
from .jobs import GenerationJob
from .kv_memory import KVLedger, MemoryAdmission
from .loader import Loader, LoadTicket
from .preflight import MemoryBudget
from .requests import Failed, Finished, GenerationRequest, Ready, RunningModel
from .residency import Residency, Resident, model_key

if TYPE_CHECKING:
    from ..config import Settings
    from ..registry import LocalModel

log = logging.getLogger(__name__)

_IDLE_WAKEUP_S = 1.0
_GONE_POLL_S = 0.25  # how often a queued request checks that its client is still there
_PREFILL_STEP = 512  # prompt tokens per batched prefill chunk; streams wait at most one chunk
_Job = GenerationJob | EmbeddingJob


@dataclass
class _Command:
    kind: str  # "generate" (embedding jobs too) | "load" | "unload" | "ping" | "stop"
    replies: queue.Queue[Any]
    model: LocalModel | None = None
    job: _Job | None = None
    keep_alive_s: float | None = None
    num_ctx: int = 0
    received: float = field(default_factory=time.perf_counter)


class Scheduler(MemoryAdmission, Residency):
    """Owns every MLX object. Public methods are safe to call from any thread."""

    def __init__(
        self,
        settings: Settings,
        backend: MLXBackend | None = None,
        clock: Callable[[], float] = time.monotonic,
        budget: MemoryBudget | None = None,
    ) -> None:
        self._settings = settings
        self._backend = backend or MLXBackend.from_settings(settings)
        self._loader = Loader(self._backend.load, settings.load_timeout_s)
        self._stats = {
            "prompt_tokens": 0,
            "prompt_tokens_reused": 0,
            "canceled": 0,
            "batched_tokens": 0,
            "batch_peak": 0,
            "draft_tokens": 0,  # proposed by draft models (speculative decoding)
            "draft_accepted": 0,  # of those, accepted by the model
        }
        self._clock = clock
        self._budget = budget or MemoryBudget.from_settings(settings)
        self._kv = KVLedger()  # KV caches of admitted generations, under the same budget
        self._inbox: queue.Queue[_Command] = queue.Queue()
        self._pending: deque[_Job] = deque()
        self._resident: dict[str, Resident] = {}
        self._lanes: dict[str, BatchLane] = {}  # per loaded model, created at first use
        self._loading: dict[str, LoadTicket] = {}
        self._load_waiters: list[_Command] = []  # explicit loads (empty prompts) in progress
        self._load_waits: dict[int, float] = {}  # id(job) -> when it began waiting for a load
        self._lock = threading.Lock()  # guards _resident for snapshots from HTTP threads
        self._waiting = 0  # requests submitted and not yet admitted
        self._thread: threading.Thread | None = None

    # -- public API (HTTP threads) -------------------------------------------------------

    def start(self) -> None:
        """Start the scheduler thread (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="mlx-scheduler", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread and unload everything."""
        if self._thread is not None and self._thread.is_alive():
            self._inbox.put(_Command("stop", queue.Queue()))
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        """True while the scheduler thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def submit(
        self, request: GenerationRequest, client_gone: Callable[[], bool] | None = None
    ) -> tuple[GenerationJob, Ready]:
        """Queue a generation; block until it is admitted. Raises BridgeError before any output.

        ``client_gone`` is polled while the request waits: a client that went away is
        dropped from the queue (RequestCanceled) instead of holding a slot later.
        """
        job = GenerationJob(request, queue.Queue())
        return job, self._enqueue(job, client_gone)

    def stats(self) -> dict[str, int]:
        """Counters since start: prompt tokens of admitted generations (``prompt_tokens``),
        how many of them came from the prompt cache (``prompt_tokens_reused``), the rest were
        evaluated; requests canceled by their client (``canceled``); tokens decoded in batch
        lanes (``batched_tokens``) and the most sequences one step decoded (``batch_peak``);
        tokens proposed by draft models (``draft_tokens``) and accepted (``draft_accepted``);
        and, as gauges, the memory budget and what holds it (``kv_memory``)."""
        with self._lock:
            return {**self._stats, **self.memory_stats()}

    def embed(self, request: EmbeddingRequest) -> tuple[EmbeddingResult, int]:
        """Embed ``request.inputs``; returns the result and the load duration in ns.

        Admitted like a generation (queue, keep_alive, loading, eviction); raises BridgeError.
        """
        job = EmbeddingJob(request, queue.Queue())
        ready = self._enqueue(job)
        return job.wait_for_result(self.is_alive), ready.load_duration_ns

    def _enqueue(self, job: _Job, client_gone: Callable[[], bool] | None = None) -> Ready:
        """Put a job in the pending queue; block until it is admitted (or refused)."""
        with self._lock:
            if self._waiting >= self._settings.max_queue:
                raise ServerBusy()
            self._waiting += 1
        self._inbox.put(_Command("generate", job.replies, model=job.request.model, job=job))
        while True:
            try:
                first = job.replies.get(timeout=_GONE_POLL_S if client_gone else None)
                break
            except queue.Empty:
                if client_gone is not None and client_gone():
                    # the scheduler drops it from the queue, or retires it if just admitted
                    job.request.cancel.set()
                    raise RequestCanceled() from None
        if isinstance(first, BaseException):
            raise first
        return first

    def load(self, model: LocalModel, keep_alive_s: float | None, num_ctx: int) -> int:
        """Load (or keep) a model without generating; returns the load duration in ns."""
        return self._call("load", model, keep_alive_s, num_ctx)

    def unload(self, model: LocalModel) -> None:
        """Unload now if idle, else as soon as its last request finishes. Never loads."""
        self._call("unload", model, 0, 0)

    def running(self) -> list[RunningModel]:
        """Snapshot of loaded models for ``/api/ps``."""
        now_mono, now_wall = self._clock(), time.time()
        with self._lock:
            residents = list(self._resident.values())
        out = []
        for r in residents:
            remaining = r.keep_alive_s if r.active else r.expires_at - now_mono
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

    def ping(self, timeout: float) -> float | None:
        """Seconds for a no-op to go through the scheduler thread's inbox and back: how soon
        it would notice a new request (long between steps during a big prefill chunk).
        None if it did not answer within ``timeout``."""
        if not self.is_alive():
            return None
        replies: queue.Queue[Any] = queue.Queue()
        started = time.perf_counter()
        self._inbox.put(_Command("ping", replies))
        try:
            replies.get(timeout=timeout)
        except queue.Empty:
            return None
        return time.perf_counter() - started

    def queue_depth(self) -> int:
        """Requests submitted and not yet admitted (waiting for a model or a slot)."""
        with self._lock:
            return self._waiting

    def _call(self, kind: str, model: LocalModel, keep_alive_s: float | None, num_ctx: int) -> Any:
        replies: queue.Queue[Any] = queue.Queue()
        self._inbox.put(_Command(kind, replies, model, keep_alive_s=keep_alive_s, num_ctx=num_ctx))
        result = replies.get()
        if isinstance(result, BaseException):
            raise result
        return result

    # -- the scheduler thread ------------------------------------------------------------

    def _run(self) -> None:
        log.info("scheduler started")
        while True:
            if not self._drain_inbox():
                break
            self._admit_pending()
            self._step_jobs()
            self._expire_idle()
        for key in list(self._resident):
            self._unload(key, reason="shutdown")
        log.info("scheduler stopped")

    def _drain_inbox(self) -> bool:
        """Handle queued commands; block only when there is nothing to step."""
        busy = any(r.jobs for r in self._resident.values())
        timeout = 0.0 if busy else self._idle_timeout()
        try:
            command = self._inbox.get(timeout=timeout) if timeout > 0 else self._inbox.get_nowait()
        except queue.Empty:
            return True
        while True:
            if command.kind == "stop":
                self._fail_everything()
                return False
            self._handle(command)
            try:
                command = self._inbox.get_nowait()
            except queue.Empty:
                return True

    def _idle_timeout(self) -> float:
        if self._loading or self._load_waiters:
            return 0.02  # poll the load
        if self._pending:
            return 0.05
        deadlines = [r.expires_at for r in self._resident.values() if not r.active]
        finite = [d for d in deadlines if math.isfinite(d)]
        if not finite:
            return _IDLE_WAKEUP_S
        return min(max(min(finite) - self._clock(), 0.001), _IDLE_WAKEUP_S)

    def _handle(self, command: _Command) -> None:
        if command.kind == "generate":
            assert command.job is not None
            self._pending.append(command.job)
        elif command.kind == "load":
            self._load_waiters.append(command)
        elif command.kind == "ping":
            command.replies.put(None)
        elif command.kind == "unload":
            self._reply(command, lambda: self._request_unload(command.model))

    @staticmethod
    def _reply(command: _Command, action: Callable[[], Any]) -> None:
        try:
            command.replies.put(action())
        except BridgeError as exc:
            command.replies.put(exc)
        except Exception as exc:  # never let one request kill the scheduler thread
            log.exception("scheduler command %s failed", command.kind)
            command.replies.put(BridgeError(f"internal error: {exc}"))

    def _serve_load_waiters(self) -> None:
        """Answer explicit loads whose model is resident now (with the time it took)."""
        waiting = []
        for command in self._load_waiters:
            assert command.model is not None
            try:
                resident = self._ensure_loaded(command.model, command.keep_alive_s, command.num_ctx)
            except BridgeError as exc:
                command.replies.put(exc)
                continue
            except Exception as exc:  # never let one request kill the scheduler thread
                log.exception("explicit load failed")
                command.replies.put(BridgeError(f"internal error: {exc}"))
                continue
            if resident is None:
                waiting.append(command)
                continue
            if not resident.active:
                self._start_idle_timer(resident)
            command.replies.put(int((time.perf_counter() - command.received) * 1e9))
        self._load_waiters = waiting

    def _request_unload(self, model: LocalModel | None) -> None:
        assert model is not None
        key = model_key(model)
        resident = self._resident.get(key)
        if resident is None:
            return
        resident.keep_alive_s = 0.0
        if not resident.active:
            self._unload(key, reason="keep_alive=0")

    # -- admission ---------------------------------------------------------------------------

    def _admit_pending(self) -> None:
        if self._load_waiters:
            self._serve_load_waiters()
        still_waiting: deque[_Job] = deque()
        while self._pending:
            job = self._pending.popleft()
            if job.request.cancel.is_set():
                log.info(
                    "queued request dropped: client gone model=%s", job.request.model.name.display
                )
                self._count("canceled")
                self._release_waiting()
                self._load_waits.pop(id(job), None)
                continue
            if not self._try_admit(job):
                still_waiting.append(job)
        self._pending = still_waiting

    def _try_admit(self, job: _Job) -> bool:
        request = job.request
        resident = self._resident.get(model_key(request.model))
        if resident is not None and len(resident.jobs) >= self._parallel(resident):
            return False
        started = time.perf_counter()
        try:
            resident = self._ensure_loaded(
                request.model, request.keep_alive_s, request.options.num_ctx
            )
            if resident is None:
                if self._is_loading(request.model):
                    self._load_waits.setdefault(id(job), started)
                return False
            if isinstance(job, GenerationJob) and not self._admit_kv(job, resident):
                return False  # waits for running requests to give their KV caches back
            # Ollama's load_duration: getting the model ready for this request, which is the
            # whole wait when it had to load, and the (small) bookkeeping when it was resident
            started = self._load_waits.pop(id(job), started)
            load_ns = int((time.perf_counter() - started) * 1e9)
            if isinstance(job, GenerationJob):
                lane = self._lane(model_key(request.model), resident)
                job.start(self._backend, resident.handle, resident.num_ctx, lane)
            else:
                job.start(self._backend, resident.handle, resident.num_ctx)
        except BridgeError as exc:
            self._release_waiting()
            self._load_waits.pop(id(job), None)
            job.replies.put(exc)
            return True
        except Exception as exc:
            log.exception("failed to start a generation")
            self._release_waiting()
            self._load_waits.pop(id(job), None)
            job.replies.put(BridgeError(f"internal error: {exc}"))
            return True
        self._release_waiting()
        if isinstance(job, GenerationJob):
            self._count("prompt_tokens", len(job.prompt_tokens))
            self._count("prompt_tokens_reused", job.reused_tokens)
        resident.active += 1
        resident.jobs.append(job)
        resident.expires_at = math.inf
        if request.keep_alive_s is not None:
            resident.keep_alive_s = request.keep_alive_s
        job.replies.put(Ready(load_duration_ns=load_ns))
        return True

    def _release_waiting(self) -> None:
        with self._lock:
            self._waiting -= 1

    def _count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._stats[name] += amount

    # -- stepping ----------------------------------------------------------------------------

    def _lane(self, key: str, resident: Resident) -> BatchLane | None:
        """The model's batch lane (None for embedding-only models)."""
        if resident.handle.encoder is not None:
            return None
        lane = self._lanes.get(key)
        if lane is None:
            lane = BatchLane(resident.handle, self._parallel(resident), _PREFILL_STEP)
            self._lanes[key] = lane
        return lane

    def _step_jobs(self) -> None:
        for key, resident in list(self._resident.items()):
            for job in list(resident.jobs):
                if job.request.cancel.is_set():
                    log.info("request canceled model=%s", resident.name)
                    self._count("canceled")
                    self._retire(key, resident, job)
            self._step_lane(key, resident)
            for job in list(resident.jobs):
                if not (isinstance(job, GenerationJob) and job.slot is not None):
                    self._step_one(key, resident, job, job.step)

    def _step_lane(self, key: str, resident: Resident) -> None:
        """One batched step for the model's lane; each member takes its token."""
        lane = self._lanes.get(key)
        if lane is None or not len(lane):
            return
        members = [j for j in resident.jobs if isinstance(j, GenerationJob) and j.slot]
        try:
            tokens = lane.step()
        except Exception as exc:  # the batch's state is unknown now: end its members
            log.exception("batched generation failed model=%s", resident.name)
            for job in members:
                job.replies.put(Failed(BridgeError(f"generation failed: {exc}")))
                self._retire(key, resident, job)
            self._drop_lane(key)
            return
        if tokens:
            self._count("batched_tokens", len(tokens))
            with self._lock:
                self._stats["batch_peak"] = max(self._stats["batch_peak"], len(tokens))
        for job in members:
            slot = job.slot
            if slot is not None and slot.uid in tokens:
                token = tokens[slot.uid]
                self._step_one(key, resident, job, lambda j=job, t=token: j.accept(t))

    def _drop_lane(self, key: str) -> None:
        lane = self._lanes.pop(key, None)
        if lane is not None:
            lane.close()

    def _unload(self, key: str, *, reason: str) -> None:
        self._drop_lane(key)  # the lane holds the model: drop it first
        super()._unload(key, reason=reason)

    def _step_one(
        self, key: str, resident: Resident, job: _Job, advance: Callable[[], list[Any]]
    ) -> None:
        try:
            events = advance()
        except BridgeError as exc:
            job.replies.put(Failed(exc))
            self._retire(key, resident, job)
            return
        except Exception as exc:
            log.exception("generation failed model=%s", resident.name)
            job.replies.put(Failed(BridgeError(f"generation failed: {exc}")))
            self._retire(key, resident, job)
            return
        for event in events:
            job.replies.put(event)
        if events and isinstance(events[-1], (Finished, EmbeddingResult)):
            self._retire(key, resident, job)

    def _retire(self, key: str, resident: Resident, job: _Job) -> None:
        job.close()
        self._kv.release(job)
        for name, amount in getattr(self._backend, "take_counts", dict)().items():
            self._count(name, amount)  # speculative decoding's tallies of finished generations
        resident.jobs.remove(job)
        resident.active -= 1
        self._fit_pools()  # the finished sequence's cache may have joined a pool
        if resident.active == 0:
            if resident.keep_alive_s <= 0:
                self._unload(key, reason="keep_alive=0")
            else:
                self._start_idle_timer(resident)

    def _fail_everything(self) -> None:
        for job in self._pending:
            job.replies.put(BridgeError("server is shutting down"))
        self._pending.clear()
        for command in self._load_waiters:
            command.replies.put(BridgeError("server is shutting down"))
        self._load_waiters.clear()
        self._load_waits.clear()
        for resident in self._resident.values():
            for job in resident.jobs:
                job.replies.put(Failed(BridgeError("server is shutting down")))
                job.close()
            resident.jobs.clear()
            resident.active = 0
