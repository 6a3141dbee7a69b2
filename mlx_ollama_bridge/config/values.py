"""How each setting's text is parsed, the way Ollama's ``envconfig`` parses it.

Every parser takes the trimmed text and returns the value, or raises ``ValueError`` (the
setting then falls back to its default with a warning).
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

from ..durations import parse_env_duration

log = logging.getLogger(__name__)

_UINT = re.compile(r"[0-9]+")
OFF_WORDS = ("off", "none", "no", "false", "0", "disabled")  # "off" in a setting


def trim(value: str) -> str:
    """Ollama's ``envconfig.Var``: strip spaces, then surrounding quotes."""
    return value.strip().strip("\"'")


def parse_uint(text: str) -> int:
    """Go's ``strconv.ParseUint``: digits only."""
    if not _UINT.fullmatch(text):
        raise ValueError(text)
    return int(text)


def parse_count(text: str) -> int:
    """A positive integer (0 would stall the server: no queue, no threads, no context)."""
    if (value := parse_uint(text)) < 1:
        raise ValueError(text)
    return value


_RATE_SPEC = re.compile(r"\s*(\d+)\s*(?:/|per)\s*(second|minute|hour|day)s?\s*", re.IGNORECASE)
_RATE_PERIODS_S = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}


def parse_rate_limit(text: str) -> tuple[int, float] | None:
    """``"60/minute"`` -> ``(60, 60.0)`` (requests, period in s); ``""``/``"off"`` -> None."""
    if not text.strip() or text.strip().lower() in ("off", "0", "none"):
        return None
    match = _RATE_SPEC.fullmatch(text)
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"invalid rate limit {text!r}: expected N/second|minute|hour|day")
    return int(match.group(1)), _RATE_PERIODS_S[match.group(2).lower()]


def parse_go_bool(text: str) -> bool:
    """Go's ``strconv.ParseBool`` for an env flag: unparsable non-empty text counts as true."""
    return text not in ("0", "f", "F", "FALSE", "false", "False")


def parse_load_timeout(text: str) -> float:
    """Duration or integer seconds; zero or negative = no limit (``math.inf``)."""
    seconds = parse_env_duration(text)
    if seconds is None:
        raise ValueError(text)
    return math.inf if seconds <= 0 else seconds


def parse_fraction(text: str) -> float:
    """A share of physical memory: 0 < value <= 1."""
    value = float(text)
    if not 0 < value <= 1:
        raise ValueError(text)
    return value


KV_CACHE_TYPES = ("f16", "q8_0", "q4_0")


def parse_kv_cache_type(text: str) -> str:
    """``OLLAMA_KV_CACHE_TYPE``: f16, q8_0 or q4_0 (any case); anything else is f16 with a
    warning, as Ollama falls back to an unquantized cache."""
    value = text.strip().lower()
    if value in KV_CACHE_TYPES:
        return value
    log.warning(
        "unsupported OLLAMA_KV_CACHE_TYPE=%r (expected one of %s); using f16",
        text,
        ", ".join(KV_CACHE_TYPES),
    )
    return "f16"


def parse_origins(text: str) -> tuple[str, ...]:
    """Comma-separated origins; empty items dropped."""
    return tuple(origin.strip() for origin in text.split(",") if origin.strip())


def parse_path(text: str) -> Path:
    """A path; ``~`` expanded."""
    return Path(text).expanduser()


def parse_cpu_blas(text: str) -> str:
    """``auto``, ``off`` (any of the off words) or a library path, kept as given."""
    lowered = text.strip().lower()
    if lowered in OFF_WORDS:
        return "off"
    return "auto" if lowered == "auto" else str(Path(text.strip()).expanduser())


_COUNT_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}
_PARAM_COUNT = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([kmbg]?)", re.IGNORECASE)


def parse_group_backend(text: str) -> str:
    """``ring`` or ``jaccl``: the MLX distributed backends ``mlx.launch`` starts over SSH."""
    value = text.strip().lower()
    if value not in ("ring", "jaccl"):
        raise ValueError(f"unknown distributed backend {text!r}: ring or jaccl")
    return value


def parse_group_sharding(text: str) -> str:
    """``auto``, ``pipeline`` or ``tensor``."""
    value = text.strip().lower()
    if value not in ("auto", "pipeline", "tensor"):
        raise ValueError(f"unknown sharding {text!r}: auto, pipeline or tensor")
    return value


def parse_positive_seconds(text: str) -> float:
    """A positive number of seconds (``60``, ``2.5``)."""
    value = float(text)
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"not a positive number of seconds: {text!r}")
    return value


def parse_pauses(text: str) -> tuple[float, ...]:
    """Comma-separated seconds, each zero or more (``1,2,5,10,30``); at least one."""
    values = tuple(float(item) for item in text.split(",") if item.strip())
    if not values or any(not 0 <= v < float("inf") for v in values):
        raise ValueError(f"not a list of seconds: {text!r}")
    return values


def parse_param_count(text: str) -> int:
    """A parameter count: ``600000000``, ``600M``, ``1.5B``; 0 allowed."""
    match = _PARAM_COUNT.fullmatch(text.strip())
    if match is None:
        raise ValueError(text)
    return int(float(match.group(1)) * _COUNT_SUFFIXES[match.group(2).lower()])


def parse_registry_url(text: str) -> str | None:
    """``MLX_BRIDGE_OLLAMA_REGISTRY``: an Ollama registry base URL (``https://`` when no scheme
    is given, as Ollama's names mean); ``off`` -> None (pulls never ask it)."""
    if text.strip().lower() in OFF_WORDS:
        return None
    url = text.strip().rstrip("/")
    if "://" not in url:
        url = "https://" + url
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in ("http", "https") or not rest or "/" in rest or "@" in rest:
        raise ValueError(text)
    return f"{scheme.lower()}://{rest}"


__all__ = [
    "KV_CACHE_TYPES",
    "OFF_WORDS",
    "parse_count",
    "parse_cpu_blas",
    "parse_positive_seconds",
    "parse_group_backend",
    "parse_group_sharding",
    "parse_fraction",
    "parse_go_bool",
    "parse_kv_cache_type",
    "parse_load_timeout",
    "parse_origins",
    "parse_param_count",
    "parse_path",
    "parse_pauses",
    "parse_rate_limit",
    "parse_registry_url",
    "parse_uint",
    "trim",
]
