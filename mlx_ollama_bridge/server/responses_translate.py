"""OpenAI Responses request bodies (``POST /v1/responses``) -> native ``/api/chat`` bodies.

As Ollama's ``openai.FromResponsesRequest``: ``input`` (a string or a list of items) and
``instructions`` become chat messages, the flat function tools become native tools, and the
sampling fields become options, so model lookup, capability checks and errors are the native
ones. Beyond Ollama: ``tool_choice`` is honoured where it can be (``none``, a named function,
``allowed_tools``), ``text.format`` ``json_object`` maps to ``format: "json"``, and the
messages of an earlier stored response (``previous_response_id``) are put before the input.

Tools and ``tool_choice`` are translated by ``responses_tools``.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from .messages import tool_result
from .openai_translate import REASONING_EFFORTS, InvalidField, image_data
from .responses_tools import namespaced, native_tools
from .schemas import MAX_MESSAGES


@dataclass
class ResponsesRequest:
    """A checked ``/v1/responses`` body: the native chat body and what the reply echoes."""

    native: dict[str, Any]  # the /api/chat body, without the earlier turns' messages
    turn: list[dict[str, Any]]  # native messages this request's ``input`` adds
    instructions: str | None
    previous_response_id: str | None
    stream: bool
    store: bool
    echo: dict[str, Any] = field(default_factory=dict)  # request fields the response repeats
    namespaced: dict[str, tuple[str, str]] = field(default_factory=dict)  # see responses_tools
    items: list[dict[str, Any]] = field(default_factory=list)  # ``input`` as items with ids

    def with_history(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        """The native body with ``instructions`` first, then earlier turns, then this one.

        Raises InvalidField (400) when there is nothing to answer (Ollama would load the
        model and answer an empty response).
        """
        if not history and not self.turn:
            raise InvalidField("'input' is required", "input")
        for message in self.turn:  # results of calls made in an earlier turn get their name
            if message["role"] == "tool" and "tool_name" not in message:
                named = tool_result("", message.get("tool_call_id"), history)
                if "tool_name" in named:
                    message["tool_name"] = named["tool_name"]
        system = [{"role": "system", "content": self.instructions}] if self.instructions else []
        return {**self.native, "messages": system + history + self.turn}


def parse_request(body: dict[str, Any]) -> ResponsesRequest:
    """Check a Responses body and translate it; InvalidField (400) names what is wrong."""
    instructions = _optional(body, "instructions", str)
    turn = input_messages(body.get("input"))
    tools = native_tools(body.get("tools"), body.get("tool_choice"))
    native: dict[str, Any] = {
        "model": body.get("model"),
        "stream": True,  # the engine's events are read one by one either way
        "options": _options(body),
        "tools": tools or None,
        "format": _format(body.get("text")),
        "think": _think(body.get("reasoning")),
        "_debug_render_only": body.get("_debug_render_only"),
    }
    return ResponsesRequest(
        native={k: v for k, v in native.items() if v is not None},
        turn=turn,
        instructions=instructions or None,
        previous_response_id=_optional(body, "previous_response_id", str) or None,
        stream=bool(_optional(body, "stream", bool)),
        store=_optional(body, "store", bool) is not False,  # OpenAI stores by default
        echo=_echo(body),
        namespaced=namespaced(body.get("tools")),
        items=input_items(body.get("input")),
    )


# -- input --------------------------------------------------------------------------------


def input_messages(value: Any) -> list[dict[str, Any]]:
    """``input`` -> native chat messages, merging items as Ollama does: a function call
    joins the assistant message before it, reasoning joins the next assistant message."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise InvalidField("input must be a string or array", "input")
    if len(value) > MAX_MESSAGES:
        raise InvalidField(f"too many input items (at most {MAX_MESSAGES})", "input")
    messages: list[dict[str, Any]] = []
    thinking = ""  # a reasoning item waits for the assistant turn it belongs to
    for index, item in enumerate(value):
        kind = _item_type(index, item)
        if kind == "reasoning":
            thinking = _reasoning_text(item)
        elif kind == "message":
            message = _input_message(index, item)
            if message["role"] == "assistant" and thinking:
                message["thinking"], thinking = thinking, ""
            if not _merged_with_call(messages, message, value, index):
                messages.append(message)
        elif kind == "function_call":
            thinking = _add_function_call(messages, index, item, thinking)
        elif kind == "function_call_output":
            messages.append(_function_output(index, item, messages))
        # web_search_call: history only; the assistant message after it carries the result
    if thinking:
        messages.append({"role": "assistant", "content": "", "thinking": thinking})
    return messages


