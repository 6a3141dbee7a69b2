"""The ``/v1`` OpenAI surface against the real server: raw HTTP and the official SDK."""

from __future__ import annotations

import json

import openai
import pytest
import requests
from helpers import WEATHER_TOOL, wait_until

TOOLS = [WEATHER_TOOL]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
REASONING = "The user greets me. I should greet back.\n"


@pytest.fixture()
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="anything", max_retries=0)


def post(server, path: str, body: dict, **kwargs) -> requests.Response:
    return requests.post(server.url + path, json=body, timeout=120, **kwargs)


def sse_events(response: requests.Response) -> list[str]:
    """The ``data:`` payloads of an SSE body; events are separated by blank lines."""
    assert response.headers["Content-Type"].startswith("text/event-stream")
    blocks = response.text.split("\n\n")
    assert blocks[-1] == ""
    assert all(block.startswith("data: ") for block in blocks[:-1])
    return [block[len("data: ") :] for block in blocks[:-1]]


# -- raw HTTP -----------------------------------------------------------------------------


def test_sse_framing_ends_with_done_and_usage_before_it(server):
    body = {
        "model": "tiny",
        "messages": ASK,
        "max_tokens": 4,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events = sse_events(post(server, "/v1/chat/completions", body))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert all(c["model"] == "tiny" for c in chunks)
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] <= 4
    last = chunks[-2]["choices"][0]
    assert last["finish_reason"] in ("stop", "length") and last["delta"]["content"] == ""
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-2])


def test_error_envelope_keeps_the_native_status(server):
    missing = post(server, "/v1/chat/completions", {"model": "nope", "messages": ASK})
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {
            "message": "model 'nope' not found",
            "type": "not_found_error",
            "param": None,
            "code": None,
        }
    }
    empty = post(server, "/v1/chat/completions", {"model": "tiny", "messages": []})
    assert empty.status_code == 400
    assert empty.json()["error"]["type"] == "invalid_request_error"
    assert empty.json()["error"]["param"] == "messages"
    bad_json = requests.post(server.url + "/v1/chat/completions", data=b"{nope", timeout=30)
    assert bad_json.status_code == 400 and "error" in bad_json.json()
    unknown = requests.get(server.url + "/v1/nothing", timeout=30)
    assert (unknown.status_code, unknown.text) == (404, "404 page not found")


def test_native_checks_apply_through_v1(server):
    body = {"model": "tiny", "messages": ASK, "reasoning_effort": "low"}
    think = post(server, "/v1/chat/completions", body)
    assert think.status_code == 400
    assert "does not support thinking" in think.json()["error"]["message"]
    body = {"model": "tiny", "messages": ASK, "response_format": {"type": "json_schema"}}
    fmt = post(server, "/v1/chat/completions", body)
    assert fmt.status_code == 400
    assert fmt.json()["error"]["message"] == (
        "'response_format.json_schema.schema' must be an object"
    )


def test_reasoning_effort_none_turns_thinking_off(server):
    body = {"model": "tiny-think", "messages": ASK, "_debug_render_only": True}
    on = post(server, "/v1/chat/completions", body).json()
    off = post(server, "/v1/chat/completions", {**body, "reasoning_effort": "none"}).json()
    assert on["_debug_info"]["rendered_template"].endswith("<|im_start|>assistant\n")
    assert off["_debug_info"]["rendered_template"].endswith("<think>\n\n</think>\n\n")


def test_tool_results_reach_the_template_by_tool_call_id(server):
    messages = ASK + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc", "content": "sunny"},
    ]
    body = {"model": "parrot-tools", "messages": messages, "tools": TOOLS}
    reply = post(server, "/v1/chat/completions", {**body, "_debug_render_only": True}).json()
    rendered = reply["_debug_info"]["rendered_template"]
    assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in rendered
    assert "<tool_response>\nsunny\n</tool_response>" in rendered


# -- the official SDK ---------------------------------------------------------------------


