"""The Anthropic Messages API (``/v1/messages``), as Ollama serves it for Claude Code.

A request is translated into a native chat body (``anthropic_wire``) and run through the
same preparation and engine call as ``/api/chat`` (``generation``); the events come back as
Anthropic's ``message`` or its SSE events. Errors use Anthropic's envelope
(``errors.ANTHROPIC``). ``?beta=true`` (Claude Code's) is accepted; the API key is checked
by ``security`` (``x-api-key`` or ``Authorization: Bearer``). A model only the upstream
Ollama has is forwarded there first, body unchanged (Ollama serves ``/v1/messages`` too).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from .anthropic_wire import (
    MessagesEncoder,
    messages_to_native,
    new_message_id,
)
from .context import get_registry
from .errors import ANTHROPIC
from .generation import Prepared, count_prompt_tokens, prepare_chat, start_counted
from .parsing import json_body, model_name
from .upstream_proxy import forward_if_remote
from .wire import respond

bp = Blueprint("anthropic", __name__, url_prefix="/v1")
bp.error_envelope = ANTHROPIC  # type: ignore[attr-defined]  # read by errors.current_envelope


@bp.route("/messages", methods=["POST"])
def messages() -> Response:
    """A message (JSON, or Anthropic's SSE events with ``stream: true``)."""
    body = json_body()
    return forward_if_remote(model_name(body)) or _message(body)


def _message(body: dict[str, Any]) -> Response:
    prepared = _prepare(messages_to_native(body))
    assert prepared.request is not None  # the translator insists on messages
    events, _load_ns, prompt_tokens = start_counted(prepared.request)
    stops = body.get("stop_sequences") or ()  # checked by the translator: strings
    encoder = MessagesEncoder(new_message_id(), prepared.name, prompt_tokens, stops)
    return respond(encoder, events, prepared.stream)


@bp.route("/messages/count_tokens", methods=["POST"])
def count_tokens() -> Response:
    """``{"input_tokens": n}``: the prompt as the model would see it, counted by its tokenizer."""
    body = json_body()
    return forward_if_remote(model_name(body)) or _token_count(body)


def _token_count(body: dict[str, Any]) -> Response:
    prepared = _prepare(messages_to_native(body, counting=True), counting=True)
    assert prepared.request is not None
    return jsonify({"input_tokens": count_prompt_tokens(prepared.request)})


def _prepare(native: dict[str, Any], *, counting: bool = False) -> Prepared:
    """The native preparation, relaxed as Ollama relaxes it for this API: thinking asked of a
    model that cannot think is dropped, not refused (Claude Code always asks). A count also
    drops tools a model's template cannot show, since they never reach its prompt."""
    model = get_registry().resolve(native["model"])
    if "thinking" not in model.capabilities:
        native.pop("think", None)
    if counting and "tools" not in model.capabilities:
        native.pop("tools", None)
    return prepare_chat(native)


__all__ = ["bp"]
