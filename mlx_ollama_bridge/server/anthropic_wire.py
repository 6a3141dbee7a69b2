"""Anthropic's Messages API on the wire: its request -> the native chat body, and the
generation's events -> Anthropic's message or its SSE events.

As Ollama's ``anthropic`` package: ``system`` (a string or text blocks, concatenated) becomes
a system message; each message's blocks become native messages (text concatenated, base64
images to ``images``, ``tool_use`` to ``tool_calls``, ``thinking`` to ``thinking``,
``tool_result`` to ``tool`` messages placed before the user's text); ``max_tokens`` is
``num_predict``; ``temperature``, ``top_p``, ``top_k``, ``stop_sequences`` are options;
``thinking`` / ``output_config.effort`` turn thinking on or off. Fields Anthropic's clients
send that have no local meaning (``metadata``, ``tool_choice``, ``cache_control``,
``context_management``, server tools) are accepted and ignored.

Streams follow Anthropic's order: ``message_start``, ``ping``, then per block
``content_block_start`` / ``content_block_delta`` (``thinking_delta``, ``text_delta``,
``input_json_delta``) / ``content_block_stop``, then ``message_delta`` (``stop_reason``,
``usage``) and ``message_stop``. An error after the first event is an ``error`` event.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

from ..engine import Finished, TextChunk
from ..engine.requests import ThinkingChunk, ToolCalls
from ..errors import BadRequest
from .errors import ANTHROPIC
from .messages import tool_result
from .wire import Encoder, Frame, Outcome

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}
_EFFORTS = ("low", "medium", "high", "max", "xhigh")


def new_message_id() -> str:
    """``msg_…``, as Anthropic's ids look."""
    return f"msg_{secrets.token_hex(12)}"


# -- requests -----------------------------------------------------------------------------


def messages_to_native(body: dict[str, Any], *, counting: bool = False) -> dict[str, Any]:
    """A ``/v1/messages`` body -> an ``/api/chat`` body, checked in Ollama's order.

    ``counting``: a ``count_tokens`` body (no ``max_tokens``, never streamed).
    """
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model is required")
    max_tokens = body.get("max_tokens")
    if not counting and (not _is_int(max_tokens) or max_tokens <= 0):
        raise BadRequest("max_tokens is required and must be positive")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages is required")
    native_messages = _system(body.get("system"))
    for index, message in enumerate(messages):
        native_messages.extend(_message(index, message, native_messages))
    native: dict[str, Any] = {
        "model": model,
        "messages": native_messages,
        "stream": False if counting else _typed(body, "stream", bool, "a boolean", False),
        "options": {} if counting else _options(body, max_tokens),
        "tools": _tools(body.get("tools")),
        "think": _think(body),
    }
    return {k: v for k, v in native.items() if v is not None}


def _system(system: Any) -> list[dict[str, Any]]:
    if system is None or system == "":
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    if not isinstance(system, list):
        raise BadRequest("system must be a string or an array of text blocks")
    text = "".join(
        block["text"]
        for block in system
        if isinstance(block, dict)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    )
    return [{"role": "system", "content": text}] if text else []


