"""The ``anthropic`` SDK and the ``openai`` SDK's Responses API on the default model.

``tests/test_anthropic_api.py`` and ``tests/test_responses_api.py`` check every field and event
on the tiny and scripted models; this module is the end-to-end proof issue 13 asks for: each
SDK's create, stream and tools calls get an answer from the real ``smollm2:135m`` through a
real ``serve``. With tools, smollm2 may answer in text or call the tool; either must come back
in the SDK's own types. Every call is greedy (temperature 0): sampled at the default 0.8,
what smollm2 says (an empty answer, a malformed call) would change from run to run.
"""

from __future__ import annotations

import anthropic
import openai
import pytest

MODEL = "smollm2:135m"
ASK = "Say hello in one short sentence."
GREEDY = {"temperature": 0}  # the anthropic SDK (2.x) has no sampling arguments: extra body
WEATHER = "What is the weather in Paris? Use the tool."
ANTHROPIC_TOOL = {
    "name": "get_weather",
    "description": "The current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
RESPONSES_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city",
    "parameters": ANTHROPIC_TOOL["input_schema"],
}


@pytest.fixture
def claude(server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="ollama", max_retries=0)


@pytest.fixture
def responses(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="ollama", max_retries=0)


def test_anthropic_create(claude):
    message = claude.messages.create(
        model=MODEL, max_tokens=24, extra_body=GREEDY, messages=[{"role": "user", "content": ASK}]
    )
    assert message.role == "assistant" and message.model == MODEL
    assert message.content[0].type == "text" and message.content[0].text.strip()
    assert message.stop_reason in {"end_turn", "max_tokens"}
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


def test_anthropic_stream(claude):
    ask = [{"role": "user", "content": ASK}]
    fields = {"model": MODEL, "max_tokens": 24, "extra_body": GREEDY, "messages": ask}
    with claude.messages.stream(**fields) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.strip() and final.content[0].text == text
    assert final.stop_reason in {"end_turn", "max_tokens"}


def test_anthropic_tools(claude):
    message = claude.messages.create(
        model=MODEL,
        max_tokens=64,
        extra_body=GREEDY,
        tools=[ANTHROPIC_TOOL],
        messages=[{"role": "user", "content": WEATHER}],
    )
    kinds = {block.type for block in message.content}
    assert kinds and kinds <= {"text", "tool_use"}
    calls = [block for block in message.content if block.type == "tool_use"]
    assert all(call.name and isinstance(call.input, dict) for call in calls)
    expected = {"tool_use"} if calls else {"end_turn", "max_tokens"}
    assert message.stop_reason in expected


def test_responses_create(responses):
    reply = responses.responses.create(model=MODEL, input=ASK, max_output_tokens=24, temperature=0)
    assert reply.status in {"completed", "incomplete"}
    assert reply.output_text.strip()
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0


def test_responses_stream(responses):
    fields = {"model": MODEL, "input": ASK, "max_output_tokens": 24, "temperature": 0}
    with responses.responses.stream(**fields) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas).strip() and final.output_text == "".join(deltas)


def test_responses_tools(responses):
    reply = responses.responses.create(
        model=MODEL, input=WEATHER, tools=[RESPONSES_TOOL], max_output_tokens=64, temperature=0
    )
    kinds = {item.type for item in reply.output}
    assert kinds and kinds <= {"message", "function_call", "reasoning"}
    calls = [item for item in reply.output if item.type == "function_call"]
    assert all(call.name and call.call_id and isinstance(call.arguments, str) for call in calls)
    assert calls or reply.output_text.strip()
