"""Named crash points for the store's crash tests (off unless a test turns them on).

The store's writers call :func:`crash_point` at the moments a crash would hurt most (a
staged directory built but not renamed, a temporary manifest written but not in place, a
download half done). With ``MLX_BRIDGE_TEST_FAULTS`` naming a file whose text is one of
those names, the process that reaches it stops itself (``SIGSTOP``); the test sees it
stopped, checks the half-done state on disk and kills it with ``SIGKILL``, as the OOM killer
or a power cut would. Without the variable this costs one environment lookup.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

log = logging.getLogger(__name__)

FAULTS_ENV = "MLX_BRIDGE_TEST_FAULTS"
POINTS = (
    "store.file",  # an atomic file written and flushed, not yet renamed into place
    "store.staged",  # a directory (weights) built under its temporary name, not renamed
    "store.discard",  # a directory renamed to its trash name, not yet deleted
    "store.unlinked",  # a deleted name's manifest gone, its weights not yet
    "blob.upload",  # an uploaded blob half received
    "pull.download",  # a weights file half downloaded
)


def crash_point(name: str) -> None:
    """Stop this process here if a crash test armed ``name`` (see the module docstring)."""
    armed_file = os.environ.get(FAULTS_ENV)
    if not armed_file:
        return
    try:
        armed = Path(armed_file).read_text(encoding="utf-8").strip()
    except OSError:
        return
    if armed == name:
        log.warning("crash point reached, stopping for the test point=%s pid=%d", name, os.getpid())
        # to this thread: it stops before running another line (a signal to the process may
        # be taken by another thread, letting this one go on for a few instructions)
        signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)


__all__ = ["FAULTS_ENV", "POINTS", "crash_point"]
