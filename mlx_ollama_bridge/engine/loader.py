"""Loading a model with a deadline, and remembering models that failed to load.

``OLLAMA_LOAD_TIMEOUT``: the load runs on a helper thread while the scheduler thread waits
for it, at most the timeout. MLX is not thread-safe, so the two never run MLX at the same
time, except after a timeout: the request gets a clear error at once, the scheduler goes
back to its other work and the stray load is left to finish (or hang) on its own thread; its
result is thrown away and the model cannot be loaded again until it is over (no pile-up).

A model whose load fails (corrupt weights, unsupported architecture) is marked bad with its
error until its files change (size or mtime): asking again fails at once, without another
load attempt, so a client retrying in a loop cannot make the server load it again and again.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelLoadError

if TYPE_CHECKING:
    from ..registry import LocalModel
    from .backend import LoadedModel

log = logging.getLogger(__name__)

Signature = tuple[tuple[str, int, int], ...]


class Loader:
    """Runs ``load(path)`` with a deadline; keeps the errors of models that failed."""

    def __init__(self, load: Callable[[Path], LoadedModel], timeout_s: float) -> None:
        self._load = load
        self._timeout_s = timeout_s if timeout_s > 0 else math.inf
        self._bad: dict[str, tuple[Signature, str]] = {}
        self._stray: dict[str, threading.Thread] = {}  # timed-out loads still running

    def load(self, model: LocalModel) -> LoadedModel:
        """Load ``model`` or raise ModelLoadError (failed, known bad, or timed out)."""
        key, name = str(model.path), model.name.display
        signature = files_signature(model.path)
        bad = self._bad.get(key)
        if bad is not None and bad[0] == signature:
            raise ModelLoadError(f"{bad[1]} (not retried until the model's files change)")
        stray = self._stray.get(key)
        if stray is not None and stray.is_alive():
            raise ModelLoadError(f"{name} is still loading after an earlier timeout; try later")
        try:
            handle = self._run(key, model.path)
        except ModelLoadError as exc:
            if "timed out" not in exc.message:
                self._bad[key] = (signature, exc.message)
                log.warning("model marked bad model=%s error=%s", name, exc.message)
            raise
        except Exception as exc:
            message = f"failed to load {name}: {exc}"
            self._bad[key] = (signature, message)
            log.warning("model marked bad model=%s error=%s", name, message)
            raise ModelLoadError(message) from exc
        self._bad.pop(key, None)
        return handle

    def _run(self, key: str, path: Path) -> LoadedModel:
        outcome: dict[str, Any] = {}

        def target() -> None:
            try:
                outcome["handle"] = self._load(path)
            except BaseException as exc:  # handed to the scheduler thread below
                outcome["error"] = exc

        thread = threading.Thread(target=target, name="mlx-load", daemon=True)
        thread.start()
        thread.join(None if math.isinf(self._timeout_s) else self._timeout_s)
        if thread.is_alive():
            self._stray[key] = thread
            log.warning("load timed out path=%s timeout_s=%s", path, self._timeout_s)
            raise ModelLoadError(
                f"timed out waiting for the model to load after {self._timeout_s:g}s "
                "(OLLAMA_LOAD_TIMEOUT)"
            )
        self._stray.pop(key, None)
        if "error" in outcome:
            raise outcome["error"]
        return outcome["handle"]


def files_signature(path: Path) -> Signature:
    """(name, size, mtime) of every file under ``path``: changes when the model is fixed."""
    entries = []
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            try:
                stat = os.stat(full)
            except OSError:
                continue
            entries.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))
