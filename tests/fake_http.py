"""What the fake HTTP servers (``fake_hub.py``, ``fake_ollama_registry.py``) share: serving on
a loopback port from a thread, reading ``Range: bytes=N-`` and answering it, and writing a
body in chunks a test can slow down. ``fake_ollama.py`` serves with the same ``POLL_S``."""

from __future__ import annotations

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import BinaryIO

_RANGE = re.compile(r"bytes=(\d+)-")
# how often a serving loop looks up: shutdown() waits for it (the default, 0.5 s, was the cost
# of every fake server's stop)
POLL_S = 0.02


def serve(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """A threaded server of ``handler`` on a free loopback port, serving from a daemon thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(POLL_S,), daemon=True).start()
    return server


def shut(server: ThreadingHTTPServer | None) -> None:
    """Stop ``serve``'s server and close its socket (nothing if it never started)."""
    if server is not None:
        server.shutdown()
        server.server_close()


def range_start(header: str) -> int | None:
    """The ``N`` of ``Range: bytes=N-`` (the only form the bridge and huggingface_hub send);
    ``None`` when there is no such header."""
    match = _RANGE.fullmatch(header.strip())
    return int(match.group(1)) if match else None


def content_range(start: int, total: int) -> str:
    """The ``Content-Range`` of a ``206`` carrying bytes ``start`` to the end of ``total``."""
    return f"bytes {start}-{total - 1}/{total}"


def write_chunks(wfile: BinaryIO, payload: bytes, chunk: int, throttle_s: float = 0.0) -> None:
    """Write ``payload`` ``chunk`` bytes at a time, pausing ``throttle_s`` after each (so a
    test can interrupt a transfer); a client that went away ends it quietly."""
    try:
        for offset in range(0, len(payload), chunk):
            wfile.write(payload[offset : offset + chunk])
            wfile.flush()
            if throttle_s:
                time.sleep(throttle_s)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client went away (an interrupted pull)
