"""Engine events -> OpenAI Responses objects and stream events (``/v1/responses``).

One :class:`ResponsesEncoder` per request turns the generation's events into the streamed
event sequence, each with its ``sequence_number``::

    response.created, response.in_progress,
    per output item: response.output_item.added, then
      reasoning:     reasoning_summary_part.added, reasoning_summary_text.delta…,
                     reasoning_summary_text.done, reasoning_summary_part.done
      message:       content_part.added, output_text.delta…, output_text.done,
                     content_part.done
      function_call: function_call_arguments.delta, function_call_arguments.done
    response.output_item.done,
    response.completed (or response.incomplete when max_output_tokens cut it short)

and keeps the output items, so the non-streamed reply is the same response object the
stream ends with. As Ollama: reasoning items carry the thinking as summary text and as
``encrypted_content`` (which it reads back as thinking), and text after tool calls is
dropped. A failure after the first event ends the stream with ``error`` and
``response.failed``.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from ..engine import Failed, Finished, TextChunk
from ..engine.requests import Event, ThinkingChunk, ToolCall, ToolCalls
from ..errors import BridgeError

_LENGTH = "length"


def new_id(prefix: str) -> str:
    """``resp_…``, ``msg_…``, ``rs_…``, ``fc_…``: a prefix and 24 hex digits."""
    return f"{prefix}_{secrets.token_hex(12)}"


class ResponsesEncoder:
    """The state of one response: its output items so far and the stream's counter."""

    def __init__(self, model: str, echo: dict[str, Any], **fields: Any) -> None:
        """``echo``: request fields the response repeats; ``fields``: ``instructions``,
        ``previous_response_id``, ``store``."""
        self.id = new_id("resp")
        self.created_at = int(time.time())
        self.model = model
        self.echo = echo
        self.fields = fields
        self.output: list[dict[str, Any]] = []
        self.status = "in_progress"
        self.usage: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.incomplete: dict[str, str] | None = None
        self.completed_at: int | None = None
        self._sequence = 0
        self._open: dict[str, Any] | None = None  # the message or reasoning item being written
        self._calls_made: list[dict[str, Any]] = []  # native tool calls, for assistant_message

    # -- the stream -------------------------------------------------------------------

    def start(self) -> list[dict[str, Any]]:
        """``response.created`` and ``response.in_progress``."""
        return [
            self._event("response.created", response=self.response()),
            self._event("response.in_progress", response=self.response()),
        ]

    def feed(self, event: Event) -> list[dict[str, Any]]:
        """The stream events for one engine event (the last ones for Finished/Failed)."""
        if isinstance(event, TextChunk):
            return self._text(event.text)
        if isinstance(event, ThinkingChunk):
            return self._thinking(event.text)
        if isinstance(event, ToolCalls):
            return self._calls(event.calls)
        if isinstance(event, Finished):
            return self.finish(event)
        if isinstance(event, Failed):
            return self.fail(event.error)
        return []

    def finish(self, finished: Finished) -> list[dict[str, Any]]:
        """Close the open item and end with ``response.completed`` (or ``.incomplete``)."""
        events = self._close()
        if not self.output:  # an empty answer is still one (empty) message
            events += self._open_message() + self._close()
        self.usage = usage(finished)
        self.completed_at = int(time.time())
        if finished.done_reason == _LENGTH:
            self.status, self.incomplete = "incomplete", {"reason": "max_output_tokens"}
        else:
            self.status = "completed"
        return events + [self._event(f"response.{self.status}", response=self.response())]

    def fail(self, error: BridgeError) -> list[dict[str, Any]]:
        """End a started stream: an ``error`` event, then ``response.failed``."""
        self.status = "failed"
        code = "server_error" if error.status_code >= 500 else "invalid_prompt"
        self.error = {"code": code, "message": error.message}
        return [
            self._event("error", code=code, message=error.message, param=None),
            self._event("response.failed", response=self.response()),
        ]

    # -- the response object ------------------------------------------------------------

    def response(self) -> dict[str, Any]:
        """The response object as it stands (OpenAI's field order)."""
        echo = self.echo
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": self.status,
            "background": False,
            "completed_at": self.completed_at,
            "error": self.error,
            "incomplete_details": self.incomplete,
            "instructions": self.fields.get("instructions"),
            "max_output_tokens": echo.get("max_output_tokens"),
            "max_tool_calls": None,
            "model": self.model,
            "output": list(self.output),
            "parallel_tool_calls": echo.get("parallel_tool_calls", True),
            "previous_response_id": self.fields.get("previous_response_id"),
            "prompt_cache_key": echo.get("prompt_cache_key"),
            "reasoning": echo.get("reasoning"),
            "safety_identifier": echo.get("safety_identifier"),
            "service_tier": "default",
            "store": bool(self.fields.get("store")),
            "temperature": echo.get("temperature", 1.0),
            "text": echo.get("text", {"format": {"type": "text"}}),
            "tool_choice": echo.get("tool_choice", "auto"),
            "tools": echo.get("tools", []),
            "top_logprobs": 0,
            "top_p": echo.get("top_p", 1.0),
            "truncation": echo.get("truncation", "disabled"),
            "usage": self.usage,
            "user": echo.get("user"),
            "metadata": echo.get("metadata", {}),
        }

    def assistant_message(self) -> dict[str, Any]:
        """The output as one native assistant message (what a later turn's history holds)."""
        content = "".join(
            part["text"]
            for item in self.output
            if item["type"] == "message"
            for part in item["content"]
        )
        thinking = "".join(
            part["text"]
            for item in self.output
            if item["type"] == "reasoning"
            for part in item["summary"]
        )
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking:
            message["thinking"] = thinking
        if self._calls_made:
            message["tool_calls"] = list(self._calls_made)
        return message

    # -- items ----------------------------------------------------------------------------

    def _text(self, text: str) -> list[dict[str, Any]]:
        if not text or self._calls_made:  # Ollama drops text that follows tool calls
            return []
        events = [] if self._is_open("message") else self._close() + self._open_message()
        assert self._open is not None
        self._open["text"] += text
        return events + [
            self._event(
                "response.output_text.delta",
                **self._where(),
                content_index=0,
                delta=text,
                logprobs=[],
            )
        ]

    def _thinking(self, text: str) -> list[dict[str, Any]]:
        if not text:
            return []
        events = [] if self._is_open("reasoning") else self._close() + self._open_reasoning()
        assert self._open is not None
        self._open["text"] += text
        return events + [
            self._event(
                "response.reasoning_summary_text.delta",
                **self._where(),
                summary_index=0,
                delta=text,
            )
        ]

    def _calls(self, calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
        events = self._close()
        for call in calls:
            arguments = json.dumps(call.arguments, ensure_ascii=False)
            item = {
                "id": new_id("fc"),
                "type": "function_call",
                "status": "in_progress",
                "arguments": "",
                "call_id": call.id,
                "name": call.name,
            }
            index = len(self.output)
            where = {"item_id": item["id"], "output_index": index}
            events.append(self._event("response.output_item.added", output_index=index, item=item))
            events.append(
                self._event("response.function_call_arguments.delta", **where, delta=arguments)
            )
            events.append(
                self._event("response.function_call_arguments.done", **where, arguments=arguments)
            )
            done = {**item, "status": "completed", "arguments": arguments}
            events.append(self._event("response.output_item.done", output_index=index, item=done))
            self.output.append(done)
            function = {"index": len(self._calls_made), "name": call.name}
            function["arguments"] = call.arguments
            self._calls_made.append({"id": call.id, "function": function})
        return events

    def _open_message(self) -> list[dict[str, Any]]:
        item = {"id": new_id("msg"), "type": "message", "status": "in_progress", "content": []}
        item["role"] = "assistant"
        self._open = {"kind": "message", "item": item, "text": ""}
        where = self._where()
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        return [
            self._event(
                "response.output_item.added", output_index=where["output_index"], item=item
            ),
            self._event("response.content_part.added", **where, content_index=0, part=part),
        ]

    def _open_reasoning(self) -> list[dict[str, Any]]:
        item = {"id": new_id("rs"), "type": "reasoning", "summary": []}
        self._open = {"kind": "reasoning", "item": item, "text": ""}
        where = self._where()
        part = {"type": "summary_text", "text": ""}
        return [
            self._event(
                "response.output_item.added", output_index=where["output_index"], item=item
            ),
            self._event(
                "response.reasoning_summary_part.added", **where, summary_index=0, part=part
            ),
        ]

    def _close(self) -> list[dict[str, Any]]:
        """Finish the open message or reasoning item, if any."""
        if self._open is None:
            return []
        kind, text, where = self._open["kind"], self._open["text"], self._where()
        self._open = None
        index = where["output_index"]
        if kind == "message":
            part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
            item = {"id": where["item_id"], "type": "message", "status": "completed"}
            item.update(content=[part], role="assistant")
            events = [
                self._event(
                    "response.output_text.done", **where, content_index=0, text=text, logprobs=[]
                ),
                self._event("response.content_part.done", **where, content_index=0, part=part),
            ]
        else:
            summary = {"type": "summary_text", "text": text}
            item = {"id": where["item_id"], "type": "reasoning", "summary": [summary]}
            item["encrypted_content"] = text  # Ollama's way to get the thinking back later
            events = [
                self._event(
                    "response.reasoning_summary_text.done", **where, summary_index=0, text=text
                ),
                self._event(
                    "response.reasoning_summary_part.done", **where, summary_index=0, part=summary
                ),
            ]
        self.output.append(item)
        return events + [self._event("response.output_item.done", output_index=index, item=item)]

    def _is_open(self, kind: str) -> bool:
        return self._open is not None and self._open["kind"] == kind

    def _where(self) -> dict[str, Any]:
        assert self._open is not None
        return {"item_id": self._open["item"]["id"], "output_index": len(self.output)}

    def _event(self, kind: str, **data: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._sequence, **data}
        self._sequence += 1
        return event


def usage(finished: Finished) -> dict[str, Any]:
    """Token counts from the native metrics, in the Responses shape."""
    prompt, completion = finished.prompt_eval_count, finished.eval_count
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }
