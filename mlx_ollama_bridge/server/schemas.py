"""Declared request bodies: one small field spec per endpoint, checked by one validator.

Each schema lists the top-level fields an endpoint reads with their JSON type and bounds
(string length, array length, number range). :func:`validate` runs before a handler sees
the body, so handlers only do semantic checks (a model exists, a template parses). Fields
whose shape has Ollama's own wording (``messages``, ``input``, ``options``, ``think``…) are
declared with ``kind=None`` and only bounded here; their handlers keep Ollama's texts.
Unknown fields are ignored, as Go's decoder ignores them.

Text fields have no length of their own: the body cap (``max_body_bytes``, 413) bounds them.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import BadRequest, InvalidModelName

# The longest name Ollama's grammar allows: host 350, namespace/model/tag 80 each, separators.
MAX_NAME_CHARS = 350 + 80 + 80 + 80 + 3
MAX_MESSAGES = 10_000
MAX_INPUTS = 10_000  # texts in one /api/embed call
MAX_TOKEN_IDS = 1 << 24  # ``context`` of /api/generate: more than any context window

_JSON_TYPE = {str: "string", bool: "bool", int: "number", float: "number", list: "array"}
_JSON_TYPE.update({dict: "object", type(None): "null"})


class SchemaError(BadRequest):
    """A body that breaks its schema (400); ``param`` names the field (OpenAI's envelope)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Field:
    """One top-level field: its JSON type(s), bounds, and an optional fixed error text."""

    kind: type | tuple[type, ...] | None = None  # None: any JSON value (the handler checks)
    max_len: int | None = None  # characters of a string, items of an array
    low: float = float("-inf")  # inclusive range of a number
    high: float = float("inf")
    name: bool = False  # a model name: bounded, no control characters
    message: str | None = None  # Ollama's wording, when it has one for this field


@dataclass(frozen=True)
class Schema:
    """The declared fields of one request body; ``openai`` selects OpenAI's error wording."""

    fields: Mapping[str, Field]
    openai: bool = False


NAME = Field(str, max_len=MAX_NAME_CHARS, name=True)
TEXT = Field(str)
BOOL = Field(bool)
ANY = Field()
OPTIONS = Field()  # engine.options validates keys, types and ranges with Ollama's texts
MESSAGES = Field(max_len=MAX_MESSAGES, message=f"too many messages (at most {MAX_MESSAGES})")
_TOP_LOGPROBS = Field(int, low=0, high=20, message="top_logprobs must be between 0 and 20")
_COMMON = {"model": NAME, "name": NAME, "keep_alive": ANY, "options": OPTIONS, "stream": BOOL}
_GENERATION = {
    **_COMMON,
    "format": ANY,
    "think": ANY,
    "top_logprobs": _TOP_LOGPROBS,
    "logprobs": BOOL,
    "truncate": BOOL,
    "shift": BOOL,
    "_debug_render_only": BOOL,
}

GENERATE = Schema(
    {
        **_GENERATION,
        "prompt": TEXT,
        "suffix": TEXT,
        "system": TEXT,
        "template": TEXT,
        "raw": BOOL,
        "context": Field(max_len=MAX_TOKEN_IDS, message='field "context" is too long'),
        "images": Field(max_len=MAX_MESSAGES),
    }
)
CHAT = Schema({**_GENERATION, "messages": MESSAGES, "tools": Field(max_len=MAX_MESSAGES)})
SHOW = Schema({"model": NAME, "name": NAME, "verbose": BOOL, "system": TEXT, "template": TEXT})
EMBED = Schema(
    {
        **_COMMON,
        "input": Field(max_len=MAX_INPUTS, message=f"too many inputs (at most {MAX_INPUTS})"),
        "truncate": BOOL,
        "dimensions": Field(int, low=0, high=1 << 20),
    }
)
EMBEDDINGS = Schema({**_COMMON, "prompt": TEXT})
COPY = Schema({"source": NAME, "destination": NAME})
DELETE = Schema({"model": NAME, "name": NAME})
PULL = Schema({"model": NAME, "name": NAME, "stream": BOOL, "insecure": BOOL})
CREATE = Schema(
    {
        "model": NAME,
        "name": NAME,
        "from": Field(str, max_len=4096),  # a name, or a file path (refused with a hint)
        "stream": BOOL,
        "modelfile": TEXT,
        "system": TEXT,
        "template": TEXT,
        "license": ANY,
        "parameters": OPTIONS,
        "messages": MESSAGES,
        "files": ANY,
        "adapters": ANY,
        "quantize": TEXT,
        "quantization": TEXT,
    }
)
_OPENAI_COMMON = {
    "model": NAME,
    "max_tokens": Field(int, low=0, high=1 << 31),
    "max_completion_tokens": Field(int, low=0, high=1 << 31),
    "n": Field(int, low=1, high=1),  # one choice per request, as Ollama
}
OPENAI_CHAT = Schema({**_OPENAI_COMMON, "messages": MESSAGES}, openai=True)
OPENAI_COMPLETION = Schema(_OPENAI_COMMON, openai=True)
OPENAI_RESPONSES = Schema(
    {
        "model": NAME,
        "input": Field((str, list)),  # items are counted by the translator
        "instructions": TEXT,
        "previous_response_id": Field(str, max_len=256),
        "max_output_tokens": Field(int, low=0, high=1 << 31),
        "temperature": Field((int, float), low=0, high=2),
        "top_p": Field((int, float), low=0, high=1),
        "stream": BOOL,
        "store": BOOL,
        "parallel_tool_calls": BOOL,
        "tools": Field(list, max_len=MAX_MESSAGES),
        "text": Field(dict),
        "reasoning": Field(dict),
        "metadata": Field(dict),
    },
    openai=True,
)


def validate(body: dict[str, Any], schema: Schema) -> None:
    """Check every declared field present in ``body`` (null means absent); 400 otherwise."""
    for key, spec in schema.fields.items():
        value = body.get(key)
        if value is not None:
            _check(key, value, spec, schema.openai)


def _check(key: str, value: Any, spec: Field, openai: bool) -> None:
    if spec.kind is not None and not _is_kind(value, spec.kind):
        raise type_error(key, value, spec.kind, openai=openai)
    if spec.name:
        _check_name(value)
    if spec.max_len is not None and isinstance(value, (str, list)) and len(value) > spec.max_len:
        what = "characters" if isinstance(value, str) else "items"
        raise SchemaError(
            spec.message or f'field "{key}" is too long (at most {spec.max_len} {what})', key
        )
    if _out_of_range(value, spec):
        field = f"'{key}'" if openai else f'field "{key}"'
        bounds = f"between {_number(spec.low)} and {_number(spec.high)}"
        raise SchemaError(spec.message or f"{field} must be {bounds}", key)


def _out_of_range(value: Any, spec: Field) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    return not spec.low <= value <= spec.high


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _check_name(value: str) -> None:
    """Names become directory names in the store: no NUL or other control characters."""
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise InvalidModelName(value.encode("unicode_escape").decode("ascii"))


def _is_kind(value: Any, kind: type | tuple[type, ...]) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):  # bool is an int in Python, not in JSON
        return bool in kinds
    if int in kinds and isinstance(value, float):
        return False
    return isinstance(value, kinds)


def type_error(
    key: str, value: Any, kind: type | tuple[type, ...], *, openai: bool = False
) -> SchemaError:
    """The 400 for a field of the wrong JSON type, in native or OpenAI wording."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if openai:
        names = {bool: "a boolean", str: "a string", int: "an integer", float: "a number"}
        expected = " or ".join(names.get(k, _JSON_TYPE.get(k, k.__name__)) for k in kinds)
        return SchemaError(f"'{key}' must be {expected}", key)
    expected = " or ".join(sorted({_JSON_TYPE.get(k, k.__name__) for k in kinds}))
    return SchemaError(f'field "{key}" must be {expected}, got {json_type(value)}', key)


def json_type(value: Any) -> str:
    """The JSON type name of a decoded value, as error texts say it."""
    return _JSON_TYPE.get(type(value), type(value).__name__)
