"""``service logs``: the tail of a log file (``tail -n``/``tail -F`` in Python) or of a
command's output (``journalctl``), handed line by line to an ``echo`` callback."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from .common import ServiceError, tool_failure

log = logging.getLogger(__name__)

FOLLOW_POLL_S = 0.5
_BLOCK = 64 * 1024
_sleep = time.sleep  # tests replace it to end a --follow loop


def tail_file(path: Path, count: int, echo: Callable[[str], None]) -> None:
    """Echo the last ``count`` lines of ``path``."""
    with _open_log(path) as handle:
        for line in _tail(handle, count):
            echo(line)


def follow_file(
    path: Path, count: int, echo: Callable[[str], None], *, poll_s: float = FOLLOW_POLL_S
) -> None:
    """Echo the last ``count`` lines, then new lines as they are written, until Ctrl-C.

    Like ``tail -F``: a file truncated or replaced (log rotation) is read again from its start.
    """
    handle = _open_log(path)
    pending = b""
    try:
        for line in _tail(handle, count):
            echo(line)
        while True:
            if chunk := handle.read():
                *complete, pending = (pending + chunk).split(b"\n")
                for raw in complete:
                    echo(_decode(raw))
            elif _was_replaced(path, handle):
                handle.close()
                handle, pending = _open_log(path), b""
            else:
                _sleep(poll_s)
    except KeyboardInterrupt:
        return  # Ctrl-C is how --follow ends: not an error
    finally:
        handle.close()


def stream_command(argv: Sequence[str], echo: Callable[[str], None]) -> None:
    """Run ``argv`` and echo its output line by line as it comes (``journalctl -f``)."""
    log.debug("streaming argv=%s", list(argv))
    try:
        process = subprocess.Popen(
            list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace"
        )
    except FileNotFoundError as exc:
        raise ServiceError(f"{argv[0]} not found on PATH") from exc
    except OSError as exc:
        raise ServiceError(f"cannot run {argv[0]}: {exc}") from exc
    assert process.stdout is not None and process.stderr is not None
    try:
        for line in process.stdout:
            echo(line.rstrip("\n"))
    except KeyboardInterrupt:
        process.terminate()
        process.wait()
        return
    stderr = process.stderr.read()
    if process.wait() != 0:
        raise tool_failure(argv, process.returncode, stderr)


def _open_log(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except FileNotFoundError as exc:
        raise ServiceError(f"no log file at {path} yet (has the service run?)") from exc
    except OSError as exc:
        raise ServiceError(f"cannot read {path}: {exc.strerror}") from exc


def _tail(handle: BinaryIO, count: int) -> list[str]:
    """The last ``count`` lines, reading backwards in blocks; leaves ``handle`` at the end."""
    end = handle.seek(0, os.SEEK_END)
    data, pos = b"", end
    while count > 0 and pos > 0 and data.count(b"\n") <= count:
        step = min(_BLOCK, pos)
        pos -= step
        handle.seek(pos)
        data = handle.read(step) + data
    handle.seek(end)
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the file's final newline ends a line, it does not start one
    return [_decode(raw) for raw in lines[-count:]] if count > 0 else []


def _was_replaced(path: Path, handle: BinaryIO) -> bool:
    """True when ``path`` is now another file, or ours shrank (rotated or truncated)."""
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False  # between rotation's rename and the new file: wait for it
    ours = os.fstat(handle.fileno())
    return current.st_ino != ours.st_ino or current.st_size < handle.tell()


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").rstrip("\r")
