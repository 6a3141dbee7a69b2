"""OpenAI request bodies -> native Ollama bodies (the answers: ``openai_wire``).

As Ollama's ``openai`` package: ``/v1`` never talks to the engine itself. A chat or
completion request becomes the native body ``/api/chat`` or ``/api/generate`` would receive
(so model lookup, capability checks, options validation and errors are the native ones),
and the generation's events are rendered back in OpenAI's shapes by ``openai_wire``.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from ..errors import BadRequest
from ..registry import LocalModel

_IMAGE_PREFIXES = tuple(f"data:image/{kind};base64," for kind in ("jpeg", "jpg", "png", "webp"))
# Ollama's thinkFromReasoningEffort: OpenAI's scale (and clients' extra tiers) clamped to
# Ollama's think values.
REASONING_EFFORTS: dict[str, bool | str] = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "max": "max",
    "xhigh": "max",
    "ultra": "max",
}


class InvalidField(BadRequest):
    """A request the translator rejects (400, ``invalid_request_error``), naming the field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


# -- requests -----------------------------------------------------------------------------


def chat_to_native(body: dict[str, Any]) -> dict[str, Any]:
    """``/v1/chat/completions`` -> an ``/api/chat`` body."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise InvalidField("'messages' must be an array", "messages")
    if not messages:
        raise InvalidField("[] is too short - 'messages'", "messages")
    native: dict[str, Any] = {
        "model": body.get("model"),
        "messages": _messages(messages),
        "stream": _stream(body),
        "options": _options(body),
        "tools": body.get("tools"),
        "format": _format(body.get("response_format")),
        "think": _think(body),
        "_debug_render_only": body.get("_debug_render_only"),
        **_chat_logprobs(body),
    }
    return {k: v for k, v in native.items() if v is not None}


def completion_to_native(body: dict[str, Any]) -> dict[str, Any]:
    """``/v1/completions`` -> an ``/api/generate`` body (templated: there is no ``raw``)."""
    prompt = body.get("prompt", "")
    if not isinstance(prompt, str):
        raise InvalidField("only a string 'prompt' is supported", "prompt")
    native: dict[str, Any] = {
        "model": body.get("model"),
        "prompt": prompt,
        "suffix": body.get("suffix"),
        "stream": _stream(body),
        "options": _options(body),
        "_debug_render_only": body.get("_debug_render_only"),
        **_completion_logprobs(body),
    }
    return {k: v for k, v in native.items() if v is not None}


def _chat_logprobs(body: dict[str, Any]) -> dict[str, Any]:
    """Chat's ``logprobs`` (a boolean) and ``top_logprobs`` (0-20), as native fields."""
    wanted = body.get("logprobs")
    if wanted is not None and not isinstance(wanted, bool):
        raise InvalidField("'logprobs' must be a boolean", "logprobs")
    top = body.get("top_logprobs")
    if top is not None and (
        not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= 20
    ):
        raise InvalidField("'top_logprobs' must be an integer between 0 and 20", "top_logprobs")
    return {"logprobs": True, "top_logprobs": top or 0} if wanted else {}


def _completion_logprobs(body: dict[str, Any]) -> dict[str, Any]:
    """Legacy completions' ``logprobs`` (how many alternatives, 0-5): as Ollama, a count
    above 0 turns log-probabilities on with that many ``top_logprobs``."""
    count = body.get("logprobs")
    if count is None:
        return {}
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= 20:
        raise InvalidField("'logprobs' must be an integer between 0 and 20", "logprobs")
    return {"logprobs": True, "top_logprobs": count} if count > 0 else {}


def include_usage(body: dict[str, Any]) -> bool:
    """``stream_options.include_usage``."""
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise InvalidField("'stream_options' must be an object", "stream_options")
    return bool(options.get("include_usage"))


def _stream(body: dict[str, Any]) -> bool:
    stream = body.get("stream", False)  # OpenAI's default, unlike Ollama's
    if stream is not None and not isinstance(stream, bool):
        raise InvalidField("'stream' must be a boolean", "stream")
    return bool(stream)


def _options(body: dict[str, Any]) -> dict[str, Any]:
    """Sampling fields -> Ollama options; OpenAI's defaults where Ollama's differ."""
    options: dict[str, Any] = {"temperature": 1.0, "top_p": 1.0}
    for key in ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty"):
        if body.get(key) is not None:
            options[key] = body[key]
    limit = body.get("max_completion_tokens")
    if limit is None:
        limit = body.get("max_tokens")
    if limit is not None:
        options["num_predict"] = limit
    stop = body.get("stop")
    if isinstance(stop, str):
        options["stop"] = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        options["stop"] = stop
    elif stop is not None:
        raise InvalidField(f"invalid type for 'stop' field: {_type_name(stop)}", "stop")
    return options


def _format(response_format: Any) -> Any:
    """``response_format`` -> native ``format`` (the native path decides what it supports)."""
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise InvalidField("'response_format.json_schema.schema' must be an object")
        return schema
    raise InvalidField(
        "'response_format.type' must be 'text', 'json_object' or 'json_schema'", "response_format"
    )


