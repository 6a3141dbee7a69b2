"""``/v1/responses`` against the real server: the official ``openai`` SDK and raw HTTP.

``parrot-tools`` and ``parrot-think`` (``parrot_model``) say a fixed script under greedy
decoding, so tool calls and reasoning are exact; ``tiny`` is the random model.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import openai
import pytest
import requests
from helpers import message_events, wait_until

TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
ASK = "What is the weather in Paris?"
REASONING = "The user greets me. I should greet back.\n"
CODEX = Path(__file__).parent / "compat" / "agent_requests" / "codex_responses.json"


@pytest.fixture()
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="anything", max_retries=0)


def post(server, body: dict, **kwargs) -> requests.Response:
    return requests.post(server.url + "/v1/responses", json=body, timeout=120, **kwargs)


def sse(response: requests.Response) -> list[dict]:
    """Each event's JSON, checking the ``event:`` line names the same type."""
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/event-stream")
    blocks = response.text.split("\n\n")
    assert blocks[-1] == ""
    events = []
    for block in blocks[:-1]:
        name, data = block.split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def rendered(client, **fields) -> str:
    reply = client.responses.create(**fields, extra_body={"_debug_render_only": True})
    return reply.model_extra["_debug_info"]["rendered_template"]


# -- text and reasoning -------------------------------------------------------------------


def test_sdk_reasoning_then_text(client):
    reply = client.responses.create(model="parrot-think", input="Hi", temperature=0)
    assert reply.status == "completed" and reply.object == "response"
    reasoning, message = reply.output
    assert reasoning.type == "reasoning"
    assert reasoning.summary[0].text == REASONING
    assert message.type == "message" and message.role == "assistant"
    assert reply.output_text == "Hello there!"
    assert reply.usage.output_tokens == 6  # the six script tokens
    assert reply.usage.input_tokens > 0
    assert reply.usage.total_tokens == reply.usage.input_tokens + reply.usage.output_tokens
    assert reply.id.startswith("resp_") and reply.store is True


def test_stream_event_sequence_and_final_object_match_the_non_streamed_one(server, client):
    body = {"model": "parrot-think", "input": "Hi", "temperature": 0}
    events = sse(post(server, {**body, "stream": True}))
    kinds = [e["type"] for e in events]
    deltas = kinds.count("response.reasoning_summary_text.delta")
    texts = kinds.count("response.output_text.delta")
    assert deltas >= 1 and texts >= 1
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        *["response.reasoning_summary_text.delta"] * deltas,
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        *message_events(texts),
        "response.completed",
    ]
    assert events[0]["response"]["status"] == "in_progress"
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "Hello there!"
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.done"] == [0, 1]
    streamed, whole = events[-1]["response"], post(server, body).json()
    assert without_ids(streamed) == without_ids(whole)


def without_ids(response: dict) -> dict:
    """A response object without what differs between two identical generations."""
    output = [{k: v for k, v in item.items() if k != "id"} for item in response["output"]]
    kept = {k: v for k, v in response.items() if k not in ("id", "created_at", "completed_at")}
    return {**kept, "output": output}


def test_sdk_stream_reaches_completed(client):
    stream = client.responses.create(model="parrot-think", input="Hi", stream=True)
    events = list(stream)
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "Hello there!"


