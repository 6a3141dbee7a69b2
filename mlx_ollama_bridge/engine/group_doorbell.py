"""The doorbell: how an idle rank waits for rank 0's next command without spinning.

MLX's ring backend polls while a collective waits for its peers, so a rank parked in the
command broadcast (``group_channel``) would burn a core for as long as the group is idle
(measured: about half a core per waiting rank). Instead each other rank connects once to
rank 0 over TCP and blocks in ``recv`` on that socket; rank 0 writes one byte to every rank
just before it broadcasts a command. Only the wake-up goes this way; the command itself is
still the ``all_sum`` on MLX's transport. A closed doorbell is also the quickest news that
a peer is gone. The address is rank 0's (``MLX_BRIDGE_GROUP_DOORBELL``, set by the
supervisor: the port after the ring backend's).
"""

from __future__ import annotations

import socket
import time

_WAKE = b"\x01"


class Doorbell:
    """Rank 0's connections to the others (``ring``), or a rank's connection to rank 0
    (``wait``)."""

    def __init__(self, sockets: list[socket.socket]) -> None:
        self._sockets = sockets

    @classmethod
    def open(cls, rank: int, size: int, address: tuple[str, int], timeout_s: float) -> Doorbell:
        """Rank 0 listens at ``address`` until every other rank has connected; the others
        connect (retrying while rank 0 starts). OSError/TimeoutError if that fails."""
        deadline = time.monotonic() + timeout_s
        if rank == 0:
            with socket.create_server(address, reuse_port=False) as server:
                server.settimeout(timeout_s)
                peers: dict[int, socket.socket] = {}
                while len(peers) < size - 1:
                    conn, _ = server.accept()
                    conn.settimeout(max(deadline - time.monotonic(), 1.0))
                    hello = conn.recv(2)  # the rank that connected
                    conn.settimeout(None)
                    if len(hello) == 2 and 0 < int.from_bytes(hello, "big") < size:
                        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        peers[int.from_bytes(hello, "big")] = conn
                    else:
                        conn.close()  # not a rank of this group
            return cls([peers[r] for r in sorted(peers)])
        while True:
            try:
                conn = socket.create_connection(address, timeout=5.0)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        conn.settimeout(None)
        conn.sendall(rank.to_bytes(2, "big"))
        return cls([conn])

    def ring(self) -> None:
        """Rank 0: wake every rank (a command follows). ConnectionError if one is gone."""
        for conn in self._sockets:
            conn.sendall(_WAKE)

    def wait(self) -> None:
        """Another rank: block until rank 0 rings. ConnectionError if rank 0 is gone."""
        if not self._sockets[0].recv(1):
            raise ConnectionError("rank 0 closed the doorbell")


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` -> (host, port)."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


__all__ = ["Doorbell", "parse_address"]
