"""``/api/generate`` and ``/api/chat``: validate, submit to the engine, answer as Ollama does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from flask import Response, jsonify

from ..durations import parse_keep_alive
from ..engine import Failed, Finished, GenerationRequest, TextChunk, merge_options
from ..engine import validate_options as check_options
from ..errors import BadRequest, ModelNotFound
from ..registry import LocalModel
from .context import get_engine, get_registry, get_settings
from .messages import parse_messages, parse_tools
from .parsing import model_name, optional, optional_str
from .streaming import job_events, ndjson_response, now_rfc3339


def handle_generate(body: dict[str, Any]) -> Response:
    """POST /api/generate."""
    started = time.perf_counter()
    _check_top_logprobs(body)
    name = model_name(body)
    if not name:
        raise ModelNotFound("")
    model = get_registry().resolve(name)
    keep_alive = parse_keep_alive(body.get("keep_alive"))
    prompt = optional(body, "prompt", str, "")
    suffix = optional_str(body, "suffix")
    raw = optional(body, "raw", bool, False)
    template, system = optional_str(body, "template"), optional(body, "system", str)
    context = _parse_context(body.get("context"))
    if raw and (template or system or context):
        raise BadRequest("raw mode does not support template, system, or context")
    _check_capabilities(model, name, body, chat=False)
    if suffix:
        raise BadRequest(f"{model.name.fully_qualified} does not support insert")
    if not prompt and not context:
        return _load_or_unload(model, name, keep_alive, body, chat=False)
    request = GenerationRequest(
        model=model,
        options=_options(model, body),
        prompt=prompt,
        system=system or None,
        template=template,
        raw=raw,
        context=context,
        keep_alive_s=keep_alive,
        truncate=optional(body, "truncate", bool, True),
        shift=optional(body, "shift", bool, True),
    )
    return _respond(request, name, body, started)


def handle_chat(body: dict[str, Any]) -> Response:
    """POST /api/chat."""
    started = time.perf_counter()
    _check_top_logprobs(body)
    name = model_name(body)
    if not name:
        raise BadRequest("model is required")
    messages = parse_messages(body.get("messages"))
    tools = parse_tools(body.get("tools"))
    model = get_registry().resolve(name)
    keep_alive = parse_keep_alive(body.get("keep_alive"))
    _check_capabilities(model, name, body, chat=True)
    if tools and "tools" not in model.capabilities:
        raise BadRequest(f"{model.name.fully_qualified} does not support tools")
    if not messages:
        return _load_or_unload(model, name, keep_alive, body, chat=True)
    request = GenerationRequest(
        model=model,
        options=_options(model, body),
        messages=messages,
        tools=tools,
        keep_alive_s=keep_alive,
        truncate=optional(body, "truncate", bool, True),
        shift=optional(body, "shift", bool, True),
    )
    return _respond(request, name, body, started)


# -- checks -------------------------------------------------------------------------------


def _check_top_logprobs(body: dict[str, Any]) -> None:
    top = optional(body, "top_logprobs", int, 0)
    if not 0 <= top <= 20:
        raise BadRequest("top_logprobs must be between 0 and 20")


def _check_capabilities(model: LocalModel, name: str, body: dict[str, Any], *, chat: bool) -> None:
    if "completion" not in model.capabilities:
        raise BadRequest(f'"{name}" does not support {"chat" if chat else "generate"}')
    think = body.get("think")
    if think is not None and not isinstance(think, bool):
        if think not in ("high", "medium", "low"):
            raise BadRequest(
                f'invalid think value: "{think}" (must be "high", "medium", "low", true, or false)'
            )
        raise BadRequest(f'think value "{think}" is not supported for this model')
    if think is True and "thinking" not in model.capabilities:
        raise BadRequest(f'"{name}" does not support thinking')
    images = body.get("images") or []
    if chat:
        images = [m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("images")]
    if images and "vision" not in model.capabilities:
        raise BadRequest(f"{model.name.fully_qualified} does not support vision")
    fmt = body.get("format")
    if fmt not in (None, ""):
        if fmt != "json" and not isinstance(fmt, dict):
            raise BadRequest(f'invalid format: {fmt!r}; expected "json" or a valid JSON Schema')
        raise BadRequest("structured output (format) is not supported by this bridge yet")


def _parse_context(value: Any) -> list[int] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) and 0 <= t < 1 << 31 for t in value
    ):
        raise BadRequest('field "context" must be an array of token ids')
    return value or None


def _options(model: LocalModel, body: dict[str, Any]):
    settings = get_settings()
    return merge_options(
        model.parameters,
        check_options(body.get("options")),
        default_num_ctx=settings.context_length,
    )


# -- responses ----------------------------------------------------------------------------


def _load_or_unload(
    model: LocalModel, name: str, keep_alive: float | None, body: dict[str, Any], *, chat: bool
) -> Response:
    """Empty prompt/messages: load the model (or unload it with keep_alive 0), as Ollama."""
    engine = get_engine()
    if keep_alive == 0:
        engine.unload(model)
        reason = "unload"
    else:
        options = _options(model, body)
        engine.load(model, keep_alive, options.num_ctx)
        reason = "load"
    reply = _line(name, chat, "")
    reply.update(done=True, done_reason=reason)
    return jsonify(reply)


def _respond(request: GenerationRequest, name: str, body: dict[str, Any], started: float):
    engine = get_engine()
    job, ready = engine.submit(request)
    events = job_events(job, engine.is_alive)
    lines = _lines(events, name, request.is_chat, started, ready.load_duration_ns)
    if optional(body, "stream", bool, True):
        return ndjson_response(lines)
    return jsonify(_aggregate(lines, request.is_chat))


def _lines(
    events: Iterator[Any], name: str, chat: bool, started: float, load_ns: int
) -> Iterator[dict[str, Any]]:
    for event in events:
        if isinstance(event, TextChunk):
            yield {**_line(name, chat, event.text), "done": False}
        elif isinstance(event, Failed):
            yield {"error": event.error.message}
        elif isinstance(event, Finished):
            yield _final_line(event, name, chat, started, load_ns)


def _line(name: str, chat: bool, text: str) -> dict[str, Any]:
    line: dict[str, Any] = {"model": name, "created_at": now_rfc3339()}
    if chat:
        line["message"] = {"role": "assistant", "content": text}
    else:
        line["response"] = text
    return line


def _final_line(
    event: Finished, name: str, chat: bool, started: float, load_ns: int
) -> dict[str, Any]:
    line = {**_line(name, chat, ""), "done": True, "done_reason": event.done_reason}
    if event.context is not None and not chat:
        line["context"] = event.context
    metrics = {
        "total_duration": int((time.perf_counter() - started) * 1e9),
        "load_duration": load_ns,
        "prompt_eval_count": event.prompt_eval_count,
        "prompt_eval_duration": event.prompt_eval_duration_ns,
        "eval_count": event.eval_count,
        "eval_duration": event.eval_duration_ns,
    }
    # Go's omitempty: zero metrics are left out, not sent as 0.
    line.update({k: v for k, v in metrics.items() if v})
    return line


def _aggregate(lines: Iterator[dict[str, Any]], chat: bool) -> dict[str, Any]:
    """``stream: false``: one object with the concatenated text and the final metrics."""
    parts: list[str] = []
    for line in lines:
        if "error" in line:
            raise BadRequest(line["error"], status_code=500)
        if not line["done"]:
            parts.append(line["message"]["content"] if chat else line["response"])
            continue
        if chat:
            line["message"]["content"] = "".join(parts)
        else:
            line["response"] = "".join(parts)
        return line
    raise BadRequest("generation ended without a result", status_code=500)
