"""A rank other than 0 in a distributed group: it replays rank 0's commands on its shards.

The loop takes one command at a time from rank 0's broadcast (``group_channel``) and does
exactly the model work rank 0 does next (``group_backend``): load or unload its shard, set
up the prompt-cache pool, open a batch lane, add a prompt, step, finish a sequence. It makes
no decision of its own: tokens come from rank 0's sampler, and the prompt-cache pool is
trimmed to rank 0's entry count before each lane operation, so both pools hold the same
prefixes in the same order. It ends on ``stop`` or when the group breaks.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from . import embeddings, mlx_models, prompt_cache
from .batching import BatchLane, Slot
from .generation import PREFILL_STEP
from .group_channel import Channel, follower_sampler
from .group_load import load_shard, memory_report
from .mlx_models import LoadedModel, ModelSetup
from .prompt_cache import PromptCachePool

log = logging.getLogger(__name__)

_UNBOUNDED_BYTES = 1 << 62  # rank 0's pool evicts by bytes; this one only follows its count


class Follower:
    """The models and lanes of one non-zero rank, driven by rank 0."""

    def __init__(self, channel: Channel, setup: ModelSetup) -> None:
        self.channel = channel
        self.setup = setup
        self.models: dict[int, LoadedModel] = {}
        self.lanes: dict[int, BatchLane] = {}

    def run(self) -> None:
        """Serve rank 0's commands until ``stop`` (GroupFault when the group breaks)."""
        while True:
            command = self.channel.broadcast()
            if command["op"] == "stop":
                return
            self.handle(command)

    def handle(self, command: dict[str, Any]) -> None:
        """Do one command's share of the work."""
        op = command["op"]
        key = command.get("key", -1)
        if op == "report":
            memory_report(self.channel)
        elif op == "load":
            try:
                self.models[key] = load_shard(
                    self.channel, Path(command["path"]), self.setup, command["sharding"]
                )
            except Exception as exc:  # rank 0 reports it to the client
                log.warning("rank %d: load failed: %s", self.channel.rank, exc)
        elif op == "prepare":
            loaded = self.models[key]
            mlx_models.prepare_model(loaded, self.setup)
            loaded.prompt_cache = PromptCachePool(
                loaded.model, self.setup.prompt_cache_entries, max_bytes=_UNBOUNDED_BYTES
            )
        elif op == "unload":
            self._close_lane(key)
            loaded = self.models.pop(key, None)
            if loaded is not None:
                mlx_models.unload_model(loaded)
        elif op == "kv_bytes":
            mine = prompt_cache.kv_bytes_per_token(self.models[key])
            self.channel.gather_ints([mine])
        elif op == "embed":
            loaded = self.models[key]
            for ids in command["batch"]:
                embeddings.pool_decoder_states(loaded.model, ids, loaded.pooling)
        else:
            self._lane_op(op, key, command)

    def _lane_op(self, op: str, key: int, command: dict[str, Any]) -> None:
        loaded = self.models[key]
        if loaded.prompt_cache is not None and "pool" in command:
            loaded.prompt_cache.trim_to_count(command["pool"])
        if op == "lane":
            self.lanes[key] = BatchLane(loaded, command["width"], PREFILL_STEP)
        elif op == "add":
            self.lanes[key].add(command["tokens"], follower_sampler(self.channel.group), [])
        elif op == "step":
            self.lanes[key].step()
        elif op == "finish":
            self.lanes[key].finish(Slot(command["uid"], 0, 0), keep_cache=command["keep"])
        elif op == "close":
            self._close_lane(key)
        else:
            raise ValueError(f"unknown group command {op!r}")

    def _close_lane(self, key: int) -> None:
        lane = self.lanes.pop(key, None)
        if lane is not None:
            lane.close()


def run_follower(channel: Channel, setup: ModelSetup) -> None:
    """Serve as a non-zero rank until rank 0 stops or the group breaks."""
    log.info("rank %d of %d: following rank 0", channel.rank, channel.size)
    Follower(channel, setup).run()


__all__ = ["Follower", "run_follower"]