def input_items(value: Any) -> list[dict[str, Any]]:
    """``input`` as the items ``GET /v1/responses/{id}/input_items`` lists: a string is one
    user message; every item gets an ``id`` (``msg_…``, ``item_…``) when it has none."""
    if isinstance(value, str):
        value = [{"type": "message", "role": "user", "content": value}] if value else []
    items = []
    for item in value if isinstance(value, list) else []:
        item = {**item}
        if item.get("type") is None and item.get("role"):
            item["type"] = "message"
        if item["type"] == "message" and isinstance(item.get("content"), str):
            kind = "output_text" if item.get("role") == "assistant" else "input_text"
            item["content"] = [{"type": kind, "text": item["content"]}]
        if not item.get("id"):
            item["id"] = _item_id("msg" if item["type"] == "message" else "item")
        items.append(item)
    return items


def _item_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _item_type(index: int, item: Any) -> str:
    if not isinstance(item, dict):
        raise InvalidField(f"input[{index}]: input items must be objects", "input")
    kind = item.get("type")
    if kind is None and item.get("role"):
        return "message"  # the shorthand {"role": ..., "content": ...}
    if kind in ("message", "function_call", "function_call_output", "reasoning"):
        return kind
    if kind == "web_search_call":
        return kind
    if not kind:
        raise InvalidField(f"input[{index}]: input item missing required 'type' field", "input")
    raise InvalidField(f'input[{index}]: unknown input item type: "{kind}"', "input")


def _input_message(index: int, item: dict[str, Any]) -> dict[str, Any]:
    role = item.get("role")
    if not isinstance(role, str) or not role:
        raise InvalidField(f"input[{index}]: a message needs a role", "input")
    text, images = _content(f"input[{index}]", item.get("content"))
    message: dict[str, Any] = {"role": role, "content": text}
    if images:
        message["images"] = images
    return message


def _content(where: str, content: Any) -> tuple[str, list[str]]:
    """A string or a list of content parts -> text and base64 images."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise InvalidField(f"{where}: content must be a string or array", "input")
    texts: list[str] = []
    images: list[str] = []
    for part_index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text"):
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidField(f"{where}: content[{part_index}]: text must be a string")
            texts.append(text)
        elif kind == "input_image":
            url = part.get("image_url")
            if url:  # a file_id alone cannot be resolved here; Ollama skips it too
                images.append(_image_data(where, url))
        elif kind == "input_file":
            raise InvalidField("file inputs are not currently supported", "input")
        else:
            raise InvalidField(f"{where}: content[{part_index}]: unknown content type: {kind}")
    return "".join(texts), images


def _image_data(where: str, url: Any) -> str:
    """A data URL -> bare base64, as chat completions decode it (Ollama's one
    ``decodeImageURL``): the same types, the same errors."""
    if not isinstance(url, str):
        raise InvalidField(f"{where}: image_url must be a string", "input")
    return image_data(url, "input")


def _reasoning_text(item: dict[str, Any]) -> str:
    """Ollama puts the thinking in ``encrypted_content``; else the raw ``reasoning_text``
    parts of ``content``, else the summary text."""
    encrypted = item.get("encrypted_content")
    if isinstance(encrypted, str) and encrypted:
        return encrypted
    for key in ("content", "summary"):
        parts = item.get(key) if isinstance(item.get(key), list) else []
        text = "".join(p["text"] for p in parts if isinstance(p, dict) and _is_text(p))
        if text:
            return text
    return ""


def _is_text(part: dict[str, Any]) -> bool:
    return isinstance(part.get("text"), str)


def _merged_with_call(
    messages: list[dict[str, Any]], message: dict[str, Any], items: list[Any], index: int
) -> bool:
    """An assistant message replayed between a call and its output joins the call's
    message, so that the tool result still follows the call it answers (as Ollama)."""
    following = items[index + 1] if index + 1 < len(items) else None
    if message["role"] != "assistant" or not isinstance(following, dict):
        return False
    if following.get("type") != "function_call_output" or not messages:
        return False
    last = messages[-1]
    call_ids = [call.get("id") for call in last.get("tool_calls", [])]
    if last["role"] != "assistant" or following.get("call_id") not in call_ids:
        return False
    last["content"] = "\n".join(t for t in (last["content"], message["content"]) if t)
    if message.get("images"):
        last.setdefault("images", []).extend(message["images"])
    if message.get("thinking"):
        last["thinking"] = message["thinking"]
    return True


def _add_function_call(
    messages: list[dict[str, Any]], index: int, item: dict[str, Any], thinking: str
) -> str:
    """A ``function_call`` item -> a tool call on the (last or a new) assistant message.
    Returns the reasoning still waiting for its turn."""
    name, arguments = item.get("name"), item.get("arguments") or "{}"
    if not isinstance(name, str) or not name:
        raise InvalidField(f"input[{index}]: a function_call needs a name", "input")
    namespace = item.get("namespace")
    if isinstance(namespace, str) and namespace and not name.startswith(namespace + "."):
        name = f"{namespace}.{name}"  # the name the model saw (namespace tools are expanded)
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError as exc:
        raise InvalidField(f"failed to parse function call arguments: {exc}", "input") from exc
    if not isinstance(parsed, dict):
        raise InvalidField("failed to parse function call arguments: not an object", "input")
    last = messages[-1] if messages and messages[-1]["role"] == "assistant" else None
    if last is None:
        last = {"role": "assistant", "content": ""}
        messages.append(last)
    calls = last.setdefault("tool_calls", [])
    function = {"index": len(calls), "name": name, "arguments": parsed}
    call: dict[str, Any] = {"function": function}
    if isinstance(item.get("call_id"), str):
        call["id"] = item["call_id"]
    calls.append(call)
    if thinking:
        last["thinking"] = thinking
    return ""


def _function_output(
    index: int, item: dict[str, Any], messages: list[dict[str, Any]]
) -> dict[str, Any]:
    """A ``function_call_output`` -> a tool message naming the call (and its function, which
    Hugging Face templates read)."""
    output = item.get("output")
    text, images = _content(f"input[{index}]: output", output)
    return tool_result(text, item.get("call_id"), messages, images)


# -- sampling, format, reasoning ----------------------------------------------------------


def _options(body: dict[str, Any]) -> dict[str, Any]:
    """As Ollama: temperature defaults to OpenAI's 1.0, top_p only when given."""
    options: dict[str, Any] = {"temperature": 1.0}
    for key in ("temperature", "top_p"):
        value = _optional(body, key, (int, float))
        if value is not None:
            options[key] = value
    limit = _optional(body, "max_output_tokens", int)
    if limit is not None:
        options["num_predict"] = limit
    return options


