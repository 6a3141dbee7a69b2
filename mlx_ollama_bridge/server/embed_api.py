"""``/api/embed`` and the legacy ``/api/embeddings``, as Ollama answers them (spec §12).

``embed_texts`` is the one path into the engine for embeddings; ``/v1/embeddings`` can call
it too. Vectors are L2-normalised here (as Ollama's server does, after the model's own
pooling), then cut to ``dimensions`` and normalised again (Matryoshka style).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from flask import Response, jsonify

from ..durations import parse_keep_alive
from ..engine import EmbeddingRequest, merge_options
from ..engine import validate_options as check_options
from ..errors import BadRequest, BridgeError, ModelNotFound
from ..registry import LocalModel
from .context import get_engine, get_registry, get_settings
from .parsing import model_name, optional


@dataclass(frozen=True)
class Embedded:
    """What the engine produced for one request (vectors as the model pools them)."""

    vectors: list[list[float]]
    prompt_eval_count: int
    load_duration_ns: int


def handle_embed(body: dict[str, Any]) -> Response:
    """POST /api/embed: batch input, normalised float32 vectors, metrics."""
    started = time.perf_counter()
    inputs = parse_input(body.get("input"))
    name = model_name(body)
    truncate = optional(body, "truncate", bool, True)
    dimensions = optional(body, "dimensions", int, 0)
    model = resolve_for_embedding(name)
    keep_alive = parse_keep_alive(body.get("keep_alive"))
    if not inputs:  # load only, as Ollama
        get_engine().load(model, keep_alive, _options(model, body).num_ctx)
        return jsonify({"model": name, "embeddings": []})
    result = embed_texts(model, inputs, body, keep_alive=keep_alive, truncate=truncate)
    vectors = [shorten(normalize(v), dimensions) for v in result.vectors]
    reply: dict[str, Any] = {"model": name, "embeddings": [float32_list(v) for v in vectors]}
    metrics = {
        "total_duration": int((time.perf_counter() - started) * 1e9),
        "load_duration": result.load_duration_ns,
        "prompt_eval_count": result.prompt_eval_count,
    }
    reply.update({k: v for k, v in metrics.items() if v})  # Go's omitempty
    return jsonify(reply)


def handle_embeddings(body: dict[str, Any]) -> Response:
    """POST /api/embeddings (legacy): one prompt, the model's vector as float64 numbers."""
    name = model_name(body)
    if not name:
        raise BadRequest("model is required")
    prompt = optional(body, "prompt", str, "")
    model = resolve_for_embedding(name)
    keep_alive = parse_keep_alive(body.get("keep_alive"))
    options = _options(model, body)  # bad options are the client's fault: 400, not 500
    if not prompt:
        get_engine().load(model, keep_alive, options.num_ctx)
        return jsonify({"embedding": []})
    try:
        result = embed_texts(model, [prompt], body, keep_alive=keep_alive, truncate=True)
    except BridgeError as exc:
        if exc.status_code == 503:
            raise
        raise BridgeError(exc.message, status_code=500) from exc  # Ollama: failures are 500
    return jsonify({"embedding": [float(x) for x in result.vectors[0]]})


def parse_input(value: Any) -> list[str]:
    """``input``: a string or an array of strings; ``""``/null/absent means none."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise BadRequest("invalid input type")


def resolve_for_embedding(name: str) -> LocalModel:
    """The model, or 404 with the wording Ollama's embedding routes use."""
    try:
        return get_registry().resolve(name)
    except ModelNotFound:
        raise ModelNotFound(name, f'model "{name}" not found, try pulling it first') from None
    except BadRequest:  # an invalid name cannot exist either
        raise ModelNotFound(name, f'model "{name}" not found, try pulling it first') from None


def embed_texts(
    model: LocalModel,
    inputs: list[str],
    body: dict[str, Any],
    *,
    keep_alive: float | None,
    truncate: bool,
) -> Embedded:
    """Run the texts through the engine (admission, loading and keep_alive as generation)."""
    request = EmbeddingRequest(
        model=model,
        inputs=inputs,
        options=_options(model, body),
        keep_alive_s=keep_alive,
        truncate=truncate,
    )
    result, load_ns = get_engine().embed(request)
    return Embedded(result.embeddings, result.prompt_eval_count, load_ns)


def normalize(vector: list[float]) -> np.ndarray:
    """L2-normalised float32 copy; 400 on NaN/Inf as Ollama."""
    array = np.asarray(vector, dtype=np.float32)
    if not np.all(np.isfinite(array)):
        raise BadRequest("embedding contains NaN or Inf values")
    return array / np.float32(max(float(np.linalg.norm(array)), 1e-12))


def shorten(vector: np.ndarray, dimensions: int) -> np.ndarray:
    """The first ``dimensions`` values, normalised again (only if 0 < dimensions < len)."""
    if 0 < dimensions < len(vector):
        return normalize(vector[:dimensions].tolist())
    return vector


def float32_list(vector: np.ndarray) -> list[float]:
    """Floats printed as Go prints a float32: the shortest decimal that round-trips."""
    return [float(str(x)) for x in vector.astype(np.float32)]


def _options(model: LocalModel, body: dict[str, Any]):
    return merge_options(
        model.parameters,
        check_options(body.get("options")),
        default_num_ctx=get_settings().context_length,
    )


__all__ = [
    "Embedded",
    "embed_texts",
    "float32_list",
    "handle_embed",
    "handle_embeddings",
    "normalize",
    "parse_input",
    "resolve_for_embedding",
    "shorten",
]
