"""Splitting generated text into content, thinking and tool calls while it streams.

Pure text processing, no MLX: the job feeds the decoded, stop-filtered text of each step to
an :class:`OutputParser` and forwards the events it returns. Two stages, as in Ollama:

1. **Thinking** (as Ollama's ``thinking.Parser``): reasoning opens with the model's think
   tag at the very start of the output (leading whitespace ignored), or is already open when
   the rendered prompt ends with that tag, and closes at the closing tag. Whitespace right
   after either tag is dropped.
2. **Tool calls** (only when the request passed ``tools``; syntax per family in
   :mod:`.tool_formats`): markup is held back while it is being generated and each call
   goes out whole, in one :class:`ToolCalls` event, once it parses. Markup that does not
   parse was the model's text after all and goes out as content, as written. Content never
   carries part of a call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .requests import Event, TextChunk, ThinkingChunk, ToolCall, ToolCalls
from .tool_formats import (
    ParsedCall,
    TokenizerMarkup,
    ToolSyntax,
    json_value_end,
    new_call_id,
    partial_suffix,
    think_tags,
    tool_syntax,
)

# ThinkingSplitter states
_LOOKING, _EAT_OPEN, _THINKING, _EAT_CLOSE, _DONE = range(5)
# ToolCallExtractor states
_CONTENT, _TAGGED, _JSON = range(3)
_LIST_PUNCTUATION = " \t\r\n,[]"


class ThinkingSplitter:
    """Separates leading reasoning from the answer (Ollama's thinking state machine)."""

    def __init__(self, open_tag: str, close_tag: str, *, started: bool = False) -> None:
        self._open, self._close = open_tag, close_tag
        self._state = _EAT_OPEN if started else _LOOKING
        self._buffer = ""

    def feed(self, text: str) -> list[tuple[bool, str]]:
        """Add text; return ``(is_thinking, text)`` pieces that are safe to emit now."""
        self._buffer += text
        out: list[tuple[bool, str]] = []
        while self._step(out):
            pass
        return [piece for piece in out if piece[1]]

    def flush(self) -> list[tuple[bool, str]]:
        """End of output: what was held back (a partial tag is plain text after all)."""
        rest, self._buffer = self._buffer, ""
        if self._state in (_EAT_OPEN, _EAT_CLOSE) or not rest:
            return []
        return [(self._state == _THINKING, rest)]

    def _step(self, out: list[tuple[bool, str]]) -> bool:
        """One transition; True if another may follow at once."""
        trimmed = self._buffer.lstrip()
        if self._state == _LOOKING:
            if trimmed.startswith(self._open):
                self._buffer, self._state = trimmed[len(self._open) :], _EAT_OPEN
                return True
            if self._open.startswith(trimmed):  # nothing yet, or a partial tag: wait
                return False
            self._state = _DONE
        elif self._state in (_EAT_OPEN, _EAT_CLOSE):
            self._buffer = trimmed
            if not trimmed:
                return False
            self._state = _THINKING if self._state == _EAT_OPEN else _DONE
            return True
        elif self._state == _THINKING:
            end = self._buffer.find(self._close)
            if end >= 0:
                out.append((True, self._buffer[:end]))
                self._buffer, self._state = self._buffer[end + len(self._close) :], _EAT_CLOSE
                return True
            hold = partial_suffix(self._buffer, self._close)
            out.append((True, self._buffer[: len(self._buffer) - hold]))
            self._buffer = self._buffer[len(self._buffer) - hold :]
            return False
        out.append((False, self._buffer))
        self._buffer = ""
        return False


class ToolCallExtractor:
    """Finds tool calls in the answer text; passes everything else through as content."""

    def __init__(self, syntax: ToolSyntax, tools: Sequence[dict[str, Any]] | None) -> None:
        self.syntax = syntax
        self._tools = tools
        self._names = frozenset(_tool_names(tools))
        self._state = _CONTENT
        self._buffer = ""
        self._at_start = syntax.leading_json  # only whitespace (or a partial marker) so far
        self._after_call = False  # whitespace right after a call is dropped, not sent
        self._streamed = False  # calls of the open marker block already sent (incremental)
        self._index = 0

    def feed(self, text: str) -> list[Event]:
        """Add answer text; return content and tool-call events ready to send."""
        self._buffer += text
        events: list[Event] = []
        while self._advance(events):
            pass
        return events

    def finish(self) -> list[Event]:
        """End of output: parse an unterminated call, release held text."""
        rest, self._buffer = self._buffer, ""
        if self._state == _TAGGED and self._streamed:  # an unclosed list: drop its tail
            calls = self._parse(rest.strip(_LIST_PUNCTUATION), known_only=False)
            return [self._event(calls)] if calls else []
        if self._state == _TAGGED:
            return self._close_call(rest, raw=self.syntax.start + rest)
        if not rest.strip() and (self._state == _JSON or self._after_call):
            return []
        if self._state == _JSON:
            return self._close_call(rest, raw=rest, known_only=True)
        return [TextChunk(rest)] if rest else []

    def _advance(self, events: list[Event]) -> bool:
        if self._state == _TAGGED:
            return self._advance_tagged(events)
        if self._state == _JSON:
            return self._advance_json(events)
        return self._advance_content(events)

    def _advance_content(self, events: list[Event]) -> bool:
        buffer, start = self._buffer, self.syntax.start
        stripped = buffer.lstrip()
        if self._after_call:
            if not stripped:
                return False
            buffer = self._buffer = stripped
            self._after_call = False
        if self._at_start:
            if not stripped:
                return False
            if stripped[0] in "{[":
                self._state = _JSON
                return True
            if not (start and start.startswith(stripped[: len(start)])):
                self._at_start = False
        found = buffer.find(start) if start else -1
        if found >= 0:
            events.append(TextChunk(buffer[:found]))
            self._buffer, self._state = buffer[found + len(start) :], _TAGGED
            self._at_start = False
            return True
        if self._at_start:  # whitespace and part of the start marker: wait for more
            return False
        hold = partial_suffix(buffer, start) if start else 0
        events.append(TextChunk(buffer[: len(buffer) - hold]))
        self._buffer = buffer[len(buffer) - hold :]
        return False

    def _advance_tagged(self, events: list[Event]) -> bool:
        end = self.syntax.end
        if self.syntax.incremental:
            self._stream_listed_calls(events)
        found = self._buffer.find(end) if end else -1
        if found < 0:  # still inside the call (or it runs to the end of the output)
            return False
        inner, self._buffer = self._buffer[:found], self._buffer[found + len(end) :]
        self._state = _CONTENT
        if self.syntax.incremental and not inner.strip(_LIST_PUNCTUATION):
            self._streamed = False  # every call already went out (or "[]": none was made)
            return True
        if self._streamed:  # calls went out; what follows them is dropped, as Ollama does
            self._streamed = False
            calls = self._parse(inner.strip(_LIST_PUNCTUATION), known_only=False)
            events.extend([self._event(calls)] if calls else [])
            return True
        events.extend(self._close_call(inner, raw=self.syntax.start + inner + end))
        return True

    def _stream_listed_calls(self, events: list[Event]) -> None:
        """Send each complete call object at the front of a ``[…]`` list right away."""
        while True:
            body = self._buffer.lstrip(_LIST_PUNCTUATION)
            if not body.startswith("{"):
                return
            stop = json_value_end(body)
            if stop is None:  # still being written
                return
            calls = self._parse(body[:stop], known_only=False)
            if calls is None:  # not a call: leave the block whole for the end marker
                return
            events.append(self._event(calls))
            self._after_call = False  # still inside the markers
            self._streamed = True
            self._buffer = body[stop:]

    def _advance_json(self, events: list[Event]) -> bool:
        stripped = self._buffer.lstrip()
        if not stripped:
            return False
        stop = json_value_end(stripped) if stripped[0] in "{[" else 0
        if stop is None:  # the value is still being written
            return False
        calls = self._parse(stripped[:stop], known_only=True) if stop else None
        if calls is None:  # ordinary text or JSON, not a call: it is content from here on
            self._state, self._at_start = _CONTENT, False
            return True
        events.append(self._event(calls))
        self._buffer = stripped[stop:].lstrip(" \t\r\n;,")  # more calls may follow
        return bool(self._buffer)

    def _close_call(self, text: str, *, raw: str, known_only: bool = False) -> list[Event]:
        calls = self._parse(text, known_only=known_only)
        return [TextChunk(raw)] if calls is None else [self._event(calls)]

    def _parse(self, text: str, *, known_only: bool) -> list[ParsedCall] | None:
        """The calls in ``text``, or None if it is not a (complete, valid) tool call."""
        try:
            calls = self.syntax.parse(text, self._tools)
        except (ValueError, TypeError, KeyError, RecursionError):
            return None
        # A bare JSON object is a call only if it names one of the offered tools.
        if not calls or (known_only and any(c["name"] not in self._names for c in calls)):
            return None
        return calls

    def _event(self, calls: list[ParsedCall]) -> ToolCalls:
        self._after_call = True
        out = []
        for call in calls:
            call_id = call.get("id") or new_call_id(self.syntax.id_length)
            out.append(ToolCall(self._index, call["name"], call["arguments"], call_id))
            self._index += 1
        return ToolCalls(tuple(out))


class OutputParser:
    """Thinking split first, then tool-call extraction on the answer; either may be off."""

    def __init__(
        self, thinking: ThinkingSplitter | None = None, tools: ToolCallExtractor | None = None
    ) -> None:
        self._thinking = thinking
        self._tools = tools

    def feed(self, text: str) -> list[Event]:
        """Add generated text; return the events to send now (empty pieces dropped)."""
        if not text:
            return []
        pieces = self._thinking.feed(text) if self._thinking else [(False, text)]
        return self._route(pieces)

    def finish(self) -> list[Event]:
        """End of generation: release everything held back."""
        events = self._route(self._thinking.flush() if self._thinking else [])
        if self._tools is not None:
            events.extend(self._tools.finish())
        return _merged(events)

    def _route(self, pieces: list[tuple[bool, str]]) -> list[Event]:
        events: list[Event] = []
        for thinking, text in pieces:
            if thinking:
                events.append(ThinkingChunk(text))
            elif self._tools is not None:
                events.extend(self._tools.feed(text))
            else:
                events.append(TextChunk(text))
        return _merged(events)


def make_output_parser(
    *,
    template: str | None,
    markup: TokenizerMarkup,
    thinking_capable: bool,
    think: bool | None,
    prompt_text: str,
    tools: Sequence[dict[str, Any]] | None,
) -> OutputParser:
    """The parser for one request.

    Thinking is parsed on thinking-capable models when ``think`` is on, and also when the
    prompt already ends with the opening tag: the template could not turn thinking off, so
    the reasoning goes to ``thinking`` rather than leaking tags into the content.
    """
    splitter = None
    if thinking_capable:
        open_tag, close_tag = think_tags(markup)
        started = prompt_text.rstrip().endswith(open_tag)
        if think or started:
            splitter = ThinkingSplitter(open_tag, close_tag, started=started)
    extractor = ToolCallExtractor(tool_syntax(template, markup), tools) if tools else None
    return OutputParser(splitter, extractor)


def _tool_names(tools: Sequence[dict[str, Any]] | None) -> list[str]:
    names = []
    for tool in tools or ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            names.append(function["name"])
    return names


def _merged(events: list[Event]) -> list[Event]:
    """Drop empty text; join neighbouring pieces of the same kind into one event."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, (TextChunk, ThinkingChunk)):
            if not event.text:
                continue
            if out and type(out[-1]) is type(event):
                out[-1] = type(event)(out[-1].text + event.text)  # type: ignore[union-attr]
                continue
        out.append(event)
    return out


__all__ = [
    "OutputParser",
    "ThinkingSplitter",
    "ToolCallExtractor",
    "make_output_parser",
]
