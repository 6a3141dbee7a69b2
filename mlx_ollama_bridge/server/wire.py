"""One generation, any wire format: the engine's events handed to one encoder per format.

A route prepares a native request, starts the generation once (``generation``) and gives
its events to an :class:`Encoder`: Ollama NDJSON (``ollama_wire``), OpenAI chat and
completion SSE (``openai_wire``), Anthropic Messages SSE (``anthropic_wire``), OpenAI
Responses SSE (``responses_wire``). The same encoder writes the streamed frames and, from
the same events collected, the whole JSON answer of ``stream: false``. Adding a wire format
is adding one module: a translator from its request to the native one, and its encoder.

Errors follow Ollama's streaming rule: before the first byte they raise and the error
mapper (``errors``) answers in the encoder's envelope; after it, the encoder writes one
error frame in the same envelope and the stream ends.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from flask import Response, jsonify

from ..engine import Failed, Finished, TextChunk
from ..engine.requests import Event, Logprob, Logprobs, ThinkingChunk, ToolCall, ToolCalls
from ..errors import BridgeError
from .errors import OLLAMA, Envelope
from .streaming import dumps

Frame = tuple[str | None, dict[str, Any]]  # (SSE event name or None, JSON payload)


@dataclass
class Outcome:
    """A whole generation, collected from its events (``stream: false``)."""

    content: str = ""
    thinking: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finished: Finished | None = None
    events: list[Event] = field(default_factory=list)  # every output event, in order
    logprobs: list[Logprob] = field(default_factory=list)  # when the request asked


def collect(events: Iterable[Event]) -> Outcome:
    """Aggregate a generation; an error event raises (nothing has been sent yet)."""
    outcome = Outcome()
    content: list[str] = []
    thinking: list[str] = []
    for event in events:
        if isinstance(event, TextChunk):
            content.append(event.text)
        elif isinstance(event, ThinkingChunk):
            thinking.append(event.text)
        elif isinstance(event, ToolCalls):
            outcome.tool_calls.extend(event.calls)
        elif isinstance(event, Logprobs):
            outcome.logprobs.extend(event.entries)
            continue
        elif isinstance(event, Failed):
            raise BridgeError(event.error.message, status_code=event.error.status_code)
        elif isinstance(event, Finished):
            outcome.finished = event
            continue
        outcome.events.append(event)
    if outcome.finished is None:
        raise BridgeError("generation ended without a result")
    outcome.content, outcome.thinking = "".join(content), "".join(thinking)
    return outcome


class Encoder:
    """One wire format. Subclasses write frames for each event and the whole answer.

    ``media_type`` decides the framing: NDJSON writes each payload as a line; SSE writes
    ``event: <name>`` (when the frame has one) and ``data: <json>``; ``done_marker``
    (OpenAI's ``[DONE]``) ends a stream that did not fail.
    """

    media_type = "application/x-ndjson"
    envelope: Envelope = OLLAMA
    done_marker: str | None = None
    broken = False  # set once a stream has ended with an error frame
    pending: list[Logprob]  # log-probabilities waiting for the next frame

    def attach_logprobs(self, payload: dict[str, Any], entries: list[Logprob]) -> None:
        """Put ``entries`` on a frame's payload (or a whole answer) in this format's shape;
        formats without log-probabilities leave it alone."""

    def opening(self) -> Iterable[Frame]:
        """Frames before the first event (Anthropic's ``message_start``)."""
        return ()

    def text(self, chunk: TextChunk) -> Iterable[Frame]:
        """Frames for a piece of answer text."""
        return ()

    def thinking(self, chunk: ThinkingChunk) -> Iterable[Frame]:
        """Frames for a piece of reasoning."""
        return ()

    def tool_calls(self, calls: ToolCalls) -> Iterable[Frame]:
        """Frames for complete tool calls."""
        return ()

    def closing(self, finished: Finished) -> Iterable[Frame]:
        """Frames after the last event (the done line, finish reason, usage)."""
        return ()

    def failed(self, error: BridgeError) -> Iterable[Frame]:
        """The error frame that ends a stream which had started."""
        body = self.envelope.body(error.message, error.status_code, None)
        return [(self.envelope.stream_event, body)]

    def whole(self, outcome: Outcome) -> dict[str, Any]:
        """The ``stream: false`` answer."""
        raise NotImplementedError

    # -- framing ------------------------------------------------------------------------

    def frames(self, events: Iterator[Event]) -> Iterator[Frame]:
        """Every frame of a streamed answer, in order; a failure ends it with an error."""
        yield from self.opening()
        self.pending = []
        for event in events:
            if isinstance(event, Logprobs):  # they ride on the next frame, as Ollama's do
                self.pending.extend(event.entries)
            elif isinstance(event, TextChunk):
                yield from self._with_logprobs(self.text(event))
            elif isinstance(event, ThinkingChunk):
                yield from self._with_logprobs(self.thinking(event))
            elif isinstance(event, ToolCalls):
                yield from self._with_logprobs(self.tool_calls(event))
            elif isinstance(event, Failed):
                self.broken = True
                yield from self.failed(event.error)
                return
            elif isinstance(event, Finished):
                yield from self._with_logprobs(self.closing(event))

    def _with_logprobs(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        for frame in frames:
            if self.pending:
                self.attach_logprobs(frame[1], self.pending)
                self.pending = []
            yield frame

    def write(self, frame: Frame) -> str:
        """One frame as bytes on the wire."""
        name, payload = frame
        if self.media_type == "application/x-ndjson":
            return dumps(payload) + "\n"
        head = f"event: {name}\n" if name else ""
        return f"{head}data: {dumps(payload)}\n\n"

    def lines(self, events: Iterator[Event]) -> Iterator[str]:
        """The streamed body; closing it (a client gone) cancels the generation."""
        try:
            for frame in self.frames(events):
                yield self.write(frame)
            if self.done_marker and not self.broken:
                yield f"data: {self.done_marker}\n\n"
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()


def respond(encoder: Encoder, events: Iterator[Event], stream: bool) -> Response:
    """The generation's answer in ``encoder``'s format: streamed, or whole."""
    if stream:
        return Response(encoder.lines(events), mimetype=encoder.media_type)
    outcome = collect(events)
    whole = encoder.whole(outcome)
    if outcome.logprobs:
        encoder.attach_logprobs(whole, outcome.logprobs)
    return jsonify(whole)


__all__ = ["Encoder", "Frame", "Outcome", "collect", "respond"]
