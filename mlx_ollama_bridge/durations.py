"""Go durations, Ollama's ``keep_alive`` and Go-style RFC 3339 timestamps.

Ollama is written in Go, so its clients send ``keep_alive`` in the forms Go's
``time.ParseDuration`` accepts (``"5m"``, ``"1h30m"``, ``"250ms"``) or as JSON numbers of
seconds, and they receive timestamps formatted like Go's ``time.RFC3339Nano``. This module
reproduces those rules, error texts included, because clients show them to users.

Durations leave this module as float seconds; ``math.inf`` means "forever" (Ollama stores
it as the largest int64 number of nanoseconds).
"""

from __future__ import annotations

import logging
import math
import re
from datetime import datetime, timedelta
from typing import Any

from .errors import BadRequest

log = logging.getLogger(__name__)

FOREVER = math.inf
DEFAULT_KEEP_ALIVE_S = 300.0  # Ollama's 5m
NS_PER_S = 1_000_000_000
_MAX_NS = 2**63 - 1  # time.Duration is an int64 count of nanoseconds
_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC Greek mu
    "ms": 1_000_000,
    "s": NS_PER_S,
    "m": 60 * NS_PER_S,
    "h": 3600 * NS_PER_S,
}
_DIGITS = re.compile(r"[0-9]*")
_INTEGER = re.compile(r"[+-]?[0-9]+")
# What Go's reflect.TypeOf reports for JSON values that are not numbers or strings.
_GO_JSON_TYPES = {bool: "bool", dict: "map[string]interface {}", list: "[]interface {}"}


def parse_go_duration(text: str) -> int:
    """Parse a Go duration string (``"1h30m"``, ``"-1.5s"``, ``"250ms"``) into nanoseconds.

    Same grammar, limits and error messages as Go's ``time.ParseDuration``: a bare ``"0"``
    is the only number allowed without a unit. Raises ``ValueError`` with Go's message,
    e.g. ``time: missing unit in duration "300"``.
    """
    rest, negative = text, False
    if rest[:1] in ("-", "+"):
        negative, rest = rest[0] == "-", rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise ValueError(f"time: invalid duration {go_quote(text)}")
    total = 0
    while rest:
        value, rest = _duration_term(rest, text)
        total += value
        if total > 2**63:
            raise ValueError(f"time: invalid duration {go_quote(text)}")
    if negative:
        return -total
    if total > _MAX_NS:
        raise ValueError(f"time: invalid duration {go_quote(text)}")
    return total


def _duration_term(rest: str, orig: str) -> tuple[int, str]:
    """One ``<number><unit>`` term of a duration: (nanoseconds, remaining text)."""
    invalid = ValueError(f"time: invalid duration {go_quote(orig)}")
    if not (rest[0] == "." or "0" <= rest[0] <= "9"):
        raise invalid
    digits = _DIGITS.match(rest).group()
    whole = int(digits) if digits else 0
    if whole > 2**63:
        raise invalid
    rest = rest[len(digits) :]
    fraction, scale, has_fraction = 0, 1.0, False
    if rest.startswith("."):
        fraction_digits = _DIGITS.match(rest, 1).group()
        has_fraction = bool(fraction_digits)
        fraction, scale = _leading_fraction(fraction_digits)
        rest = rest[1 + len(fraction_digits) :]
    if not digits and not has_fraction:
        raise invalid  # no digits at all, e.g. ".s"
    end = next((i for i, c in enumerate(rest) if c == "." or "0" <= c <= "9"), len(rest))
    unit, rest = rest[:end], rest[end:]
    if not unit:
        raise ValueError(f"time: missing unit in duration {go_quote(orig)}")
    if unit not in _UNITS_NS:
        raise ValueError(f"time: unknown unit {go_quote(unit)} in duration {go_quote(orig)}")
    factor = _UNITS_NS[unit]
    if whole > 2**63 // factor:
        raise invalid
    value = whole * factor
    if fraction:
        # float64 arithmetic, truncated, exactly as Go does it
        value += int(float(fraction) * (float(factor) / scale))
        if value > 2**63:
            raise invalid
    return value, rest


