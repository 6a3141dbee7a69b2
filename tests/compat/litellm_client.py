"""LiteLLM's Ollama providers driven against a running bridge, in LiteLLM's own interpreter.

Run by ``tests/compat/test_litellm.py`` with ``.cache/litellm-venv/bin/python`` (``make
litellm-venv``): LiteLLM caps ``openai<3`` and ``huggingface-hub<2``, so it lives in its own
virtual environment and the main test environment can take the current OpenAI SDK.

``python litellm_client.py SERVER_URL`` prints one JSON object: the versions used and, per
scenario, what LiteLLM returned (or ``{"error": ...}`` when the scenario raised).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

# litellm fetches a model price map from GitHub at import; the bundled copy is enough here.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402  (after the environment above)

GREEDY = {"temperature": 0, "max_tokens": 6}
HELLO = [{"role": "user", "content": "hello"}]
WEATHER_TOOL = {
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


def completion(url: str, prefix: str) -> dict[str, Any]:
    """``litellm.completion`` once whole and once streamed, on the tiny model."""
    reply = litellm.completion(model=f"{prefix}/tiny", messages=HELLO, api_base=url, **GREEDY)
    chunks = litellm.completion(
        model=f"{prefix}/tiny", messages=HELLO, api_base=url, stream=True, **GREEDY
    )
    return {
        "content": reply.choices[0].message.content,
        "finish_reason": reply.choices[0].finish_reason,
        "prompt_tokens": reply.usage.prompt_tokens,
        "completion_tokens": reply.usage.completion_tokens,
        "streamed": "".join(c.choices[0].delta.content or "" for c in chunks),
    }


def tool_call(url: str) -> dict[str, Any]:
    """A tool call from the scripted ``parrot-tools`` model over ``ollama_chat/``."""
    reply = litellm.completion(
        model="ollama_chat/parrot-tools",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],
        api_base=url,
    )
    calls = reply.choices[0].message.tool_calls or []
    return {"calls": [[c.function.name, c.function.arguments] for c in calls]}


def embedding(url: str) -> dict[str, Any]:
    """``litellm.embedding`` over ``ollama/`` (``/api/embed``)."""
    reply = litellm.embedding(model="ollama/all-minilm", input=["cat", "a small cat"], api_base=url)
    return {
        "dimensions": [len(item["embedding"]) for item in reply.data],
        "prompt_tokens": reply.usage.prompt_tokens,
    }


def unknown_model(url: str) -> dict[str, Any]:
    """The exception LiteLLM raises for a model the server does not have."""
    try:
        litellm.completion(model="ollama_chat/ghost", messages=HELLO, api_base=url)
    except Exception as exc:  # the class is what is being checked
        return {
            "not_found": isinstance(exc, litellm.exceptions.NotFoundError),
            "type": type(exc).__name__,
            "message": str(exc),
        }
    return {"not_found": False, "type": None, "message": "no exception"}


def main(url: str) -> dict[str, Any]:
    """Every scenario against ``url``; one failing scenario does not hide the others."""
    scenarios: dict[str, Callable[[], dict[str, Any]]] = {
        "completion_ollama": lambda: completion(url, "ollama"),
        "completion_ollama_chat": lambda: completion(url, "ollama_chat"),
        "tool_call": lambda: tool_call(url),
        "embedding": lambda: embedding(url),
        "unknown_model": lambda: unknown_model(url),
    }
    results: dict[str, Any] = {
        "versions": {name: version(name) for name in ("litellm", "openai", "huggingface-hub")}
    }
    for name, scenario in scenarios.items():
        try:
            results[name] = scenario()
        except Exception:  # reported to the test, which fails on it
            results[name] = {"error": traceback.format_exc()}
    return results


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
