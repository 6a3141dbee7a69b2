"""``/api/generate`` and ``/api/chat``: validate, submit to the engine, answer as Ollama does.

Every API goes through here: ``/v1`` and ``/v1/messages`` translate their requests into
native bodies and call :func:`prepare_generate` / :func:`prepare_chat` and
:func:`start_generation` too, so checks, prompt building and the engine call exist once;
the events then go to the API's encoder (``wire``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from flask import Response, jsonify

from ..durations import parse_keep_alive
from ..engine import Failed, Finished, GenerationRequest, Options, TextChunk, merge_options
from ..engine import validate_options as check_options
from ..engine.json_grammar import grammar_for_format
from ..engine.requests import Event, ThinkingChunk, ToolCalls
from ..errors import BadRequest, ModelNotFound
from ..model_details import image_limit
from ..registry import LocalModel
from .announce import current_arrival, end_announcement
from .context import get_engine, get_registry, get_settings
from .images import check_images, request_images
from .messages import parse_messages, parse_tools
from .ollama_wire import OllamaEncoder
from .parsing import model_name, optional, optional_str
from .probes import GenerationProbe, generation_probe
from .streaming import job_events, watch_client
from .think import check_think, resolved_think, think_level
from .wire import respond


@dataclass
class Prepared:
    """A validated ``/api/generate`` or ``/api/chat`` call."""

    name: str  # the model name exactly as the client sent it
    model: LocalModel
    chat: bool
    stream: bool
    keep_alive_s: float | None
    options: Options
    request: GenerationRequest | None  # None: empty prompt/messages, i.e. load or unload


def handle_generate(body: dict[str, Any]) -> Response:
    """POST /api/generate."""
    started = time.perf_counter()
    return _respond(prepare_generate(body), started)


def handle_chat(body: dict[str, Any]) -> Response:
    """POST /api/chat."""
    started = time.perf_counter()
    return _respond(prepare_chat(body), started)


def prepare_generate(body: dict[str, Any]) -> Prepared:
    """Validate a native generate body, in Ollama's check order."""
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
    if suffix and "insert" not in model.capabilities:
        raise BadRequest(f"{model.name.fully_qualified} does not support insert")
    prepared = _prepared(model, name, body, keep_alive, chat=False)
    if prompt or context:
        prepared.request = GenerationRequest(
            prompt=prompt,
            images=body.get("images") or None,
            system=system or None,
            template=template,
            suffix=None if raw else suffix,
            raw=raw,
            context=context,
            **_common(prepared, body),
        )
    return prepared


def prepare_chat(body: dict[str, Any]) -> Prepared:
    """Validate a native chat body, in Ollama's check order."""
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
    prepared = _prepared(model, name, body, keep_alive, chat=True)
    if messages:
        prepared.request = GenerationRequest(
            messages=messages, tools=tools, **_common(prepared, body)
        )
    return prepared


def start_generation(request: GenerationRequest) -> tuple[Iterator[Event], int]:
    """Submit to the engine: the job's events and the load duration in ns.

    Errors before the first token (not found, busy, bad prompt) raise here; later ones
    arrive as a ``Failed`` event.
    """
    events, load_ns, _prompt_tokens = start_counted(request)
    return events, load_ns


def start_counted(request: GenerationRequest) -> tuple[Iterator[Event], int, int]:
    """:func:`start_generation`, plus the prompt's length in tokens (known once the engine
    admitted it; the ``prompt_eval_count`` the generation will report), for wire formats
    that announce it before the first token (Anthropic's ``message_start``)."""
    engine = get_engine()
    probe = generation_probe(request.model.name.display)  # taken now: streams outlive the view
    watch = watch_client(request.cancel, engine.wake)
    try:
        job, ready = engine.submit(request, current_arrival())
    except BaseException:
        if watch is not None:
            watch.close()
        raise
    events = job_events(job, engine.is_alive, watch)
    observed = _observed(events, probe) if probe else events
    return observed, ready.load_duration_ns, len(job.prompt_tokens)


def _observed(events: Iterator[Event], probe: GenerationProbe) -> Iterator[Event]:
    """Pass events through, recording time to first output and the final token counts
    (before the event is yielded, so a client that has the answer sees it counted)."""
    try:
        for event in events:
            if isinstance(event, (TextChunk, ThinkingChunk, ToolCalls)):
                probe.first_output()
            elif isinstance(event, Finished):
                probe.finished(event.prompt_eval_count, event.eval_count)
            yield event
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()  # an abandoned stream cancels its job now, not at garbage collection


def render_prompt(request: GenerationRequest) -> str:
    """``_debug_render_only``: the prompt the model would see (the model gets loaded)."""
    engine = get_engine()
    # the view's announcement ends here: left open, the scheduler would wait for it (gather)
    job, _ready = engine.submit(request, current_arrival())
    for _event in job_events(job, engine.is_alive):
        pass  # render-only jobs finish at once; this retires the job
    return job.prompt_text