def _format(text: Any) -> Any:
    """``text.format``: ``json_schema`` -> its schema, ``json_object`` -> ``"json"``."""
    if text is None:
        return None
    if not isinstance(text, dict):
        raise InvalidField("'text' must be an object", "text")
    spec = text.get("format")
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise InvalidField("'text.format' must be an object", "text")
    if spec.get("type") == "json_schema":
        schema = spec.get("schema")
        if not isinstance(schema, dict):
            raise InvalidField("'text.format.schema' must be an object", "text")
        return schema
    if spec.get("type") == "json_object":
        return "json"
    return None  # "text", and types Ollama ignores


def _think(reasoning: Any) -> bool | str | None:
    if reasoning is None:
        return None
    if not isinstance(reasoning, dict):
        raise InvalidField("'reasoning' must be an object", "reasoning")
    effort = reasoning.get("effort")
    if effort is None or effort == "":
        return None
    if not isinstance(effort, str) or effort not in REASONING_EFFORTS:
        raise InvalidField(
            f'invalid reasoning value: "{effort}" (must be "minimal", "low", "medium", '
            '"high", "xhigh", "ultra", "max", or "none")',
            "reasoning",
        )
    return REASONING_EFFORTS[effort]


def _optional(body: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise InvalidField(f"'{key}' has the wrong type", key)
    if not isinstance(value, kind):
        raise InvalidField(f"'{key}' has the wrong type", key)
    return value


def _echo(body: dict[str, Any]) -> dict[str, Any]:
    """The request fields a response object repeats, with OpenAI's defaults."""
    text = body.get("text") if isinstance(body.get("text"), dict) else {}
    reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else None
    metadata = body.get("metadata")
    return {
        "tools": body.get("tools") or [],
        "tool_choice": body.get("tool_choice") or "auto",
        "truncation": body.get("truncation") or "disabled",
        "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
        "text": {"format": text.get("format") or {"type": "text"}},
        "top_p": body["top_p"] if body.get("top_p") is not None else 1.0,
        "temperature": body["temperature"] if body.get("temperature") is not None else 1.0,
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}
        if reasoning
        else None,
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": metadata if isinstance(metadata, dict) else {},
        "prompt_cache_key": body.get("prompt_cache_key"),
        "safety_identifier": body.get("safety_identifier"),
        "user": body.get("user"),
    }
