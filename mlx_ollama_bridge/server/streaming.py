"""NDJSON responses and reading a job's events from the engine.

Ollama's streaming rule: an error before the first line is a normal HTTP error (the engine
raises it from ``submit``); after that, a final ``{"error": ...}`` line ends the stream.
A client that goes away cancels its request; the engine stops it at the next token.
"""

from __future__ import annotations

import json
import queue
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

from flask import Response, request

from ..engine import Event, Failed, Finished
from ..engine.jobs import GenerationJob
from ..errors import BridgeError
from .shutdown import SHUTDOWN, SHUTDOWN_MESSAGE

_POLL_S = 1.0
_GONE_POLL_S = 0.25  # how often a running request checks that its client is still there


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
    client_gone: Callable[[], bool] | None = None,
) -> Iterator[Event]:
    """Yield a job's events until it finishes; cancel it if the consumer stops early or
    ``client_gone`` says the client left (``stream: false`` writes nothing until the end,
    so a disconnect would otherwise go unnoticed until the whole answer is generated)."""
    finished = False
    checked = time.monotonic()
    try:
        while True:
            if SHUTDOWN.expired():  # SIGTERM's grace is nearly over: end with an error line
                yield Failed(BridgeError(SHUTDOWN_MESSAGE, status_code=503))
                return  # the finally below cancels the job
            try:
                event = job.replies.get(timeout=_POLL_S)
            except queue.Empty:
                if not engine_alive():
                    finished = True
                    yield Failed(BridgeError("the model runner stopped unexpectedly"))
                    return
                event = None
            if client_gone is not None and time.monotonic() - checked >= _GONE_POLL_S:
                checked = time.monotonic()
                if client_gone():
                    return  # the finally below cancels the job
            if event is None:
                continue
            if isinstance(event, BaseException):
                event = Failed(event)  # type: ignore[arg-type]
            yield event
            if isinstance(event, (Finished, Failed)):
                finished = True
                return
    finally:
        if not finished:
            job.request.cancel.set()


def client_gone_probe() -> Callable[[], bool] | None:
    """A check that the current request's client has closed its connection, or None when
    the server does not expose the socket (Flask's dev server). Used while a request waits
    in the engine's queue, before any byte of the answer is written."""
    sock = request.environ.get("gunicorn.socket")
    if not isinstance(sock, socket.socket):
        return None

    def gone() -> bool:
        try:
            # readable with nothing to read = the peer closed; no data yet = still there
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True

    return gone
