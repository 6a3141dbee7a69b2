"""The scheduler: one thread that owns the backend (MLX), the request queue and admission.

Semantics follow Ollama's ``server/sched.go``. Which models are loaded, their keep-alive and
eviction are the ``residency.Residency`` it owns; the model work is a ``interface.Backend``
(``backend.MLXBackend`` in the server). The pending queue is bounded (503 when full).
Embedding jobs share the queue and the residents. HTTP threads talk to the thread through
queues.

Up to ``num_parallel`` generations per model (by default chosen from memory, ``kv_memory``)
decode together (the backend batches them: one forward pass per step for all of them); every
model with work gets one step per loop, so a stream of one model never waits for another's.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import BridgeError, RequestCanceled, ServerBusy, client_error
from .arrivals import Arrival
from .counters import Counters
from .embed_job import EmbeddingJob, EmbeddingRequest, EmbeddingResult
from .inbox import NO_REPLIES, Command, Inbox
from .interface import Backend, Job, Stepped, StepResult
from .jobs import GenerationJob
from .preflight import MemoryBudget
from .requests import Failed, Finished, GenerationRequest, Ready, RunningModel
from .residency import Residency, Resident

if TYPE_CHECKING:
    from ..config import Settings
    from ..registry import LocalModel

log = logging.getLogger(__name__)

_IDLE_WAKEUP_S = 1.0  # nothing to step: wake at least this often (keep-alive, deadlines)


class Scheduler:
    """Owns the backend and every model it loaded. Public methods are safe to call from any
    thread; ``clock`` (monotonic seconds) times keep-alive, a fake one in tests."""

    def __init__(
        self,
        settings: Settings,
        backend: Backend,
        clock: Callable[[], float] = time.monotonic,
        budget: MemoryBudget | None = None,
    ) -> None:
        self._settings = settings
        self._backend = backend
        budget = budget or MemoryBudget.from_settings(settings)
        # a finished load wakes the thread (no polling while a model loads)
        self._models = Residency(
            settings, backend, clock=clock, budget=budget, on_load_done=self.wake
        )
        self._counters = Counters()  # see stats()
        self._inbox = Inbox()
        self._pending: deque[Job] = deque()
        self._load_waiters: list[Command] = []  # explicit loads (empty prompts) in progress
        self._load_waits: dict[int, float] = {}  # id(job) -> when it began waiting for a load
        self._lock = threading.Lock()  # guards _waiting (HTTP threads read it)
        self._waiting = 0  # requests submitted and not yet admitted
        self.arrivals = self._inbox.arrivals  # requests begun on the HTTP side, not yet put
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
            self._inbox.put(Command("stop", queue.Queue()))
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        """True while the scheduler thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def submit(
        self, request: GenerationRequest, arrival: Arrival | None = None
    ) -> tuple[GenerationJob, Ready]:
        """Queue a generation; block until it is admitted. Raises BridgeError before any output.
        ``arrival`` (from ``arrivals.begin``) is closed once the job is queued.

        A request whose ``cancel`` is set while it waits (its client went away; call ``wake``
        after setting it) leaves the queue with RequestCanceled instead of holding a slot.
        """
        job = GenerationJob(request, queue.Queue())
        return job, self._enqueue(job, arrival)

    def wake(self) -> None:
        """Have the thread look at its queue now (a queued request was canceled)."""
        self._inbox.put(Command("wake", NO_REPLIES))

    def stats(self) -> dict[str, int]:
        """Counters since start: prompt tokens of admitted generations (``prompt_tokens``),
        how many of them came from the prompt cache (``prompt_tokens_reused``), the rest were
        evaluated; requests canceled by their client (``canceled``); tokens decoded in batch
        lanes (``batched_tokens``) and the most sequences one step decoded (``batch_peak``);
        tokens proposed by draft models (``draft_tokens``) and accepted (``draft_accepted``);
        and, as gauges, the memory budget and what holds it (``kv_memory``)."""
        return {**self._counters.snapshot(), **self._models.memory_stats()}

    def embed(self, request: EmbeddingRequest) -> tuple[EmbeddingResult, int]:
        """Embed ``request.inputs``; returns the result and the load duration in ns.

        Admitted like a generation (queue, keep_alive, loading, eviction); raises BridgeError.
        """
        job = EmbeddingJob(request, queue.Queue())
        ready = self._enqueue(job)
        return job.wait_for_result(self.is_alive), ready.load_duration_ns

    def _enqueue(self, job: Job, arrival: Arrival | None = None) -> Ready:
        """Put a job in the pending queue; block until it is admitted (or refused)."""
        try:
            with self._lock:
                if self._waiting >= self._settings.max_queue:
                    raise ServerBusy()
                self._waiting += 1
            self._inbox.put(Command("generate", job.replies, model=job.request.model, job=job))
        finally:  # after the put (a gathering scheduler finds it in the inbox), or refused
            if arrival is not None:
                arrival.close()
        first = job.replies.get()  # Ready, or the error (RequestCanceled if it left the queue)
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
        return self._models.running()

    def ping(self, timeout: float) -> float | None:
        """Seconds for a no-op to go through the scheduler thread's inbox and back: how soon
        it would notice a new request (long between steps during a big prefill chunk).
        None if it did not answer within ``timeout``."""
        if not self.is_alive():
            return None
        replies: queue.Queue[Any] = queue.Queue()
        started = time.perf_counter()
        self._inbox.put(Command("ping", replies))
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
        self._inbox.put(Command(kind, replies, model, keep_alive_s=keep_alive_s, num_ctx=num_ctx))
        result = replies.get()
        if isinstance(result, BaseException):
            raise result
        return result

    # -- the scheduler thread ------------------------------------------------------------

    def _run(self) -> None:
        log.info("scheduler started")
        while True:
            timeout = 0.0 if self._models.busy() else self._idle_timeout()
            if not self._inbox.take(self._handle, timeout):
                break
            if not self._gather():
                break
            self._admit_pending()
            self._models.publish_memory()  # at the quiet points: see Residency.publish_memory
            endings = self._step_jobs()
            self._models.expire_idle()
            self._models.publish_memory()
            for job, events in endings:  # after the figures: the reservation is given back
                for event in events:
                    job.replies.put(event)
        self._fail_everything()  # "stop": whatever still waits is told
        self._models.unload_all("shutdown")
        log.info("scheduler stopped")

    def _gather(self) -> bool:
        """Idle, about to start requests: take in those on their way first. False on "stop"."""
        if not self._pending or self._models.busy():
            return True
        return self._inbox.gather(
            self._handle,
            self._settings.batch_gather_ms / 1000,
            burst=len(self._pending) > 1,
            # a set OLLAMA_NUM_PARALLEL reached: no straggler could join the batch anyway
            full=lambda: 0 < self._settings.num_parallel <= len(self._pending),
        )

    def _idle_timeout(self) -> float:
        """How long to wait for a command when nothing runs: until the next keep-alive
        expiry or load deadline. A finished load, a new request, a canceled queued one or
        a command wakes the thread through the inbox, so nothing here is polled."""
        due = min(self._models.next_expiry(), self._models.load_deadline())
        return min(max(due, 0.001), _IDLE_WAKEUP_S)

    def _handle(self, command: Command) -> None:
        if command.kind == "generate":
            assert command.job is not None
            self._pending.append(command.job)
        elif command.kind == "load":
            self._load_waiters.append(command)
        elif command.kind == "ping":
            command.replies.put(None)
        elif command.kind == "wake":
            pass  # only to end the inbox's wait
        elif command.kind == "unload":
            assert command.model is not None
            model = command.model
            self._reply(command, lambda: self._models.request_unload(model))

    @staticmethod
    def _reply(command: Command, action: Callable[[], Any]) -> None:
        try:
            command.replies.put(action())
        except Exception as exc:  # never let one request kill the scheduler thread
            command.replies.put(client_error(exc, f"scheduler command {command.kind} failed"))

    def _serve_load_waiters(self) -> None:
        """Answer explicit loads whose model is resident now (with the time it took)."""
        waiting = []
        for command in self._load_waiters:
            assert command.model is not None
            try:
                resident = self._models.ensure_loaded(
                    command.model, command.keep_alive_s, command.num_ctx
                )
            except Exception as exc:  # never let one request kill the scheduler thread
                command.replies.put(client_error(exc, "explicit load failed"))
                continue
            if resident is None:
                waiting.append(command)
                continue
            if not resident.active:
                self._models.start_idle_timer(resident)
            command.replies.put(int((time.perf_counter() - command.received) * 1e9))
        self._load_waiters = waiting

    # -- admission ---------------------------------------------------------------------------

    def _admit_pending(self) -> None:
        if self._load_waiters:
            self._serve_load_waiters()
        still_waiting: deque[Job] = deque()
        while self._pending:
            job = self._pending.popleft()
            if job.request.cancel.is_set():
                log.info(
                    "queued request dropped: client gone model=%s", job.request.model.name.display
                )
                self._release_waiting()
                self._counters.add("canceled")  # counted once it has left the queue
                self._load_waits.pop(id(job), None)
                job.replies.put(RequestCanceled())  # ends the wait in _enqueue
                continue
            if not self._try_admit(job):
                still_waiting.append(job)
        self._pending = still_waiting
        self._models.adopt_finished_loads()  # a load whose requests all left meanwhile

    def _try_admit(self, job: Job) -> bool:
        request = job.request
        resident = self._models.get(request.model)
        if resident is not None and len(resident.jobs) >= self._models.parallel(resident):
            return False
        started = time.perf_counter()
        try:
            resident = self._models.ensure_loaded(
                request.model, request.keep_alive_s, request.options.num_ctx
            )
            if resident is None:
                if self._models.is_loading(request.model):
                    self._load_waits.setdefault(id(job), started)
                return False
            if isinstance(job, GenerationJob) and not self._models.admit_kv(job, resident):
                return False  # waits for running requests to give their KV caches back
            # Ollama's load_duration: getting the model ready for this request, which is the
            # whole wait when it had to load, and the (small) bookkeeping when it was resident
            started = self._load_waits.pop(id(job), started)
            load_ns = int((time.perf_counter() - started) * 1e9)
            self._backend.start(
                job, resident.handle, resident.num_ctx, parallel=self._models.parallel(resident)
            )
        except Exception as exc:  # refused: the error is the job's answer
            error = client_error(exc, "failed to start a generation")
            self._release_waiting()
            self._load_waits.pop(id(job), None)
            self._models.forget_kv(job)
            job.replies.put(error)
            return True
        self._release_waiting()
        if isinstance(job, GenerationJob):
            self._counters.add("prompt_tokens", len(job.prompt_tokens))
            self._counters.add("prompt_tokens_reused", job.reused_tokens)
        self._models.admit(resident, job, request.keep_alive_s)
        job.replies.put(Ready(load_duration_ns=load_ns))
        return True

    def _release_waiting(self) -> None:
        with self._lock:
            self._waiting -= 1

    # -- stepping ----------------------------------------------------------------------------

    def _step_jobs(self) -> list[tuple[Job, list[Any]]]:
        """One step for every model with jobs: cancellations first, then the backend's step.
        Returns the last events of the jobs that ended, to send once the memory figures are
        taken, so that a client that has its answer sees its KV cache given back."""
        endings: list[tuple[Job, list[Any]]] = []
        for key, resident in self._models.items():
            for job in list(resident.jobs):
                if job.request.cancel.is_set():
                    log.info("request canceled model=%s", resident.name)
                    self._retire(key, resident, job)
                    self._counters.add("canceled")  # counted once its slot is free again
            if not resident.jobs:
                continue
            try:
                result = self._backend.step(resident.handle, list(resident.jobs))
            except Exception as exc:  # a backend bug must not stop the thread: end its jobs
                result = StepResult([Stepped(job, error=exc) for job in resident.jobs])
            if result.batched:
                self._counters.add("batched_tokens", result.batched)
                self._counters.raise_to("batch_peak", result.batched)
            for stepped in result.stepped:
                self._deliver(key, resident, stepped, endings)
        return endings

    def _deliver(
        self, key: str, resident: Resident, stepped: Stepped, endings: list[tuple[Job, list[Any]]]
    ) -> None:
        """Send a job's events (or its error); when it is over, retire it and leave its events
        in ``endings``."""
        job, error = stepped.job, stepped.error
        if job not in resident.jobs:  # retired meanwhile (its model was unloaded)
            return
        if error is not None and not isinstance(error, BridgeError):
            log.error("generation failed model=%s", resident.name, exc_info=error)
            error = BridgeError(f"generation failed: {error}")
        events = [Failed(error)] if error is not None else stepped.events
        if events and isinstance(events[-1], (Failed, Finished, EmbeddingResult)):
            self._retire(key, resident, job)
            endings.append((job, events))
            return
        for event in events:
            job.replies.put(event)

    def _retire(self, key: str, resident: Resident, job: Job) -> None:
        job.close()
        for name, amount in self._backend.take_counts().items():
            self._counters.add(name, amount)  # drafts tallied by finished generations
        self._models.release(key, resident, job)

    def _fail_everything(self) -> None:
        for job in self._pending:
            job.replies.put(BridgeError("server is shutting down"))
        self._pending.clear()
        for command in self._load_waiters:
            command.replies.put(BridgeError("server is shutting down"))
        self._load_waiters.clear()
        self._load_waits.clear()
        for resident in self._models.snapshot():
            for job in resident.jobs:
                job.replies.put(Failed(BridgeError("server is shutting down")))
                job.close()
            resident.jobs.clear()
            resident.active = 0
