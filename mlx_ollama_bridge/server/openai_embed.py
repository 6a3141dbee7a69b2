"""``POST /v1/embeddings``: OpenAI's request and reply around the one native embed path.

Vectors are what ``/api/embed`` returns (normalised, optionally shortened to ``dimensions``);
``encoding_format: base64`` packs them as little-endian float32, as OpenAI and Ollama do.
"""

from __future__ import annotations

import base64
from typing import Any

from ..durations import parse_keep_alive
from .embed_api import embed_texts, float32_list, normalize, resolve_for_embedding, shorten
from .openai_translate import InvalidField
from .parsing import model_name

__all__ = ["embeddings_reply"]

ENCODINGS = ("float", "base64")


def embeddings_reply(body: dict[str, Any]) -> dict[str, Any]:
    """The ``list`` object for a ``/v1/embeddings`` body (errors raise, §14.4)."""
    inputs = _inputs(body.get("input"))
    encoding = body.get("encoding_format") or "float"
    if encoding not in ENCODINGS:
        raise InvalidField(
            f"Invalid value for 'encoding_format' = {encoding}. "
            "Supported values: ['float', 'base64'].",
            "encoding_format",
        )
    dimensions = body.get("dimensions") or 0
    if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 0:
        raise InvalidField("invalid dimensions", "dimensions")
    name = model_name(body)
    model = resolve_for_embedding(name)
    keep_alive = parse_keep_alive(body.get("keep_alive"))
    result = embed_texts(model, inputs, {}, keep_alive=keep_alive, truncate=True)
    data = [
        {"object": "embedding", "embedding": _encode(vector, dimensions, encoding), "index": i}
        for i, vector in enumerate(result.vectors)
    ]
    tokens = result.prompt_eval_count
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return {"object": "list", "data": data, "model": name, "usage": usage}


def _inputs(value: Any) -> list[str]:
    """A string or a non-empty array of strings; ``""`` is one empty text (token arrays,
    null and ``[]`` are refused as Ollama does)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise InvalidField("invalid input", "input")


def _encode(vector: list[float], dimensions: int, encoding: str) -> list[float] | str:
    values = shorten(normalize(vector), dimensions).astype("<f4")
    if encoding == "base64":
        return base64.b64encode(values.tobytes()).decode("ascii")
    return float32_list(values)
