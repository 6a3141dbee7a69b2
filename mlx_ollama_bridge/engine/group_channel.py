"""Rank 0 telling the other ranks of a distributed group what to do, over MLX itself.

Every rank of a group (``mlx.launch``) runs the same model operations in the same order,
because each forward pass holds collective operations (tensor parallel sums, pipeline
sends). Rank 0 decides (its scheduler admits, steps, finishes); before each operation it
broadcasts a small command that the other ranks (``group_follower``) replay. The broadcast
is an ``all_sum`` of a fixed-size byte frame in which only rank 0 writes: no second
transport, no extra port, and it runs wherever MLX's backend runs (ring over TCP or
Thunderbolt, JACCL over RDMA) - as mlx-lm's own server shares requests. Commands are JSON
(model keys, token ids, flags), never pickles: a rank executes nothing but the operations
named in ``group_follower``.

Also here: the samplers that keep the ranks' tokens identical. Rank 0 samples with the
request's own sampler and processors; the others take its token through one ``all_sum``,
so temperature, seeds, penalties and grammars need not be reproduced on every rank.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import numpy as np
from mlx_lm.generate import generation_stream

from ..errors import BridgeError
from .group_doorbell import Doorbell, parse_address

FRAME = 2048  # bytes of one broadcast; a longer command takes a second, sized, all_sum
_HEAD = 8  # the frame starts with the command's length


class GroupFault(BridgeError):
    """The group lost a rank (a collective failed): every rank's state is unknown now."""

    status_code = 503


class Channel:
    """The command broadcast of one group; ``lock`` serialises rank 0's collectives (the
    loading thread and the scheduler thread both issue them)."""

    def __init__(self, group: Any) -> None:
        self.group = group
        self.rank = int(group.rank())
        self.size = int(group.size())
        self.lock = threading.RLock()
        self.fault: str | None = None  # why the group broke, once it did
        self.on_fault: Callable[[str], None] = lambda _reason: None  # called once
        # who failed, as rank 0 can tell: with two ranks its only peer (the owner names it)
        self.peer = "rank 1" if self.size == 2 else "a rank"
        self.doorbell: Doorbell | None = None  # wakes idle ranks (``group_doorbell``)

    def broadcast(self, command: dict[str, Any] | None = None) -> dict[str, Any]:
        """Rank 0 passes ``command`` and every other rank gets it back (blocking until rank
        0 sends one). Raises GroupFault when a peer is gone."""
        self._wake()
        frame = np.zeros(FRAME, dtype=np.uint8)
        data = b""
        if self.rank == 0:
            data = json.dumps(command, separators=(",", ":")).encode()
            frame[:_HEAD] = np.frombuffer(len(data).to_bytes(_HEAD, "little"), dtype=np.uint8)
            first = data[: FRAME - _HEAD]
            frame[_HEAD : _HEAD + len(first)] = np.frombuffer(first, dtype=np.uint8)
        got = self.all_sum_bytes(frame)
        length = int.from_bytes(got[:_HEAD].tobytes(), "little")
        body = got[_HEAD : _HEAD + min(length, FRAME - _HEAD)].tobytes()
        if length > FRAME - _HEAD:  # the rest, in one more collective of the known size
            rest = np.zeros(length - len(body), dtype=np.uint8)
            if self.rank == 0:
                rest = np.frombuffer(data[len(body) :], dtype=np.uint8).copy()
            body += self.all_sum_bytes(rest).tobytes()
        return command if self.rank == 0 and command is not None else json.loads(body)

    def _wake(self) -> None:
        """Rank 0 rings before each command; the others sleep until it does (no spinning in
        a collective while the group is idle)."""
        if self.doorbell is None:
            return
        try:
            if self.rank == 0:
                self.doorbell.ring()
            else:
                self.doorbell.wait()
        except OSError as exc:
            raise self.broken(exc) from exc

    def all_sum_bytes(self, values: np.ndarray) -> np.ndarray:
        """``all_sum`` of a uint8 vector (only one rank writes non-zero bytes)."""
        return self.evaluate(lambda: mx.distributed.all_sum(mx.array(values), group=self.group))

    def gather_ints(self, values: list[int]) -> list[list[int]]:
        """Every rank's ``values`` (same length on each), in rank order."""
        mine = mx.array(np.array(values, dtype=np.int64).reshape(1, -1))
        got = self.evaluate(lambda: mx.distributed.all_gather(mine, group=self.group))
        return [[int(v) for v in row] for row in got.tolist()]

    def evaluate(self, build: Callable[[], Any]) -> Any:
        """Build and evaluate a collective; a lost peer becomes GroupFault. It runs on
        mlx-lm's generation stream: collectives are matched across ranks by their order,
        and a batch step leaves the next token's collectives running there asynchronously,
        so a command on another stream could overtake them on one rank and not another."""
        try:
            with mx.stream(generation_stream):
                out = build()
                mx.eval(out)
            return np.array(out)
        except RuntimeError as exc:
            raise self.broken(exc) from exc

    def settle(self) -> None:
        """Wait for this thread's work in flight (a batch step computes the next token
        asynchronously): rank 0's other thread (loading) may issue collectives next."""
        try:
            mx.synchronize(generation_stream)
        except RuntimeError as exc:
            raise self.broken(exc) from exc

    def broken(self, exc: BaseException) -> GroupFault:
        """Record that the group broke (a collective failed) and say so as a GroupFault."""
        self.mark_broken(f"{self.peer} of the distributed group was lost ({exc})")
        assert self.fault is not None
        return GroupFault(self.fault)

    def mark_broken(self, reason: str) -> None:
        """Record the first fault and tell ``on_fault`` (rank 0 then stops the group)."""
        if self.fault is None:
            self.fault = reason
            self.on_fault(reason)


def join(backend: str, doorbell: str = "", timeout_s: float = 300.0) -> Channel:
    """Join the group ``mlx.launch`` started (``mx.distributed.init`` on ``backend``), and
    its doorbell at ``doorbell`` (``host:port``; empty: none, idle ranks then spin)."""
    channel = Channel(mx.distributed.init(strict=True, backend=backend))
    if doorbell:
        address = parse_address(doorbell)
        channel.doorbell = Doorbell.open(channel.rank, channel.size, address, timeout_s)
    return channel


def leader_sampler(sampler: Callable[[Any], Any], group: Any) -> Callable[[Any], Any]:
    """Rank 0's sampler: the request's own, its token shared with the other ranks."""

    def sample(logprobs: Any) -> Any:
        token = sampler(logprobs).astype(mx.int32)
        return mx.distributed.all_sum(token, group=group).astype(mx.uint32)

    return sample


def follower_sampler(group: Any) -> Callable[[Any], Any]:
    """Another rank's sampler: it takes rank 0's token (its own logits are not used)."""

    def sample(logprobs: Any) -> Any:
        zeros = mx.zeros(logprobs.shape[:-1], dtype=mx.int32)
        return mx.distributed.all_sum(zeros, group=group).astype(mx.uint32)

    return sample


__all__ = ["FRAME", "Channel", "GroupFault", "follower_sampler", "join", "leader_sampler"]
