"""Per-model usage counters for the diagnostics view: requests by status class, last use,
generations, tokens and time to first token.

Kept in the server layer (the access-log middleware knows each request's model and status;
the generation code knows tokens) and in plain Python, so diagnostics work without
prometheus-client. Names are normalised (``tiny`` and ``tiny:latest`` are one entry) and the
number of entries is bounded: a client cannot grow memory by sending made-up model names.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..durations import format_rfc3339
from ..errors import BridgeError
from ..names import ModelName

MAX_MODELS = 256  # distinct names tracked; later ones share the OTHER entry
OTHER = "(other)"
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")


def canonical_model(name: str) -> str:
    """The display form of a model name (``tiny`` -> ``tiny:latest``); unparsable names
    (which the handlers reject anyway) are kept as sent, cut to 256 characters."""
    try:
        return ModelName.parse(name).display
    except BridgeError:
        return name[:256]


@dataclass
class ModelUsage:
    """What one model has been asked for since the server started."""

    requests: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUS_CLASSES, 0))
    last_used: float | None = None  # wall-clock unix seconds of the last finished request
    generations: int = 0  # finished generations (chat, generate, /v1 completions)
    prompt_tokens: int = 0
    eval_tokens: int = 0
    ttft_total_s: float = 0.0  # summed over the generations that produced a first token
    ttft_count: int = 0

    def view(self) -> dict[str, Any]:
        """JSON-ready summary."""
        last = self.last_used
        ttft_avg = self.ttft_total_s / self.ttft_count if self.ttft_count else None
        return {
            "requests": {"total": sum(self.requests.values()), **self.requests},
            "last_used": (
                format_rfc3339(datetime.fromtimestamp(last, timezone.utc)) if last else None
            ),
            "generations": self.generations,
            "prompt_tokens": self.prompt_tokens,
            "eval_tokens": self.eval_tokens,
            "ttft_avg_s": round(ttft_avg, 6) if ttft_avg is not None else None,
        }


class UsageBook:
    """Thread-safe per-model counters (HTTP threads write, the diagnostics view reads)."""

    def __init__(self, max_models: int = MAX_MODELS) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, ModelUsage] = {}
        self._max_models = max_models

    def _entry(self, model: str) -> ModelUsage:
        """The entry of ``model`` (caller holds the lock); past the cap, the OTHER entry."""
        name = canonical_model(model)
        entry = self._models.get(name)
        if entry is None:
            if len(self._models) >= self._max_models:
                name = OTHER
                entry = self._models.get(name)
            if entry is None:
                entry = self._models[name] = ModelUsage()
        return entry

    def record_request(self, model: str, status: int) -> None:
        """Count one finished HTTP request that named ``model``."""
        status_class = f"{status // 100}xx"
        with self._lock:
            entry = self._entry(model)
            if status_class in entry.requests:
                entry.requests[status_class] += 1
            entry.last_used = time.time()

    def record_first_token(self, model: str, ttft_s: float) -> None:
        """A generation's first output, ``ttft_s`` after its request arrived."""
        with self._lock:
            entry = self._entry(model)
            entry.ttft_total_s += ttft_s
            entry.ttft_count += 1

    def record_generation(self, model: str, prompt_tokens: int, eval_tokens: int) -> None:
        """A finished generation with its token counts."""
        with self._lock:
            entry = self._entry(model)
            entry.generations += 1
            entry.prompt_tokens += prompt_tokens
            entry.eval_tokens += eval_tokens

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Model name -> usage summary, names sorted."""
        with self._lock:
            return {name: self._models[name].view() for name in sorted(self._models)}


__all__ = ["MAX_MODELS", "OTHER", "ModelUsage", "UsageBook", "canonical_model"]
