"""Joining a distributed group from inside a rank: the channel, rank 0's backend and memory
budget, and the other ranks' loop. Used only when ``mlx.launch`` started this process
(``MLX_RANK`` set) for ``serve --hostfile`` (``group/``); ``facade`` asks ``in_group``.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ModelLoadError
from .mlx_models import ModelSetup
from .preflight import MemoryBudget

if TYPE_CHECKING:
    from ..config import Settings
    from .group_backend import GroupBackend
    from .group_channel import Channel

_GB = 1e9


def in_group(settings: Settings) -> bool:
    """True in a rank of ``serve --hostfile`` (mlx.launch sets ``MLX_RANK``)."""
    return settings.hostfile is not None and "MLX_RANK" in os.environ


def open_channel(settings: Settings) -> Channel:
    """Join the group (``mx.distributed.init`` with the configured backend)."""
    from .group_channel import join

    return join(settings.group_backend, os.environ.get("MLX_BRIDGE_GROUP_DOORBELL", ""))


def rank0_backend(settings: Settings) -> GroupBackend:
    """Rank 0's backend; a fault stops rank 0's server so the group is started again."""
    from .group_backend import GroupBackend, stop_after_fault

    channel = open_channel(settings)
    hosts = json.loads(os.environ.get("MLX_BRIDGE_GROUP_HOSTS", "[]")) or None
    backend = GroupBackend(
        channel,
        prompt_cache_entries=settings.prompt_cache_entries,
        sharding=settings.group_sharding,
        step_timeout_s=settings.group_step_timeout_s,
        hosts=hosts,
        cpu_dense_max_params=settings.cpu_dense_max_params,
    )
    backend.launch = int(os.environ.get("MLX_BRIDGE_GROUP_LAUNCH", "1") or 1)
    backend.last_fault = os.environ.get("MLX_BRIDGE_GROUP_LAST_FAULT", "")
    server = int(os.environ.get("MLX_BRIDGE_GROUP_SERVER_PID", "0") or 0)
    channel.on_fault = stop_after_fault(
        server or os.getpid(), kill_after_s=settings.group_kill_after_s
    )
    _note_sigterm(backend)
    return backend


def _note_sigterm(backend: GroupBackend) -> None:
    """Chain a SIGTERM handler that tells the backend it is stopping (its watchdog then
    gives a hung step seconds, not a minute: mlx.launch stops rank 0 when a rank died)."""
    if threading.current_thread() is not threading.main_thread():
        return  # signals can only be set from the main thread (tests build engines elsewhere)
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> Any:
        backend.stopping_since = time.monotonic()
        return previous(signum, frame) if callable(previous) else None

    signal.signal(signal.SIGTERM, on_sigterm)


def follow(settings: Settings) -> None:
    """A non-zero rank: replay rank 0's commands until the group ends."""
    from .group_follower import run_follower

    channel = open_channel(settings)
    setup = ModelSetup(
        prompt_cache_entries=settings.prompt_cache_entries,
        num_draft_tokens=0,
        dense_max_params=settings.cpu_dense_max_params,
    )
    run_follower(channel, setup)


@dataclass(frozen=True)
class GroupBudget(MemoryBudget):
    """The memory budget of a group: every rank's budget, as the model is split evenly, is
    bounded by the smallest rank (``total_bytes`` = ranks x the smallest rank's RAM)."""

    ranks: int = 1
    smallest_rank_bytes: int = 0

    @classmethod
    def of(cls, settings: Settings, memory: list[dict[str, Any]]) -> GroupBudget:
        """The budget of ranks whose RAM ``memory`` lists (``group_load.memory_report``)."""
        smallest = min(int(m["total_bytes"]) for m in memory)
        return cls(smallest * len(memory), settings.memory_fraction, len(memory), smallest)

    def check_alone(self, name: str, need_bytes: int) -> None:
        """Refuse a model bigger than the whole group's budget, saying so."""
        if need_bytes > self.limit_bytes:
            raise ModelLoadError(
                f"model requires more memory ({need_bytes / _GB:.1f} GB) than the "
                f"distributed group has: {name} needs ~{need_bytes / _GB:.1f} GB, the group's "
                f"budget is {self.limit_bytes / _GB:.1f} GB ({self.ranks} ranks x "
                f"{self.fraction:.0%} of {self.smallest_rank_bytes / _GB:.0f} GB, its smallest "
                "machine); add a machine to the hostfile or use a smaller quantization"
            )


__all__ = ["GroupBudget", "follow", "in_group", "open_channel", "rank0_backend"]
