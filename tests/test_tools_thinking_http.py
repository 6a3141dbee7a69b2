"""Tool calls and thinking over the native API, against the real server and real inference.

``parrot-tools`` and ``parrot-think`` are real mlx-lm checkpoints whose weights make greedy
decoding say a fixed script (``parrot_model``): a Qwen-style tool call, or a reasoning block
and an answer. ``tiny-think`` is the random tiny model with a Qwen3-style thinking template.
"""

from __future__ import annotations

import json
import re

import ollama
import pytest
import requests

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "required": ["city"],
                "properties": {"city": {"type": "string", "description": "the city"}},
            },
        },
    }
]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
GREEDY = {"temperature": 0, "num_predict": 40}
REASONING = "The user greets me. I should greet back.\n"


def post(server, path: str, body: dict, **kwargs) -> requests.Response:
    return requests.post(server.url + path, json=body, timeout=120, **kwargs)


def lines_of(response: requests.Response) -> list[dict]:
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.iter_lines() if line]


def chat(server, **fields) -> requests.Response:
    return post(server, "/api/chat", {"options": GREEDY, "messages": ASK, **fields})


def test_capabilities_follow_the_templates(server):
    def caps(name):
        return post(server, "/api/show", {"model": name}).json()["capabilities"]

    assert caps("parrot-tools") == ["completion", "tools"]
    assert caps("tiny-think") == ["completion", "tools", "thinking"]
    assert caps("smollm2:135m") == ["completion", "tools"]  # Ollama's library prompt


def test_streamed_tool_call_arrives_whole_and_never_as_content(server):
    lines = lines_of(chat(server, model="parrot-tools", tools=TOOLS, stream=True))
    assert all(line["message"]["content"] == "" for line in lines)  # no markup, no JSON
    with_calls = [line for line in lines if line["message"].get("tool_calls")]
    assert len(with_calls) == 1 and not with_calls[0]["done"]
    (call,) = with_calls[0]["message"]["tool_calls"]
    assert call["function"] == {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}
    assert re.fullmatch(r"call_[a-z0-9]{8}", call["id"])
    assert "type" not in call
    final = lines[-1]
    assert final["done"] is True and final["done_reason"] == "stop"
    assert final["eval_count"] == 5  # the five script tokens


def test_non_streamed_tool_calls_are_the_accumulated_list(server):
    reply = chat(server, model="parrot-tools", tools=TOOLS, stream=False).json()
    message = reply["message"]
    assert message["content"] == ""
    assert [c["function"]["arguments"] for c in message["tool_calls"]] == [{"city": "Paris"}]
    assert reply["done_reason"] == "stop"


def test_without_tools_the_text_is_not_parsed(server):
    reply = chat(server, model="parrot-tools", stream=False).json()
    assert "tool_calls" not in reply["message"]
    assert reply["message"]["content"].startswith('<tool_call>\n{"name": "get_weather"')


def test_tools_and_tool_results_reach_the_template(server):
    history = ASK + [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "18 degrees and sunny", "tool_name": "get_weather"},
    ]
    body = {"model": "parrot-tools", "messages": history, "tools": TOOLS}
    reply = post(server, "/api/chat", {**body, "_debug_render_only": True}).json()
    rendered = reply["_debug_info"]["rendered_template"]
    assert '"name": "get_weather", "description": "Current weather in a city"' in rendered
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}' in rendered
    assert "<tool_response>\n18 degrees and sunny\n</tool_response>" in rendered
    assert rendered.endswith("<|im_start|>assistant\n")
    assert reply["done"] is False
    # And the conversation goes on with a real generation (the parrot calls again).
    again = post(server, "/api/chat", {**body, "stream": False, "options": GREEDY}).json()
    assert again["message"]["tool_calls"][0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize("think", [None, True])
def test_thinking_is_separated_from_the_answer(server, think):
    body = {"model": "parrot-think", "stream": True}
    if think is not None:
        body["think"] = think
    lines = lines_of(chat(server, **body))
    thinking = "".join(line["message"].get("thinking", "") for line in lines)
    content = "".join(line["message"]["content"] for line in lines)
    assert (thinking, content) == (REASONING, "Hello there!")
    assert all("<think>" not in line["message"]["content"] for line in lines)
    first_answer = next(i for i, line in enumerate(lines) if line["message"]["content"])
    assert all("thinking" not in line["message"] for line in lines[first_answer:])
    whole = chat(server, **{**body, "stream": False}).json()
    assert whole["message"]["thinking"] == REASONING
    assert whole["message"]["content"] == "Hello there!"


def test_generate_reports_thinking_at_the_top_level(server):
    body = {"model": "parrot-think", "prompt": "hi", "options": GREEDY}
    whole = post(server, "/api/generate", {**body, "stream": False}).json()
    assert (whole["thinking"], whole["response"]) == (REASONING, "Hello there!")
    lines = lines_of(post(server, "/api/generate", body, stream=True))
    assert "".join(line.get("thinking", "") for line in lines) == REASONING


def test_think_false_turns_the_template_switch_off(server):
    body = {"model": "tiny-think", "messages": ASK, "_debug_render_only": True}
    on = post(server, "/api/chat", body).json()["_debug_info"]["rendered_template"]
    off = post(server, "/api/chat", {**body, "think": False}).json()
    assert on.endswith("<|im_start|>assistant\n")
    assert off["_debug_info"]["rendered_template"].endswith("assistant\n<think>\n\n</think>\n\n")
    reply = chat(server, model="tiny-think", think=False, stream=False).json()
    assert "thinking" not in reply["message"]


def test_debug_render_only_on_generate(server):
    body = {"model": "tiny", "prompt": "hello there", "_debug_render_only": True}
    reply = post(server, "/api/generate", body).json()
    assert reply["_debug_info"] == {
        "rendered_template": "<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\n",
        "image_count": 0,
    }
    assert reply["response"] == "" and reply["done"] is False


@pytest.mark.parametrize(
    "model, think, error",
    [
        ("tiny", True, '"tiny" does not support thinking'),
        ("tiny", "max", '"tiny" does not support thinking'),  # a level turns it on
        ("tiny-think", "lots", 'invalid think value: "lots"'),
    ],
)
def test_think_values_a_model_cannot_take_are_400(server, model, think, error):
    response = chat(server, model=model, think=think)
    assert response.status_code == 400
    assert response.json()["error"].startswith(error)


def test_ollama_python_client_reads_tool_calls_and_thinking(server):
    client = ollama.Client(host=server.url)
    called = client.chat(model="parrot-tools", messages=ASK, tools=TOOLS, options=GREEDY)
    (call,) = called.message.tool_calls
    assert call.function.name == "get_weather"
    assert dict(call.function.arguments) == {"city": "Paris"}
    streamed = client.chat(
        model="parrot-tools", messages=ASK, tools=TOOLS, options=GREEDY, stream=True
    )
    calls = [c for chunk in streamed for c in (chunk.message.tool_calls or [])]
    assert [c.function.arguments for c in calls] == [{"city": "Paris"}]
    thought = client.chat(model="parrot-think", messages=ASK, think=True, options=GREEDY)
    assert (thought.message.thinking, thought.message.content) == (REASONING, "Hello there!")
