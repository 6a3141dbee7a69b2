"""Generation probes: the time to first output, then tokens and duration of one generation,
recorded into the app's metrics by the generation code (``generation.py``)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from flask import current_app, has_request_context, request

from .access_log import current_access
from .metrics import Metrics
from .observability import find_observability_state

log = logging.getLogger(__name__)


@dataclass
class GenerationProbe:
    """Records one generation: time to first output, then tokens and duration at the end.

    Holds the metrics itself (not the app): a streamed answer is generated after the view
    returned, outside the app context.
    """

    metrics: Metrics
    model: str
    endpoint: str
    started: float  # time.monotonic() when the request arrived
    _first_seen: bool = False

    def first_output(self) -> None:
        """The first content, thinking or tool-call event (later calls do nothing)."""
        if self._first_seen:
            return
        self._first_seen = True
        try:
            self.metrics.first_output(self.model, self.endpoint, time.monotonic() - self.started)
        except Exception:  # a metrics bug must not break serving
            log.exception("metrics update failed")

    def finished(self, prompt_tokens: int, eval_tokens: int) -> None:
        """The generation ended normally (its ``Finished`` event, Ollama's counts)."""
        self.first_output()  # no output at all: the end is the first thing the client gets
        duration_s = time.monotonic() - self.started
        try:
            self.metrics.generation(
                self.model, self.endpoint, prompt_tokens, eval_tokens, duration_s
            )
        except Exception:
            log.exception("metrics update failed")


def generation_probe(model: str) -> GenerationProbe | None:
    """A probe for a generation of ``model`` (a resolved name) in the current request;
    None outside a request or before ``register_observability``."""
    if not has_request_context():
        return None
    state = find_observability_state(current_app)
    if state is None:
        return None
    record = current_access()
    rule = request.url_rule
    return GenerationProbe(
        metrics=state.metrics,
        model=model,
        endpoint=rule.rule if rule is not None else "unmatched",
        started=record.started if record is not None else time.monotonic(),
    )


__all__ = ["GenerationProbe", "generation_probe"]
