"""Ollama ``options``: parsing, validation, defaults and merging.

Merge order follows Ollama: built-in defaults <- the model's PARAMETERs <- request options.
Unknown keys are ignored (Ollama only logs them); a known key with the wrong JSON type or an
out-of-range value is a 400 with Ollama's wording (Ollama itself answers 500 there; a bad
request is the client's fault, so we say 400).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields
from typing import Any

from ..errors import BadRequest

log = logging.getLogger(__name__)

# key -> JSON type name as Ollama reports it in its error text.
_INT, _FLOAT, _BOOL, _ARRAY = "integer", "float32", "boolean", "array"

OPTION_TYPES: dict[str, str] = {
    # load-time (a change forces a reload in Ollama; on MLX only num_ctx matters)
    "num_ctx": _INT,
    "num_batch": _INT,
    "num_gpu": _INT,
    "main_gpu": _INT,
    "use_mmap": _BOOL,
    "num_thread": _INT,
    # runtime / sampling
    "num_keep": _INT,
    "seed": _INT,
    "num_predict": _INT,
    "top_k": _INT,
    "top_p": _FLOAT,
    "min_p": _FLOAT,
    "typical_p": _FLOAT,
    "temperature": _FLOAT,
    "repeat_last_n": _INT,
    "repeat_penalty": _FLOAT,
    "presence_penalty": _FLOAT,
    "frequency_penalty": _FLOAT,
    "stop": _ARRAY,
}

# Accepted for compatibility and deliberately without effect on MLX, with the reason.
IGNORED_OPTIONS: dict[str, str] = {
    "num_batch": "MLX prefills in fixed steps chosen by mlx-lm",
    "num_gpu": "Apple silicon has unified memory: every layer runs on the GPU",
    "main_gpu": "there is one GPU on a Mac",
    "use_mmap": "mlx-lm loads safetensors lazily by itself",
    "num_thread": "MLX schedules its own CPU threads",
    "typical_p": "mlx-lm has no locally-typical sampler",
}

# Ranges a value must fall in (inclusive); None = unbounded on that side.
_RANGES: dict[str, tuple[float | None, float | None]] = {
    "num_ctx": (1, 1 << 24),
    "num_keep": (-1, 1 << 24),
    "top_k": (0, 1 << 20),
    "top_p": (0.0, 1.0),
    "min_p": (0.0, 1.0),
    "typical_p": (0.0, 1.0),
    "temperature": (0.0, 100.0),
    "repeat_last_n": (-1, 1 << 24),
    "repeat_penalty": (0.0, 100.0),
    "presence_penalty": (-100.0, 100.0),
    "frequency_penalty": (-100.0, 100.0),
    "num_predict": (-(1 << 31), 1 << 31),
    "seed": (-(1 << 63), (1 << 63) - 1),
}


@dataclass(frozen=True)
class Options:
    """Effective generation options after merging (Ollama names and defaults)."""

    num_ctx: int = 4096
    num_keep: int = 4
    seed: int = -1
    num_predict: int = -1
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    temperature: float = 0.8
    repeat_last_n: int = 64
    repeat_penalty: float = 1.1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()

    def max_tokens(self) -> int:
        """The generation budget: ``num_predict``, negative or huge capped at 10 x num_ctx."""
        cap = 10 * self.num_ctx
        if self.num_predict < 0 or self.num_predict > cap:
            return cap
        return self.num_predict

    def repeat_window(self) -> int:
        """Tokens the repeat/presence/frequency penalties look back over (-1 = num_ctx)."""
        return self.num_ctx if self.repeat_last_n < 0 else self.repeat_last_n


_OPTION_FIELDS = {f.name for f in fields(Options)}


def validate_options(raw: Any, *, where: str = "options") -> dict[str, Any]:
    """Check a request's ``options`` object and return the known keys, converted.

    Nulls are skipped, unknown keys dropped, integers accept JSON floats (truncated),
    ``stop`` must be an array of strings.
    """
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadRequest(f"{where} must be an object")
    clean: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None:
            continue
        kind = OPTION_TYPES.get(key)
        if kind is None:
            log.debug("ignoring unknown option %r", key)
            continue
        clean[key] = _convert(key, kind, value)
    return clean


def merge_options(
    model_parameters: dict[str, Any], request_options: dict[str, Any], *, default_num_ctx: int
) -> Options:
    """Merge Ollama defaults, the model's parameters and the request's options.

    A request ``stop`` replaces the model's list; other keys override one by one.
    """
    merged: dict[str, Any] = {"num_ctx": default_num_ctx}
    merged.update(validate_options(model_parameters, where="model parameters"))
    merged.update(request_options)
    values = {k: v for k, v in merged.items() if k in _OPTION_FIELDS}
    if "stop" in values:
        values["stop"] = tuple(s for s in values["stop"] if s)
    return Options(**values)


def _convert(key: str, kind: str, value: Any) -> Any:
    if kind == _ARRAY:
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise BadRequest(f'option "{key}" must be of type array')
        if len(value) > 64 or any(len(s) > 1024 for s in value):
            raise BadRequest(f'option "{key}" has too many or too long entries')
        return list(value)
    if kind == _BOOL:
        if not isinstance(value, bool):
            raise BadRequest(f'option "{key}" must be of type boolean')
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f'option "{key}" must be of type {kind}')
    if not math.isfinite(value):
        raise BadRequest(f'option "{key}" must be a finite number')
    number = int(value) if kind == _INT else float(value)
    low, high = _RANGES.get(key, (None, None))
    if (low is not None and number < low) or (high is not None and number > high):
        raise BadRequest(f'option "{key}" must be between {low} and {high}, got {value}')
    return number
