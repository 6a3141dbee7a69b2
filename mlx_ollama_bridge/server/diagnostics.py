"""The diagnostics view behind ``GET /diagnostics``: one JSON snapshot of the running server.

Health, loaded models with their memory and active requests, the engine's queue depth and
counters, process memory, per-model usage (read back from the Prometheus registry,
``metrics.py``) and every active setting, secrets redacted. The API-key guard covers it
like every other route but ``GET /``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flask import Flask

from .. import cpu_blas
from ..config import HostAddress, Settings
from ..durations import format_rfc3339
from .context import EXTENSION
from .health import health_report, loaded_models, queue_depth, rss_bytes
from .observability import observability_state

REDACTED = "<redacted>"
# Setting names that hold credentials; matched as words so e.g. "keep_alive_s" is not caught.
_SECRET_NAME = re.compile(r"(^|_)(api_key|key|token|secret|password)(_|$)")
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")  # user:password@ in a URL


def settings_view(settings: Settings) -> dict[str, Any]:
    """Every setting as JSON, secrets replaced by ``<redacted>`` (empty ones stay empty,
    so the view still says whether a key is set)."""
    view: dict[str, Any] = {}
    for spec in dataclasses.fields(settings):
        value = getattr(settings, spec.name)
        if _SECRET_NAME.search(spec.name):
            view[spec.name] = REDACTED if value else value
        else:
            view[spec.name] = _json_value(value)
    return view


def _json_value(value: Any) -> Any:
    """A setting value in JSON form: paths and addresses as text, no infinities."""
    if isinstance(value, (HostAddress, Path)):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else "-inf"  # keep_alive forever, no load timeout
    if isinstance(value, (tuple, list)):
        return [_json_value(item) for item in value]
    if isinstance(value, str):
        return _URL_CREDENTIALS.sub(REDACTED + "@", value)
    return value


def _rfc3339(unix_s: float) -> str | None:
    if not math.isfinite(unix_s):
        return None  # kept loaded forever
    return format_rfc3339(datetime.fromtimestamp(unix_s, timezone.utc))


def diagnostics_report(app: Flask) -> dict[str, Any]:
    """The ``/diagnostics`` body. Never starts the engine (it starts on first use)."""
    state = observability_state(app)
    settings: Settings = app.extensions[EXTENSION]["settings"]
    engine = app.extensions[EXTENSION]["engine"]
    health, _status = health_report(engine, state.watch)
    loaded = [
        {
            "name": running.name,
            "size_bytes": running.size_bytes,
            "size_vram_bytes": running.size_vram_bytes,
            "context_length": running.context_length,
            "active_requests": running.active_requests,
            "expires_at": _rfc3339(running.expires_at),  # null: kept loaded forever
        }
        for running in loaded_models(engine)
    ]
    uptime_s = health["uptime_s"]
    return {
        "status": health["status"],
        "engine": health["engine"],
        "version": health["version"],
        "pid": os.getpid(),
        "started_at": _rfc3339(time.time() - uptime_s),
        "uptime_s": uptime_s,
        "memory": {
            "rss_bytes": rss_bytes(),
            "models_bytes": sum(model["size_bytes"] for model in loaded),
        },
        "queue_depth": queue_depth(engine),
        "engine_latency_ms": health.get("engine_latency_ms"),
        "engine_stats": health.get("engine_stats", {}),
        # Linux CPU mode: which BLAS MLX's CPU backend uses in this worker
        "cpu_blas": cpu_blas.describe(setting=settings.cpu_blas),
        "loaded_models": loaded,
        "group": health.get("group"),  # serve --hostfile: ranks, hosts, memory; else null
        "models": state.metrics.model_usage(),
        "settings": settings_view(settings),
    }


__all__ = ["REDACTED", "diagnostics_report", "settings_view"]
