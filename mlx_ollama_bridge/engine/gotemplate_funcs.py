"""Go template values and functions: Go's truth and printing, the builtin functions and
Ollama's (``json``, ``currentDate``, ``yesterdayDate``, ``toTypeScriptType``).

``GoMap``/``GoStruct``/``GoList`` stand for Go's maps, structs and slices, printing as
Ollama's template types do (``go_print``: ``String()`` methods give JSON).
"""

from __future__ import annotations

import datetime
import html
import json
import urllib.parse
from collections.abc import Callable
from typing import Any

from ..gotemplate import template_error

MISSING = type("Missing", (), {"__repr__": lambda self: "<no value>"})()


class GoMap(dict):
    """A Go map: JSON with sorted keys; a missing key reads as ``<no value>``."""


class GoStruct:
    """A Go struct: fields by Go name; JSON by its tags (``omitempty`` honoured) when it has
    a ``String()`` method (``json_string``), else printed ``{v1 v2 …}`` as fmt does."""

    def __init__(self, fields: list[tuple[str, str, Any, bool]], json_string: bool = False):
        self.fields = fields  # (go name, json name, value, omitempty)
        self.json_string = json_string

    def get(self, name: str) -> Any:
        for go_name, _, value, _ in self.fields:
            if go_name == name:
                return value
        raise template_error(f"can't evaluate field {name}")

    def to_json(self) -> dict[str, Any]:
        return {
            tag: value for _, tag, value, omit in self.fields if not (omit and not truth(value))
        }


class GoList(list):
    """A Go slice whose ``String()`` is its JSON (Ollama's ``templateTools``)."""


# -- values ------------------------------------------------------------------------------


def truth(value: Any) -> bool:
    """Go's truth of a template value."""
    if value is None or value is MISSING:
        return False
    if isinstance(value, GoStruct):
        return True
    return bool(value)


def go_json(value: Any) -> str:
    """Go's ``json.Marshal``: compact, map keys sorted, ``<``, ``>``, ``&`` escaped."""
    text = json.dumps(_plain(value), separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _plain(value: Any) -> Any:
    if isinstance(value, GoStruct):
        return {k: _plain(v) for k, v in value.to_json().items()}
    if isinstance(value, dict):  # a Go map: json.Marshal sorts its keys
        return {str(k): _plain(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return None if value is MISSING else value


def go_print(value: Any) -> str:
    """fmt's ``%v``, calling ``String()`` where Ollama's types have one (JSON)."""
    if value is MISSING:
        return "<no value>"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    if isinstance(value, (GoList, GoMap)):
        return go_json(value)
    if isinstance(value, GoStruct):
        if value.json_string:
            return go_json(value)
        return "{" + " ".join(go_print(v) for _, _, v, _ in value.fields) + "}"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_print(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_print(v) for v in value) + "]"
    return str(value)


def field_of(value: Any, name: str) -> Any:
    if isinstance(value, GoStruct):
        return value.get(name)
    if isinstance(value, dict):
        return value.get(name, MISSING)
    if value is None or value is MISSING:
        raise template_error(f"nil pointer evaluating .{name}")
    raise template_error(f"can't evaluate field {name} in type {type(value).__name__}")


# -- functions -----------------------------------------------------------------------------


def _len(value: Any) -> int:
    if isinstance(value, (str, list, tuple, dict)):
        return len(value)
    raise template_error(f"len of {go_print(value)}")


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, dict):
            value = value.get(key, None)
        elif isinstance(value, (list, tuple, str)) and isinstance(key, int):
            if not 0 <= key < len(value):
                raise template_error(f"index out of range: {key}")
            value = value[key]
        else:
            raise template_error(f"can't index item of type {type(value).__name__}")
    return value


def _slice(value: Any, *bounds: int) -> Any:
    if not isinstance(value, (list, tuple, str)) or len(bounds) > 3:
        raise template_error("slice of an unsliceable value")
    start = bounds[0] if bounds else 0
    end = bounds[1] if len(bounds) > 1 else len(value)
    if not 0 <= start <= end <= len(value):
        raise template_error(f"slice index out of range: {start}:{end}")
    return value[start:end]


def _eq(first: Any, *others: Any) -> bool:
    if not others:
        raise template_error("missing argument for comparison")
    first = None if first is MISSING else first
    return any(first == (None if o is MISSING else o) for o in others)


def _compare(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        try:
            return op(a, b)
        except TypeError:
            raise template_error("incompatible types for comparison") from None

    return compare


def _sprint(*args: Any) -> str:
    out = ""
    for i, arg in enumerate(args):  # fmt.Sprint: a space between operands neither a string
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out += " "
        out += go_print(arg)
    return out


def _printf(form: str, *args: Any) -> str:
    out, rest = [], list(args)
    i = 0
    while i < len(form):
        if form[i] != "%" or i + 1 >= len(form):
            out.append(form[i])
            i += 1
            continue
        verb = form[i + 1]
        i += 2
        if verb == "%":
            out.append("%")
            continue
        arg = rest.pop(0) if rest else MISSING
        out.append(json.dumps(arg) if verb == "q" and isinstance(arg, str) else go_print(arg))
    return "".join(out)


def _ts_type(prop: Any) -> str:
    """Ollama's ``ToolProperty.ToTypeScriptType``, for the common shapes."""
    data = _plain(prop) if not isinstance(prop, dict) else prop
    if not isinstance(data, dict):
        return "any"
    if data.get("anyOf"):
        return " | ".join(_ts_type(p) for p in data["anyOf"])
    kinds = data.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds] if kinds else []
    names = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean"}
    names.update({"array": "any[]", "object": "Record<string, any>", "null": "null"})
    if data.get("enum") and kinds == ["string"]:
        return " | ".join(json.dumps(e) for e in data["enum"])
    return " | ".join(names.get(str(k), "any") for k in kinds) or "any"


FUNCS: dict[str, Callable[..., Any]] = {
    "not": lambda v: not truth(v),
    "len": _len,
    "index": _index,
    "slice": _slice,
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": _compare(lambda a, b: a < b),
    "le": _compare(lambda a, b: a <= b),
    "gt": _compare(lambda a, b: a > b),
    "ge": _compare(lambda a, b: a >= b),
    "print": _sprint,
    "println": lambda *a: " ".join(go_print(x) for x in a) + "\n",
    "printf": _printf,
    "html": lambda *a: (
        html.escape(_sprint(*a)).replace("&#x27;", "&#39;").replace("&quot;", "&#34;")
    ),  # noqa: E501
    "urlquery": lambda *a: urllib.parse.quote_plus(_sprint(*a)),
    "json": go_json,
    "currentDate": lambda *a: datetime.date.today().isoformat(),
    "yesterdayDate": lambda *a: (datetime.date.today() - datetime.timedelta(days=1)).isoformat(),
    "toTypeScriptType": _ts_type,
}


# -- execution -----------------------------------------------------------------------------


__all__ = [
    "FUNCS",
    "MISSING",
    "GoList",
    "GoMap",
    "GoStruct",
    "field_of",
    "go_json",
    "go_print",
    "truth",
]
