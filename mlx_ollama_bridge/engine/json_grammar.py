"""Ollama's ``format`` (``"json"`` or a JSON Schema) as an llguidance grammar; no MLX here.

The HTTP layer calls :func:`grammar_for_format` to reject bad formats with a 400 before a model
is loaded; ``constrained`` (the MLX side) turns the same grammar into a token mask.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from llguidance import LLMatcher

from ..errors import BadRequest

__all__ = ["JSON_OBJECT_SCHEMA", "format_key", "grammar_for_format"]

# `format: "json"` means "a JSON object" in Ollama (its grammar root is an object).
JSON_OBJECT_SCHEMA: dict[str, Any] = {"type": "object"}

# Fixed separators and no free whitespace: a model (random ones especially) cannot wander
# off into endless indentation, and the output looks like Python's json.dumps.
COMPILE_OPTIONS: dict[str, Any] = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}

_CACHE_SIZE = 64  # distinct schemas kept compiled (grammar text), shared by all models


def format_key(fmt: Any) -> str | None:
    """The canonical text of a request's ``format``; None when output is unconstrained.

    Raises BadRequest for anything but ``"json"``, a JSON object, ``""`` or null.
    """
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return json.dumps(JSON_OBJECT_SCHEMA)
    if isinstance(fmt, dict):
        return json.dumps(fmt, sort_keys=True, separators=(",", ":"))
    raw = json.dumps(fmt) if not isinstance(fmt, str) else f'"{fmt}"'
    raise BadRequest(f'invalid format: {raw}; expected "json" or a valid JSON Schema')


def grammar_for_format(fmt: Any) -> str | None:
    """The llguidance grammar for ``format`` (None: unconstrained).

    Raises BadRequest naming the part of the schema the constraint cannot enforce: such a
    request is refused rather than run unconstrained.
    """
    key = format_key(fmt)
    return None if key is None else compiled_grammar(key)


@lru_cache(maxsize=_CACHE_SIZE)
def compiled_grammar(key: str) -> str:
    """Grammar text for a canonical schema (see :func:`format_key`); cached, errors are not."""
    try:
        grammar = LLMatcher.grammar_from_json_schema(key, overrides=COMPILE_OPTIONS)
    except ValueError as exc:
        raise BadRequest(f"invalid JSON schema in format: {exc}") from exc
    error = LLMatcher.validate_grammar(grammar)
    if error:
        raise BadRequest(f"unsupported JSON schema in format: {error.strip()}")
    return grammar
