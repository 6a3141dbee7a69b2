"""What ``/health`` reports: liveness (the engine thread), readiness (how soon it answers a
no-op), loaded models and the worker's memory; shared by ``/metrics`` and ``/diagnostics``."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from .. import __version__

log = logging.getLogger(__name__)

_PING_TIMEOUT_S = 2.0


@dataclass
class EngineWatch:
    """When the app started, and whether its engine thread was ever seen running (to tell
    an engine that has not started yet from one whose thread died)."""

    started: float = field(default_factory=time.monotonic)
    seen_alive: bool = False  # set once, from any thread: a plain bool is enough

    def observe(self, engine: Any) -> bool:
        """Whether the engine thread runs now; remembers that it once did."""
        try:
            alive = bool(engine.is_alive())
        except Exception:
            log.exception("engine liveness check failed")
            alive = False
        if alive:
            self.seen_alive = True
        return alive

    @property
    def uptime_s(self) -> float:
        """Seconds since the app started."""
        return time.monotonic() - self.started


def loaded_models(engine: Any) -> list[Any]:
    """The engine's ``RunningModel`` snapshots; [] if the engine cannot say."""
    try:
        return list(engine.running())
    except Exception:
        log.exception("engine snapshot failed")
        return []


def queue_depth(engine: Any) -> int:
    """Requests waiting for the engine (0 if it cannot say)."""
    try:
        return int(engine.queue_depth())
    except Exception:
        log.exception("engine queue depth failed")
        return 0


def rss_bytes() -> int:
    """Resident memory of this process (the gunicorn worker), in bytes; 0 if unreadable."""
    import psutil

    try:
        return psutil.Process().memory_info().rss
    except psutil.Error:
        return 0


def health_report(engine: Any, watch: EngineWatch) -> tuple[dict[str, Any], int]:
    """``/health`` body and status: 200 while the engine runs or has not started yet (it
    starts on first use), 503 once its thread has died."""
    alive = watch.observe(engine)
    state = "running" if alive else ("down" if watch.seen_alive else "idle")
    healthy = state != "down"
    body: dict[str, Any] = {
        "status": "ok" if healthy else "unavailable",
        "engine": state,
        "models_loaded": len(loaded_models(engine)),
        "uptime_s": round(watch.uptime_s, 3),
        "version": __version__,
    }
    # prompt tokens evaluated vs reused from the prompt cache, cancels, batching, drafts
    body["engine_stats"] = engine.stats()
    if alive:  # readiness: how soon the engine thread would take a new request
        latency = engine.ping(_PING_TIMEOUT_S)
        body["ready"] = latency is not None
        body["engine_latency_ms"] = round(latency * 1000, 3) if latency is not None else None
    else:
        body["ready"] = state == "idle"  # starts on first use
    group = group_status(engine)
    if group is not None:  # serve --hostfile: the ranks, and which one failed
        body["group"] = group
        if not group["healthy"]:
            body.update(status="unavailable", ready=False, error=group["fault"])
            return body, 503
    return body, 200 if healthy else 503


def group_status(engine: Any) -> dict[str, Any] | None:
    """The distributed group's state (``Engine.group_status``); None on one machine."""
    try:
        return engine.group_status()
    except Exception:
        log.exception("group status failed")
        return None


__all__ = [
    "EngineWatch",
    "group_status",
    "health_report",
    "loaded_models",
    "queue_depth",
    "rss_bytes",
]
