"""Stored responses for ``previous_response_id``, ``GET`` and ``DELETE /v1/responses/{id}``.

Ollama's Responses API is stateless; this one keeps responses (``store``, true by default
as in OpenAI's API) in memory, bounded by a count and by bytes
(``responses_store_entries``, ``responses_store_bytes``); the least recently used go first.
Each entry keeps the response object and only the chat messages its own turn added (its
input, then its output as an assistant message), linked to the response before it, so a
long conversation costs memory in proportion to its length, not its square. Reading a
conversation marks every response in its chain as used. Nothing survives a restart; the
one gunicorn worker holds the one store.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import current_app

from ..errors import BridgeError
from .context import EXTENSION, get_settings

_KEY = "responses_store"


class ResponseNotFound(BridgeError):
    """No stored response with this id (404), in OpenAI's wording."""

    status_code = 404

    def __init__(self, response_id: str, param: str | None = None, *, previous: bool = False):
        what = "Previous response" if previous else "Response"
        super().__init__(f"{what} with id '{response_id}' not found.")
        self.param = param


@dataclass(frozen=True)
class StoredResponse:
    """One stored response and the chat messages its turn added."""

    response: dict[str, Any]  # the response object, as the client received it
    previous_id: str | None
    turn: tuple[dict[str, Any], ...]  # native messages: this turn's input, then its output
    size: int  # bytes counted against the bound (its JSON)
    input_items: tuple[dict[str, Any], ...] = ()  # the request's input, as items with ids


class ResponseStore:
    """A bounded, thread-safe, least-recently-used map of response id -> StoredResponse."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(
        self,
        response: dict[str, Any],
        previous_id: str | None,
        turn: list[dict[str, Any]],
        input_items: list[dict[str, Any]] | None = None,
    ) -> bool:
        """Keep a response; False when it alone is over the bound (then nothing is kept)."""
        items = tuple(input_items or ())
        size = len(json.dumps([response, turn, items], ensure_ascii=False).encode("utf-8"))
        if self.max_entries <= 0 or size > self.max_bytes:
            return False
        entry = StoredResponse(response, previous_id, tuple(turn), size, items)
        with self._lock:
            self._remove(response["id"])
            self._entries[response["id"]] = entry
            self._bytes += size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                self._remove(next(iter(self._entries)))
        return True

    def keeper(
        self,
        previous_id: str | None,
        turn: list[dict[str, Any]],
        input_items: list[dict[str, Any]],
    ) -> Callable[[dict[str, Any], dict[str, Any]], None]:
        """What a completed response calls (the encoder's ``on_complete``) to be kept with
        its turn: this request's input messages, then its answer."""

        def keep(response: dict[str, Any], answer: dict[str, Any]) -> None:
            self.put(response, previous_id, [*turn, answer], input_items)

        return keep

    def get(self, response_id: str) -> StoredResponse:
        """The stored response; ResponseNotFound (404) when it is not (or no longer) kept."""
        with self._lock:
            entry = self._entries.get(response_id)
            if entry is None:
                raise ResponseNotFound(response_id)
            self._entries.move_to_end(response_id)
            return entry

    def delete(self, response_id: str) -> None:
        """Forget a response; ResponseNotFound (404) when it is not kept."""
        with self._lock:
            if response_id not in self._entries:
                raise ResponseNotFound(response_id)
            self._remove(response_id)

    def conversation(self, response_id: str) -> list[dict[str, Any]]:
        """Every chat message up to and including the turn of ``response_id``, oldest first.

        Raises ResponseNotFound (404, ``param`` ``previous_response_id``) when the response,
        or one before it in its chain, is not kept.
        """
        chain: list[str] = []
        with self._lock:
            current: str | None = response_id
            while current is not None:
                entry = self._entries.get(current)
                if entry is None:
                    raise ResponseNotFound(current, "previous_response_id", previous=True)
                chain.append(current)
                current = entry.previous_id
            chain.reverse()
            for used in chain:  # oldest first, so the newest ends most recently used
                self._entries.move_to_end(used)
            return [message for used in chain for message in self._entries[used].turn]

    def input_items(
        self, response_id: str, *, limit: int = 20, order: str = "desc", after: str | None = None
    ) -> dict[str, Any]:
        """``GET /v1/responses/{id}/input_items``: a page of the input, OpenAI's list shape."""
        items = list(self.get(response_id).input_items)
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [item.get("id") for item in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page = items[:limit]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0].get("id") if page else None,
            "last_id": page[-1].get("id") if page else None,
            "has_more": len(items) > limit,
        }

    def stats(self) -> dict[str, int]:
        """Entries and bytes held, and the bounds."""
        with self._lock:
            return {
                "entries": len(self._entries),
                "bytes": self._bytes,
                "max_entries": self.max_entries,
                "max_bytes": self.max_bytes,
            }

    def _remove(self, response_id: str) -> None:
        entry = self._entries.pop(response_id, None)
        if entry is not None:
            self._bytes -= entry.size


def response_store() -> ResponseStore:
    """The app's store, made on first use with the bounds from the settings."""
    state = current_app.extensions[EXTENSION]
    store = state.get(_KEY)
    if store is None:
        settings = get_settings()
        fresh = ResponseStore(settings.responses_store_entries, settings.responses_store_bytes)
        store = state.setdefault(_KEY, fresh)  # atomic: racing threads end up with one
    return store
