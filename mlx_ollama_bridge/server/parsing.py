"""Reading JSON request bodies and checking field types at the HTTP boundary."""

from __future__ import annotations

import json
from typing import Any

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from ..errors import BadRequest
from .access_log import note_model
from .schemas import Schema, json_type, type_error, validate

_MAX_DEPTH = 64
_ZSTD_WINDOW = 8 << 20  # decoder memory, as Ollama's limit for the same bodies


def json_body(schema: Schema | None = None, *, zstd: bool = False) -> dict[str, Any]:
    """The request body as a JSON object checked against ``schema``; 400 otherwise.

    Stricter than Python's ``json``, as Go's decoder: ``NaN``/``Infinity`` literals and
    numbers that overflow a float64 (``1e400``) are invalid JSON. With ``zstd``, a body
    sent with ``Content-Encoding: zstd`` is decompressed first (Codex compresses its
    ``/v1/responses`` requests; Ollama accepts that there), within the same size cap.
    """
    raw = request.get_data(cache=True)  # kept: a request for upstream's model is re-sent
    cap = request.max_content_length
    if request.content_length is None and cap is not None and len(raw) >= cap:
        # A chunked body is cut at the cap silently by Werkzeug's stream: refuse it.
        raise RequestEntityTooLarge()
    if zstd and request.headers.get("Content-Encoding", "").strip().lower() == "zstd":
        raw = _decompress_zstd(raw, cap)
    if not raw.strip():
        raise BadRequest("missing request body")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"invalid UTF-8 in request body at byte {exc.start}") from exc
    try:
        body = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError as exc:
        raise BadRequest("request body is nested too deeply") from exc
    except ValueError as exc:
        raise BadRequest(f"invalid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest(f"cannot unmarshal {_json_type(body)} into an object")
    if _depth(body) > _MAX_DEPTH:
        raise BadRequest("request body is nested too deeply")
    note_model(body.get("model") or body.get("name"))
    if schema is not None:
        validate(body, schema)
    return body


def _decompress_zstd(raw: bytes, cap: int | None) -> bytes:
    """A zstd body, decompressed at most to ``cap`` bytes (413 beyond: no zip bombs)."""
    import zstandard  # only Codex-style requests need it

    chunks: list[bytes] = []
    size = 0
    try:
        reader = zstandard.ZstdDecompressor(max_window_size=_ZSTD_WINDOW).stream_reader(raw)
        while chunk := reader.read(1 << 16):
            size += len(chunk)
            if cap is not None and size > cap:
                raise RequestEntityTooLarge()
            chunks.append(chunk)
    except zstandard.ZstdError as exc:
        raise BadRequest("failed to decompress zstd body") from exc
    return b"".join(chunks)


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
    return type_error(key, value, kind)


def _json_type(value: Any) -> str:
    return json_type(value)


def _reject_constant(literal: str) -> float:
    raise ValueError(f"invalid character '{literal[0]}' looking for beginning of value")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"cannot unmarshal number {literal} into a float64")
    return value


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
