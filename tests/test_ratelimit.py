"""The optional per-client rate limit: parsing, the window, and 429 from a real server."""

from __future__ import annotations

import pytest
import requests
from helpers import own_server, stop_server

from mlx_ollama_bridge.config import parse_rate_limit
from mlx_ollama_bridge.server.ratelimit import FixedWindow


@pytest.mark.parametrize(
    ("text", "expected"),
    [("60/minute", (60, 60.0)), ("5 per second", (5, 1.0)), ("2/hours", (2, 3600.0))]
    + [("", None), ("off", None)],
)
def test_parse_rate_limit(text, expected):
    assert parse_rate_limit(text) == expected


@pytest.mark.parametrize("text", ["60", "x/minute", "0/minute", "5/fortnight"])
def test_bad_rate_limits_are_refused(text):
    with pytest.raises(ValueError):
        parse_rate_limit(text)


def test_a_fixed_window_per_key():
    now = [0.0]
    window = FixedWindow(2, 60.0, clock=lambda: now[0])
    assert [window.hit("a"), window.hit("a"), window.hit("b")] == [0.0, 0.0, 0.0]
    assert window.hit("a") == 60.0
    now[0] = 45.0
    assert window.hit("a") == 15.0
    now[0] = 60.0
    assert window.hit("a") == 0.0


def test_real_server_answers_429_with_retry_after(tmp_path, tiny_model_dir):
    running = own_server(tmp_path, {"tiny": tiny_model_dir}, MLX_BRIDGE_RATE_LIMIT="3/minute")
    try:
        statuses = [requests.get(running.url + "/api/tags", timeout=10).status_code for _ in "abc"]
        assert statuses == [200, 200, 200]
        limited = requests.get(running.url + "/api/tags", timeout=10)
        assert limited.status_code == 429
        assert limited.json() == {"error": "rate limit exceeded, retry later"}
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert requests.get(running.url + "/", timeout=10).status_code == 200  # exempt
        other = {"Authorization": "Bearer other"}  # another key has its own budget
        assert requests.get(running.url + "/api/tags", headers=other, timeout=10).ok
    finally:
        stop_server(running)
