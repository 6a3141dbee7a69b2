"""Text the way the ``ollama`` CLI prints it: tables, sizes, "2 minutes ago", durations.

Ported in behaviour (not code) from ollama's ``format/bytes.go``, ``format/time.go``, Go's
``time.Duration.String`` and the tablewriter settings of ``cmd/cmd.go`` (no borders, left
aligned, four spaces between columns).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ..upstream import rfc3339_seconds

_PADDING = "    "


def table(headers: Sequence[str] | None, rows: Iterable[Sequence[str]], indent: str = "") -> str:
    """Columns padded to their widest cell, 4 spaces apart, no trailing spaces."""
    body = [list(map(str, row)) for row in rows]
    lines = ([list(headers)] if headers else []) + body
    if not lines:
        return ""
    count = max(len(line) for line in lines)
    widths = [max(len(line[i]) for line in lines if i < len(line)) for i in range(count)]
    out = []
    for line in lines:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(line)]
        out.append((indent + _PADDING.join(cells)).rstrip())
    return "\n".join(out)


def human_bytes(size: int) -> str:
    """``format.HumanBytes``: decimal units, ``2.0 GB`` → ``2 GB``, ``1.5 GB``, ``134 MB``."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            value = size / scale
            if value >= 10 or value == math.trunc(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{size} B"


def _human_duration(seconds: float) -> str:
    """``format.humanDuration``."""
    whole = int(seconds)
    if whole < 1:
        return "Less than a second"
    if whole == 1:
        return "1 second"
    if whole < 60:
        return f"{whole} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    steps = ((48, 1, "hours"), (24 * 14, 24, "days"), (24 * 60, 24 * 7, "weeks"))
    for limit, divisor, unit in steps:
        if hours < limit:
            return f"{hours // divisor} {unit}"
    if hours < 24 * 365 * 2:
        return f"{hours // (24 * 30)} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def human_time(value: Any, zero: str = "Never", now: float | None = None) -> str:
    """``format.HumanTime`` of an RFC 3339 string: ``2 minutes ago``, ``4 minutes from now``."""
    moment = rfc3339_seconds(value)
    if not moment:
        return zero
    delta = (time.time() if now is None else now) - moment
    if delta / 3600 / 24 / 365 < -20:
        return "Forever"
    if delta < 0:
        return _human_duration(-delta) + " from now"
    return _human_duration(delta) + " ago"


def go_duration(nanoseconds: int) -> str:
    """Go's ``time.Duration.String``: ``1.234s``, ``56.7ms``, ``1m2.5s``, ``0s``."""
    if nanoseconds == 0:
        return "0s"
    sign, value = ("-" if nanoseconds < 0 else ""), abs(int(nanoseconds))
    if value < 1_000:
        return f"{sign}{value}ns"
    if value < 1_000_000:
        fraction, whole = _fraction(value, 3)
        return f"{sign}{whole}{fraction}µs"
    if value < 1_000_000_000:
        fraction, whole = _fraction(value, 6)
        return f"{sign}{whole}{fraction}ms"
    fraction, whole = _fraction(value, 9)
    text = f"{whole % 60}{fraction}s"
    minutes = whole // 60
    if minutes:
        text = f"{minutes % 60}m{text}"
        if minutes // 60:
            text = f"{minutes // 60}h{text}"
    return sign + text


def _fraction(value: int, digits: int) -> tuple[str, int]:
    """Go's ``fmtFrac``: the last ``digits`` digits as ``.ddd`` without trailing zeros."""
    whole, rest = divmod(value, 10**digits)
    text = f"{rest:0{digits}d}".rstrip("0")
    return (f".{text}" if text else ""), whole


def processor(size: int, size_vram: int) -> str:
    """The PROCESSOR column of ``ollama ps``."""
    if size_vram == 0:
        return "100% CPU"
    if size_vram == size:
        return "100% GPU"
    if size_vram > size or size == 0:
        return "Unknown"
    cpu = round((size - size_vram) / size * 100)
    return f"{cpu}%/{100 - cpu}% CPU/GPU"


def until(expires_at: Any, now: float | None = None) -> str:
    """The UNTIL column of ``ollama ps``: ``4 minutes from now``, ``Forever``, ``Stopping...``."""
    moment = rfc3339_seconds(expires_at)
    if moment and moment < (time.time() if now is None else now):
        return "Stopping..."
    return human_time(expires_at, "Never", now)


def stats(final: dict[str, Any]) -> list[str]:
    """``--verbose``: the lines of Go's ``Metrics.Summary`` for a stream's final object."""
    lines = []
    total, load = final.get("total_duration", 0), final.get("load_duration", 0)
    prompt_n, prompt_ns = final.get("prompt_eval_count", 0), final.get("prompt_eval_duration", 0)
    eval_n, eval_ns = final.get("eval_count", 0), final.get("eval_duration", 0)
    if total > 0:
        lines.append(f"total duration:       {go_duration(total)}")
    if load > 0:
        lines.append(f"load duration:        {go_duration(load)}")
    if prompt_n > 0:
        lines.append(f"prompt eval count:    {prompt_n} token(s)")
    if prompt_ns > 0:
        lines.append(f"prompt eval duration: {go_duration(prompt_ns)}")
        lines.append(f"prompt eval rate:     {prompt_n / (prompt_ns / 1e9):.2f} tokens/s")
    if eval_n > 0:
        lines.append(f"eval count:           {eval_n} token(s)")
    if eval_ns > 0:
        lines.append(f"eval duration:        {go_duration(eval_ns)}")
        lines.append(f"eval rate:            {eval_n / (eval_ns / 1e9):.2f} tokens/s")
    return lines


__all__ = [
    "go_duration",
    "human_bytes",
    "human_time",
    "processor",
    "stats",
    "table",
    "until",
]
