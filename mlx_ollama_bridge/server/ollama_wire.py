"""Ollama's wire format for ``/api/generate`` and ``/api/chat``: NDJSON lines, one per event.

Every line carries ``model`` and ``created_at``; chat lines a ``message``, generate lines a
``response``. The last line is ``done: true`` with ``done_reason`` and the metrics in
nanoseconds; ``stream: false`` answers that line alone, carrying the whole answer.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from ..engine import Finished, TextChunk
from ..engine.requests import Logprob, ThinkingChunk, TokenLogprob, ToolCall, ToolCalls
from .streaming import now_rfc3339
from .wire import Encoder, Frame, Outcome


def token_logprob(entry: TokenLogprob) -> dict[str, Any]:
    """Ollama's ``api.TokenLogprob``."""
    out: dict[str, Any] = {"token": entry.token, "logprob": entry.logprob}
    if entry.bytes:
        out["bytes"] = list(entry.bytes)
    return out


def native_logprob(entry: Logprob) -> dict[str, Any]:
    """Ollama's ``api.Logprob``: the token, and ``top_logprobs`` when asked for."""
    out = token_logprob(entry.token)
    if entry.top:
        out["top_logprobs"] = [token_logprob(t) for t in entry.top]
    return out


def native_tool_call(call: ToolCall) -> dict[str, Any]:
    """Ollama's ToolCall: ``arguments`` an object, ``index`` always, no ``type``."""
    function = {"index": call.index, "name": call.name, "arguments": call.arguments}
    return {"id": call.id, "function": function}


class OllamaEncoder(Encoder):
    """NDJSON lines for one native generate or chat call."""

    def __init__(self, name: str, *, chat: bool, started: float, load_ns: int) -> None:
        self.name, self.chat = name, chat
        self.started, self.load_ns = started, load_ns

    def attach_logprobs(self, payload: dict[str, Any], entries: list[Logprob]) -> None:
        payload["logprobs"] = [native_logprob(e) for e in entries]

    def text(self, chunk: TextChunk) -> Iterable[Frame]:
        return [(None, {**self.line(chunk.text), "done": False})]

    def thinking(self, chunk: ThinkingChunk) -> Iterable[Frame]:
        return [(None, {**self.line("", thinking=chunk.text), "done": False})]

    def tool_calls(self, calls: ToolCalls) -> Iterable[Frame]:
        return [(None, {**self.line("", tool_calls=list(calls.calls)), "done": False})]

    def closing(self, finished: Finished) -> Iterable[Frame]:
        return [(None, self.final_line(finished, Outcome()))]

    def whole(self, outcome: Outcome) -> dict[str, Any]:
        assert outcome.finished is not None
        return self.final_line(outcome.finished, outcome)

    def line(
        self, text: str, *, thinking: str = "", tool_calls: list[ToolCall] | None = None
    ) -> dict[str, Any]:
        """A line's common fields with its piece of answer."""
        line: dict[str, Any] = {"model": self.name, "created_at": now_rfc3339()}
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if thinking:
                message["thinking"] = thinking
            if tool_calls:
                message["tool_calls"] = [native_tool_call(c) for c in tool_calls]
            line["message"] = message
        else:
            line["response"] = text
            if thinking:
                line["thinking"] = thinking
        return line

    def final_line(self, event: Finished, whole: Outcome) -> dict[str, Any]:
        """The ``done`` line; for ``stream: false`` it carries the whole answer."""
        line = self.line(whole.content, thinking=whole.thinking, tool_calls=whole.tool_calls)
        line.update(done=True, done_reason=event.done_reason)
        if event.context is not None and not self.chat:
            line["context"] = event.context
        metrics = {
            "total_duration": int((time.perf_counter() - self.started) * 1e9),
            "load_duration": self.load_ns,
            "prompt_eval_count": event.prompt_eval_count,
            "prompt_eval_duration": event.prompt_eval_duration_ns,
            "eval_count": event.eval_count,
            "eval_duration": event.eval_duration_ns,
        }
        # Go's omitempty: zero metrics are left out, not sent as 0.
        line.update({k: v for k, v in metrics.items() if v})
        return line


__all__ = ["OllamaEncoder", "native_tool_call"]
