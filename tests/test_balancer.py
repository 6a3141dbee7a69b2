"""Two bridges behind one ordinary load balancer (HAProxy from Debian, ``deploy/haproxy.cfg``)
with affinity by conversation: every turn of a chat lands on the bridge that answered its
first turn, where that chat's prompt cache is. Real gunicorn bridges, real HAProxy."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from helpers import REPO, RunningServer, free_port, start_server, stop_server, wait_until

HAPROXY = REPO / ".cache" / "haproxy" / "bin" / "haproxy"
CONFIG = REPO / "deploy" / "haproxy.cfg"
FEW = {"temperature": 0, "num_predict": 3}
OPENERS = [f"conversation {n}: tell me about topic {n}" for n in range(6)]


@pytest.fixture(scope="module")
def bridges(shared_store, tmp_path_factory) -> Iterator[list[RunningServer]]:
    root = tmp_path_factory.mktemp("bridges")
    running = [start_server(shared_store.env, root / f"bridge{n}.log") for n in (1, 2)]
    yield running
    for server in running:
        stop_server(server)


@pytest.fixture(scope="module")
def balancer(bridges, tmp_path_factory) -> Iterator[str]:
    if not HAPROXY.exists():
        pytest.fail(f"{HAPROXY} missing: run `make lb-deps` (Debian's haproxy, no root needed)")
    port = free_port()
    env = {
        **os.environ,
        "LB_BIND": f"127.0.0.1:{port}",
        "BRIDGE_1": bridges[0].url.removeprefix("http://"),
        "BRIDGE_2": bridges[1].url.removeprefix("http://"),
    }
    log = (tmp_path_factory.mktemp("lb") / "haproxy.log").open("wb")
    process = subprocess.Popen([str(HAPROXY), "-db", "-f", str(CONFIG)], env=env, stderr=log)
    url = f"http://127.0.0.1:{port}"
    assert wait_until(lambda: _answers(url, process), timeout=30, poll=0.2)
    yield url
    process.terminate()
    process.wait(timeout=10)


def _answers(url: str, process: subprocess.Popen) -> bool:
    assert process.poll() is None, "haproxy exited"
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _turn(url: str, messages: list[dict], *, path: str = "/api/chat") -> tuple[str, str]:
    response = requests.post(
        url + path,
        json={"model": "tiny", "messages": messages, "stream": False, "options": FEW},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return response.headers["X-Served-By"], response.json()["message"]["content"]


def _reused(bridge: RunningServer) -> int:
    return requests.get(f"{bridge.url}/health", timeout=10).json()["engine_stats"][
        "prompt_tokens_reused"
    ]


def test_turns_of_a_conversation_stay_on_one_bridge(balancer, bridges):
    reused_before = [_reused(b) for b in bridges]
    served: dict[str, str] = {}
    for opener in OPENERS:
        first = [{"role": "user", "content": opener}]
        where, answer = _turn(balancer, first)
        history = first + [{"role": "assistant", "content": answer}]
        for n in range(2):  # later turns, with the whole history resent, as clients do
            history.append({"role": "user", "content": f"and then? ({n})"})
            again, answer = _turn(balancer, history)
            assert again == where, f"{opener!r} moved from {where} to {again}"
            history.append({"role": "assistant", "content": answer})
        served[opener] = where
    assert set(served.values()) == {"bridge1", "bridge2"}  # both take conversations
    # and the later turns found their earlier turns' KV caches there
    assert all(_reused(b) > before for b, before in zip(bridges, reused_before, strict=True))


def test_system_prompt_and_header_keys(balancer):
    system = {"role": "system", "content": "You are terse."}
    wheres = set()
    for opener in OPENERS:
        first = [system, {"role": "user", "content": opener}]
        where, answer = _turn(balancer, first)
        more = first + [{"role": "assistant", "content": answer}, {"role": "user", "content": "?"}]
        assert _turn(balancer, more)[0] == where
        wheres.add(where)
    assert len(wheres) == 2  # a shared system prompt does not pin every chat to one bridge
    # an explicit conversation id wins over the body
    headers = {"X-Conversation-Id": "chat-42"}
    body = {"model": "tiny", "prompt": "x", "stream": False, "options": FEW}
    seen = {
        requests.post(
            f"{balancer}/api/generate",
            json={**body, "prompt": f"p{n}"},
            headers=headers,
            timeout=60,
        ).headers["X-Served-By"]
        for n in range(4)
    }
    assert len(seen) == 1


def test_the_balancer_config_is_the_documented_one():
    text = (REPO / "docs" / "distributed.md").read_text()
    assert "deploy/haproxy.cfg" in text
    assert Path(CONFIG).read_text().count("json_query") >= 3
