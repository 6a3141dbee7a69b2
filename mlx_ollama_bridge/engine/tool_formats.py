"""Model families' tool-call syntax and thinking tags, and parsing one call's text.

Pure (no MLX). Families (:func:`tool_syntax`): Qwen2.5/3 ``<tool_call>{json}</tool_call>``;
Llama 3.x bare JSON ``{"name": ..., "parameters": ...}`` (optionally after
``<|python_tag|>``); Mistral ``[TOOL_CALLS]`` followed by a JSON list or
``name[ARGS]{json}``; any other format mlx-lm recognises, through mlx-lm's own parser
(``mlx_lm.tool_parsers``, handed over by the backend); and a generic fallback: a JSON call
at the start of the answer that names one of the request's tools.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

ParsedCall = dict[str, Any]  # {"name": str, "arguments": dict} (+ "id" if the model gave one)
ParseFn = Callable[[str, Sequence[dict[str, Any]] | None], list[ParsedCall]]

DEFAULT_THINK_TAGS = ("<think>", "</think>")
_ID_ALPHABET = string.ascii_lowercase + string.digits
_MISTRAL_ID_ALPHABET = string.ascii_letters + string.digits
_JSON_SEPARATORS = " \t\r\n;,"


@dataclass(frozen=True)
class ToolSyntax:
    """How one model family writes tool calls.

    ``parse`` turns the text between the markers into calls and raises ``ValueError`` when
    the text is not a tool call.
    """

    family: str
    start: str  # marker that opens a call; "" = none
    end: str  # marker that closes it; "" = the call runs to the end of the output
    parse: ParseFn
    leading_json: bool = False  # a bare JSON call at the start of the answer counts too
    id_length: int = 0  # 0: Ollama's ``call_`` + 8 chars; else this many letters/digits
    # Between the markers is a JSON list whose calls go out one by one as each completes,
    # as Ollama's template-driven tools parser streams them (SmolLM2).
    incremental: bool = False


@dataclass(frozen=True)
class TokenizerMarkup:
    """What mlx-lm inferred from a model's tokenizer; the backend fills it in."""

    think_start: str | None = None
    think_end: str | None = None
    tool_family: str | None = None  # the mlx_lm.tool_parsers module name
    tool_call_start: str | None = None
    tool_call_end: str | None = None
    tool_parser: Callable[[str, Any], Any] | None = None


# -- parsing one call's text --------------------------------------------------------------


def parse_json_calls(text: str, tools: Sequence[dict[str, Any]] | None = None) -> list[ParsedCall]:
    """One or more JSON calls: objects or arrays of them, separated by spaces, ``;`` or ``,``.

    Each object names the function in ``name`` (or OpenAI's ``function.name``) and gives the
    arguments as an object (or a JSON string) in ``arguments`` or, as Llama 3 does,
    ``parameters``.
    """
    text = _strip_code_fence(text)
    decoder = json.JSONDecoder()
    calls: list[ParsedCall] = []
    pos = _skip(text, 0, _JSON_SEPARATORS)
    while pos < len(text):
        value, pos = decoder.raw_decode(text, pos)  # JSONDecodeError is a ValueError
        calls.extend(call_from_object(item) for item in _as_list(value))
        pos = _skip(text, pos, _JSON_SEPARATORS)
    if not calls:
        raise ValueError("no tool call in the text")
    return calls


def parse_llama3_calls(
    text: str, tools: Sequence[dict[str, Any]] | None = None
) -> list[ParsedCall]:
    """Llama 3.x: JSON calls, possibly after ``<|python_tag|>``.

    Built-in tools written as Python (``brave_search.call(query=...)``) are not parsed.
    """
    return parse_json_calls(text.replace("<|python_tag|>", " "), tools)


_MISTRAL_HEADER = re.compile(r"\s*([\w.-]+)\s*(?:\[CALL_ID\]\s*[\w-]+\s*)?(?:\[ARGS\])?\s*")


def parse_mistral_calls(
    text: str, tools: Sequence[dict[str, Any]] | None = None
) -> list[ParsedCall]:
    """Mistral: a JSON list of calls (v3) or repeated ``name[ARGS]{json}`` (v11 and later)."""
    text = text.replace("[TOOL_CALLS]", " ")
    try:
        return parse_json_calls(text, tools)
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    calls: list[ParsedCall] = []
    pos, end = 0, len(text.rstrip())
    while pos < end:
        header = _MISTRAL_HEADER.match(text, pos)
        if header is None or not header.group(1):
            raise ValueError("not a Mistral tool call")
        arguments, pos = decoder.raw_decode(text, header.end())
        calls.append(call_from_object({"name": header.group(1), "arguments": arguments}))
        pos = _skip(text, pos, _JSON_SEPARATORS)
    if not calls:
        raise ValueError("no tool call in the text")
    return calls


