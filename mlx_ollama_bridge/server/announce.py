"""Announcing generation requests to the engine as they begin (``Engine.arrival``).

An idle model waits briefly for requests on their way so that requests sent together start in
one batch (``engine/arrivals.py``). A request is announced before its body is read and stops
being on its way when it is queued (``current_arrival`` passed to ``Engine.submit``), when it
turns out to generate nothing (a load, a forward to the upstream Ollama: ``end_announcement``)
or, at the latest, when its view returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask, g, request

from .context import get_engine

if TYPE_CHECKING:
    from ..engine.arrivals import Arrival

# every route that generates: an idle engine waits briefly for these to start them together
GENERATION_PATHS = frozenset(
    ("/api/generate", "/api/chat", "/v1/chat/completions", "/v1/completions")
    + ("/v1/responses", "/v1/messages")
)


def register_arrivals(app: Flask) -> None:
    """Announce each generation request to the engine as it begins (``Engine.arrival``), so
    that requests sent together start in one batch; the announcement ends when the request
    is queued (``start_counted``) or, at the latest, when its view returns."""

    @app.before_request
    def _announce() -> None:
        if request.method == "POST" and request.path in GENERATION_PATHS:
            g.arrival = get_engine().arrival()

    @app.teardown_request
    def _at_teardown(_error: BaseException | None) -> None:
        end_announcement()


def end_announcement() -> None:
    """This request is no longer on its way to the engine (idempotent)."""
    arrival = g.pop("arrival", None)
    if arrival is not None:
        arrival.close()


def current_arrival() -> Arrival | None:
    """The current request's announcement (None if it has none or it ended)."""
    return g.get("arrival")
