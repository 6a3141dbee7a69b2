"""Loading a model with a deadline, and remembering models that failed to load.

A load runs on a helper thread while the scheduler thread goes on stepping the streams of
models already loaded (so loading one model never stalls another's answers); the scheduler
checks the ticket between steps, and the loading thread wakes it when it is done (no
polling). Reading weights on one thread while another generates was
checked under stress on MLX 0.32 (identical greedy output, no errors). ``OLLAMA_LOAD_TIMEOUT``:
a load that passes its deadline gets a clear error at once and is left to finish (or hang)
on its own thread; its result is thrown away and the model cannot be loaded again until it
is over (no pile-up).

A model whose load fails (corrupt weights, unsupported architecture) is marked bad with its
error until its files change (size or mtime): asking again fails at once, without another
load attempt, so a client retrying in a loop cannot make the server load it again and again.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelLoadError

if TYPE_CHECKING:
    from ..registry import LocalModel
    from .mlx_models import LoadedModel

log = logging.getLogger(__name__)

Signature = tuple[tuple[str, int, int], ...]


class LoadTicket:
    """A load running on its own thread; the scheduler checks it between steps."""

    def __init__(self, key: str, name: str, signature: Signature, deadline: float) -> None:
        self.key, self.name, self.signature, self.deadline = key, name, signature, deadline
        self.started = time.monotonic()
        self.finished = threading.Event()
        self.handle: LoadedModel | None = None
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def ready(self) -> bool:
        """True once the load finished (well or not) or its deadline passed."""
        return self.finished.is_set() or time.monotonic() >= self.deadline

    @property
    def duration_ns(self) -> int:
        """How long the load has taken so far."""
        return int((time.monotonic() - self.started) * 1e9)


class Loader:
    """Runs ``load(path)`` with a deadline; keeps the errors of models that failed."""

    def __init__(
        self,
        load: Callable[[Path], LoadedModel],
        timeout_s: float,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        self._load = load
        self._on_done = on_done  # called on the loading thread once a load is over
        self._timeout_s = timeout_s if timeout_s > 0 else math.inf
        self._bad: dict[str, tuple[Signature, str, int]] = {}  # message, status
        self._stray: dict[str, threading.Thread] = {}  # timed-out loads still running

    def load(
        self, model: LocalModel, then: Callable[[LoadedModel], None] | None = None
    ) -> LoadedModel:
        """Load ``model`` or raise ModelLoadError (failed, known bad, or timed out); blocks."""
        ticket = self.start(model, then)
        ticket.finished.wait(None if math.isinf(self._timeout_s) else self._timeout_s)
        return self.finish(ticket)

    def start(
        self, model: LocalModel, then: Callable[[LoadedModel], None] | None = None
    ) -> LoadTicket:
        """Start loading ``model`` on a helper thread and return at once; ``finish`` the
        ticket once it is ``ready``. Raises ModelLoadError for a model known to be bad.

        ``then`` finishes the loaded model on the same thread, within the same deadline
        (the backend's ``prepare``: draft model, KV quantisation, prompt caches).
        """
        key, name = str(model.path), model.name.display
        signature = files_signature(model.path)
        bad = self._bad.get(key)
        if bad is not None and bad[0] == signature:
            message = f"{bad[1]} (not retried until the model's files change)"
            raise ModelLoadError(message, status_code=bad[2])  # a refused model stays a 400
        stray = self._stray.get(key)
        if stray is not None and stray.is_alive():
            raise ModelLoadError(f"{name} is still loading after an earlier timeout; try later")
        ticket = LoadTicket(key, name, signature, time.monotonic() + self._timeout_s)

        def target() -> None:
            try:
                handle = self._load(model.path)
                if then is not None:
                    then(handle)
                ticket.handle = handle
            except BaseException as exc:  # handed to the scheduler thread by finish()
                ticket.error = exc
            finally:
                ticket.finished.set()
                if self._on_done is not None:
                    self._on_done()

        ticket.thread = threading.Thread(target=target, name="mlx-load", daemon=True)
        ticket.thread.start()
        return ticket

    def finish(self, ticket: LoadTicket) -> LoadedModel:
        """The loaded model of a ready ticket, or ModelLoadError (failed or timed out).

        A failed model is marked bad until its files change; a timed-out load is left to
        end on its own thread, and the model cannot be loaded again until it has.
        """
        if not ticket.finished.is_set():
            assert ticket.thread is not None
            self._stray[ticket.key] = ticket.thread
            log.warning("load timed out path=%s timeout_s=%s", ticket.key, self._timeout_s)
            raise ModelLoadError(
                f"timed out waiting for the model to load after {self._timeout_s:g}s "
                "(OLLAMA_LOAD_TIMEOUT)"
            )
        self._stray.pop(ticket.key, None)
        error = ticket.error
        if error is None and ticket.handle is not None:
            self._bad.pop(ticket.key, None)
            return ticket.handle
        if isinstance(error, ModelLoadError):  # the detail: the public message is made again
            message, status = error.detail, error.status_code
        else:
            message, status = f"failed to load {ticket.name}: {error}", ModelLoadError.status_code
        self._bad[ticket.key] = (ticket.signature, message, status)
        log.warning("model marked bad model=%s error=%s", ticket.name, message)
        if isinstance(error, ModelLoadError):
            raise error
        raise ModelLoadError(message) from error


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
