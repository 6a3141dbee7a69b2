"""Validating chat ``messages`` and ``tools`` into the shape chat templates expect."""

from __future__ import annotations

import json
from typing import Any

from ..errors import BadRequest

_MAX_MESSAGES = 10_000


def parse_messages(value: Any) -> list[dict[str, Any]]:
    """Check Ollama chat messages; roles are lower-cased, missing content is ``""``.

    Tool results keep ``tool_name`` and also get ``name``, which Hugging Face chat templates
    read; an assistant's ``thinking`` is also ``reasoning_content`` (Qwen3's name for it);
    tool-call arguments stay objects (templates serialise them).
    """
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest('field "messages" must be an array')
    if len(value) > _MAX_MESSAGES:
        raise BadRequest(f"too many messages (at most {_MAX_MESSAGES})")
    return [_message(i, m) for i, m in enumerate(value)]


def parse_tools(value: Any) -> list[dict[str, Any]] | None:
    """Check ``tools``: a list of ``{"type": "function", "function": {"name": ...}}``."""
    if value is None or value == []:
        return None
    if not isinstance(value, list):
        raise BadRequest('field "tools" must be an array')
    for i, tool in enumerate(value):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise BadRequest(f"tools[{i}] must be an object with function.name")
    return value


def tool_result(
    content: str, call_id: Any, history: list[dict[str, Any]], images: list[str] | None = None
) -> dict[str, Any]:
    """A native ``tool`` message answering ``call_id``, named after the function an earlier
    native message in ``history`` called with that id (Hugging Face templates read the name).
    For the translators of APIs whose results carry only the call's id."""
    message: dict[str, Any] = {"role": "tool", "content": content}
    if isinstance(call_id, str) and call_id:
        message["tool_call_id"] = call_id
        name = next(
            (
                call["function"]["name"]
                for earlier in reversed(history)
                for call in earlier.get("tool_calls") or []
                if call.get("id") == call_id
            ),
            None,
        )
        if name:
            message["tool_name"] = name
    if images:
        message["images"] = images
    return message


def _message(index: int, message: Any) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise BadRequest(f"messages[{index}] must be an object")
    role = message.get("role")
    if not isinstance(role, str) or not role:
        raise BadRequest(f"messages[{index}].role must be a non-empty string")
    content = message.get("content")
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise BadRequest(f"messages[{index}].content must be a string")
    out: dict[str, Any] = {"role": role.lower(), "content": content}
    for key in ("thinking", "tool_name", "tool_call_id"):
        value = message.get(key)
        if value is not None and not isinstance(value, str):
            raise BadRequest(f"messages[{index}].{key} must be a string")
        if value:
            out[key] = value
    if "tool_name" in out:
        out["name"] = out["tool_name"]
    if "thinking" in out and out["role"] == "assistant":
        # Qwen3-style templates keep the reasoning of the current tool-calling turn from here.
        out["reasoning_content"] = out["thinking"]
    images = message.get("images")
    if images is not None:
        if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
            raise BadRequest(f"messages[{index}].images must be an array of base64 strings")
        out["images"] = images
    calls = message.get("tool_calls")
    if calls:
        out["tool_calls"] = _tool_calls(index, calls)
    return out


def _tool_calls(index: int, calls: Any) -> list[dict[str, Any]]:
    if not isinstance(calls, list):
        raise BadRequest(f"messages[{index}].tool_calls must be an array")
    checked = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise BadRequest(f"messages[{index}].tool_calls entries need function.name")
        arguments = function.get("arguments") or {}
        if isinstance(arguments, str):  # tolerate OpenAI-style JSON strings
            try:
                arguments = json.loads(arguments)
            except ValueError as exc:
                raise BadRequest("invalid tool call arguments") from exc
        checked.append({**call, "function": {**function, "arguments": arguments}})
    return checked
