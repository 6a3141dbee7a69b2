"""An optional per-client rate limit (``MLX_BRIDGE_RATE_LIMIT``, e.g. ``60/minute``).

Off by default. One daemon, one worker: a fixed window per key in memory is enough (no
Flask-Limiter). The key is the bearer token when one is sent, else the client address, so
with ``MLX_BRIDGE_API_KEY`` set each key has its own budget. Over the limit: 429
``{"error": "rate limit exceeded ..."}`` with ``Retry-After`` in seconds. ``GET /`` and
``/health`` stay unlimited (the CLI's heartbeat, probes).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable

from flask import Flask, Response, request

from ..config import Settings
from .errors import error_response

_EXEMPT = {"/", "/health"}
_MAX_KEYS = 10_000  # expired windows are dropped beyond this many keys


class FixedWindow:
    """``limit`` hits per ``period_s`` per key; ``clock`` is injectable for tests."""

    def __init__(
        self, limit: int, period_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit, self.period_s, self._clock = limit, period_s, clock
        self._windows: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> float:
        """Count one request; 0 if allowed, else the seconds until the window resets."""
        now = self._clock()
        with self._lock:
            start, count = self._windows.get(key, (now, 0))
            if now - start >= self.period_s:
                start, count = now, 0
            if count >= self.limit:
                return start + self.period_s - now
            if len(self._windows) >= _MAX_KEYS:
                self._prune(now)
            self._windows[key] = (start, count + 1)
            return 0.0

    def _prune(self, now: float) -> None:
        expired = [k for k, (s, _) in self._windows.items() if now - s >= self.period_s]
        for key in expired:
            del self._windows[key]


def register_rate_limit(app: Flask, settings: Settings) -> None:
    """Install the limiter when a limit is configured (after the security guards)."""
    configured = settings.rate_limit
    if configured is None:
        return
    window = FixedWindow(*configured)

    @app.before_request
    def _limit() -> Response | None:
        if request.path in _EXEMPT or request.method == "OPTIONS":
            return None
        wait_s = window.hit(_client_key())
        if not wait_s:
            return None
        response = error_response("rate limit exceeded, retry later", 429)
        response.headers["Retry-After"] = str(max(1, math.ceil(wait_s)))
        return response


def _client_key() -> str:
    authorization = request.headers.get("Authorization", "")
    if authorization:  # hashed: raw keys are not kept in memory longer than needed
        return "key:" + hashlib.sha256(authorization.encode("utf-8")).hexdigest()
    return "addr:" + (request.remote_addr or "")


__all__ = ["FixedWindow", "register_rate_limit"]
