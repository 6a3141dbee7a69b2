"""The official ``ollama`` Python client against the real server (tiny and real models)."""

from __future__ import annotations

import ollama
import pytest

QUESTION = "What is the capital of France? One word."
SMOL = "smollm2:135m"
FEW = {"num_predict": 4, "temperature": 0}
EIGHT = {"temperature": 0, "num_predict": 8}


@pytest.fixture()
def client(server) -> ollama.Client:
    return ollama.Client(host=server.url)


def test_list_and_show(client):
    names = [m.model for m in client.list().models]
    assert "smollm2:135m" in names and "tiny:latest" in names
    shown = client.show("smollm2:135m")
    assert shown.details.family == "llama"
    assert shown.modelinfo["general.architecture"] == "llama"
    assert "completion" in shown.capabilities


def test_generate_stream_and_not(client):
    whole = client.generate(model="tiny", prompt="hi", options=FEW)
    assert whole.done and whole.eval_count <= 4
    chunks = list(client.generate(model="tiny", prompt="hi", stream=True, options=FEW))
    assert chunks[-1].done
    assert "".join(c.response for c in chunks) == whole.response


def test_chat_stream_and_not(client):
    messages = [{"role": "user", "content": "hello"}]
    whole = client.chat(model="tiny", messages=messages, options=FEW)
    chunks = list(client.chat(model="tiny", messages=messages, stream=True, options=FEW))
    assert "".join(c.message.content for c in chunks) == whole.message.content
    assert chunks[-1].done_reason in ("stop", "length")


def test_unknown_model_raises_response_error_404(client):
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="missing-model", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 404


@pytest.mark.real_model
def test_real_model_knows_the_capital_of_france(client):
    reply = client.chat(
        model="smollm2:135m",
        messages=[{"role": "user", "content": QUESTION}],
        options=EIGHT,
    )
    assert "Paris" in reply.message.content
    assert reply.prompt_eval_count > 5 and 0 < reply.eval_count <= 8


@pytest.mark.real_model
def test_real_model_streams_generate(client):
    chunks = list(
        client.generate(model="smollm2:135m", prompt=QUESTION, stream=True, options=EIGHT)
    )
    text = "".join(c.response for c in chunks)
    assert "Paris" in text
    final = chunks[-1]
    assert final.done and 1 <= final.eval_count <= 8
