"""The default model calls tools as Ollama's smollm2 does: the real SmolLM2-135M, the ollama
Python client, a real server (gunicorn). Ollama's library template gives smollm2 the
``tools`` capability and has it answer ``<tool_call>[{"name": …, "arguments": {…}}]</tool_call>``.
"""

from __future__ import annotations

import ollama
import requests

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city"}},
            "required": ["city"],
        },
    },
}
# One earlier turn shows the 135M model the format; it then calls on its own.
HISTORY = [
    {"role": "user", "content": "What is the weather in London?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "London"}}}],
    },
]
ASK = {"role": "user", "content": "What is the weather in Paris?"}
GREEDY = {"temperature": 0, "num_predict": 40}


def test_smollm2_shows_tools_in_ollamas_template_form(server) -> None:
    show = requests.post(server.url + "/api/show", json={"model": "smollm2:135m"}, timeout=60)
    body = show.json()
    assert body["capabilities"] == ["completion", "tools"]
    assert "{{- if .Tools }}" in body["template"] and "<tool_call>[" in body["template"]


def test_smollm2_emits_a_parsed_tool_call(server) -> None:
    client = ollama.Client(host=server.url)
    reply = client.chat(
        model="smollm2:135m", messages=[*HISTORY, ASK], tools=[WEATHER], options=GREEDY
    )
    calls = reply.message.tool_calls
    assert calls, reply.message.content
    assert calls[0].function.name == "get_weather"
    assert dict(calls[0].function.arguments) == {"city": "Paris"}
    assert reply.message.content == ""


def test_smollm2_streams_the_call_in_one_chunk(server) -> None:
    client = ollama.Client(host=server.url)
    chunks = list(
        client.chat(
            model="smollm2:135m",
            messages=[*HISTORY, ASK],
            tools=[WEATHER],
            options=GREEDY,
            stream=True,
        )
    )
    with_calls = [c for c in chunks if c.message.tool_calls]
    assert len(with_calls) == 1 and not with_calls[0].done
    assert with_calls[0].message.tool_calls[0].function.name == "get_weather"
    assert all(not c.message.content for c in chunks)  # no markup leaks as content
    assert chunks[-1].done
