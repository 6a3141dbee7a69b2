"""A bounded soak: ~2,000 mixed requests from 8 clients against the real session server.

Tags, show, short generate/chat on the tiny model, embeddings, bad requests and streams the
client drops after the first line. Afterwards: no 5xx (503 busy is allowed), every fully
read stream was well-formed NDJSON, ``/health`` is 200, a greedy request answers as it did
before, and the worker's RSS after the measured phase is within a small tolerance of its
RSS after the warm-up phase. Runs in ``make test`` (well under 90 s on 2 cores).
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psutil
import requests
from helpers import RunningServer

CLIENTS = 8
WARMUP, MEASURED = 400, 1600
RSS_TOLERANCE_BYTES = 48 << 20
GREEDY = {
    "model": "tiny",
    "prompt": "The soak test",
    "stream": False,
    "options": {"temperature": 0, "num_predict": 8, "seed": 7},
}
_USER = [{"role": "user", "content": "hi"}]


def test_soak_mixed_load_keeps_the_server_healthy(server: RunningServer) -> None:
    reference = _greedy(server)
    worker = _worker(server)
    statuses: Counter[int] = Counter()
    _run(server, WARMUP, statuses, seed=1)
    rss_before = worker.memory_info().rss
    _run(server, MEASURED, statuses, seed=2)
    rss_after = worker.memory_info().rss
    growth = rss_after - rss_before
    print(f"soak statuses={dict(statuses)} rss_before={rss_before} rss_after={rss_after}")
    assert not [s for s in statuses if s >= 500 and s != 503], statuses
    assert sum(statuses.values()) == WARMUP + MEASURED
    assert requests.get(server.url + "/health", timeout=10).status_code == 200
    assert _greedy(server) == reference
    assert growth < RSS_TOLERANCE_BYTES, f"worker RSS grew by {growth / 2**20:.1f} MiB"


def _run(server: RunningServer, count: int, statuses: Counter[int], *, seed: int) -> None:
    lock = threading.Lock()
    local = threading.local()

    def one(i: int) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        status = _request(session, server.url, random.Random(seed * 100_003 + i))
        with lock:
            statuses[status] += 1

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(one, range(count)))  # list(): re-raise any client-side assertion


def _request(session: requests.Session, url: str, rng: random.Random) -> int:
    """One request of a random kind; returns its status."""
    kind = rng.choice(_KINDS)
    method, path, body, drop = kind(rng)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    if method == "GET":
        data = None
    with session.request(method, url + path, data=data, stream=True, timeout=60) as response:
        if drop:  # a client that goes away mid-stream
            next(response.iter_lines(), None)
            response.raw.close()
            return response.status_code
        raw = response.content
        if response.status_code >= 400:
            assert "error" in json.loads(raw), raw[:300]
        elif "ndjson" in response.headers.get("Content-Type", ""):
            lines = [json.loads(line) for line in raw.splitlines()]
            assert lines and lines[-1].get("done") is True, raw[-300:]
        return response.status_code


def _tags(rng: random.Random) -> tuple[str, str, Any, bool]:
    return "GET", rng.choice(["/api/tags", "/api/ps", "/api/version", "/v1/models"]), None, False


def _show(rng: random.Random) -> tuple[str, str, Any, bool]:
    return "POST", "/api/show", {"model": rng.choice(["tiny", "all-minilm", "nope"])}, False


def _generate(rng: random.Random) -> tuple[str, str, Any, bool]:
    options = {"num_predict": rng.randint(1, 6), "temperature": rng.random()}
    body = {"model": "tiny", "prompt": f"n{rng.randint(0, 99)}", "options": options}
    return "POST", "/api/generate", {**body, "stream": rng.random() < 0.7}, False


def _chat(rng: random.Random) -> tuple[str, str, Any, bool]:
    body = {"model": "tiny", "messages": _USER, "options": {"num_predict": rng.randint(1, 6)}}
    return "POST", "/api/chat", {**body, "stream": rng.random() < 0.7}, False


def _embed(rng: random.Random) -> tuple[str, str, Any, bool]:
    inputs = [f"text {rng.randint(0, 9)}"] * rng.randint(1, 3)
    return "POST", "/api/embed", {"model": "all-minilm", "input": inputs}, False


def _bad(rng: random.Random) -> tuple[str, str, Any, bool]:
    body = rng.choice(
        [b"{", b"[1]", b'{"model": 3}', b'{"model": "tiny", "options": {"num_ctx": -1}}']
    )
    return "POST", rng.choice(["/api/generate", "/api/chat", "/api/embed"]), body, False


def _dropped(rng: random.Random) -> tuple[str, str, Any, bool]:
    body = {"model": "tiny", "prompt": "long", "options": {"num_predict": 64}}
    if rng.random() < 0.5:
        return "POST", "/api/generate", body, True
    return "POST", "/api/chat", {**body, "messages": _USER}, True


_KINDS = [_tags, _tags, _show, _generate, _generate, _chat, _chat, _embed, _bad, _dropped]


def _greedy(server: RunningServer) -> str:
    response = requests.post(server.url + "/api/generate", json=GREEDY, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["response"]


def _worker(server: RunningServer) -> psutil.Process:
    """The gunicorn worker (the one child of the master) that owns MLX."""
    children = psutil.Process(server.process.pid).children()
    assert len(children) == 1, children
    return children[0]
