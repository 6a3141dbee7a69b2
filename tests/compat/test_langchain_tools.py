"""LangChain ``ChatOllama`` tool calling and reasoning against the real server.

The ``parrot-*`` models are real checkpoints scripted to emit a Qwen-style tool call or a
``<think>`` block (see ``tests/parrot_model.py``), so the engine and the parser do the work.
"""

from __future__ import annotations

import langchain_ollama


def get_weather(city: str) -> str:
    """Current weather in a city."""
    return f"sunny in {city}"


def test_bind_tools_invoke_yields_tool_calls_with_dict_args(server):
    chat = langchain_ollama.ChatOllama(model="parrot-tools", base_url=server.url, temperature=0)
    reply = chat.bind_tools([get_weather]).invoke("What is the weather in Paris?")
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert reply.content == ""
    streamed = list(chat.bind_tools([get_weather]).stream("What is the weather in Paris?"))
    calls = [c for chunk in streamed for c in chunk.tool_calls]
    assert [(c["name"], c["args"]) for c in calls] == [("get_weather", {"city": "Paris"})]


def test_reasoning_goes_to_reasoning_content(server):
    chat = langchain_ollama.ChatOllama(
        model="parrot-think", base_url=server.url, temperature=0, reasoning=True
    )
    reply = chat.invoke("hi")
    assert reply.content == "Hello there!"
    assert reply.additional_kwargs["reasoning_content"] == (
        "The user greets me. I should greet back.\n"
    )