def _think(body: dict[str, Any]) -> bool | str | None:
    """``reasoning_effort`` / ``reasoning.effort``: none -> think false, a level -> a level."""
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict):  # as Ollama: `reasoning` wins over `reasoning_effort`
        effort = reasoning.get("effort")
    else:
        effort = body.get("reasoning_effort")
    if effort is None or effort == "":
        return None
    if effort not in REASONING_EFFORTS:
        raise InvalidField(
            f'invalid reasoning value: {json.dumps(effort)} (must be "minimal", "low", '
            '"medium", "high", "xhigh", "ultra", "max", or "none")',
            "reasoning_effort",
        )
    return REASONING_EFFORTS[effort]


def _messages(messages: list[Any]) -> list[dict[str, Any]]:
    native: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidField(f"messages[{index}] must be an object", "messages")
        native.extend(_message(message, messages))
    return native


def _message(message: dict[str, Any], history: list[Any]) -> list[dict[str, Any]]:
    """One OpenAI message -> native messages (each content part becomes its own message)."""
    role, content = message.get("role"), message.get("content")
    extra: dict[str, Any] = {}
    if message.get("tool_calls"):
        extra["tool_calls"] = _tool_calls_to_native(message["tool_calls"])
    reasoning = message.get("reasoning") or message.get("reasoning_content")
    if reasoning:
        extra["thinking"] = reasoning
    if isinstance(role, str) and role.lower() == "tool":
        name = message.get("name") or _tool_name_for(message.get("tool_call_id"), history)
        extra.update(tool_name=name or None, tool_call_id=message.get("tool_call_id"))
    extra = {k: v for k, v in extra.items() if v is not None}
    if isinstance(content, str) or content == []:
        return [{"role": role, "content": content or "", **extra}]
    if content is None:
        if "tool_calls" not in extra:
            raise InvalidField("invalid message content type: <nil>", "messages")
        return [{"role": role, "content": "", **extra}]
    if not isinstance(content, list):
        raise InvalidField(f"invalid message content type: {_type_name(content)}", "messages")
    parts = [{"role": role, **_content_part(part)} for part in content]
    if parts and extra:
        parts[-1].update(extra)  # calls and names belong with the message's last part
    return parts


def _content_part(part: Any) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text" and isinstance(part.get("text"), str):
        return {"content": part["text"]}
    if kind == "image_url":
        url = part.get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
        if isinstance(url, str):
            return {"content": "", "images": [image_data(url)]}
    raise InvalidField("invalid message format", "messages")


def image_data(url: str, param: str = "messages") -> str:
    """A ``data:`` URL -> bare base64 (Ollama's ``decodeImageURL``, shared by chat
    completions and the Responses API): web URLs are not fetched."""
    if url.startswith(("http://", "https://")):
        raise InvalidField(
            "image URLs are not currently supported, please use base64 encoded data instead",
            param,
        )
    prefix = next((p for p in (*_IMAGE_PREFIXES, "data:;base64,") if url.startswith(p)), None)
    if prefix is None:
        raise InvalidField("invalid image input", param)
    data = url[len(prefix) :]
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidField("invalid image input", param) from exc
    return data


def _tool_calls_to_native(calls: Any) -> list[dict[str, Any]]:
    """OpenAI tool calls (arguments a JSON string) -> native ones (arguments an object)."""
    if not isinstance(calls, list):
        raise InvalidField("'tool_calls' must be an array", "messages")
    native = []
    for index, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidField("tool calls need function.name", "messages")
        arguments = function.get("arguments") or "{}"
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError as exc:
                raise InvalidField("invalid tool call arguments", "messages") from exc
        entry: dict[str, Any] = {"function": {"index": index, "name": function["name"]}}
        entry["function"]["arguments"] = arguments
        if isinstance(call.get("id"), str):
            entry["id"] = call["id"]
        native.append(entry)
    return native


def _tool_name_for(call_id: Any, history: list[Any]) -> str | None:
    """The function an earlier assistant call with this id named (the last one wins)."""
    if not call_id:
        return None
    for message in reversed(history):
        for call in (message.get("tool_calls") or []) if isinstance(message, dict) else []:
            if isinstance(call, dict) and call.get("id") == call_id:
                function = call.get("function")
                return function.get("name") if isinstance(function, dict) else None
    return None


def _type_name(value: Any) -> str:
    return {list: "array", dict: "object", bool: "boolean", str: "string"}.get(
        type(value), "number" if isinstance(value, (int, float)) else type(value).__name__
    )


# -- models -------------------------------------------------------------------------------


def model_object(model: LocalModel, model_id: str | None = None) -> dict[str, Any]:
    """One entry of ``/v1/models``: ``owned_by`` is the namespace (``library`` by default)."""
    return {
        "id": model_id or model.name.display,
        "object": "model",
        "created": int(model.modified_at.timestamp()),
        "owned_by": model.name.namespace,
    }
