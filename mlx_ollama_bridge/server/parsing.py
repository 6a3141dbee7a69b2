"""Reading JSON request bodies and checking field types at the HTTP boundary."""

from __future__ import annotations

import json
from typing import Any

from flask import request

from ..errors import BadRequest
from .observability import note_model

_MAX_DEPTH = 64

_JSON_TYPE = {
    str: "string",
    bool: "bool",
    int: "number",
    float: "number",
    list: "array",
    dict: "object",
    type(None): "null",
}


def json_body() -> dict[str, Any]:
    """The request body as a JSON object; 400 with a clear message otherwise."""
    raw = request.get_data(cache=True)  # kept: a request for upstream's model is re-sent
    if not raw.strip():
        raise BadRequest("missing request body")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"invalid UTF-8 in request body at byte {exc.start}") from exc
    try:
        body = json.loads(text)
    except RecursionError as exc:
        raise BadRequest("request body is nested too deeply") from exc
    except ValueError as exc:
        raise BadRequest(f"invalid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest(f"cannot unmarshal {_json_type(body)} into an object")
    if _depth(body) > _MAX_DEPTH:
        raise BadRequest("request body is nested too deeply")
    note_model(body.get("model") or body.get("name"))
    return body


def optional(body: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any = None):
    """``body[key]`` if present and of ``kind``; ``default`` when absent or null; 400 otherwise."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise _type_error(key, value, kind)
    if not isinstance(value, kind):
        raise _type_error(key, value, kind)
    return value


def optional_str(body: dict[str, Any], key: str) -> str | None:
    """A string field where ``""`` means absent (the Go client sends zero values)."""
    value = optional(body, key, str)
    return value or None


def model_name(body: dict[str, Any]) -> str:
    """``model``, falling back to the deprecated ``name`` (the Go CLI sends both)."""
    return optional(body, "model", str) or optional(body, "name", str) or ""


def _type_error(key: str, value: Any, kind: type | tuple[type, ...]) -> BadRequest:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    expected = " or ".join(sorted({_JSON_TYPE.get(k, k.__name__) for k in kinds}))
    return BadRequest(f'field "{key}" must be {expected}, got {_json_type(value)}')


def _json_type(value: Any) -> str:
    return _JSON_TYPE.get(type(value), type(value).__name__)


def _depth(value: Any) -> int:
    """Nesting depth, iteratively (a recursive walk could itself overflow)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest
