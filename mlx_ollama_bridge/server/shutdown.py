"""Graceful shutdown of streams: SIGTERM gives in-flight streams a deadline.

gunicorn lets a worker finish its requests for ``graceful_timeout`` seconds after SIGTERM,
then kills it, which would cut a long stream mid-line. The worker's SIGTERM handler is
chained here so that streams still running shortly before that deadline end with a final
``{"error": "server shutting down"}`` line (and their jobs are cancelled) instead.
Signals are process-wide, so the clock is too (one per worker process).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

SHUTDOWN_MESSAGE = "server shutting down"
_MARGIN_S = 3.0  # time left to write the error line and close before gunicorn's kill


class ShutdownClock:
    """When streams must stop; unset until SIGTERM."""

    def __init__(self) -> None:
        self._deadline: float | None = None
        self._lock = threading.Lock()

    def begin(self, grace_s: float) -> None:
        """Streams stop ``grace_s`` minus a margin from now (at least half of ``grace_s``)."""
        with self._lock:
            if self._deadline is None:
                self._deadline = time.monotonic() + max(grace_s - _MARGIN_S, grace_s / 2)

    def expired(self) -> bool:
        """True once the deadline has passed."""
        deadline = self._deadline
        return deadline is not None and time.monotonic() >= deadline

    def reset(self) -> None:
        """Forget a shutdown (tests)."""
        with self._lock:
            self._deadline = None


SHUTDOWN = ShutdownClock()


def install_sigterm_hook(grace_s: float) -> None:
    """Chain a SIGTERM handler in front of gunicorn's (call in the worker, after its own)."""
    previous = signal.getsignal(signal.SIGTERM)

    def _on_sigterm(signum: int, frame: FrameType | None) -> Any:
        log.info("shutting down: streams end within %.0f s", grace_s)
        SHUTDOWN.begin(grace_s)
        if callable(previous):
            return previous(signum, frame)
        return None

    signal.signal(signal.SIGTERM, _on_sigterm)