def debug_info(request: GenerationRequest) -> dict[str, Any]:
    """``_debug_info`` of a ``_debug_render_only`` request: the prompt and its image count."""
    images = len(request.images or [])
    images += sum(len(m.get("images") or []) for m in request.messages or [])
    return {"rendered_template": render_prompt(request), "image_count": images}


def count_prompt_tokens(request: GenerationRequest) -> int:
    """The whole prompt ``request`` renders to, in the model's tokens (the model gets loaded):
    no turn dropped and nothing cut for ``num_ctx``, so a client sees what it sent."""
    request.render_only, request.truncate = True, False
    engine = get_engine()
    job, _ready = engine.submit(request, current_arrival())  # ends the view's announcement
    for event in job_events(job, engine.is_alive):
        if isinstance(event, Failed):
            raise event.error
    return len(job.prompt_tokens)


def load_or_unload(prepared: Prepared) -> str:
    """Empty prompt/messages: load the model (or unload it with keep_alive 0), as Ollama.

    Returns the ``done_reason``: ``load`` or ``unload``.
    """
    end_announcement()  # nothing to generate: no request to wait for
    engine = get_engine()
    if prepared.keep_alive_s == 0:
        engine.unload(prepared.model)
        return "unload"
    engine.load(prepared.model, prepared.keep_alive_s, prepared.options.num_ctx)
    return "load"


# -- checks -------------------------------------------------------------------------------


def _check_top_logprobs(body: dict[str, Any]) -> None:
    top = optional(body, "top_logprobs", int, 0)
    if not 0 <= top <= 20:
        raise BadRequest("top_logprobs must be between 0 and 20")


def _check_capabilities(model: LocalModel, name: str, body: dict[str, Any], *, chat: bool) -> None:
    if "completion" not in model.capabilities:
        raise BadRequest(f'"{name}" does not support {"chat" if chat else "generate"}')
    think = check_think(body.get("think"))
    if think not in (None, False) and "thinking" not in model.capabilities:
        raise BadRequest(f'"{name}" does not support thinking')
    images = request_images(body, chat=chat)
    if images and "vision" not in model.capabilities:
        raise BadRequest(f"{model.name.fully_qualified} does not support vision")
    check_images(images, limit=image_limit(model.model_info))
    grammar_for_format(body.get("format"))  # 400 for a format the constraint cannot enforce


def _parse_context(value: Any) -> list[int] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) and 0 <= t < 1 << 31 for t in value
    ):
        raise BadRequest('field "context" must be an array of token ids')
    return value or None


def _prepared(
    model: LocalModel, name: str, body: dict[str, Any], keep_alive: float | None, *, chat: bool
) -> Prepared:
    options = merge_options(
        model.parameters,
        check_options(body.get("options")),
        default_num_ctx=get_settings().context_length,
    )
    stream = optional(body, "stream", bool, True)
    return Prepared(name, model, chat, stream, keep_alive, options, None)


def _common(prepared: Prepared, body: dict[str, Any]) -> dict[str, Any]:
    """GenerationRequest fields shared by generate and chat."""
    return {
        "model": prepared.model,
        "options": prepared.options,
        "think": resolved_think(prepared.model.capabilities, body.get("think")),
        "think_level": think_level(prepared.model.capabilities, body.get("think")),
        "render_only": optional(body, "_debug_render_only", bool, False),
        "keep_alive_s": prepared.keep_alive_s,
        "truncate": optional(body, "truncate", bool, True),
        "shift": optional(body, "shift", bool, True),
        "format": body.get("format") or None,
        "logprobs": optional(body, "logprobs", bool, False),
        # as Ollama: top_logprobs only applies when logprobs is on
        "top_logprobs": optional(body, "top_logprobs", int, 0)
        if optional(body, "logprobs", bool, False)
        else 0,
    }


# -- native responses ---------------------------------------------------------------------


def _respond(prepared: Prepared, started: float) -> Response:
    request = prepared.request
    if request is None:
        encoder = OllamaEncoder(prepared.name, chat=prepared.chat, started=started, load_ns=0)
        reply = {**encoder.line(""), "done": True, "done_reason": load_or_unload(prepared)}
        return jsonify(reply)
    if request.render_only:
        encoder = OllamaEncoder(prepared.name, chat=prepared.chat, started=started, load_ns=0)
        images = len(request.images or []) + sum(
            len(m.get("images") or []) for m in request.messages or []
        )
        info = {"rendered_template": render_prompt(request), "image_count": images}
        return jsonify({**encoder.line(""), "done": False, "_debug_info": info})
    events, load_ns = start_generation(request)
    encoder = OllamaEncoder(prepared.name, chat=prepared.chat, started=started, load_ns=load_ns)
    return respond(encoder, events, prepared.stream)
