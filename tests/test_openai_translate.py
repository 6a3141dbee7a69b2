"""OpenAI request bodies -> native bodies (pure translation, no server)."""

from __future__ import annotations

import pytest

from mlx_ollama_bridge.server.openai_translate import (
    InvalidField,
    chat_to_native,
    completion_to_native,
    include_usage,
)
from mlx_ollama_bridge.server.openai_wire import finish_reason

USER = [{"role": "user", "content": "hi"}]


def test_openai_defaults_and_option_names():
    native = chat_to_native({"model": "m", "messages": USER})
    assert native == {
        "model": "m",
        "messages": USER,
        "stream": False,
        "options": {"temperature": 1.0, "top_p": 1.0},
    }
    body = {
        "model": "m",
        "messages": USER,
        "stream": True,
        "temperature": 0.2,
        "top_p": 0.5,
        "seed": 7,
        "max_tokens": 9,
        "max_completion_tokens": 12,
        "frequency_penalty": 0.1,
        "presence_penalty": 0.3,
        "stop": "END",
        "user": "ignored",
        "n": 1,
    }
    options = chat_to_native(body)["options"]
    assert options == {
        "temperature": 0.2,
        "top_p": 0.5,
        "seed": 7,
        "frequency_penalty": 0.1,
        "presence_penalty": 0.3,
        "num_predict": 12,  # max_completion_tokens wins over the deprecated max_tokens
        "stop": ["END"],
    }
    assert chat_to_native({**body, "stop": ["a", "b"]})["options"]["stop"] == ["a", "b"]


@pytest.mark.parametrize(
    "response_format, expected",
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, "json"),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
            {"type": "object"},
        ),
    ],
)
def test_response_format_becomes_native_format(response_format, expected):
    native = chat_to_native({"model": "m", "messages": USER, "response_format": response_format})
    assert native.get("format") == expected


@pytest.mark.parametrize(
    "fields, think",
    [
        ({"reasoning_effort": "none"}, False),
        ({"reasoning_effort": "high"}, "high"),
        ({"reasoning": {"effort": "low"}}, "low"),
        ({}, None),
    ],
)
def test_reasoning_effort_becomes_think(fields, think):
    assert chat_to_native({"model": "m", "messages": USER, **fields}).get("think") == think


def test_messages_tool_calls_and_tool_results():
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "reasoning": "call the tool",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    native = chat_to_native({"model": "m", "messages": messages})["messages"]
    assert native[0] == {"role": "system", "content": "be brief"}
    assert native[2] == {
        "role": "assistant",
        "content": "",
        "thinking": "call the tool",
        "tool_calls": [
            {
                "id": "call_1",
                "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}},
            }
        ],
    }
    assert native[3] == {
        "role": "tool",
        "content": "sunny",
        "tool_name": "get_weather",  # looked up from the assistant's call with that id
        "tool_call_id": "call_1",
    }


def test_content_parts_become_separate_messages_with_bare_base64_images():
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}},
    ]
    native = chat_to_native({"model": "m", "messages": [{"role": "user", "content": content}]})
    assert native["messages"] == [
        {"role": "user", "content": "what is this?"},
        {"role": "user", "content": "", "images": ["aGVsbG8="]},
    ]


@pytest.mark.parametrize(
    "body, message, param",
    [
        ({"messages": []}, "[] is too short - 'messages'", "messages"),
        ({"messages": "hi"}, "'messages' must be an array", "messages"),
        (
            {"messages": [{"role": "user", "content": None}]},
            "invalid message content type: <nil>",
            "messages",
        ),
        (
            {"messages": [{"role": "user", "content": 5}]},
            "invalid message content type: number",
            "messages",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "video"}]}]},
            "invalid message format",
            "messages",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": "https://x/y.png"}],
                    }
                ]
            },
            "image URLs are not currently supported, please use base64 encoded data instead",
            "messages",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}],
                    }
                ]
            },
            "invalid tool call arguments",
            "messages",
        ),
        ({"messages": USER, "stop": [1]}, "invalid type for 'stop' field: array", "stop"),
        ({"messages": USER, "stream": "yes"}, "'stream' must be a boolean", "stream"),
        (
            {"messages": USER, "reasoning_effort": "huge"},
            'invalid reasoning value: "huge"',
            "reasoning_effort",
        ),
        ({"messages": USER, "response_format": {"type": "xml"}}, "'response_format.type'", None),
    ],
)
def test_bad_fields_are_invalid_request_errors(body, message, param):
    with pytest.raises(InvalidField) as info:
        chat_to_native({"model": "m", **body})
    assert info.value.status_code == 400
    assert info.value.message.startswith(message)
    if param:
        assert info.value.param == param


def test_completions_translate_to_generate():
    native = completion_to_native({"model": "m", "prompt": "once", "max_tokens": 3, "seed": 1})
    assert native == {
        "model": "m",
        "prompt": "once",
        "stream": False,
        "options": {"temperature": 1.0, "top_p": 1.0, "seed": 1, "num_predict": 3},
    }
    with pytest.raises(InvalidField):
        completion_to_native({"model": "m", "prompt": ["a", "b"]})


def test_include_usage_and_finish_reason():
    assert include_usage({"stream_options": {"include_usage": True}}) is True
    assert include_usage({}) is False
    with pytest.raises(InvalidField):
        include_usage({"stream_options": True})
    assert finish_reason("stop", True) == "tool_calls"
    assert finish_reason("length", True) == "length"
    assert finish_reason("stop", False) == "stop"
    assert finish_reason("", False) is None
