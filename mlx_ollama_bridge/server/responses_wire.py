"""OpenAI's Responses wire format (``/v1/responses``): the encoder of one response.

Streamed, each frame is ``event: <type>`` and ``data: <json>`` with a ``sequence_number``
from 0, and there is no ``[DONE]``::

    response.created, response.in_progress,
    per output item: response.output_item.added, then
      reasoning:     response.reasoning_summary_part.added,
                     response.reasoning_summary_text.delta…, response.reasoning_summary_text.done,
                     response.reasoning_summary_part.done
      message:       response.content_part.added, response.output_text.delta…,
                     response.output_text.done, response.content_part.done
      function_call: response.function_call_arguments.delta, ….done
    response.output_item.done,
    response.completed (its status says "incomplete" when the token limit cut the answer)

``stream: false`` answers the response object the stream ends with, built by the same
steps. As Ollama: reasoning items carry the thinking as summary text and as
``encrypted_content`` (which the translator reads back as thinking), and text that follows
tool calls is dropped. A failure after the first frame ends the stream with ``error`` and
``response.failed``. When the response completes, ``on_complete`` gets it (the store).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..engine import Finished, TextChunk
from ..engine.requests import ThinkingChunk, ToolCalls
from ..errors import BridgeError
from .errors import OPENAI
from .responses_translate import ResponsesRequest
from .wire import Encoder, Frame, Outcome

# (the response object, its output as one native assistant message)
OnComplete = Callable[[dict[str, Any], dict[str, Any]], None]


def new_id(prefix: str) -> str:
    """``resp_…``, ``msg_…``, ``rs_…``, ``fc_…``: a prefix and 24 hex digits."""
    return f"{prefix}_{secrets.token_hex(12)}"


class ResponsesEncoder(Encoder):
    """One response: its output items so far and the stream's sequence counter."""

    media_type = "text/event-stream"
    envelope = OPENAI

    def __init__(
        self, model: str, request: ResponsesRequest, on_complete: OnComplete | None = None
    ) -> None:
        self.id = new_id("resp")
        self.created_at = int(time.time())
        self.model = model
        self.request = request
        self.on_complete = on_complete
        self.output: list[dict[str, Any]] = []
        self.status = "in_progress"
        self.usage: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.incomplete: dict[str, str] | None = None
        self.completed_at: int | None = None
        self._sequence = 0
        self._open: dict[str, Any] | None = None  # the message or reasoning item being written
        self._calls: list[dict[str, Any]] = []  # native tool calls, for assistant_message

    # -- wire.Encoder -------------------------------------------------------------------

    def opening(self) -> Iterable[Frame]:
        """``response.created`` and ``response.in_progress``."""
        return [
            self._frame("response.created", response=self.response()),
            self._frame("response.in_progress", response=self.response()),
        ]

    def text(self, chunk: TextChunk) -> Iterable[Frame]:
        """A delta of the message item (opened first if needed)."""
        if not chunk.text or self._calls:  # Ollama drops text that follows tool calls
            return []
        frames = [] if self._is_open("message") else self._close() + self._open_message()
        self._add(chunk.text)
        where = self._where()
        delta = {"content_index": 0, "delta": chunk.text, "logprobs": []}
        return [*frames, self._frame("response.output_text.delta", **where, **delta)]

    def thinking(self, chunk: ThinkingChunk) -> Iterable[Frame]:
        """A delta of the reasoning item's summary (opened first if needed)."""
        if not chunk.text:
            return []
        frames = [] if self._is_open("reasoning") else self._close() + self._open_reasoning()
        self._add(chunk.text)
        where = self._where()
        delta = {"summary_index": 0, "delta": chunk.text}
        return [*frames, self._frame("response.reasoning_summary_text.delta", **where, **delta)]

    def tool_calls(self, calls: ToolCalls) -> Iterable[Frame]:
        """One complete ``function_call`` item per call, arguments in one delta."""
        frames = self._close()
        for call in calls.calls:
            arguments = json.dumps(call.arguments, ensure_ascii=False)
            item = {"id": new_id("fc"), "type": "function_call", "status": "in_progress"}
            item.update(arguments="", call_id=call.id, name=call.name)
            if call.name in self.request.namespaced:  # OpenAI's form for a namespace's tool
                item["namespace"], item["name"] = self.request.namespaced[call.name]
            index = len(self.output)
            where = {"item_id": item["id"], "output_index": index}
            done = {**item, "status": "completed", "arguments": arguments}
            frames += [
                self._frame("response.output_item.added", output_index=index, item=item),
                self._frame("response.function_call_arguments.delta", **where, delta=arguments),
                self._frame("response.function_call_arguments.done", **where, arguments=arguments),
                self._frame("response.output_item.done", output_index=index, item=done),
            ]
            self.output.append(done)
            function = {"index": len(self._calls), "name": call.name, "arguments": call.arguments}
            self._calls.append({"id": call.id, "function": function})
        return frames

    def closing(self, finished: Finished) -> Iterable[Frame]:
        """Close the open item; end with ``response.completed``.

        A reply cut by the token limit says so in ``status``/``incomplete_details``
        but still ends with ``response.completed``, as Ollama's does: the OpenAI
        SDK's stream helper and Codex wait for that event and fail without it.
        """
        frames = self._close()
        if not self.output:  # an empty answer is still one (empty) message
            frames += self._open_message() + self._close()
        self.usage = usage(finished)
        self.completed_at = int(time.time())
        if finished.done_reason == "length":
            self.status, self.incomplete = "incomplete", {"reason": "max_output_tokens"}
        else:
            self.status = "completed"
        if self.on_complete is not None:
            self.on_complete(self.response(), self.assistant_message())
        return [*frames, self._frame("response.completed", response=self.response())]

    def failed(self, error: BridgeError) -> Iterable[Frame]:
        """``error``, then ``response.failed`` with the error in the response object."""
        self.status = "failed"
        code = "server_error" if error.status_code >= 500 else "invalid_prompt"
        self.error = {"code": code, "message": error.message}
        return [
            self._frame("error", code=code, message=error.message, param=None),
            self._frame("response.failed", response=self.response()),
        ]

    def whole(self, outcome: Outcome) -> dict[str, Any]:
        """The response object, from the same steps as the stream."""
        for event in outcome.events:
            if isinstance(event, TextChunk):
                self.text(event)
            elif isinstance(event, ThinkingChunk):
                self.thinking(event)
            elif isinstance(event, ToolCalls):
                self.tool_calls(event)
        assert outcome.finished is not None
        self.closing(outcome.finished)
        return self.response()

    # -- the response object --------------------------------------------------------------

    def response(self) -> dict[str, Any]:
        """The response object as it stands, in OpenAI's field order."""
        request, echo = self.request, self.request.echo
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": self.status,
            "background": False,
            "completed_at": self.completed_at,
            "error": self.error,
            "incomplete_details": self.incomplete,
            "instructions": request.instructions,
            "max_output_tokens": echo["max_output_tokens"],
            "max_tool_calls": None,
            "model": self.model,
            "output": list(self.output),
            "parallel_tool_calls": echo["parallel_tool_calls"],
            "previous_response_id": request.previous_response_id,
            "prompt_cache_key": echo["prompt_cache_key"],
            "reasoning": echo["reasoning"],
            "safety_identifier": echo["safety_identifier"],
            "service_tier": "default",
            "store": request.store,
            "temperature": echo["temperature"],
            "text": echo["text"],
            "tool_choice": echo["tool_choice"],
            "tools": echo["tools"],
            "top_logprobs": 0,
            "top_p": echo["top_p"],
            "truncation": echo["truncation"],
            "usage": self.usage,
            "user": echo["user"],
            "metadata": echo["metadata"],
        }

    def assistant_message(self) -> dict[str, Any]:
        """The output as one native assistant message (what a later turn's history holds)."""
        parts = {"message": [], "reasoning": []}
        for item in self.output:
            if item["type"] in parts:
                texts = item["content"] if item["type"] == "message" else item["summary"]
                parts[item["type"]] += [part["text"] for part in texts]
        message: dict[str, Any] = {"role": "assistant", "content": "".join(parts["message"])}
        if parts["reasoning"]:
            message["thinking"] = "".join(parts["reasoning"])
        if self._calls:
            message["tool_calls"] = list(self._calls)
        return message

    # -- items ----------------------------------------------------------------------------

    def _open_message(self) -> list[Frame]:
        item = {"id": new_id("msg"), "type": "message", "status": "in_progress", "content": []}
        item["role"] = "assistant"
        self._open = {"kind": "message", "item": item, "text": ""}
        where = self._where()
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        return [
            self._frame("response.output_item.added", output_index=len(self.output), item=item),
            self._frame("response.content_part.added", **where, content_index=0, part=part),
        ]

    def _open_reasoning(self) -> list[Frame]:
        item = {"id": new_id("rs"), "type": "reasoning", "summary": []}
        self._open = {"kind": "reasoning", "item": item, "text": ""}
        where = self._where()
        part = {"type": "summary_text", "text": ""}
        return [
            self._frame("response.output_item.added", output_index=len(self.output), item=item),
            self._frame(
                "response.reasoning_summary_part.added", **where, summary_index=0, part=part
            ),
        ]

    def _close(self) -> list[Frame]:
        """Finish the open message or reasoning item, if any."""
        if self._open is None:
            return []
        kind, text, where = self._open["kind"], self._open["text"], self._where()
        self._open = None
        if kind == "message":
            part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
            item = {"id": where["item_id"], "type": "message", "status": "completed"}
            item.update(content=[part], role="assistant")
            done = {"content_index": 0, "text": text, "logprobs": []}
            frames = [
                self._frame("response.output_text.done", **where, **done),
                self._frame("response.content_part.done", **where, content_index=0, part=part),
            ]
        else:
            summary = {"type": "summary_text", "text": text}
            item = {"id": where["item_id"], "type": "reasoning", "summary": [summary]}
            item["encrypted_content"] = text  # Ollama's way to get the thinking back later
            frames = [
                self._frame(
                    "response.reasoning_summary_text.done", **where, summary_index=0, text=text
                ),
                self._frame(
                    "response.reasoning_summary_part.done", **where, summary_index=0, part=summary
                ),
            ]
        self.output.append(item)
        index = where["output_index"]
        return [*frames, self._frame("response.output_item.done", output_index=index, item=item)]

    def _add(self, text: str) -> None:
        assert self._open is not None
        self._open["text"] += text

    def _is_open(self, kind: str) -> bool:
        return self._open is not None and self._open["kind"] == kind

    def _where(self) -> dict[str, Any]:
        assert self._open is not None
        return {"item_id": self._open["item"]["id"], "output_index": len(self.output)}

    def _frame(self, kind: str, **data: Any) -> Frame:
        payload = {"type": kind, "sequence_number": self._sequence, **data}
        self._sequence += 1
        return kind, payload


def usage(finished: Finished) -> dict[str, Any]:
    """Token counts from the native metrics, in the Responses shape; ``cached_tokens`` are
    the prompt tokens the prompt cache supplied (Ollama always says 0)."""
    prompt, completion = finished.prompt_eval_count, finished.eval_count
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": finished.cached_count},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


__all__ = ["ResponsesEncoder", "new_id", "usage"]
