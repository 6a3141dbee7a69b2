"""``pull``: download a model, drawing progress from the server's NDJSON status lines.

Each line is ``{"status": ...}`` or, for a layer, ``{"status", "digest", "total",
"completed"}`` (ollama's ``/api/pull``). As ``ollama pull`` does, a layer gets a bar named
``pulling <12 hex>`` and other statuses a line of their own; on a terminal the bar is redrawn
in place, elsewhere (logs, pipes) each step is printed once.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import click

from .common import BACKENDS, state
from .format import human_bytes

_BAR_WIDTH = 25


class PullProgress:
    """Renders a pull's status lines to ``out`` (stderr by default)."""

    def __init__(self, out: TextIO | None = None, tty: bool | None = None) -> None:
        self.out = out or sys.stderr
        self.tty = self.out.isatty() if tty is None else tty
        self._current: str | None = None  # the key (digest or status) of the open line
        self._done: set[str] = set()
        self._started: dict[str, tuple[float, int]] = {}

    def update(self, line: dict[str, Any]) -> None:
        """Show one status line of the stream."""
        digest, status = line.get("digest"), str(line.get("status", ""))
        if digest:
            total, completed = int(line.get("total") or 0), int(line.get("completed") or 0)
            if completed:  # the first, zero line only announces the layer (as ollama skips it)
                self._bar(str(digest), total, completed)
        elif status and status != self._current:
            self._open(status, status)
            self._end_line()

    def finish(self) -> None:
        """End the open line (call it also when the stream fails)."""
        self._end_line()

    def _bar(self, digest: str, total: int, completed: int) -> None:
        if digest in self._done:
            return
        name = digest.removeprefix("sha256:").strip()[:12]
        started = self._started.setdefault(digest, (time.monotonic(), completed))
        complete = total > 0 and completed >= total
        text = self._bar_text(name, total, completed, started)
        if self.tty:
            self._open(digest, "")
            self.out.write("\r\x1b[K" + text)
            self.out.flush()
        elif complete:
            self._open(digest, text)
        if complete:
            self._done.add(digest)
            self._end_line()

    @staticmethod
    def _bar_text(name: str, total: int, completed: int, started: tuple[float, int]) -> str:
        ratio = min(completed / total, 1.0) if total else 0.0
        filled = int(ratio * _BAR_WIDTH)
        bar = "█" * filled + " " * (_BAR_WIDTH - filled)
        text = f"pulling {name}: {int(ratio * 100):3d}% ▕{bar}▏ {human_bytes(completed)}"
        if total:
            text += f"/{human_bytes(total)}"
        elapsed = time.monotonic() - started[0]
        if elapsed > 0.5 and completed > started[1] and completed < total:
            rate = (completed - started[1]) / elapsed
            text += f"  {human_bytes(int(rate))}/s  {int((total - completed) / rate)}s"
        return text

    def _open(self, key: str, text: str) -> None:
        if self._current != key:
            self._end_line()
            self._current = key
        if text:
            self.out.write(text)
            self.out.flush()

    def _end_line(self) -> None:
        if self._current is not None:
            self.out.write("\n")
            self.out.flush()
        self._current = None


@click.command()
@click.argument("model")
@click.option("--insecure", is_flag=True, help="Allow an insecure (plain HTTP) registry.")
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="auto",
    show_default=True,
    help="mlx/auto: the bridge pulls (MLX weights); ollama: the upstream Ollama pulls.",
)
def pull(model: str, insecure: bool, backend: str) -> None:
    """Download a model, like `ollama pull`."""
    cli = state()
    client = cli.upstream() if backend == "ollama" else cli.bridge(local_only=backend == "mlx")
    progress = PullProgress()
    body = {"model": model, "insecure": insecure, "stream": True}
    try:
        for line in client.stream("/api/pull", body):
            progress.update(line)
    finally:
        progress.finish()


COMMANDS = (pull,)
