"""LiteLLM's Ollama providers against the real server.

``ollama/<model>`` goes to ``/api/generate`` and ``ollama/`` embeddings to ``/api/embed``;
``ollama_chat/<model>`` goes to ``/api/chat`` (litellm ``llms/ollama/completion`` and
``llms/ollama/chat/transformation.py``).
"""

from __future__ import annotations

import os

import pytest

# litellm fetches a model price map from GitHub at import; the bundled copy is enough here.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
litellm = pytest.importorskip("litellm")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydantic")

GREEDY = {"temperature": 0, "max_tokens": 6}
HELLO = [{"role": "user", "content": "hello"}]


@pytest.mark.parametrize("prefix", ["ollama", "ollama_chat"])
def test_completion_and_stream_agree(server, prefix):
    reply = litellm.completion(
        model=f"{prefix}/tiny", messages=HELLO, api_base=server.url, **GREEDY
    )
    text = reply.choices[0].message.content
    assert isinstance(text, str)
    assert reply.usage.completion_tokens == 6 and reply.usage.prompt_tokens > 0
    # litellm's /api/generate provider reports "stop" whatever done_reason says; /api/chat maps it.
    assert reply.choices[0].finish_reason == ("length" if prefix == "ollama_chat" else "stop")
    chunks = litellm.completion(
        model=f"{prefix}/tiny", messages=HELLO, api_base=server.url, stream=True, **GREEDY
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text


def test_chat_tool_call(server):
    # litellm imports its MCP handler whenever `tools` is passed; it needs the `mcp` package.
    pytest.importorskip("mcp")
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather in a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    reply = litellm.completion(
        model="ollama_chat/parrot-tools",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=tools,
        api_base=server.url,
    )
    (call,) = reply.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert call.function.arguments == '{"city": "Paris"}'


def test_embedding(server):
    reply = litellm.embedding(
        model="ollama/all-minilm", input=["cat", "a small cat"], api_base=server.url
    )
    vectors = [item["embedding"] for item in reply.data]
    assert len(vectors) == 2 and len(vectors[0]) == 384
    assert reply.usage.prompt_tokens > 0


def test_unknown_model_is_an_error(server):
    with pytest.raises(litellm.exceptions.NotFoundError, match="not found"):
        litellm.completion(model="ollama_chat/ghost", messages=HELLO, api_base=server.url)
