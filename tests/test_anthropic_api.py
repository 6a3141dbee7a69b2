"""The Anthropic Messages API (``/v1/messages``) over real HTTP, driven by the ``anthropic`` SDK.

The real server (gunicorn) runs the real engine on the tiny models: ``tiny`` (random
weights), ``parrot-tools`` / ``parrot-think`` (greedy decoding says a tool call, or a
reasoning block and an answer; see ``parrot_model``), and once the real ``smollm2:135m``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest
import requests
from helpers import RunningServer, start_server, stop_server

from mlx_ollama_bridge.engine import Failed, TextChunk
from mlx_ollama_bridge.errors import BridgeError
from mlx_ollama_bridge.server.anthropic_wire import MessagesEncoder, messages_to_native

HELLO = [{"role": "user", "content": "Hello there"}]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {
        "type": "object",
        "required": ["city"],
        "properties": {"city": {"type": "string", "description": "the city"}},
    },
}
GREEDY = {"temperature": 0}  # the SDK (2.x) has no sampling arguments: sent as extra body
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()


@pytest.fixture(scope="module")
def client(server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="ollama", max_retries=0)


def sse_events(response: requests.Response) -> list[tuple[str, dict]]:
    """``(event, data)`` pairs of an SSE body."""
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = []
    for frame in response.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in frame.splitlines())
        data = json.loads(lines["data"])
        assert data["type"] == lines["event"]
        events.append((lines["event"], data))
    return events


# -- create --------------------------------------------------------------------------------


def test_create_answers_a_message_with_usage(client):
    message = client.messages.create(
        model="tiny",
        max_tokens=5,
        extra_body=GREEDY,
        system="You are terse.",
        messages=HELLO,
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_") and message.model == "tiny"
    assert [block.type for block in message.content] == ["text"]
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 5 and message.usage.input_tokens > 0


def test_system_blocks_multi_turn_and_sampling_fields(client):
    first = client.messages.create(
        model="tiny",
        max_tokens=4,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Again?"},
        ],
        extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 20},  # SDK 2 has no such args
        stop_sequences=["\n\n"],
        metadata={"user_id": "u1"},
        tool_choice={"type": "auto"},
    )
    assert first.stop_reason in ("max_tokens", "end_turn")
    assert first.usage.output_tokens <= 4


def test_a_stop_sequence_is_reported_as_anthropic_does(client):
    fields = {"model": "tiny", "max_tokens": 12, "messages": HELLO, "extra_body": GREEDY}
    free = client.messages.create(**fields).content[0].text
    stop = free[3:5]  # greedy: the same text again, now cut where this stop string starts
    assert stop.strip(), free
    message = client.messages.create(**fields, stop_sequences=["never-said", stop])
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == stop
    assert free.startswith(message.content[0].text) and stop not in message.content[0].text
    with client.messages.stream(**fields, stop_sequences=[stop]) as stream:
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", stop)


def test_beta_query_and_anthropic_headers_are_accepted(server):
    body = {"model": "tiny", "max_tokens": 2, "messages": HELLO}
    headers = {"anthropic-version": "2023-06-01", "anthropic-beta": "claude-code-20250219"}
    reply = requests.post(
        server.url + "/v1/messages?beta=true", json=body, headers=headers, timeout=60
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["output_tokens"] == 2


# -- streaming -----------------------------------------------------------------------------


def test_stream_follows_anthropic_event_order(server):
    body = {"model": "tiny", "max_tokens": 6, "messages": HELLO, "stream": True, "temperature": 0}
    events = sse_events(requests.post(server.url + "/v1/messages", json=body, timeout=60))
    kinds = [kind for kind, _ in events]
    assert kinds[:3] == ["message_start", "ping", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[3:-3]) == {"content_block_delta"}
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"] == {
        "input_tokens": events[-2][1]["usage"]["input_tokens"],
        "output_tokens": 0,
    }
    assert events[2][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert all(data["delta"]["type"] == "text_delta" for _, data in events[3:-3])
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "max_tokens"
    assert delta["usage"]["output_tokens"] == 6 and delta["usage"]["input_tokens"] > 0


def test_sdk_stream_and_create_agree_under_greedy(client):
    fields = {"model": "tiny", "max_tokens": 8, "extra_body": GREEDY, "messages": HELLO}
    with client.messages.stream(**fields) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    whole = client.messages.create(**fields)
    assert text == final.content[0].text == whole.content[0].text
    assert final.usage.output_tokens == whole.usage.output_tokens == 8


def test_a_failure_mid_stream_ends_with_an_error_event():
    events = iter([TextChunk("Hel"), Failed(BridgeError("model was unloaded"))])
    lines = list(MessagesEncoder("msg_1", "m").lines(events))
    assert lines[-1] == (
        "event: error\ndata: "
        '{"type":"error","error":{"type":"api_error","message":"model was unloaded"}}\n\n'
    )
    assert not any("message_stop" in line for line in lines)


# -- tools ---------------------------------------------------------------------------------


def test_tool_use_round_trip(client):
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.messages.create(
        model="parrot-tools", max_tokens=60, extra_body=GREEDY, tools=[WEATHER_TOOL], messages=ask
    )
    assert first.stop_reason == "tool_use"
    (call,) = [block for block in first.content if block.type == "tool_use"]
    assert call.name == "get_weather" and call.input == {"city": "Paris"}
    result = {"type": "tool_result", "tool_use_id": call.id, "content": "18 C, sunny"}
    second = client.messages.create(
        model="parrot-tools",
        max_tokens=60,
        extra_body=GREEDY,
        tools=[WEATHER_TOOL],
        messages=[
            *ask,
            {"role": "assistant", "content": [block.model_dump() for block in first.content]},
            {"role": "user", "content": [result]},
        ],
    )
    assert second.type == "message" and second.usage.input_tokens > first.usage.input_tokens


def test_streamed_tool_use_comes_as_input_json_delta(server, client):
    body = {
        "model": "parrot-tools",
        "max_tokens": 60,
        "temperature": 0,
        "stream": True,
        "tools": [WEATHER_TOOL],
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
    }
    events = sse_events(requests.post(server.url + "/v1/messages", json=body, timeout=60))
    starts = [data for kind, data in events if kind == "content_block_start"]
    tool = next(s for s in starts if s["content_block"]["type"] == "tool_use")
    assert tool["content_block"]["input"] == {} and tool["content_block"]["name"] == "get_weather"
    deltas = [
        d["delta"]["partial_json"]
        for kind, d in events
        if kind == "content_block_delta" and d["index"] == tool["index"]
    ]
    assert json.loads("".join(deltas)) == {"city": "Paris"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    fields = {k: v for k, v in body.items() if k not in ("stream", "temperature")}
    with client.messages.stream(**fields, extra_body=GREEDY) as stream:
        final = stream.get_final_message()
    assert [b.input for b in final.content if b.type == "tool_use"] == [{"city": "Paris"}]


def test_tool_results_become_tool_messages_before_the_users_text():
    native = messages_to_native(
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Let me look."},
                        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": [{"type": "text", "text": "sunny"}],
                        },
                        {"type": "text", "text": "thanks"},
                    ],
                },
            ],
        }
    )
    assert native["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [{"id": "toolu_1", "function": {"name": "get_weather", "arguments": {}}}],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "toolu_1", "tool_name": "get_weather"},
        {"role": "user", "content": "thanks"},
    ]
    assert native["options"] == {"num_predict": 5}


def test_claude_codes_own_request_translates():
    capture = Path(__file__).parent / "compat" / "agent_requests" / "claude_code_messages.json"
    body = json.loads(capture.read_text())["body"]
    native = messages_to_native(body)
    assert native["messages"][0]["role"] == "system"
    assert native["messages"][0]["content"].startswith("x-anthropic-billing-header")
    assert native["stream"] is True and native["options"]["num_predict"] == 32000
    assert len(native["tools"]) == len(body["tools"])
    assert native["think"] is True  # output_config.effort; dropped for a model that cannot think


# -- thinking ------------------------------------------------------------------------------


def test_thinking_blocks_from_a_thinking_model(server, client):
    fields = {
        "model": "parrot-think",
        "max_tokens": 60,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": HELLO,
    }
    message = client.messages.create(**fields, extra_body=GREEDY)
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking.strip() and message.content[1].text.strip()
    events = sse_events(
        requests.post(
            server.url + "/v1/messages", json={**fields, **GREEDY, "stream": True}, timeout=60
        )
    )
    blocks = [d["content_block"]["type"] for k, d in events if k == "content_block_start"]
    assert blocks == ["thinking", "text"]
    thought = "".join(
        d["delta"].get("thinking", "") for k, d in events if k == "content_block_delta"
    )
    assert thought == message.content[0].thinking


def test_thinking_asked_of_a_model_that_cannot_think_is_ignored(client):
    message = client.messages.create(
        model="tiny",
        max_tokens=2,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=HELLO,
    )
    assert [block.type for block in message.content] == ["text"]


# -- count_tokens --------------------------------------------------------------------------


def test_count_tokens_counts_with_the_models_tokenizer(client):
    ask = [{"role": "user", "content": "Count these words for me, please: one two three."}]
    counted = client.messages.count_tokens(model="tiny", messages=ask)
    created = client.messages.create(model="tiny", max_tokens=1, messages=ask)
    assert counted.input_tokens == created.usage.input_tokens > 0
    longer = client.messages.count_tokens(model="tiny", system="A system prompt.", messages=ask)
    assert longer.input_tokens > counted.input_tokens
    with_tools = client.messages.count_tokens(
        model="parrot-tools", messages=ask, tools=[WEATHER_TOOL]
    )
    without = client.messages.count_tokens(model="parrot-tools", messages=ask)
    assert with_tools.input_tokens > without.input_tokens


# -- errors --------------------------------------------------------------------------------


def test_unknown_model_is_a_not_found_error(client):
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="no-such-model", max_tokens=5, messages=HELLO)
    assert caught.value.status_code == 404
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "model 'no-such-model' not found"},
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"max_tokens": 5, "messages": HELLO}, "model is required"),
        ({"model": "tiny", "messages": HELLO}, "max_tokens is required and must be positive"),
        ({"model": "tiny", "max_tokens": 0, "messages": HELLO}, "max_tokens is required"),
        ({"model": "tiny", "max_tokens": 5, "messages": []}, "messages is required"),
        ({"model": "tiny", "max_tokens": 5, "messages": "hi"}, "messages is required"),
        ({"model": "tiny", "max_tokens": 5, "messages": [1]}, "messages[0] must be an object"),
        ({"model": "tiny", "max_tokens": 5, "messages": HELLO, "temperature": "hot"}, "number"),
        ({"model": "tiny", "max_tokens": 5, "messages": HELLO, "stop_sequences": "x"}, "array"),
        (
            {
                "model": "tiny",
                "max_tokens": 5,
                "messages": [
                    {"role": "user", "content": [{"type": "image", "source": {"type": "url"}}]}
                ],
            },
            "Only base64 images are supported",
        ),
    ],
)
def test_bad_requests_are_invalid_request_errors(server, body, message):
    reply = requests.post(server.url + "/v1/messages", json=body, timeout=60)
    assert reply.status_code == 400
    error = reply.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert message in error["error"]["message"]


def test_malformed_json_is_an_anthropic_400(server):
    reply = requests.post(server.url + "/v1/messages", data=b"{nope", timeout=60)
    assert reply.status_code == 400
    assert reply.json()["error"]["type"] == "invalid_request_error"


def test_an_image_for_a_text_only_model_is_refused_like_ollama(client):
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model="tiny",
            max_tokens=5,
            messages=[{"role": "user", "content": [image, {"type": "text", "text": "what?"}]}],
        )
    assert caught.value.body["error"]["message"] == (
        "registry.ollama.ai/library/tiny:latest does not support vision"
    )


# -- API key -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_server(shared_store, tmp_path_factory) -> Iterator[RunningServer]:
    log = tmp_path_factory.mktemp("keyed") / "server.log"
    running = start_server({**shared_store.env, "MLX_BRIDGE_API_KEY": "s3cret"}, log)
    yield running
    stop_server(running)


def test_api_key_as_x_api_key_or_bearer(keyed_server):
    ask = {"model": "tiny", "max_tokens": 2, "messages": HELLO}
    by_key = anthropic.Anthropic(base_url=keyed_server.url, api_key="s3cret", max_retries=0)
    assert by_key.messages.create(**ask).usage.output_tokens == 2
    by_token = anthropic.Anthropic(
        base_url=keyed_server.url, auth_token="s3cret", api_key=None, max_retries=0
    )
    assert by_token.messages.count_tokens(model="tiny", messages=HELLO).input_tokens > 0
    wrong = anthropic.Anthropic(base_url=keyed_server.url, api_key="nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        wrong.messages.create(**ask)
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "unauthorized"},
    }


# -- the real model ------------------------------------------------------------------------


@pytest.mark.real_model
def test_sdk_on_the_real_model(client):
    message = client.messages.create(
        model="smollm2:135m",
        max_tokens=8,
        extra_body=GREEDY,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
    )
    assert message.content[0].text.strip()
    assert 0 < message.usage.output_tokens <= 8


# -- the compatibility page ----------------------------------------------------------------


def _documented_fields() -> dict[str, set[str]]:
    """``{endpoint: fields}`` of the "Anthropic request fields" table in compatibility.md."""
    text = Path(__file__).parent.parent.joinpath("docs", "compatibility.md").read_text()
    section = text.split("## Anthropic request fields", 1)[1].split("\n## ", 1)[0]
    table: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`/v1"):
            fields = set(re.findall(r"`([a-z_]+)`", cells[1]))
            table.setdefault(cells[0].strip("`"), set()).update(fields)
    return table


def test_every_anthropic_sdk_field_has_a_row():
    from anthropic.types import message_count_tokens_params, message_create_params

    table = _documented_fields()
    create = set(message_create_params.MessageCreateParamsBase.__annotations__)
    count = set(message_count_tokens_params.MessageCountTokensParams.__annotations__)
    assert create <= table["/v1/messages"], create - table["/v1/messages"]
    assert count <= table["/v1/messages/count_tokens"], count - table["/v1/messages/count_tokens"]


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
    ],
)
def test_anthropic_error_types_follow_the_status(status, kind):
    from mlx_ollama_bridge.server.errors import ANTHROPIC

    body = ANTHROPIC.body("m", status, None)
    assert body == {"type": "error", "error": {"type": kind, "message": "m"}}
