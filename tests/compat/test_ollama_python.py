"""The official ``ollama`` Python client, sync and async, against the real server."""

from __future__ import annotations

import asyncio
from datetime import datetime

import ollama
import pytest

GREEDY = {"temperature": 0, "num_predict": 6}


@pytest.fixture()
def client(server) -> ollama.Client:
    return ollama.Client(host=server.url)


def test_list_show_ps(client):
    listed = {m.model: m for m in client.list().models}
    assert listed["tiny:latest"].details.format == "mlx"
    assert len(listed["smollm2:135m"].digest) == 64
    shown = client.show("tiny")
    assert shown.modelinfo["general.architecture"] == "llama"
    assert "tools" in shown.capabilities
    client.generate(model="tiny", keep_alive="2m")  # load only
    running = {m.model: m for m in client.ps().models}
    assert "tiny:latest" in running
    assert running["tiny:latest"].expires_at > datetime.now(
        running["tiny:latest"].expires_at.tzinfo
    )


def test_generate_options_and_keep_alive(client):
    reply = client.generate(model="tiny", prompt="hello", options=GREEDY, keep_alive=0)
    assert reply.done_reason == "length" and reply.eval_count == 6
    assert reply.total_duration >= reply.eval_duration > 0
    assert "tiny:latest" not in [m.model for m in client.ps().models]


def test_chat_history_roles_and_system(client):
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "again"},
    ]
    short = client.chat(model="tiny", messages=messages[-1:], options=GREEDY)
    full = client.chat(model="tiny", messages=messages, options=GREEDY)
    assert full.prompt_eval_count > short.prompt_eval_count
    streamed = "".join(
        c.message.content
        for c in client.chat(model="tiny", messages=messages, options=GREEDY, stream=True)
    )
    assert streamed == full.message.content


def test_async_client(server):
    async def run() -> tuple[str, str, list[str]]:
        client = ollama.AsyncClient(host=server.url)
        whole = await client.generate(model="tiny", prompt="async", options=GREEDY)
        stream = await client.generate(model="tiny", prompt="async", options=GREEDY, stream=True)
        parts = [p.response async for p in stream]
        listed = await client.list()
        return whole.response, "".join(parts), [m.model for m in listed.models]

    whole, streamed, names = asyncio.run(run())
    assert whole == streamed
    assert "tiny:latest" in names


def test_errors_surface_as_response_error(client):
    with pytest.raises(ollama.ResponseError) as missing:
        client.generate(model="no-such-model", prompt="x")
    assert missing.value.status_code == 404
    assert "not found" in missing.value.error
    with pytest.raises(ollama.ResponseError) as bad:
        client.chat(
            model="tiny",
            messages=[{"role": "user", "content": "x"}],
            options={"temperature": "hot"},
        )
    assert bad.value.status_code == 400