def test_sdk_stream_helper_accumulates_text_reasoning_and_calls(client):
    with client.responses.stream(model="parrot-think", input="Hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "Hello there!"
    assert final.output[0].summary[0].text == REASONING
    with client.responses.stream(model="parrot-tools", input=ASK, tools=[TOOL]) as stream:
        final = stream.get_final_response()
    assert [(i.type, i.name) for i in final.output] == [("function_call", "get_weather")]


def test_cached_tokens_count_the_prompt_cache(client):
    ask = {"model": "parrot-think", "instructions": "A long prefix. " * 20, "input": "Hi"}
    ask["max_output_tokens"] = 50
    client.responses.create(**ask)
    again = client.responses.create(**ask)
    cached = again.usage.input_tokens_details.cached_tokens
    assert 0 < cached < again.usage.input_tokens


def test_max_output_tokens_makes_an_incomplete_response(client):
    reply = client.responses.create(model="tiny", input="Hi", max_output_tokens=3, temperature=0)
    assert reply.status == "incomplete"
    assert reply.incomplete_details.reason == "max_output_tokens"
    assert reply.usage.output_tokens == 3
    assert reply.max_output_tokens == 3


def test_a_stream_cut_by_the_limit_still_ends_with_response_completed(client):
    # Ollama ends every stream with response.completed; the SDK's helper needs it.
    ask = {"model": "tiny", "input": "Hi", "max_output_tokens": 3, "temperature": 0}
    with client.responses.stream(**ask) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_response()
    assert types[-1] == "response.completed"
    assert final.status == "incomplete"
    assert final.incomplete_details.reason == "max_output_tokens"


def test_instructions_and_developer_messages_reach_the_template(client):
    prompt = rendered(
        client,
        model="tiny",
        instructions="Answer in French.",
        input=[
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "Be terse."}],
            },
            {"role": "user", "content": "Bonjour"},
        ],
    )
    assert prompt.index("Answer in French.") < prompt.index("Be terse.") < prompt.index("Bonjour")
    assert prompt.startswith("<|im_start|>system\nAnswer in French.")


def test_reasoning_effort_none_turns_thinking_off(client):
    on = rendered(client, model="tiny-think", input="Hi")
    off = rendered(client, model="tiny-think", input="Hi", reasoning={"effort": "none"})
    assert on.endswith("<|im_start|>assistant\n")
    assert off.endswith("<think>\n\n</think>\n\n")


def test_json_schema_format_constrains_the_random_model(client):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "rain": {"type": "boolean"}},
        "required": ["city", "rain"],
        "additionalProperties": False,
    }
    reply = client.responses.create(
        model="tiny",
        input="weather?",
        text={"format": {"type": "json_schema", "name": "weather", "schema": schema}},
        max_output_tokens=80,
    )
    jsonschema.validate(json.loads(reply.output_text), schema)
    assert reply.text.format.type == "json_schema"


def test_sdk_parse_with_a_pydantic_model(client):
    from pydantic import BaseModel

    class Weather(BaseModel):
        city: str
        rain: bool

    reply = client.responses.parse(
        model="tiny", input="weather?", text_format=Weather, max_output_tokens=80, temperature=0
    )
    assert isinstance(reply.output_parsed, Weather)


# -- tools --------------------------------------------------------------------------------


def test_sdk_function_call_round_trip(client):
    first = client.responses.create(model="parrot-tools", input=ASK, tools=[TOOL], temperature=0)
    (call,) = first.output
    assert call.type == "function_call" and call.status == "completed"
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    assert call.call_id.startswith("call_") and call.id.startswith("fc_")
    history = [{"role": "user", "content": ASK}, call.model_dump(exclude_none=True)]
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": "sunny"})
    prompt = rendered(client, model="parrot-tools", input=history, tools=[TOOL])
    assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in prompt
    assert "<tool_response>\nsunny\n</tool_response>" in prompt
    again = client.responses.create(model="parrot-tools", input=history, tools=[TOOL])
    assert again.status == "completed"


