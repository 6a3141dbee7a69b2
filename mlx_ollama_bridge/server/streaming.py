"""NDJSON responses and reading a job's events from the engine.

Ollama's streaming rule: an error before the first line is a normal HTTP error (the engine
raises it from ``submit``); after that, a final ``{"error": ...}`` line ends the stream.
A client that goes away cancels its request; the engine stops it at the next token.
"""

from __future__ import annotations

import json
import queue
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

from flask import Response

from ..engine import Event, Failed, Finished
from ..engine.jobs import GenerationJob
from ..errors import BridgeError

_POLL_S = 1.0


def dumps(obj: Any) -> str:
    """Compact JSON, UTF-8 kept as is (as Go's encoder writes it)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def ndjson_response(lines: Iterable[dict[str, Any]]) -> Response:
    """A streamed ``application/x-ndjson`` response, one object per line."""
    return Response((dumps(line) + "\n" for line in lines), mimetype="application/x-ndjson")


def now_rfc3339() -> str:
    """The current UTC time as Ollama writes ``created_at`` (microseconds, ``Z``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def job_events(job: GenerationJob, engine_alive: Callable[[], bool]) -> Iterator[Event]:
    """Yield a job's events until it finishes; cancel it if the consumer stops early."""
    finished = False
    try:
        while True:
            try:
                event = job.replies.get(timeout=_POLL_S)
            except queue.Empty:
                if not engine_alive():
                    finished = True
                    yield Failed(BridgeError("the model runner stopped unexpectedly"))
                    return
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
