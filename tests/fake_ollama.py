"""A scripted Ollama-compatible server on a loopback port, for what a real one cannot show.

It stands in for "real Ollama on another port" where a test needs control over timing:

* ``gated`` chat: the first NDJSON line goes out, then the server waits until the test calls
  :meth:`FakeOllama.release` before it sends the rest: a proxy that buffers would never hand
  the first line on in time (``released_in_time`` records whether the release came).
* ``hang = True``: connections are accepted and never answered (a wedged Ollama).
* ``/api/pull``: Ollama's progress lines (status, digest/total/completed, success).
* ``/v1/messages`` streamed for the gated model: ``message_start``, then the rest only once
  released (an SSE stream that can go silent).
* ``/v1/*`` otherwise, for the gated model: ``{"object": "fake", "path", "model"}``, so a test sees
  which ``/v1`` request reached it.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import threading
import time
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fake_http import POLL_S, shut

GATED = "gated:latest"
PULLABLE = "fake-pull:latest"
TAGS = {
    "models": [
        {
            "name": GATED,
            "model": GATED,
            "modified_at": "2025-05-04T17:37:44.706015396-07:00",
            "size": 2019393189,
            "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": "llama",
                "families": ["llama"],
                "parameter_size": "3.2B",
                "quantization_level": "Q4_K_M",
            },
        }
    ]
}
PULL_LINES = [
    {"status": "pulling manifest"},
    {"status": "pulling dde5aa3fc5ff", "digest": "sha256:dde5aa3fc5ff" + "0" * 52, "total": 2000},
    {
        "status": "pulling dde5aa3fc5ff",
        "digest": "sha256:dde5aa3fc5ff" + "0" * 52,
        "total": 2000,
        "completed": 1000,
    },
    {
        "status": "pulling dde5aa3fc5ff",
        "digest": "sha256:dde5aa3fc5ff" + "0" * 52,
        "total": 2000,
        "completed": 2000,
    },
    {"status": "verifying sha256 digest"},
    {"status": "writing manifest"},
    {"status": "success"},
]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOllama

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client (the bridge) hanging up mid-stream is part of several tests


class FakeOllama:
    """Start with :meth:`start`; ``url`` is its base URL."""

    def __init__(self, gate_timeout_s: float = 10.0) -> None:
        self.gate_timeout_s = gate_timeout_s
        self.hang = False
        self.hostile: dict[str, str] = {}
        self.released_in_time: bool | None = None
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.last_request_at = 0.0  # time.monotonic() of the newest request
        self._gate = threading.Event()
        self._stopping = threading.Event()
        self._server = _QuietServer(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeOllama:
        threading.Thread(target=self._server.serve_forever, args=(POLL_S,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the listening socket: new connections are refused, as for a killed Ollama."""
        self._stopping.set()
        self._gate.set()
        shut(self._server)

    def release(self) -> None:
        """Let a gated chat finish."""
        self._gate.set()

    def reset_gate(self) -> None:
        self._gate.clear()
        self.released_in_time = None

    def wait_for_release(self) -> None:
        """In a gated chat: hold the rest of the answer until released (or timed out)."""
        self.released_in_time = self._gate.wait(self.gate_timeout_s)

    def wait_for_stop(self) -> None:
        """A wedged upstream: never answer (until the fake is stopped)."""
        self._stopping.wait(60)


class _Handler(BaseHTTPRequestHandler):
    """Ollama's routes, as far as the tests need them; ``self.server.fake`` is the script."""

    protocol_version = "HTTP/1.1"
    server: _QuietServer

    @property
    def fake(self) -> FakeOllama:
        return self.server.fake

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def do_HEAD(self) -> None:
        self._route("HEAD")

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def _route(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.fake.requests.append((method, self.path, dict(self.headers), body))
        self.fake.last_request_at = time.monotonic()
        if self.fake.hang:
            self.fake.wait_for_stop()
            return
        data = json.loads(body) if body else {}
        mode = self.fake.hostile.get(self.path)
        if mode is not None:
            self._hostile(mode)
        elif self.path == "/":
            self._send(200, b"Ollama is running", "text/plain")
        elif self.path == "/api/version":
            self._json(200, {"version": "0.13.5"})
        elif self.path == "/api/tags":
            self._json(200, TAGS)
        elif self.path == "/api/ps":
            self._json(200, {"models": []})
        elif self.path == "/api/chat" and data.get("model") in (GATED, "gated"):
            self._gated_chat()
        elif (
            self.path.startswith("/v1/messages")
            and data.get("model") == GATED
            and data.get("stream")
        ):
            self._gated_messages()
        elif self.path.startswith("/v1/") and data.get("model") in (GATED, "gated"):
            self._json(200, {"object": "fake", "path": self.path, "model": data["model"]})
        elif self.path == "/api/pull" and data.get("model") in (PULLABLE, "fake-pull"):
            self._stream(PULL_LINES)
        elif self.path == "/api/pull":
            self._stream([{"status": "pulling manifest"}], end_with_error=True)
        else:
            self._json(404, {"error": f"model '{data.get('model', '')}' not found"})

    def _hostile(self, mode: str) -> None:
        if mode.startswith("redirect:"):
            self.send_response(302)
            self.send_header("Location", mode.partition(":")[2])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if mode == "huge":
            self._send(200, b'{"models": [' + b" " * (16 << 20) + b"]}", "application/json")
            return
        data = gzip_bomb()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(data)  # the bridge may stop reading: what a cap does

    def _gated_chat(self) -> None:
        self._start_stream()
        self._chunk({"model": GATED, "message": {"role": "assistant", "content": "Hel"}})
        self.fake.wait_for_release()
        self._chunk({"model": GATED, "message": {"role": "assistant", "content": "lo"}})
        self._chunk({"model": GATED, "done": True, "done_reason": "stop", "eval_count": 2})
        self._end_stream()

    def _gated_messages(self) -> None:
        """Anthropic's SSE: ``message_start``, then (once released) the rest."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        start = {"type": "message_start", "message": {"id": "msg_1", "content": []}}
        self._raw(f"event: message_start\ndata: {json.dumps(start)}\n\n".encode())
        self.fake.wait_for_release()
        self._raw(b'event: message_stop\ndata: {"type": "message_stop"}\n\n')
        self._end_stream()

    def _raw(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _stream(self, lines: list[dict], end_with_error: bool = False) -> None:
        self._start_stream()
        for line in lines:
            self._chunk(line)
            time.sleep(0.01)
        if end_with_error:
            self._chunk({"error": "pull model manifest: file does not exist"})
        self._end_stream()

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, item: dict) -> None:
        data = (json.dumps(item) + "\n").encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _json(self, status: int, item: dict) -> None:
        self._send(status, json.dumps(item).encode(), "application/json; charset=utf-8")

    def _send(self, status: int, data: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


@cache
def gzip_bomb() -> bytes:
    """64 MiB of spaces as a gzip body of about 64 KB."""
    return gzip.compress(b" " * (64 << 20), compresslevel=9)
