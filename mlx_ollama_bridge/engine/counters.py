"""The engine's counters since start, written by the scheduler thread, read from any thread."""

from __future__ import annotations

import threading

COUNTERS = ("prompt_tokens", "prompt_tokens_reused", "canceled", "batched_tokens", "batch_peak")
COUNTERS += ("draft_tokens", "draft_accepted")  # speculative decoding's, from the backend
COUNTERS += ("lookup_tokens", "lookup_accepted")  # prompt lookup's drafts and accepted ones
COUNTERS += ("image_encodes",)  # vision-tower runs (an image seen again is not re-encoded)


class Counters:
    """Named integer counters (``COUNTERS``); ``batch_peak`` is a high-water mark."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(COUNTERS, 0)

    def add(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` to the counter ``name``."""
        with self._lock:
            self._values[name] += amount

    def raise_to(self, name: str, value: int) -> None:
        """Raise the high-water mark ``name`` to ``value`` if it is below."""
        with self._lock:
            self._values[name] = max(self._values[name], value)

    def snapshot(self) -> dict[str, int]:
        """Every counter now."""
        with self._lock:
            return dict(self._values)