def _message(index: int, message: Any, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One Anthropic message -> native messages (tool results become ``tool`` messages)."""
    if not isinstance(message, dict):
        raise BadRequest(f"messages[{index}] must be an object")
    role = message.get("role")
    if not isinstance(role, str) or not role:
        raise BadRequest(f"messages[{index}].role must be a string")
    role = role.lower()
    content = message.get("content")
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise BadRequest(f"messages[{index}].content must be a string or an array of blocks")
    text: list[str] = []
    images: list[str] = []
    calls: list[dict[str, Any]] = []
    thinking = ""
    results: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            text.append(_string(block, "text", index))
        elif kind == "image":
            images.append(_image(block.get("source")))
        elif kind == "tool_use":
            calls.append(_tool_use(block))
        elif kind == "tool_result":
            results.append(_tool_result(block, history))
        elif kind == "thinking":
            thinking = _string(block, "thinking", index)
        elif kind is None:
            raise BadRequest(f"messages[{index}].content blocks must be objects with a type")
        # other blocks (redacted_thinking, documents, server tools' blocks) carry nothing here
    native: list[dict[str, Any]] = []
    if text or images or calls or thinking:
        entry: dict[str, Any] = {"role": role, "content": "".join(text)}
        for key, value in (("images", images), ("tool_calls", calls), ("thinking", thinking)):
            if value:
                entry[key] = value
        native.append(entry)
    # A user turn answering tool calls: the results come first, then what the user added.
    return results + native if role == "user" else native + results


def _string(block: dict[str, Any], key: str, index: int) -> str:
    value = block.get(key, "")
    if not isinstance(value, str):
        raise BadRequest(f"messages[{index}]: a {block.get('type')} block's {key} must be a string")
    return value


def _image(source: Any) -> str:
    """An image block's base64 data (the native check decodes it); URLs are not fetched."""
    if not isinstance(source, dict):
        raise BadRequest("invalid image source")
    if source.get("type") != "base64":
        raise BadRequest(
            f"invalid image source type: {source.get('type')}. Only base64 images are supported."
        )
    data = source.get("data")
    if not isinstance(data, str):
        raise BadRequest("invalid base64 image data")
    return data


def _tool_use(block: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(block.get("id"), str) or not block["id"]:
        raise BadRequest("tool_use block missing required 'id' field")
    if not isinstance(block.get("name"), str) or not block["name"]:
        raise BadRequest("tool_use block missing required 'name' field")
    arguments = block.get("input") or {}
    if not isinstance(arguments, dict):
        raise BadRequest("tool_use block's input must be an object")
    return {"id": block["id"], "function": {"name": block["name"], "arguments": arguments}}


def _tool_result(block: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    content = block.get("content")
    images: list[str] = []
    if isinstance(content, list):
        parts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif kind == "image":
                images.append(_image(part.get("source")))
        content = "".join(parts)
    elif content is None:
        content = ""
    elif not isinstance(content, str):
        raise BadRequest("tool_result content must be a string or an array of blocks")
    return tool_result(content, block.get("tool_use_id"), history, images)


def _tools(tools: Any) -> list[dict[str, Any]] | None:
    """Client tools -> native function tools; Anthropic's server tools are left out."""
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise BadRequest("tools must be an array")
    native = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise BadRequest(f"tools[{index}] must be an object")
        if tool.get("type") not in (None, "custom"):
            continue  # web_search_*, bash_*, text_editor_*: run by Anthropic, not by a model
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise BadRequest(f"tools[{index}].name is required")
        schema = tool.get("input_schema") or {"type": "object", "properties": {}}
        if not isinstance(schema, dict):
            raise BadRequest(f"invalid input_schema for tool {tool['name']!r}")
        function = {"name": tool["name"], "description": tool.get("description") or ""}
        native.append({"type": "function", "function": {**function, "parameters": schema}})
    return native or None


def _options(body: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    options: dict[str, Any] = {"num_predict": max_tokens}
    for key in ("temperature", "top_p"):
        value = _typed(body, key, (int, float), "a number")
        if value is not None:
            options[key] = value
    top_k = _typed(body, "top_k", int, "an integer")
    if top_k is not None:
        options["top_k"] = top_k
    stop = body.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise BadRequest("stop_sequences must be an array of strings")
        if stop:
            options["stop"] = stop
    return options


def _think(body: dict[str, Any]) -> bool | None:
    """``thinking.type`` enabled/disabled, else an ``output_config.effort`` level: on."""
    thinking = body.get("thinking")
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "enabled":
        return True
    if kind == "disabled":
        return False
    config = body.get("output_config")
    effort = config.get("effort") if isinstance(config, dict) else None
    if isinstance(effort, str) and effort.strip().lower() in _EFFORTS:
        return True
    return None


def _typed(body: dict[str, Any], key: str, kind: Any, name: str, default: Any = None) -> Any:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise BadRequest(f"{key} must be {name}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- responses ----------------------------------------------------------------------------


def stop_reason(
    finished: Finished | None, called_tools: bool, stops: Sequence[str] = ()
) -> str | None:
    """``tool_use`` after tool calls; one of the client's ``stop_sequences`` ->
    ``stop_sequence``; ``stop`` -> ``end_turn``, ``length`` -> ``max_tokens``."""
    if called_tools:
        return "tool_use"
    if finished is None or not finished.done_reason:
        return None
    if finished.stop_sequence is not None and finished.stop_sequence in stops:
        return "stop_sequence"
    return _STOP_REASONS.get(finished.done_reason, "end_turn")


def _matched(finished: Finished | None) -> str | None:
    return finished.stop_sequence if finished is not None else None


def _usage(finished: Finished | None) -> dict[str, int]:
    return {
        "input_tokens": finished.prompt_eval_count if finished else 0,
        "output_tokens": finished.eval_count if finished else 0,
    }


class MessagesEncoder(Encoder):
    """Anthropic's ``message`` object, or its stream of events."""

    media_type = "text/event-stream"
    envelope = ANTHROPIC

    def __init__(
        self, message_id: str, model: str, input_tokens: int = 0, stops: Sequence[str] = ()
    ) -> None:
        self.message_id, self.model = message_id, model
        self.stops = tuple(stops)  # the client's stop_sequences (a model's own stops are not)
        self.input_tokens = input_tokens  # the prompt's length, for message_start
        self.index = 0
        self.open: str | None = None  # the kind of the content block being streamed
        self.called = False

    def _message(
        self, content: list[dict[str, Any]], finished: Finished | None, called: bool
    ) -> dict[str, Any]:
        reason = stop_reason(finished, called, self.stops)
        return {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": reason,
            "stop_sequence": _matched(finished) if reason == "stop_sequence" else None,
        }

    def opening(self) -> Iterable[Frame]:
        usage = {"input_tokens": self.input_tokens, "output_tokens": 0}
        start = {
            "type": "message_start",
            "message": {**self._message([], None, False), "usage": usage},
        }
        return [("message_start", start), ("ping", {"type": "ping"})]

    def _close(self) -> list[Frame]:
        if self.open is None:
            return []
        self.open = None
        self.index += 1
        return [("content_block_stop", {"type": "content_block_stop", "index": self.index - 1})]

    def _block(self, kind: str, block: dict[str, Any], delta: dict[str, Any]) -> list[Frame]:
        frames = []
        if self.open != kind:
            frames = self._close()
            start = {"type": "content_block_start", "index": self.index, "content_block": block}
            frames.append(("content_block_start", start))
            self.open = kind
        event = {"type": "content_block_delta", "index": self.index, "delta": delta}
        return [*frames, ("content_block_delta", event)]

    def text(self, chunk: TextChunk) -> Iterable[Frame]:
        if not chunk.text:
            return []
        delta = {"type": "text_delta", "text": chunk.text}
        return self._block("text", {"type": "text", "text": ""}, delta)

    def thinking(self, chunk: ThinkingChunk) -> Iterable[Frame]:
        if not chunk.text:
            return []
        block = {"type": "thinking", "thinking": "", "signature": ""}
        return self._block("thinking", block, {"type": "thinking_delta", "thinking": chunk.text})

    def tool_calls(self, calls: ToolCalls) -> Iterable[Frame]:
        frames = self._close()
        for call in calls.calls:
            self.called = True
            block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
            arguments = json.dumps(call.arguments, ensure_ascii=False)
            frames += self._block(
                "tool_use", block, {"type": "input_json_delta", "partial_json": arguments}
            )
            frames += self._close()
        return frames

    def closing(self, finished: Finished) -> Iterable[Frame]:
        message = self._message([], finished, self.called)
        delta = {key: message[key] for key in ("stop_reason", "stop_sequence")}
        end = {"type": "message_delta", "delta": delta, "usage": _usage(finished)}
        return [*self._close(), ("message_delta", end), ("message_stop", {"type": "message_stop"})]

    def whole(self, outcome: Outcome) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if outcome.thinking:
            content.append({"type": "thinking", "thinking": outcome.thinking, "signature": ""})
        if outcome.content:
            content.append({"type": "text", "text": outcome.content})
        for call in outcome.tool_calls:
            content.append(
                {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
            )
        message = self._message(content, outcome.finished, bool(outcome.tool_calls))
        return {**message, "usage": _usage(outcome.finished)}


__all__ = [
    "MessagesEncoder",
    "messages_to_native",
    "new_message_id",
    "stop_reason",
]