def call_from_object(obj: Any) -> ParsedCall:
    """Normalise one decoded call to ``{"name", "arguments"[, "id"]}``; ValueError if not one."""
    if not isinstance(obj, dict):
        raise ValueError("a tool call must be a JSON object")
    if isinstance(obj.get("function"), dict):  # OpenAI's {"type": "function", "function": {…}}
        obj = {"id": obj.get("id"), **obj["function"]}
    name = obj.get("name")
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        arguments = json.loads(arguments) if arguments.strip() else {}
    if arguments is None:
        arguments = {}
    if not isinstance(name, str) or not name.strip() or not isinstance(arguments, dict):
        raise ValueError("a tool call needs a name and an arguments object")
    call: ParsedCall = {"name": name.strip(), "arguments": arguments}
    if isinstance(obj.get("id"), str) and obj["id"]:
        call["id"] = obj["id"]
    return call


def wrap_mlx_parser(parser: Callable[[str, Any], Any]) -> ParseFn:
    """Adapt an ``mlx_lm.tool_parsers`` ``parse_tool_call`` to :data:`ParseFn`."""

    def parse(text: str, tools: Sequence[dict[str, Any]] | None) -> list[ParsedCall]:
        try:
            result = parser(text, tools)
        except Exception as exc:  # each mlx-lm parser fails in its own way
            raise ValueError(f"not a tool call: {exc}") from exc
        return [call_from_object(item) for item in _as_list(result)]

    return parse


# -- families -----------------------------------------------------------------------------

QWEN = ToolSyntax("qwen", "<tool_call>", "</tool_call>", parse_json_calls)
LLAMA3 = ToolSyntax("llama3", "<|python_tag|>", "", parse_llama3_calls, leading_json=True)
# [TOOL_CALLS] is a control token some tokenizers never print, hence leading_json too.
MISTRAL = ToolSyntax(
    "mistral", "[TOOL_CALLS]", "", parse_mistral_calls, leading_json=True, id_length=9
)
GENERIC = ToolSyntax("json", "", "", parse_json_calls, leading_json=True)
# SmolLM2 with Ollama's library tools prompt: <tool_call>[{"name": …, "arguments": …}, …]
SMOLLM2 = ToolSyntax("smollm2", "<tool_call>", "</tool_call>", parse_json_calls, incremental=True)


def tool_syntax(template: str | None, markup: TokenizerMarkup) -> ToolSyntax:
    """The tool-call syntax of a model, from mlx-lm's inference and the chat template."""
    template = template or ""
    family = markup.tool_family
    if family is None and "<tool_call>[" in template:
        return SMOLLM2
    if family == "json_tools" or (family is None and "<tool_call>" in template):
        return QWEN
    if family == "mistral" or (family is None and "[TOOL_CALLS]" in template):
        return MISTRAL
    if family and markup.tool_parser is not None and markup.tool_call_start:
        end = markup.tool_call_end or ""
        return ToolSyntax(family, markup.tool_call_start, end, wrap_mlx_parser(markup.tool_parser))
    if "<|python_tag|>" in template or (
        "<|start_header_id|>" in template and "parameters" in template
    ):
        return LLAMA3
    return GENERIC


def think_tags(markup: TokenizerMarkup) -> tuple[str, str]:
    """The model's think tags: mlx-lm's from the vocabulary, else ``<think>``/``</think>``."""
    if markup.think_start and markup.think_end:
        return markup.think_start, markup.think_end
    return DEFAULT_THINK_TAGS


# -- helpers ------------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _strip_code_fence(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```") and len(stripped) > 6:
        body = stripped[3:-3]
        return body[4:] if body.startswith("json") else body
    return text


def partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``marker``."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:size]):
            return size
    return 0


def json_value_end(text: str) -> int | None:
    """Index just past the JSON object/array ``text`` starts with, or None if unfinished."""
    depth, in_string, escaped = 0, False, False
    for i, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth <= 0:
                return i + 1
    return None


def new_call_id(length: int = 0) -> str:
    """Ollama's ``call_`` + 8 random ``[a-z0-9]``; or ``length`` letters/digits (Mistral's 9)."""
    if length:
        return "".join(secrets.choice(_MISTRAL_ID_ALPHABET) for _ in range(length))
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))


__all__ = [
    "DEFAULT_THINK_TAGS",
    "GENERIC",
    "LLAMA3",
    "MISTRAL",
    "QWEN",
    "SMOLLM2",
    "ParseFn",
    "ParsedCall",
    "TokenizerMarkup",
    "ToolSyntax",
    "call_from_object",
    "json_value_end",
    "new_call_id",
    "parse_json_calls",
    "parse_llama3_calls",
    "parse_mistral_calls",
    "partial_suffix",
    "think_tags",
    "tool_syntax",
    "wrap_mlx_parser",
]
