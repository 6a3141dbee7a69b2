"""A hostile upstream Ollama (tests/fake_ollama.py on loopback): no answer is read past its
cap once decompressed (Ollama's CVE-2024-12886, gzip bombs), and no redirect is followed to
another address (SSRF). The merged lists fall back to the bridge's own models; a relayed
answer ends with an error line at the cap; the server stays healthy.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fake_ollama import FakeOllama
from helpers import StubEngine

from mlx_ollama_bridge import upstream as upstream_module
from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.server import create_app
from mlx_ollama_bridge.upstream import Upstream, UpstreamUnavailable, iter_body


@pytest.fixture
def fakes() -> Iterator[tuple[FakeOllama, FakeOllama]]:
    """The configured upstream and a second server that must never be contacted."""
    fake, trap = FakeOllama().start(), FakeOllama().start()
    yield fake, trap
    fake.stop()
    trap.stop()


@pytest.mark.parametrize("mode", ["gzip-bomb", "huge"])
def test_oversized_list_answers_are_dropped(fakes, mode):
    fake, _ = fakes
    fake.hostile["/api/tags"] = mode
    upstream = Upstream(fake.url)
    assert upstream.get_json("/api/tags") is None
    assert upstream.get_json("/api/ps") == {"models": []}  # still up, still used


def test_requests_ask_for_uncompressed_answers(fakes):
    fake, _ = fakes
    Upstream(fake.url).get_json("/api/ps")
    assert all(headers.get("Accept-Encoding") == "identity" for *_, headers, _ in fake.requests)


def test_redirects_are_not_followed(fakes):
    fake, trap = fakes
    fake.hostile["/api/tags"] = f"redirect:{trap.url}/api/tags"
    fake.hostile["/api/chat"] = f"redirect:{trap.url}/api/chat"
    upstream = Upstream(fake.url)
    assert upstream.get_json("/api/tags") is None
    reply = upstream.open("POST", "/api/chat", b"{}", {})
    assert reply.status_code == 302
    reply.close()
    assert trap.requests == []


def test_a_relayed_gzip_bomb_stops_at_the_cap(fakes):
    fake, _ = fakes
    fake.hostile["/api/chat"] = "gzip-bomb"
    reply = Upstream(fake.url).open("POST", "/api/chat", b"{}", {})
    seen = 0
    with pytest.raises(UpstreamUnavailable, match="larger than"):
        for chunk in iter_body(reply, limit=1 << 20):
            seen += len(chunk)
    assert seen <= 1 << 20


def test_the_bridge_relays_a_bomb_only_up_to_the_cap(fakes, monkeypatch):
    fake, trap = fakes
    fake.hostile["/api/chat"] = "gzip-bomb"
    fake.hostile["/api/tags"] = f"redirect:{trap.url}/api/tags"
    monkeypatch.setattr(upstream_module, "MAX_RELAY_BYTES", 1 << 20)
    monkeypatch.setenv("MLX_BRIDGE_UPSTREAM", fake.url)
    client = create_app(Settings.from_env(), engine=StubEngine()).test_client()
    reply = client.post("/api/chat", json={"model": "elsewhere", "messages": []})
    body = reply.get_data()
    assert reply.status_code == 200
    assert len(body) <= (1 << 20) + 1024
    assert body.rstrip().endswith(b'bytes)"}')  # the final error line names the cap
    tags = client.get("/api/tags")
    assert tags.status_code == 200 and tags.get_json() == {"models": []}
    assert trap.requests == []
    assert client.get("/api/version").status_code == 200
