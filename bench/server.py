"""Starting and measuring a bridge server for the benchmarks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psutil
import requests


def terminate(proc: subprocess.Popen) -> None:
    """SIGTERM, wait up to 30 s, then SIGKILL."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def run_threads(threads: list[threading.Thread]) -> float:
    """Start every thread, wait for all; the wall time in seconds."""
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


@dataclass
class Bridge:
    """A ``mlx-ollama-bridge serve`` process started for a benchmark."""

    proc: subprocess.Popen
    url: str

    def stop(self) -> None:
        """SIGTERM and wait."""
        terminate(self.proc)

    def rss_bytes(self) -> int:
        """RSS of the gunicorn worker (the process that holds the model)."""
        children = psutil.Process(self.proc.pid).children(recursive=True)
        return max((c.memory_info().rss for c in children), default=0)


def start_bridge(**env: str) -> Bridge:
    """Start the bridge on a free port with extra environment; wait until it answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "mlx_ollama_bridge", "serve", "--host", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(
        cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            requests.get(url, timeout=5)
            return Bridge(proc, url)
        except requests.RequestException:  # not listening yet, or the worker still booting
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("bridge did not start")


def stream_chat(url: str, body: dict[str, Any]) -> tuple[float, str, dict[str, Any]]:
    """POST a streamed /api/chat: (seconds to the first content line, text, final line)."""
    start = time.perf_counter()
    first, text, final = 0.0, [], {}
    with requests.post(f"{url}/api/chat", json=body, stream=True, timeout=1800) as reply:
        for line in _lines(reply.iter_lines()):
            if line.get("done"):
                final = line
            elif not first:
                first = time.perf_counter() - start
            text.append(line.get("message", {}).get("content", ""))
    return first or time.perf_counter() - start, "".join(text), final


def engine_stats(url: str) -> dict[str, int]:
    """The engine's counters from ``/health``."""
    return requests.get(f"{url}/health", timeout=10).json().get("engine_stats", {})


def _lines(raw: Iterator[bytes]) -> Iterator[dict[str, Any]]:
    for line in raw:
        if line:
            yield json.loads(line)
