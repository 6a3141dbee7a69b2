"""Generation requests on their way in: begun by the HTTP side, not yet in the scheduler's
queue. Requests that clients send together reach the scheduler a few milliseconds apart
(each is read, parsed and resolved on its own HTTP thread); an idle scheduler that started
the first one's prefill at once would make the others wait for it and then prefill them
separately. Knowing that more are on their way, it waits for them (briefly, bounded by
``MLX_BRIDGE_BATCH_GATHER_MS``) and reads all the prompts in one batched prefill. A request
that comes alone is never held: nothing else is on its way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Arrival:
    """One request on its way; ``close`` (idempotent) when it is queued or has failed."""

    def __init__(self, arrivals: Arrivals) -> None:
        self._arrivals = arrivals
        self._open = True

    @property
    def is_open(self) -> bool:
        """Still on its way (not yet queued, not failed)."""
        return self._open

    def close(self) -> None:
        """It is in the queue (or will never be): stop counting it."""
        if self._open:
            self._open = False
            self._arrivals._change(-1)


class Arrivals:
    """How many requests are on their way (safe from any thread)."""

    def __init__(self, on_begin: Callable[[], None] = lambda: None) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._on_begin = on_begin

    def begin(self) -> Arrival:
        """A generation request has begun (its body is not read yet)."""
        self._change(1)
        self._on_begin()
        return Arrival(self)

    def on_the_way(self) -> int:
        """Requests begun and not yet queued."""
        with self._lock:
            return self._count

    def _change(self, delta: int) -> None:
        with self._lock:
            self._count += delta
