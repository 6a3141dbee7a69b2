"""``Engine``: the engine as the server sees it, and the one place its backend is chosen.

The server calls only these methods (from its HTTP threads); behind them the scheduler
(``scheduler``) admits and steps requests, its resident set (``residency``) loads, keeps and
expires models, and the backend (``interface.Backend``; ``backend.MLXBackend`` unless one is
given) runs them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .arrivals import Arrival
from .backend import MLXBackend
from .embed_job import EmbeddingRequest, EmbeddingResult
from .group import GroupBudget, in_group, rank0_backend
from .interface import Backend
from .jobs import GenerationJob
from .preflight import MemoryBudget
from .requests import GenerationRequest, Ready, RunningModel
from .scheduler import Scheduler

if TYPE_CHECKING:
    from ..config import Settings
    from ..registry import LocalModel


class Engine:
    """Runs models for the server; every method is safe to call from any thread."""

    def __init__(
        self,
        settings: Settings,
        backend: Backend | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        budget: MemoryBudget | None = None,
    ) -> None:
        self._group = None  # the distributed group this rank 0 leads, if any
        if backend is None and in_group(settings):  # a rank 0 of ``serve --hostfile``
            group = self._group = rank0_backend(settings)
            backend, budget = group, budget or GroupBudget.of(settings, group.memory)
        self.backend = backend or MLXBackend.from_settings(settings)
        self._scheduler = Scheduler(settings, self.backend, clock, budget)

    def group_status(self) -> dict | None:
        """The distributed group's ranks, hosts, memory and faults; None on one machine."""
        return self._group.status() if self._group is not None else None

    def start(self) -> None:
        """Start the scheduler thread (idempotent; the server starts it after fork)."""
        self._scheduler.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the scheduler thread and unload every model (a distributed group's other
        ranks are told to end)."""
        self._scheduler.stop(timeout)
        if self._group is not None:
            self._group.shutdown()  # the other ranks end with this server

    def is_alive(self) -> bool:
        """True while the scheduler thread runs."""
        return self._scheduler.is_alive()

    def arrival(self) -> Arrival:
        """Announce a generation request as soon as it begins (before its body is read);
        pass it to ``submit``, and close it if the request never gets there. An idle engine
        waits briefly for announced requests to start them in one batch."""
        return self._scheduler.arrivals.begin()

    def submit(
        self, request: GenerationRequest, arrival: Arrival | None = None
    ) -> tuple[GenerationJob, Ready]:
        """Queue a generation and block until it is admitted; its events then arrive on the
        job's ``replies``. Raises BridgeError (busy, not loadable, bad input) before any
        output; RequestCanceled when its ``cancel`` was set while it waited (then ``wake``)."""
        return self._scheduler.submit(request, arrival)

    def wake(self) -> None:
        """Have the scheduler look at its queue now (after setting a request's ``cancel``)."""
        self._scheduler.wake()

    def embed(self, request: EmbeddingRequest) -> tuple[EmbeddingResult, int]:
        """Embed ``request.inputs``: the result and the load duration in ns."""
        return self._scheduler.embed(request)

    def load(self, model: LocalModel, keep_alive_s: float | None, num_ctx: int) -> int:
        """Load (or keep) a model without generating; returns the load duration in ns."""
        return self._scheduler.load(model, keep_alive_s, num_ctx)

    def unload(self, model: LocalModel) -> None:
        """Unload now if idle, else as soon as its last request finishes."""
        self._scheduler.unload(model)

    def running(self) -> list[RunningModel]:
        """The loaded models (``/api/ps``)."""
        return self._scheduler.running()

    def stats(self) -> dict[str, int]:
        """The scheduler's counters since start (``Scheduler.stats``)."""
        return self._scheduler.stats()

    def ping(self, timeout: float) -> float | None:
        """Seconds for a no-op to pass the scheduler thread; None if not within ``timeout``."""
        return self._scheduler.ping(timeout)

    def queue_depth(self) -> int:
        """Requests submitted and not yet admitted."""
        return self._scheduler.queue_depth()
