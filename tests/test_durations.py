"""Go durations, keep_alive (spec §9) and RFC 3339 timestamps (spec §1.3)."""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta, timezone

import pytest

from mlx_ollama_bridge.durations import (
    format_rfc3339,
    go_quote,
    parse_env_duration,
    parse_env_keep_alive,
    parse_go_duration,
    parse_keep_alive,
)
from mlx_ollama_bridge.errors import BadRequest

S = 1_000_000_000


@pytest.mark.parametrize(
    ("text", "nanoseconds"),
    [
        ("0", 0),
        ("-0", 0),
        ("+0", 0),
        ("0s", 0),
        ("5m", 5 * 60 * S),
        ("30s", 30 * S),
        ("1h30m", 5400 * S),
        ("1.5h", 5400 * S),
        ("250ms", 250_000_000),
        (".5s", S // 2),
        ("1.s", S),
        ("+5s", 5 * S),
        ("-1m", -60 * S),
        ("-1.5s", -1_500_000_000),
        ("7ns", 7),
        ("1us", 1000),
        ("1µs", 1000),  # micro sign
        ("1μs", 1000),  # Greek mu
        ("1h1m1s1ms1us1ns", 3661 * S + 1_001_001),
        ("2h45m30.5s", (2 * 3600 + 45 * 60 + 30) * S + S // 2),
        ("9223372036854775807ns", 2**63 - 1),
        ("-9223372036854775808ns", -(2**63)),
        ("0.000000001s", 1),
        ("1.0000000001s", S),  # below a nanosecond: truncated
    ],
)
def test_go_duration_values(text, nanoseconds):
    assert parse_go_duration(text) == nanoseconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", 'time: invalid duration ""'),
        ("-", 'time: invalid duration "-"'),
        ("abc", 'time: invalid duration "abc"'),
        (".s", 'time: invalid duration ".s"'),
        ("300", 'time: missing unit in duration "300"'),
        ("-1", 'time: missing unit in duration "-1"'),
        ("1.5", 'time: missing unit in duration "1.5"'),
        ("1..5s", 'time: missing unit in duration "1..5s"'),
        ("5x", 'time: unknown unit "x" in duration "5x"'),
        ("1d", 'time: unknown unit "d" in duration "1d"'),
        ("5 m", 'time: unknown unit " m" in duration "5 m"'),
        ("٣s", 'time: invalid duration "\\xd9\\xa3s"'),
        ("5µx", 'time: unknown unit "\\xc2\\xb5x" in duration "5\\xc2\\xb5x"'),
        ("9223372036854775808ns", 'time: invalid duration "9223372036854775808ns"'),
        ("3000000h", 'time: invalid duration "3000000h"'),
    ],
)
def test_go_duration_errors_read_like_go(text, message):
    with pytest.raises(ValueError) as caught:
        parse_go_duration(text)
    assert str(caught.value) == message


def test_go_quote_escapes_like_go():
    assert go_quote('a"b\\c') == '"a\\"b\\\\c"'
    assert go_quote("\n") == '"\\x0a"'


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        (0, 0.0),
        (300, 300.0),
        (1.5, 1.5),
        (-1, math.inf),
        (-0.5, math.inf),
        (1e300, math.inf),  # beyond int64 nanoseconds: as good as forever
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("0", 0.0),
        ("0s", 0.0),
        ("-1m", math.inf),
        ("-1s", math.inf),
    ],
)
def test_keep_alive_values(value, seconds):
    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("300", 'time: missing unit in duration "300"'),
        ("-1", 'time: missing unit in duration "-1"'),
        ("forever", 'time: invalid duration "forever"'),
        ("1d", 'time: unknown unit "d" in duration "1d"'),
        (True, "Unsupported type: 'bool'"),
        (False, "Unsupported type: 'bool'"),
        ({"a": 1}, "Unsupported type: 'map[string]interface {}'"),
        ([1], "Unsupported type: '[]interface {}'"),
    ],
)
def test_keep_alive_errors_are_400_with_ollamas_text(value, message):
    with pytest.raises(BadRequest) as caught:
        parse_keep_alive(value)
    assert caught.value.status_code == 400
    assert caught.value.message == message


def test_keep_alive_nan_is_rejected():
    with pytest.raises(BadRequest):
        parse_keep_alive(float("nan"))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3600", 3600.0),
        ("0", 0.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("-1", math.inf),
        ("-1m", math.inf),
        ("", 300.0),
        (None, 300.0),
    ],
)
def test_env_keep_alive(text, seconds):
    assert parse_env_keep_alive(text) == seconds


@pytest.mark.parametrize("text", ["bogus", "1.5", "1d", "5 m"])
def test_env_keep_alive_bad_value_is_five_minutes_with_a_warning(text, caplog):
    with caplog.at_level(logging.WARNING):
        assert parse_env_keep_alive(text) == 300.0
    assert "OLLAMA_KEEP_ALIVE" in caplog.text


def test_env_duration_accepts_signed_integer_seconds():
    assert parse_env_duration("+30") == 30.0
    assert parse_env_duration("-5") == -5.0
    assert parse_env_duration("x") is None
    assert parse_env_duration("") is None


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2025, 12, 18, 7, 55, 37, 123456, timezone.utc), "2025-12-18T07:55:37.123456Z"),
        (datetime(2025, 12, 18, 7, 55, 37, 500000, timezone.utc), "2025-12-18T07:55:37.5Z"),
        (datetime(2025, 12, 18, 7, 55, 37, tzinfo=timezone.utc), "2025-12-18T07:55:37Z"),
        (
            datetime(2025, 11, 2, 10, 11, 12, 500000, timezone(timedelta(hours=-7))),
            "2025-11-02T10:11:12.5-07:00",
        ),
        (
            datetime(2025, 1, 2, 3, 4, 5, 10, timezone(timedelta(hours=5, minutes=30))),
            "2025-01-02T03:04:05.00001+05:30",
        ),
        # a zero offset is "Z" whatever the zone, as in Go
        (
            datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(0), "GMT")),
            "2025-01-02T03:04:05Z",
        ),
    ],
)
def test_rfc3339_like_go(moment, text):
    assert format_rfc3339(moment) == text
    assert datetime.fromisoformat(text.replace("Z", "+00:00")) == moment


def test_rfc3339_naive_datetimes_are_local_time():
    naive = datetime(2025, 6, 1, 12, 0, 0, 250000)
    text = format_rfc3339(naive)
    assert text.startswith("2025-06-01T12:00:00.25")
    assert datetime.fromisoformat(text.replace("Z", "+00:00")) == naive.astimezone()
