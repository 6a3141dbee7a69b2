"""The scheduler thread's inbox: what HTTP threads ask of it, and the requests on their way.

Commands (``Command``) arrive on a queue; the thread takes them in batches between steps,
waiting only when it has nothing to step. Before an idle model starts new requests, the
thread first takes in those still on their way (``arrivals``): see ``Inbox.gather``.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .arrivals import Arrivals

if TYPE_CHECKING:
    from ..registry import LocalModel
    from .interface import Job


@dataclass
class Command:
    """One request to the scheduler thread; its answer (if any) goes to ``replies``."""

    kind: str  # "generate" (embedding jobs too) | "load" | "unload" | "ping" | "wake" | "stop"
    replies: queue.Queue[Any]
    model: LocalModel | None = None
    job: Job | None = None
    keep_alive_s: float | None = None
    num_ctx: int = 0
    received: float = field(default_factory=time.perf_counter)


NO_REPLIES: queue.Queue[Any] = queue.Queue()  # for commands nobody waits on (wake)

Handler = Callable[[Command], None]
Full = Callable[[], bool]

BURST_QUIET_S = 0.02  # after a burst, this long with no new request begun ends the gather


class Inbox:
    """Commands for the scheduler thread (``put`` from any thread; the rest on the thread)."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Command] = queue.Queue()
        # generation requests begun on the HTTP side, not yet put; each one begun wakes a
        # gathering thread (``gather``)
        self.arrivals = Arrivals(on_begin=lambda: self.put(Command("wake", NO_REPLIES)))

    def put(self, command: Command) -> None:
        """Send ``command`` to the thread."""
        self._queue.put(command)

    def take(self, handle: Handler, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a command (0: do not wait), then ``handle`` it
        and every other one queued. False when one was "stop" (the rest stay unhandled)."""
        try:
            command = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return True
        return self._take(command, handle) and self._take_queued(handle)

    def gather(self, handle: Handler, bound_s: float, *, burst: bool, full: Full) -> bool:
        """Take in the requests on their way (``arrivals``), waiting at most ``bound_s``, so
        that requests sent together are admitted together and their prompts read in one
        batched prefill. ``burst``: more than one request is already waiting. After a
        burst, a quiet spell of ``BURST_QUIET_S`` with no new request begun ends it (the
        last of a burst can reach its HTTP thread after the others are queued); a request
        that came alone is never held, nor is a batch that is ``full``. False on "stop"."""
        deadline = time.monotonic() + bound_s
        while (left := deadline - time.monotonic()) > 0 and not full():
            on_the_way = self.arrivals.on_the_way()
            if not on_the_way and not burst:
                break
            wait = left if on_the_way else min(BURST_QUIET_S, left)
            try:
                command = self._queue.get(timeout=wait)  # a request begun wakes it ("wake")
            except queue.Empty:
                break  # late: they join the batch between its steps instead
            if not self._take(command, handle):
                return False
            burst = burst or command.kind == "generate"
        return self._take_queued(handle)  # an arrival ends after its request is put: take those

    def _take_queued(self, handle: Handler) -> bool:
        while True:
            try:
                command = self._queue.get_nowait()
            except queue.Empty:
                return True
            if not self._take(command, handle):
                return False

    @staticmethod
    def _take(command: Command, handle: Handler) -> bool:
        if command.kind == "stop":
            return False
        handle(command)
        return True
