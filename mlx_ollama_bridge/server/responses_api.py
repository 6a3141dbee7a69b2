"""``/v1/responses``: create (JSON or SSE), retrieve and delete stored responses.

A request is translated into a native chat body (``responses_translate``), the messages of
its ``previous_response_id`` chain are put first (``responses_store``), and it runs through
the same preparation and engine call as ``/api/chat`` (``generation``); the events become
Responses objects (``responses_encoder``). Streams are server-sent events with an
``event:`` line per event and no ``[DONE]``. Errors before the first byte use OpenAI's
envelope (the ``/v1`` blueprint's handlers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from flask import Response, current_app, jsonify

from ..engine import Failed
from ..engine.requests import Event
from ..errors import BadRequest, BridgeError
from . import schemas
from .context import EXTENSION, get_settings
from .generation import prepare_chat, render_prompt, start_generation
from .parsing import json_body
from .responses_encoder import ResponsesEncoder
from .responses_store import ResponseStore
from .responses_translate import ResponsesRequest, parse_request
from .streaming import dumps

_STORE_KEY = "responses_store"


def create() -> Response:
    """POST /v1/responses."""
    body = json_body(schemas.OPENAI_RESPONSES)
    request = parse_request(body)
    store = response_store()
    history = []
    if request.previous_response_id:
        history = store.conversation(request.previous_response_id)
    native = request.with_history(history)
    if not native["messages"]:
        raise BadRequest("'input' is required")
    prepared = prepare_chat(native)
    generation = prepared.request
    assert generation is not None  # there are messages
    encoder = ResponsesEncoder(
        prepared.name,
        request.echo,
        instructions=request.instructions,
        previous_response_id=request.previous_response_id,
        store=request.store,
    )
    if generation.render_only:
        info = {"rendered_template": render_prompt(generation), "image_count": 0}
        return jsonify({**encoder.response(), "_debug_info": info})
    events, _load_ns = start_generation(generation)
    keep = _keeper(store, request, encoder)
    if request.stream:
        return Response(_sse(_stream(events, encoder, keep)), mimetype="text/event-stream")
    for event in events:
        if isinstance(event, Failed):
            raise BridgeError(event.error.message, status_code=event.error.status_code)
        encoder.feed(event)
    keep()
    return jsonify(encoder.response())


def retrieve(response_id: str) -> Response:
    """GET /v1/responses/{id}: a stored response; 404 in OpenAI's envelope otherwise."""
    return jsonify(response_store().get(response_id).response)


def delete(response_id: str) -> Response:
    """DELETE /v1/responses/{id}."""
    response_store().delete(response_id)
    return jsonify({"id": response_id, "object": "response", "deleted": True})


def response_store() -> ResponseStore:
    """The app's store, made on first use with the bounds from the settings."""
    state = current_app.extensions[EXTENSION]
    store = state.get(_STORE_KEY)
    if store is None:
        settings = get_settings()
        fresh = ResponseStore(settings.responses_store_entries, settings.responses_store_bytes)
        store = state.setdefault(_STORE_KEY, fresh)  # atomic: racing threads share one
    return store


def _keeper(
    store: ResponseStore, request: ResponsesRequest, encoder: ResponsesEncoder
) -> Callable[[], None]:
    """What to do once the response is complete: store it (when asked) with its turn."""

    def keep() -> None:
        if request.store and encoder.status in ("completed", "incomplete"):
            turn = [*request.turn, encoder.assistant_message()]
            store.put(encoder.response(), request.previous_response_id, turn)

    return keep


def _stream(
    events: Iterator[Event], encoder: ResponsesEncoder, keep: Callable[[], None]
) -> Iterator[dict[str, Any]]:
    try:
        yield from encoder.start()
        for event in events:
            yield from encoder.feed(event)
        keep()
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()  # a client gone mid-stream cancels its job now


def _sse(events: Iterator[dict[str, Any]]) -> Iterator[str]:
    try:
        for event in events:
            yield f"event: {event['type']}\ndata: {dumps(event)}\n\n"
    finally:
        events.close()  # type: ignore[attr-defined]  # reaches _stream's cleanup at once