def test_streamed_function_call_events(server):
    body = {"model": "parrot-tools", "input": ASK, "tools": [TOOL], "stream": True}
    events = sse(post(server, body))
    kinds = [e["type"] for e in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added, delta, done_args, done = events[2:6]
    assert added["item"]["status"] == "in_progress" and added["item"]["arguments"] == ""
    assert json.loads(delta["delta"]) == {"city": "Paris"} == json.loads(done_args["arguments"])
    assert done["item"]["status"] == "completed" and done["item"]["name"] == "get_weather"
    assert events[-1]["response"]["output"] == [done["item"]]


def test_tool_choice_none_hides_the_tools(client):
    with_tools = rendered(client, model="parrot-tools", input=ASK, tools=[TOOL])
    without = rendered(client, model="parrot-tools", input=ASK, tools=[TOOL], tool_choice="none")
    assert "get_weather" in with_tools and "get_weather" not in without


def test_codex_request_is_accepted_and_streams_to_completion(server):
    body = json.loads(CODEX.read_text())["body"]
    body["model"] = "parrot-tools"  # the captured one names smollm2, whose tools are elsewhere
    debug = post(server, {**body, "stream": False, "_debug_render_only": True}).json()
    prompt = debug["_debug_info"]["rendered_template"]
    assert '"name": "multi_agent_v1.close_agent"' in prompt  # the namespace, expanded
    assert '"web_search"' not in prompt  # nothing runs a web search here
    events = sse(post(server, body))
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["store"] is False
    assert events[-1]["response"]["usage"]["input_tokens"] > 0


def test_zstd_request_bodies_are_accepted_within_the_cap(server):
    import zstandard

    body = {"model": "parrot-think", "input": "Hi", "store": False}
    packed = zstandard.ZstdCompressor().compress(json.dumps(body).encode())
    headers = {"Content-Type": "application/json", "Content-Encoding": "zstd"}
    url = server.url + "/v1/responses"
    reply = requests.post(url, data=packed, headers=headers, timeout=120)
    assert reply.status_code == 200, reply.text
    assert reply.json()["output"][-1]["content"][0]["text"] == "Hello there!"
    garbage = requests.post(url, data=b"not zstd", headers=headers, timeout=30)
    assert garbage.status_code == 400
    assert garbage.json()["error"]["message"] == "failed to decompress zstd body"
    bomb = zstandard.ZstdCompressor().compress(b" " * (65 << 20))  # past the 64 MiB cap
    assert len(bomb) < 1 << 20
    refused = requests.post(url, data=bomb, headers=headers, timeout=60)
    assert refused.status_code == 413
    assert refused.json()["error"]["message"] == "request body too large"


def test_disconnect_mid_stream_cancels_the_generation(server):
    canceled_before = server.log().count("request canceled")
    body = {"model": "tiny", "input": "Hi", "max_output_tokens": 2000, "stream": True}
    with requests.post(server.url + "/v1/responses", json=body, stream=True, timeout=60) as reply:
        next(reply.iter_lines())
    canceled = wait_until(lambda: server.log().count("request canceled") > canceled_before, 30)
    assert canceled, "the abandoned generation was not canceled"


# -- stored responses ---------------------------------------------------------------------


def test_previous_response_id_continues_the_conversation(client):
    first = client.responses.create(
        model="parrot-tools", instructions="Use tools.", input=ASK, tools=[TOOL], temperature=0
    )
    (call,) = first.output
    follow_up = [{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}]
    prompt = rendered(
        client, model="parrot-tools", previous_response_id=first.id, input=follow_up, tools=[TOOL]
    )
    assert ASK in prompt
    assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in prompt
    assert prompt.index(ASK) < prompt.index("<tool_response>\nsunny\n</tool_response>")
    assert "Use tools." not in prompt  # instructions do not carry over (OpenAI's rule)
    second = client.responses.create(
        model="parrot-tools", previous_response_id=first.id, input=follow_up, tools=[TOOL]
    )
    assert second.previous_response_id == first.id
    third = rendered(client, model="parrot-tools", previous_response_id=second.id, input="ok")
    assert third.count("<tool_response>\nsunny\n</tool_response>") == 1


def test_retrieve_and_delete(client):
    made = client.responses.create(model="parrot-think", input="Hi")
    got = client.responses.retrieve(made.id)
    assert got.model_dump() == made.model_dump()
    client.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError) as gone:
        client.responses.retrieve(made.id)
    assert gone.value.body["message"] == f"Response with id '{made.id}' not found."
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(made.id)


