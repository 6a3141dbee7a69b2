"""Stop sequences over a stream of decoded text.

A stop string can be split across tokens, so text that might be the start of a stop string
is held back until it either completes the match (and is dropped, as Ollama does) or turns
out to be ordinary text.
"""

from __future__ import annotations

from collections.abc import Iterable


class StopMatcher:
    """Feed decoded text pieces; get back the text that is safe to emit."""

    def __init__(self, stops: Iterable[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._pending = ""
        self.stopped = False
        self.matched: str | None = None  # the stop string that ended the output

    def feed(self, text: str) -> str:
        """Add ``text``; return what can be emitted now. Sets ``stopped`` on a full match."""
        if self.stopped:
            return ""
        if not self._stops:
            return text
        buffer = self._pending + text
        cut = self._first_match(buffer)
        if cut is not None:
            self.stopped = True
            self.matched = next(s for s in self._stops if buffer.find(s) == cut)
            self._pending = ""
            return buffer[:cut]
        hold = self._longest_partial_suffix(buffer)
        self._pending = buffer[len(buffer) - hold :] if hold else ""
        return buffer[: len(buffer) - hold]

    def flush(self) -> str:
        """End of generation: whatever was held back is ordinary text after all."""
        pending, self._pending = self._pending, ""
        return "" if self.stopped else pending

    def _first_match(self, buffer: str) -> int | None:
        positions = [buffer.find(s) for s in self._stops]
        found = [p for p in positions if p >= 0]
        return min(found) if found else None

    def _longest_partial_suffix(self, buffer: str) -> int:
        """Length of the longest buffer suffix that is a proper prefix of some stop string."""
        best = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(buffer)), best, -1):
                if buffer.endswith(stop[:size]):
                    best = size
                    break
        return best
