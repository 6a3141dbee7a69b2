"""Noticing that a client closed its connection, without polling.

A request waiting in the engine's queue, or generating with ``stream: false`` (nothing is
written until the end), would otherwise not notice a client that left until the whole answer
was made. One daemon thread per worker process waits in a selector on the sockets of the
requests that asked to be watched; when one becomes readable with nothing to read (the peer
closed it), that request's callback runs once and the socket is no longer watched. Streamed
answers notice a closed socket anyway when they write, but the watch ends them sooner.

The request's body has been read before generation starts, so a watched socket has no data
to read while the client is there; one that sends more (a pipelined request) stops being
watched instead of waking the thread again and again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Watch:
    """One watched socket; ``close`` (idempotent) stops watching it."""

    def __init__(self, watcher: DisconnectWatcher, sock: socket.socket, gone: Callable[[], None]):
        self._watcher, self.sock, self._gone = watcher, sock, gone
        self._fired = threading.Event()

    def fire(self) -> None:
        """Run the callback (once)."""
        if not self._fired.is_set():
            self._fired.set()
            self._gone()

    @property
    def fired(self) -> bool:
        """True once the client was seen gone."""
        return self._fired.is_set()

    def close(self) -> None:
        """Stop watching (before the server reuses or closes the socket)."""
        self._watcher.unregister(self)


class DisconnectWatcher:
    """The selector thread (started on first use)."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)

    def watch(self, sock: socket.socket, gone: Callable[[], None]) -> Watch:
        """Call ``gone`` once when ``sock``'s peer closes; ``close`` the returned watch
        when the request is over."""
        watch = Watch(self, sock, gone)
        with self._lock:
            try:
                self._selector.register(sock, selectors.EVENT_READ, watch)
            except (ValueError, KeyError, OSError):  # closed, or watched already
                return watch
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="disconnect-watch", daemon=True
                )
                self._thread.start()
        self._poke()
        return watch

    def unregister(self, watch: Watch) -> None:
        """Forget ``watch``'s socket (no-op if it is not watched)."""
        with self._lock:
            key = self._selector.get_map().get(watch.sock)
            if key is not None and key.data is watch:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._selector.unregister(watch.sock)
        self._poke()

    def _poke(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    def _run(self) -> None:
        while True:
            for key, _mask in self._selector.select():
                if key.data is None:  # the registrations changed: select again
                    with contextlib.suppress(BlockingIOError, OSError):
                        self._wake_r.recv(4096)
                    continue
                watch: Watch = key.data
                gone = _peer_closed(watch.sock)
                with self._lock:  # readable either way: stop watching it
                    if self._selector.get_map().get(watch.sock) is key:
                        with contextlib.suppress(KeyError, ValueError, OSError):
                            self._selector.unregister(watch.sock)
                if gone:
                    try:
                        watch.fire()
                    except Exception:  # a callback's bug must not stop the watcher
                        log.exception("disconnect callback failed")


def _peer_closed(sock: socket.socket) -> bool:
    """True when the peer closed ``sock`` (readable with nothing to read, or an error)."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


_WATCHER: tuple[int, DisconnectWatcher] | None = None
_WATCHER_LOCK = threading.Lock()


def watcher() -> DisconnectWatcher:
    """This process's watcher (made in the worker, never inherited across a fork)."""
    global _WATCHER
    with _WATCHER_LOCK:
        if _WATCHER is None or _WATCHER[0] != os.getpid():
            _WATCHER = (os.getpid(), DisconnectWatcher())
        return _WATCHER[1]