def test_input_items_list_the_stored_input(client):
    made = client.responses.create(
        model="parrot-think",
        input=[
            {"role": "developer", "content": "Be kind."},
            {"type": "message", "id": "msg_mine", "role": "user", "content": "Hi"},
        ],
    )
    oldest_first = client.responses.input_items.list(made.id, order="asc")
    first, second = oldest_first.data
    assert first.role == "developer" and first.content[0].text == "Be kind."
    assert first.content[0].type == "input_text" and first.id.startswith("msg_")
    assert second.id == "msg_mine"
    page = client.responses.input_items.list(made.id, limit=1)  # newest first by default
    assert [item.id for item in page.data] == ["msg_mine"] and page.has_more is True
    rest = client.responses.input_items.list(made.id, limit=1, after="msg_mine")
    assert [item.id for item in rest.data] == [first.id] and rest.has_more is False
    with pytest.raises(openai.BadRequestError):
        client.responses.input_items.list(made.id, limit=0)
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list("resp_nope")


def test_store_false_keeps_nothing(client):
    made = client.responses.create(model="parrot-think", input="Hi", store=False)
    assert made.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)


def test_unknown_previous_response_is_a_404_in_openais_envelope(server):
    reply = post(server, {"model": "tiny", "input": "Hi", "previous_response_id": "resp_nope"})
    assert reply.status_code == 404
    assert reply.json() == {
        "error": {
            "message": "Previous response with id 'resp_nope' not found.",
            "type": "not_found_error",
            "param": "previous_response_id",
            "code": None,
        }
    }


def test_a_streamed_response_is_stored_once_complete(server, client):
    events = sse(post(server, {"model": "parrot-think", "input": "Hi", "stream": True}))
    final = events[-1]["response"]
    assert client.responses.retrieve(final["id"]).output_text == "Hello there!"


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"model": "nope", "input": "Hi"}, 404, "model 'nope' not found"),
        ({"input": "Hi"}, 400, "model is required"),
        ({"model": "tiny", "input": 3}, 400, "'input' must be a string or array"),
        ({"model": "tiny"}, 400, "'input' is required"),
        ({"model": "tiny", "input": [{"type": "nope"}]}, 400, 'unknown input item type: "nope"'),
        ({"model": "tiny", "input": [{"content": "x"}]}, 400, "missing required 'type' field"),
        (
            {"model": "tiny", "input": [{"role": "user", "content": [{"type": "input_file"}]}]},
            400,
            "file inputs are not currently supported",
        ),
        (
            {"model": "tiny", "input": [{"type": "function_call", "name": "f", "arguments": "{"}]},
            400,
            "failed to parse function call arguments",
        ),
        (
            {"model": "tiny", "input": "Hi", "reasoning": {"effort": "huge"}},
            400,
            "invalid reasoning",
        ),
        (
            {
                "model": "parrot-tools",
                "input": "Hi",
                "tools": [TOOL],
                "tool_choice": {"type": "function", "name": "other"},
            },
            400,
            "Tool choice 'other' not found",
        ),
    ],
)
def test_bad_requests_get_openais_envelope(server, body, status, message):
    reply = post(server, body)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert message in error["message"]
    assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")


def test_sdk_raises_the_typed_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="nope", input="Hi")
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="tiny", input=[{"type": "nope"}])


def test_non_function_tools_are_skipped_not_refused(client):
    tools = [
        {"type": "web_search"},
        {"type": "local_shell"},
        {"type": "file_search", "vector_store_ids": ["vs_1"]},
    ]
    reply = client.responses.create(model="tiny", input="Hi", tools=tools, max_output_tokens=2)
    assert reply.status == "incomplete"  # it ran: no tool reached the model, no 400
    assert [t.type for t in reply.tools] == ["web_search", "local_shell", "file_search"]


# -- the real model -----------------------------------------------------------------------


@pytest.mark.real_model
def test_sdk_on_the_real_model(client):
    ask = {
        "model": "smollm2:135m",
        "instructions": "You are a helpful assistant.",
        "input": "What is the capital of France?",
        "max_output_tokens": 8,
        "temperature": 0,
    }
    reply = client.responses.create(**ask)
    assert reply.output_text.strip()
    assert 0 < reply.usage.output_tokens <= 8
    stream = client.responses.create(**ask, stream=True)
    events = list(stream)
    assert events[-1].response.output_text == reply.output_text  # greedy: the same answer
