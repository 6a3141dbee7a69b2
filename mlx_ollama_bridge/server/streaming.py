"""NDJSON responses and reading a job's events from the engine.

Ollama's streaming rule: an error before the first line is a normal HTTP error (the engine
raises it from ``submit``); after that, a final ``{"error": ...}`` line ends the stream.
A client that goes away cancels its request; the engine stops it at the next token.
"""

from __future__ import annotations

import json
import queue
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

from flask import Response, request

from ..engine import Event, Failed, Finished
from ..engine.jobs import GenerationJob
from ..errors import BridgeError
from .disconnects import watcher
from .shutdown import SHUTDOWN, SHUTDOWN_MESSAGE

_IDLE_S = 1.0  # a wait with no event at all checks the engine and the shutdown clock


def dumps(obj: Any) -> str:
    """Compact JSON, UTF-8 kept as is (as Go's encoder writes it)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def ndjson_response(lines: Iterable[dict[str, Any]]) -> Response:
    """A streamed ``application/x-ndjson`` response, one object per line."""
    return Response((dumps(line) + "\n" for line in lines), mimetype="application/x-ndjson")


def now_rfc3339() -> str:
    """The current UTC time as Ollama writes ``created_at`` (microseconds, ``Z``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def job_events(
    job: GenerationJob,
    engine_alive: Callable[[], bool],
    watch: ClientWatch | None = None,
) -> Iterator[Event]:
    """Yield a job's events until it finishes; cancel it if the consumer stops early or
    ``watch`` saw the client leave (``stream: false`` writes nothing until the end, so a
    disconnect would otherwise go unnoticed until the whole answer is generated).

    Event-driven: it wakes for each event, and for a client that left (the watch puts a
    sentinel in the job's queue); ``_IDLE_S`` only bounds a wait with no event at all, to
    notice a dead engine or the end of SIGTERM's grace.
    """
    finished = False
    if watch is not None:
        watch.attach(job.replies)
    try:
        while True:
            if SHUTDOWN.expired():  # SIGTERM's grace is nearly over: end with an error line
                yield Failed(BridgeError(SHUTDOWN_MESSAGE, status_code=503))
                return  # the finally below cancels the job
            if watch is not None and watch.gone:
                return  # the finally below cancels the job
            try:
                event = job.replies.get(timeout=_IDLE_S)
            except queue.Empty:
                if not engine_alive():
                    finished = True
                    yield Failed(BridgeError("the model runner stopped unexpectedly"))
                    return
                continue
            if event is CLIENT_GONE:
                continue  # the check at the top of the loop ends it
            if isinstance(event, BaseException):
                event = Failed(event)  # type: ignore[arg-type]
            yield event
            if isinstance(event, (Finished, Failed)):
                finished = True
                return
    finally:
        if watch is not None:
            watch.close()
        if not finished:
            job.request.cancel.set()


CLIENT_GONE = object()  # put in a job's queue when its client left, to wake its reader


class ClientWatch:
    """The watch on one request's connection: when the client closes it, the request is
    canceled (``cancel``), the engine woken (a queued request leaves the queue at once) and
    the reader of the job's events woken."""

    def __init__(self, sock: socket.socket, cancel: threading.Event, wake: Callable[[], None]):
        self._cancel, self._wake = cancel, wake
        self._replies: queue.Queue[Any] | None = None
        self._lock = threading.Lock()
        self._watch = watcher().watch(sock, self._on_gone)

    @property
    def gone(self) -> bool:
        """True once the client was seen gone."""
        return self._watch.fired

    def attach(self, replies: queue.Queue[Any]) -> None:
        """The job's event queue, once the engine admitted it."""
        with self._lock:
            self._replies = replies
        if self.gone:
            replies.put(CLIENT_GONE)

    def close(self) -> None:
        """Stop watching (the request is over)."""
        self._watch.close()

    def _on_gone(self) -> None:
        self._cancel.set()
        self._wake()
        with self._lock:
            replies = self._replies
        if replies is not None:
            replies.put(CLIENT_GONE)


def watch_client(cancel: threading.Event, wake: Callable[[], None]) -> ClientWatch | None:
    """A watch on the current request's connection, or None when the server does not
    expose the socket (Flask's dev server)."""
    sock = request.environ.get("gunicorn.socket")
    if not isinstance(sock, socket.socket):
        return None
    return ClientWatch(sock, cancel, wake)
