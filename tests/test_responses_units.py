"""``/v1/responses`` pieces without a server: the store's bounds, the input translation,
and the encoder's failure events."""

from __future__ import annotations

import json

import pytest
from helpers import message_events

from mlx_ollama_bridge.engine import Failed, Finished, TextChunk
from mlx_ollama_bridge.engine.requests import ToolCall, ToolCalls
from mlx_ollama_bridge.errors import BridgeError
from mlx_ollama_bridge.server.openai_translate import InvalidField
from mlx_ollama_bridge.server.responses_store import ResponseNotFound, ResponseStore
from mlx_ollama_bridge.server.responses_translate import input_messages, parse_request
from mlx_ollama_bridge.server.responses_wire import ResponsesEncoder


def turn(text: str) -> list[dict]:
    return [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}]


def put(store: ResponseStore, rid: str, previous: str | None = None, text: str = "q") -> bool:
    return store.put({"id": rid, "object": "response"}, previous, turn(text))


# -- the store ----------------------------------------------------------------------------


def test_store_is_bounded_by_count_least_recently_used_first():
    store = ResponseStore(max_entries=2, max_bytes=1 << 20)
    put(store, "a"), put(store, "b")
    store.get("a")  # a is now the most recently used
    put(store, "c")
    assert store.get("a") and store.get("c")
    with pytest.raises(ResponseNotFound):
        store.get("b")
    assert store.stats()["entries"] == 2


def test_store_is_bounded_by_bytes():
    store = ResponseStore(max_entries=100, max_bytes=1000)
    for i in range(20):
        put(store, f"r{i}", text="x" * 100)
    stats = store.stats()
    assert 0 < stats["bytes"] <= 1000 and stats["entries"] < 20
    store.get("r19")
    with pytest.raises(ResponseNotFound):
        store.get("r0")
    assert not put(store, "huge", text="x" * 2000)  # alone over the bound: not kept
    with pytest.raises(ResponseNotFound):
        store.get("huge")


def test_store_zero_entries_keeps_nothing():
    store = ResponseStore(max_entries=0, max_bytes=1 << 20)
    assert not put(store, "a")
    assert store.stats()["entries"] == 0


def test_conversation_walks_the_chain_oldest_first_and_keeps_it_fresh():
    store = ResponseStore(max_entries=3, max_bytes=1 << 20)
    put(store, "a", text="one"), put(store, "b", "a", text="two"), put(store, "x")
    messages = store.conversation("b")
    assert [m["content"] for m in messages] == ["one", "ok", "two", "ok"]
    put(store, "c", "b", text="three")  # x, not the chain, is the least recently used now
    with pytest.raises(ResponseNotFound):
        store.get("x")
    assert len(store.conversation("c")) == 6


def test_conversation_with_a_missing_link_names_it():
    store = ResponseStore(max_entries=10, max_bytes=1 << 20)
    put(store, "a"), put(store, "b", "a")
    store.delete("a")
    with pytest.raises(ResponseNotFound) as missing:
        store.conversation("b")
    assert missing.value.status_code == 404
    assert missing.value.message == "Previous response with id 'a' not found."
    assert missing.value.param == "previous_response_id"


# -- input translation --------------------------------------------------------------------


