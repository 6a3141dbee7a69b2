"""OpenAI's wire formats: chat completions and legacy completions, streamed as SSE.

Chunks are ``data: <json>`` events ending in ``data: [DONE]`` (left out when the stream
ended with an error object); ``stream_options.include_usage`` adds a last chunk with
``usage`` and no choices. ``stream: false`` answers one ``chat.completion`` or
``text_completion`` object built from the same events.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable
from typing import Any

from ..engine import Finished, TextChunk
from ..engine.requests import Logprob, ThinkingChunk, ToolCall, ToolCalls
from .errors import OPENAI
from .wire import Encoder, Frame, Outcome

FINGERPRINT = "fp_ollama"


def new_id(prefix: str) -> str:
    """``chatcmpl-…`` / ``cmpl-…``."""
    return f"{prefix}-{secrets.token_hex(6)}"


def envelope(prefix: str, kind: str, model: str) -> dict[str, Any]:
    """The fields every response object and chunk of one request shares."""
    return {
        "id": new_id(prefix),
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": FINGERPRINT,
    }


def openai_tool_call(call: ToolCall) -> dict[str, Any]:
    """OpenAI's tool call: ``arguments`` as a JSON string, with ``type``."""
    arguments = json.dumps(call.arguments, ensure_ascii=False)
    return {
        "id": call.id,
        "index": call.index,
        "type": "function",
        "function": {"name": call.name, "arguments": arguments},
    }


def chat_logprobs(entries: list[Logprob]) -> dict[str, Any]:
    """OpenAI's chat ``logprobs``: ``{"content": [{token, logprob, bytes, top_logprobs}]}``."""

    def one(token: Any) -> dict[str, Any]:
        return {"token": token.token, "logprob": token.logprob, "bytes": list(token.bytes)}

    return {"content": [{**one(e.token), "top_logprobs": [one(t) for t in e.top]} for e in entries]}


def completion_logprobs(entries: list[Logprob], offset: int = 0) -> dict[str, Any]:
    """OpenAI's legacy completions ``logprobs``: parallel lists and ``text_offset``."""
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.token.token)
    return {
        "tokens": [e.token.token for e in entries],
        "token_logprobs": [e.token.logprob for e in entries],
        "top_logprobs": [{t.token: t.logprob for t in e.top} for e in entries],
        "text_offset": offsets,
    }


def usage(finished: Finished | None) -> dict[str, int]:
    """Token counts from the native metrics."""
    prompt = finished.prompt_eval_count if finished else 0
    completion = finished.eval_count if finished else 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def finish_reason(done_reason: str | None, called_tools: bool) -> str | None:
    """``tool_calls`` when a turn that called tools stopped normally; else the native reason."""
    if done_reason == "stop" and called_tools:
        return "tool_calls"
    return done_reason or None


class _OpenAIEncoder(Encoder):
    media_type = "text/event-stream"
    envelope = OPENAI
    done_marker = "[DONE]"

    def __init__(self, base: dict[str, Any], *, include_usage: bool = False) -> None:
        self.base, self.include_usage = base, include_usage

    def _usage_chunk(self, finished: Finished) -> list[Frame]:
        if not self.include_usage:
            return []
        return [(None, {**self.base, "choices": [], "usage": usage(finished)})]


class ChatEncoder(_OpenAIEncoder):
    """``/v1/chat/completions``: ``chat.completion`` or ``chat.completion.chunk`` objects."""

    def __init__(self, base: dict[str, Any], *, include_usage: bool = False) -> None:
        super().__init__(base, include_usage=include_usage)
        self.chunk_base = {**base, "object": "chat.completion.chunk"}
        self.called = False

    def attach_logprobs(self, payload: dict[str, Any], entries: list[Logprob]) -> None:
        choices = payload.get("choices")
        if choices:
            choices[0]["logprobs"] = chat_logprobs(entries)

    def _delta(self, **delta: Any) -> list[Frame]:
        choice = {"index": 0, "delta": {"role": "assistant", "content": "", **delta}}
        return [(None, {**self.chunk_base, "choices": [{**choice, "finish_reason": None}]})]

    def text(self, chunk: TextChunk) -> Iterable[Frame]:
        return self._delta(content=chunk.text)

    def thinking(self, chunk: ThinkingChunk) -> Iterable[Frame]:
        return self._delta(reasoning=chunk.text)

    def tool_calls(self, calls: ToolCalls) -> Iterable[Frame]:
        self.called = True
        return self._delta(tool_calls=[openai_tool_call(c) for c in calls.calls])

    def closing(self, finished: Finished) -> Iterable[Frame]:
        reason = finish_reason(finished.done_reason, self.called)
        last = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": reason}
        self.base = self.chunk_base  # the usage chunk is a chunk too
        return [(None, {**self.chunk_base, "choices": [last]}), *self._usage_chunk(finished)]

    def whole(self, outcome: Outcome) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": outcome.content}
        if outcome.thinking:
            message["reasoning"] = outcome.thinking
        if outcome.tool_calls:
            message["tool_calls"] = [openai_tool_call(c) for c in outcome.tool_calls]
        done = outcome.finished.done_reason if outcome.finished else None
        reason = finish_reason(done, bool(outcome.tool_calls))
        choice = {"index": 0, "message": message, "finish_reason": reason}
        return {**self.base, "choices": [choice], "usage": usage(outcome.finished)}


class CompletionEncoder(_OpenAIEncoder):
    """``/v1/completions``: ``text_completion`` objects (a model's reasoning is not text)."""

    offset = 0  # characters of text sent so far (``text_offset``)

    def attach_logprobs(self, payload: dict[str, Any], entries: list[Logprob]) -> None:
        choices = payload.get("choices")
        if choices:
            choices[0]["logprobs"] = completion_logprobs(entries, self.offset)
            self.offset += sum(len(e.token.token) for e in entries)

    def text(self, chunk: TextChunk) -> Iterable[Frame]:
        choice = {"text": chunk.text, "index": 0, "logprobs": None, "finish_reason": None}
        return [(None, {**self.base, "choices": [choice]})]

    def closing(self, finished: Finished) -> Iterable[Frame]:
        choice = {"text": "", "index": 0, "logprobs": None, "finish_reason": finished.done_reason}
        return [(None, {**self.base, "choices": [choice]}), *self._usage_chunk(finished)]

    def whole(self, outcome: Outcome) -> dict[str, Any]:
        reason = outcome.finished.done_reason if outcome.finished else None
        choice = {"text": outcome.content, "index": 0, "logprobs": None, "finish_reason": reason}
        return {**self.base, "choices": [choice], "usage": usage(outcome.finished)}


__all__ = [
    "ChatEncoder",
    "CompletionEncoder",
    "envelope",
    "finish_reason",
    "new_id",
    "openai_tool_call",
    "usage",
]