def _leading_fraction(digits: str) -> tuple[int, float]:
    """Go's leadingFraction: digits after the point until they would overflow int64."""
    value, scale = 0, 1.0
    for char in digits:
        candidate = value * 10 + int(char)
        if value > _MAX_NS // 10 or candidate > 2**63:
            break  # further digits are consumed but ignored
        value, scale = candidate, scale * 10
    return value, scale


def go_quote(text: str) -> str:
    """Quote ``text`` as Go's time package does in errors (non-ASCII bytes as ``\\xNN``)."""
    out = ['"']
    for char in text:
        if char >= "\x80" or char < " ":
            out.extend(f"\\x{byte:02x}" for byte in char.encode("utf-8", "surrogatepass"))
        else:
            out.append("\\" + char if char in '"\\' else char)
    out.append('"')
    return "".join(out)


def parse_keep_alive(value: Any) -> float | None:
    """Parse a request's ``keep_alive`` JSON value into seconds (``math.inf`` = forever).

    ``None`` (absent or null) returns ``None``: use the loaded model's current value or the
    server default. Numbers are seconds and negative numbers mean forever; strings are Go
    durations (``"5m"``, ``"-1m"`` = forever). Anything else raises :class:`BadRequest`
    with Ollama's wording, e.g. ``time: missing unit in duration "300"`` or
    ``Unsupported type: 'bool'``.
    """
    if value is None:
        return None
    if isinstance(value, str):
        try:
            nanoseconds = parse_go_duration(value)
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc
        return FOREVER if nanoseconds < 0 else nanoseconds / NS_PER_S
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isnan(value):
            raise BadRequest("invalid keep_alive value: NaN")
        if value < 0 or value * NS_PER_S > _MAX_NS:
            return FOREVER  # negative means forever; past int64 nanoseconds is the same
        return float(value)
    go_type = next((name for kind, name in _GO_JSON_TYPES.items() if isinstance(value, kind)), None)
    raise BadRequest(f"Unsupported type: '{go_type or type(value).__name__}'")


def parse_env_duration(text: str | None) -> float | None:
    """Seconds from an environment value: a Go duration or a bare integer of seconds.

    Returns ``None`` for an empty or unparsable value (the caller applies its default).
    Negative values are returned as they are; each setting decides what they mean.
    """
    if not text:
        return None
    try:
        return parse_go_duration(text) / NS_PER_S
    except ValueError:
        pass
    if _INTEGER.fullmatch(text) and abs(int(text)) <= _MAX_NS // NS_PER_S:
        return float(int(text))
    return None


def parse_env_keep_alive(text: str | None) -> float:
    """``OLLAMA_KEEP_ALIVE`` in seconds: Go duration or integer seconds, negative = forever.

    An unparsable value falls back to 300 s (5m) with a warning, as Ollama falls back
    (silently) to 5m.
    """
    seconds = parse_env_duration(text)
    if seconds is None:
        if text:
            log.warning("invalid OLLAMA_KEEP_ALIVE value=%r, using default=5m", text)
        return DEFAULT_KEEP_ALIVE_S
    return FOREVER if seconds < 0 else seconds


def format_rfc3339(moment: datetime) -> str:
    """Format a datetime as Go's ``time.RFC3339Nano`` does, at microsecond precision.

    Trailing zeros of the fraction are dropped (and the point with them); a zero UTC offset
    is written ``Z``, any other offset ``+HH:MM``. Naive datetimes are taken as local time.
    Microseconds rather than nanoseconds keep ``datetime.fromisoformat`` on Python < 3.11
    able to read the value.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        moment = moment.astimezone()
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    offset = moment.utcoffset() or timedelta(0)
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    return f"{text}{sign}{hours:02d}:{minutes:02d}"


__all__ = [
    "DEFAULT_KEEP_ALIVE_S",
    "FOREVER",
    "format_rfc3339",
    "go_quote",
    "parse_env_duration",
    "parse_env_keep_alive",
    "parse_go_duration",
    "parse_keep_alive",
]