def test_function_calls_join_the_assistant_turn_and_reasoning_moves_onto_it():
    items = [
        {"role": "user", "content": "weather?"},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "think"}]},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Let me see."}],
        },
        {
            "type": "function_call",
            "call_id": "c1",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
        },
        {"type": "function_call", "call_id": "c2", "name": "get_time", "arguments": ""},
        {
            "type": "function_call_output",
            "call_id": "c2",
            "output": [{"type": "input_text", "text": "noon"}],
        },
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
    ]
    user, assistant, time_result, weather_result = input_messages(items)
    assert user == {"role": "user", "content": "weather?"}
    assert assistant["content"] == "Let me see." and assistant["thinking"] == "think"
    assert [c["function"]["name"] for c in assistant["tool_calls"]] == ["get_weather", "get_time"]
    assert assistant["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert [c["id"] for c in assistant["tool_calls"]] == ["c1", "c2"]
    assert time_result == {
        "role": "tool",
        "content": "noon",
        "tool_call_id": "c2",
        "tool_name": "get_time",
    }
    assert weather_result["tool_name"] == "get_weather"


def test_encrypted_reasoning_wins_over_the_summary():
    items = [
        {
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": "s"}],
            "encrypted_content": "full",
        },
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
    ]
    (assistant,) = input_messages(items)
    assert assistant["thinking"] == "full" and assistant["content"] == ""


def test_images_come_from_data_urls():
    part = {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "auto"}
    (message,) = input_messages([{"role": "user", "content": [part]}])
    assert message["images"] == ["AAAA"]
    with pytest.raises(InvalidField):
        input_messages([{"role": "user", "content": [{**part, "image_url": "https://x/y.png"}]}])


def test_tools_flat_functions_namespaces_and_skipped_kinds():
    body = {
        "model": "m",
        "input": "x",
        "tools": [
            {"type": "function", "name": "f", "parameters": {"type": "object"}},
            {"type": "namespace", "name": "ns", "tools": [{"type": "function", "name": "g"}]},
            {"type": "custom", "name": "apply_patch", "description": "patch"},
            {"type": "web_search", "external_web_access": False},
            {"type": "local_shell"},
        ],
    }
    tools = parse_request(body).native["tools"]
    assert [(t["type"], t["function"]["name"]) for t in tools] == [
        ("function", "f"),
        ("function", "ns.g"),
        ("custom", "apply_patch"),
    ]
    assert tools[1]["function"]["parameters"] == {"type": "object", "properties": {}}


def test_tool_choice_narrows_the_tools():
    tools = [{"type": "function", "name": n} for n in ("a", "b", "c")]
    body = {"model": "m", "input": "x", "tools": tools}

    def names(choice):
        native = parse_request({**body, "tool_choice": choice}).native
        return [t["function"]["name"] for t in native.get("tools", [])]

    assert names("auto") == names("required") == ["a", "b", "c"]
    assert names("none") == []
    assert names({"type": "function", "name": "b"}) == ["b"]
    allowed = {
        "type": "allowed_tools",
        "mode": "auto",
        "tools": [{"type": "function", "name": "c"}],
    }
    assert names(allowed) == ["c"]
    with pytest.raises(InvalidField):
        names(42)


def test_sampling_format_and_reasoning_map_as_ollama():
    request = parse_request(
        {
            "model": "m",
            "input": "x",
            "max_output_tokens": 20,
            "top_p": 0.5,
            "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}}},
            "reasoning": {"effort": "minimal", "summary": "auto"},
            "store": False,
            "stream": True,
        }
    )
    assert request.native["options"] == {"temperature": 1.0, "top_p": 0.5, "num_predict": 20}
    assert request.native["format"] == {"type": "object"}
    assert request.native["think"] == "low"
    assert request.store is False and request.stream is True
    assert parse_request({"model": "m", "input": "x"}).store is True
    json_object = {"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}}
    assert parse_request(json_object).native["format"] == "json"


def test_history_goes_between_the_instructions_and_the_input():
    request = parse_request({"model": "m", "instructions": "sys", "input": "now"})
    history = [{"role": "user", "content": "before"}]
    contents = [m["content"] for m in request.with_history(history)["messages"]]
    assert contents == ["sys", "before", "now"]


# -- the encoder --------------------------------------------------------------------------


def encoder(**fields) -> ResponsesEncoder:
    return ResponsesEncoder("m", parse_request({"model": "m", "input": "x", **fields}))


def test_a_failure_mid_stream_ends_with_error_and_response_failed():
    events = [TextChunk("Hel"), Failed(BridgeError("model was unloaded"))]
    frames = list(encoder().frames(iter(events)))
    assert [name for name, _ in frames][-2:] == ["error", "response.failed"]
    (_, error), (_, failed) = frames[-2:]
    assert error["message"] == "model was unloaded" and error["code"] == "server_error"
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"] == {"code": "server_error", "message": "model was unloaded"}
    assert [payload["sequence_number"] for _, payload in frames] == list(range(len(frames)))
    assert all(name == payload["type"] for name, payload in frames)


def test_text_after_tool_calls_is_dropped_and_the_turn_becomes_one_message():
    kept = []
    wire = ResponsesEncoder(
        "m", parse_request({"model": "m", "input": "x"}), lambda *args: kept.append(args)
    )
    events = [
        TextChunk("Checking."),
        ToolCalls((ToolCall(0, "f", {"x": 1}, "call_1"),)),
        TextChunk("ignored"),
        Finished("stop", 5, 1, 3, 1),
    ]
    frames = list(wire.frames(iter(events)))
    assert not any(p.get("delta") == "ignored" for _, p in frames)
    assert [item["type"] for item in wire.output] == ["message", "function_call"]
    assert json.loads(wire.output[1]["arguments"]) == {"x": 1}
    answer = {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {"id": "call_1", "function": {"index": 0, "name": "f", "arguments": {"x": 1}}}
        ],
    }
    assert wire.assistant_message() == answer
    ((response, stored),) = kept  # on_complete ran once, with the final object
    assert response["status"] == "completed" and stored == answer


def test_an_empty_answer_is_one_empty_message():
    wire = encoder(store=False)
    kinds = [name for name, _ in wire.frames(iter([Finished("stop", 3, 1, 0, 0)]))]
    assert kinds[2:] == [*message_events(0), "response.completed"]
    assert wire.response()["output"][0]["content"][0]["text"] == ""
    assert wire.response()["store"] is False


def test_the_response_echoes_the_request():
    wire = encoder(
        instructions="be brief",
        temperature=0.2,
        max_output_tokens=9,
        tool_choice="none",
        metadata={"k": "v"},
        text={"format": {"type": "json_object"}},
    )
    response = wire.response()
    assert response["instructions"] == "be brief" and response["temperature"] == 0.2
    assert response["max_output_tokens"] == 9 and response["tool_choice"] == "none"
    assert response["metadata"] == {"k": "v"} and response["top_p"] == 1.0
    assert response["text"] == {"format": {"type": "json_object"}}
    assert response["id"].startswith("resp_") and response["status"] == "in_progress"


def test_a_namespace_members_call_comes_back_in_openais_form_and_goes_in_qualified():
    namespace = {"type": "namespace", "name": "ns", "tools": [{"type": "function", "name": "g"}]}
    wire = encoder(tools=[namespace])
    call = ToolCall(0, "ns.g", {}, "call_1")
    list(wire.frames(iter([ToolCalls((call,)), Finished("stop", 5, 1, 3, 1)])))
    (item,) = wire.output
    assert (item["namespace"], item["name"]) == ("ns", "g")
    assert wire.assistant_message()["tool_calls"][0]["function"]["name"] == "ns.g"
    back = [
        {**item, "id": "fc_1"},
        {"type": "function_call_output", "call_id": "call_1", "output": "done"},
    ]
    assistant, result = input_messages(back)
    assert assistant["tool_calls"][0]["function"]["name"] == "ns.g"
    assert result["tool_name"] == "ns.g"


def test_a_result_for_a_call_of_an_earlier_turn_is_named_after_its_function():
    request = parse_request(
        {"model": "m", "input": [{"type": "function_call_output", "call_id": "c9", "output": "ok"}]}
    )
    history = [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c9", "function": {"index": 0, "name": "run", "arguments": {}}}],
        },
    ]
    *_, result = request.with_history(history)["messages"]
    assert result == {"role": "tool", "content": "ok", "tool_call_id": "c9", "tool_name": "run"}


def test_raw_reasoning_content_is_read_back_when_there_is_no_encrypted_content():
    reasoning = {
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "short"}],
        "content": [{"type": "reasoning_text", "text": "the whole thought"}],
    }
    answer = {"type": "message", "role": "assistant", "content": "done"}
    (assistant,) = input_messages([reasoning, answer])
    assert assistant["thinking"] == "the whole thought"
    (summary_only,) = input_messages([{**reasoning, "content": None}, answer])
    assert summary_only["thinking"] == "short"