def test_sdk_chat_stream_and_not_agree_under_greedy(client):
    args = {"model": "tiny", "messages": ASK, "max_tokens": 6, "temperature": 0}
    whole = client.chat.completions.create(**args)
    assert whole.object == "chat.completion" and whole.id.startswith("chatcmpl-")
    choice = whole.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert whole.usage.completion_tokens <= 6
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    stream = client.chat.completions.create(
        **args, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_sdk_completions(client):
    args = {"model": "tiny", "prompt": "Once upon", "max_tokens": 5, "temperature": 0}
    whole = client.completions.create(**args)
    assert whole.object == "text_completion" and whole.choices[0].finish_reason in (
        "stop",
        "length",
    )
    chunks = list(client.completions.create(**args, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text


def test_sdk_models_list_and_retrieve(client):
    listed = {m.id: m for m in client.models.list()}
    assert {"tiny:latest", "smollm2:135m", "parrot-tools:latest"} <= set(listed)
    assert listed["tiny:latest"].owned_by == "library" and listed["tiny:latest"].created > 0
    assert client.models.retrieve("tiny").id == "tiny"


def test_sdk_not_found_errors(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="nope", messages=ASK)
    assert info.value.status_code == 404 and "model 'nope' not found" in info.value.message
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=[])


def test_sdk_tool_call_round_trip(client):
    first = client.chat.completions.create(
        model="parrot-tools", messages=ASK, tools=TOOLS, temperature=0
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    history = ASK + [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18 degrees"},
    ]
    second = client.chat.completions.create(
        model="parrot-tools", messages=history, tools=TOOLS, temperature=0
    )
    assert second.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert second.usage.prompt_tokens > first.usage.prompt_tokens


def test_sdk_streamed_tool_call_comes_whole(client):
    stream = client.chat.completions.create(
        model="parrot-tools", messages=ASK, tools=TOOLS, temperature=0, stream=True
    )
    chunks = list(stream)
    deltas = [c.choices[0].delta for c in chunks]
    assert all(not d.content for d in deltas)
    calls = [tc for d in deltas for tc in (d.tool_calls or [])]
    assert len(calls) == 1
    assert calls[0].index == 0 and calls[0].id.startswith("call_")
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_sdk_reasoning_is_returned_separately(client):
    whole = client.chat.completions.create(model="parrot-think", messages=ASK, temperature=0)
    message = whole.choices[0].message
    assert message.content == "Hello there!"
    assert message.model_extra["reasoning"] == REASONING
    chunks = list(
        client.chat.completions.create(
            model="parrot-think", messages=ASK, temperature=0, stream=True
        )
    )
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning") or "" for c in chunks
    )
    assert reasoning == REASONING
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello there!"


@pytest.mark.real_model
def test_sdk_chat_on_the_real_model(client):
    reply = client.chat.completions.create(
        model="smollm2:135m",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=8,
        temperature=0,
    )
    assert reply.choices[0].message.content.strip()
    assert reply.usage.completion_tokens <= 8


def test_a_failure_mid_stream_ends_the_sse_stream_with_an_error_event():
    from mlx_ollama_bridge.engine import Failed, TextChunk
    from mlx_ollama_bridge.errors import BridgeError
    from mlx_ollama_bridge.server.openai_wire import ChatEncoder

    events = iter([TextChunk("Hel"), Failed(BridgeError("model was unloaded"))])
    base = {"id": "chatcmpl-1", "object": "chat.completion", "model": "m"}
    lines = list(ChatEncoder(base, include_usage=True).lines(events))
    assert json.loads(lines[0][len("data: ") :])["choices"][0]["delta"]["content"] == "Hel"
    assert json.loads(lines[-1][len("data: ") :]) == {
        "error": {"message": "model was unloaded", "type": "api_error", "param": None, "code": None}
    }
    assert "data: [DONE]\n\n" not in lines


def test_disconnect_mid_sse_stream_cancels_the_generation(server):
    canceled_before = server.log().count("request canceled")
    body = {
        "model": "tiny",
        "messages": ASK,
        "max_tokens": 2000,
        "temperature": 0,
        "stream": True,
    }
    with requests.post(
        server.url + "/v1/chat/completions", json=body, stream=True, timeout=60
    ) as response:
        next(response.iter_lines())
    follow_up = post(
        server, "/v1/chat/completions", {"model": "tiny", "messages": ASK, "max_tokens": 2}
    )
    assert follow_up.status_code == 200
    canceled = wait_until(lambda: server.log().count("request canceled") > canceled_before, 30)
    assert canceled, "the abandoned generation was not canceled"
