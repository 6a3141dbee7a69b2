"""``GroupBackend``: the ``Backend`` of a distributed group, run by rank 0.

Rank 0 is an ordinary bridge (HTTP, scheduler, residency) whose backend holds one shard of
each model (``group_load``) and, before every operation that touches a model, broadcasts it
(``group_channel``) to the other ranks, which replay it on their shards
(``group_follower``): load, prepare, unload, measuring KV bytes, and the batch lane's add,
step and finish. Everything above the backend is unchanged: prompts, stop strings, parsers,
the scheduler's admission and the prompt-cache pool's decisions all happen on rank 0 only.

What a group does not do (it would take work on every rank that is not mirrored): draft
models, prompt lookup, quantized KV caches and prompt caches on disk are off; a context
shift (``num_ctx`` reached with ``shift``) ends the request with an error instead of
re-reading alone. Embedding models (BERT family) load on rank 0 only.

Faults: a collective that fails (a rank died: the ring's sockets close) ends the running
requests with an error line and marks the group broken (``status``); ``mlx.launch`` then
stops every rank and the supervisor (``group/supervisor.py``) starts a new group. A rank that
hangs is caught by a watchdog: a step that takes longer than ``step_timeout_s`` ends the
running requests the same way and stops rank 0, which brings the group down for relaunch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from ..config import DEFAULT_PROMPT_CACHE_ENTRIES
from ..errors import BadRequest, BridgeError, ModelLoadError
from . import embeddings, mlx_models, prompt_cache
from .backend import MLXBackend
from .batching import BatchLane, Slot
from .generation import PREFILL_STEP, Generation
from .group_channel import Channel, GroupFault, leader_sampler
from .group_load import load_shard, memory_report
from .interface import Job, StepResult
from .mlx_models import LoadedModel, ModelSetup
from .options import Options
from .requests import Failed
from .sampling import LogitsProcessor, Sampler
from .vision import is_vision_dir

log = logging.getLogger(__name__)


_STOPPING_STEP_S = 8.0  # after SIGTERM, a step this long means a rank is gone


class MirroredLane(BatchLane):
    """A batch lane whose every change is replayed by the other ranks."""

    def __init__(self, loaded: LoadedModel, width: int, channel: Channel, key: int) -> None:
        self._channel, self._key = channel, key
        with channel.lock:
            channel.broadcast({"op": "lane", "key": key, "width": width})
            super().__init__(loaded, width, PREFILL_STEP)

    def add(self, prompt_tokens: list[int], sampler: Sampler, processors: list[LogitsProcessor]):
        """Queue a prompt on every rank; rank 0's sampler decides each token for all."""
        channel = self._channel
        with channel.lock:
            channel.broadcast({**self._state("add"), "tokens": list(prompt_tokens)})
            slot = super().add(prompt_tokens, leader_sampler(sampler, channel.group), processors)
        return slot

    def step(self) -> dict[int, int]:
        """One decode step on every rank."""
        channel = self._channel
        with channel.lock:
            channel.broadcast(self._state("step"))
            try:
                tokens = super().step()
            except RuntimeError as exc:  # the model's own collectives failed
                raise channel.broken(exc) from exc
            channel.settle()
            return tokens

    def finish(self, slot: Slot, *, keep_cache: bool) -> bool:
        """Take a sequence out on every rank (its cache kept in every rank's pool or none)."""
        channel = self._channel
        if channel.fault:
            return False
        with channel.lock:
            channel.broadcast({**self._state("finish"), "uid": slot.uid, "keep": keep_cache})
            return super().finish(slot, keep_cache=keep_cache)

    def close(self) -> None:
        """Drop the lane on every rank."""
        channel = self._channel
        if not channel.fault:
            with channel.lock:
                channel.broadcast(self._state("close"))
        super().close()

    def _state(self, op: str) -> dict[str, Any]:
        pool = self._loaded.prompt_cache
        # the other ranks trim their pools to rank 0's count first: same entries, same order
        return {"op": op, "key": self._key, "pool": len(pool) if pool is not None else 0}


class GroupBackend(MLXBackend):
    """The backend of rank 0: MLXBackend's work, mirrored on every rank of the group."""

    def __init__(
        self,
        channel: Channel,
        *,
        prompt_cache_entries: int = DEFAULT_PROMPT_CACHE_ENTRIES,
        sharding: str = "auto",
        step_timeout_s: float = 60.0,
        hosts: list[str] | None = None,
        cpu_dense_max_params: int | None = None,
    ) -> None:
        super().__init__(prompt_cache_entries, cpu_dense_max_params=cpu_dense_max_params)
        self._setup = ModelSetup(
            prompt_cache_entries=prompt_cache_entries,
            num_draft_tokens=0,
            dense_max_params=cpu_dense_max_params,
        )
        self.channel = channel
        self.sharding = sharding
        self.hosts = hosts or [f"rank{r}" for r in range(channel.size)]
        if channel.size == 2:  # rank 0's only peer: a fault names it and its host
            channel.peer = f"rank 1 ({self.hosts[1]})"
        self.stopping_since: float | None = None  # set on SIGTERM (``group.rank0_backend``)
        self._keys: dict[int, int] = {}  # id(loaded) -> the key every rank knows it by
        self._shards: dict[str, dict[str, Any]] = {}  # model dir name -> sharding, bytes
        self._next_key = 0
        self._step_timeout = step_timeout_s
        self._stepping: tuple[float, list[Job]] | None = None  # when a step began, its jobs
        self.memory: list[dict[str, int]] = []
        self.launch = 1  # which launch of the group this is (the supervisor counts)
        self.last_fault = ""  # what ended the previous launch, as the supervisor saw it
        with channel.lock:
            channel.broadcast({"op": "report"})
            self.memory = memory_report(channel)
        threading.Thread(target=self._watch, name="group-watchdog", daemon=True).start()

    # -- models --

    def load(self, path: Path) -> LoadedModel:
        """Load the model at ``path`` split across the ranks (``group_load``)."""
        if embeddings.is_encoder_dir(path):  # small, and not splittable: rank 0 alone
            return super().load(path)
        if is_vision_dir(path):
            raise ModelLoadError(
                "vision models cannot be split across a distributed group; serve this model "
                "from a bridge without --hostfile"
            )
        with self.channel.lock:
            self._check_group()
            key = self._next_key
            self._next_key += 1
            self.channel.broadcast(
                {"op": "load", "key": key, "path": str(path), "sharding": self.sharding}
            )
            loaded = load_shard(self.channel, path, self._setup, self.sharding)
            self._keys[id(loaded)] = key
            self._shards[path.name] = {
                "sharding": loaded.sharding,  # type: ignore[attr-defined]
                "rank_bytes": loaded.rank_bytes,  # type: ignore[attr-defined]
            }
            self.channel.broadcast({"op": "report"})
            self.memory = memory_report(self.channel)
        return loaded

    def prepare(
        self, loaded: LoadedModel, *, digest: str = "", draft_path: Path | None = None
    ) -> None:
        """Set up the prompt-cache pool on every rank (no draft, no disk store)."""
        key = self._keys.get(id(loaded))
        if key is None:
            return super().prepare(loaded, digest=digest)
        with self.channel.lock:
            self.channel.broadcast({"op": "prepare", "key": key})
            mlx_models.prepare_model(loaded, self._setup, digest=digest)

    def unload(self, loaded: LoadedModel) -> None:
        """Drop the model on every rank."""
        key = self._keys.pop(id(loaded), None)
        self._shards.pop(loaded.path.name, None)
        self._drop_lane(loaded)
        if key is not None and not self.channel.fault:
            with self.channel.lock:
                self.channel.broadcast({"op": "unload", "key": key})
        mlx_models.unload_model(loaded)

    def kv_bytes_per_token(self, loaded: LoadedModel) -> int:
        """The group's KV bytes per token: every rank's share added up (measured by one
        forward pass on every rank the first time)."""
        key = self._keys.get(id(loaded))
        if key is None or loaded.kv_bytes_per_token or loaded.model is None:
            return super().kv_bytes_per_token(loaded)
        with self.channel.lock:
            self._check_group()
            self.channel.broadcast({"op": "kv_bytes", "key": key})
            mine = prompt_cache.kv_bytes_per_token(loaded)
            loaded.kv_bytes_per_token = sum(r[0] for r in self.channel.gather_ints([mine]))
        return loaded.kv_bytes_per_token

    # -- jobs --

    def step(self, loaded: LoadedModel, jobs: list[Job]) -> StepResult:
        """One step of the model's jobs on every rank (watched: see ``_watch``)."""
        if self.channel.fault:
            self._fail(jobs, self.channel.fault)
            return StepResult()
        self._stepping = (time.monotonic(), list(jobs))
        try:
            return super().step(loaded, jobs)
        finally:
            self._stepping = None

    def _lane(self, loaded: LoadedModel, width: int) -> BatchLane | None:
        key = self._keys.get(id(loaded))
        if key is None or loaded.encoder is not None:
            return None
        lane = self._lanes.get(id(loaded))
        if lane is None:
            self._check_group()
            lane = MirroredLane(loaded, width, self.channel, key)
            self._lanes[id(loaded)] = lane
        return lane

    def generate(self, loaded: LoadedModel, prompt_tokens: list[int], options: Options, **_: Any):
        """The solo path (a context shift) is not mirrored: the request ends with an error."""
        raise BadRequest(
            "the context is full (num_ctx) and a distributed group cannot shift it; "
            "raise num_ctx or start a new conversation"
        )

    def batchable(self, loaded: LoadedModel) -> bool:
        """Every generative model decodes in its (mirrored) lane."""
        return loaded.encoder is None

    def uses_prompt_lookup(self, *args: Any, **kwargs: Any) -> bool:
        """Prompt lookup is off on a group (its verification passes are not mirrored)."""
        return False

    def keep_cache(self, loaded: LoadedModel, gen: Generation) -> bool:
        """Solo generations do not happen on a group."""
        return False

    def embed(self, loaded: LoadedModel, batch: list[list[int]]) -> list[list[float]]:
        """Encoders on rank 0; a generative model's hidden states on every rank."""
        key = self._keys.get(id(loaded))
        if key is None:
            return super().embed(loaded, batch)
        with self.channel.lock:
            self._check_group()
            self.channel.broadcast({"op": "embed", "key": key, "batch": batch})
            return super().embed(loaded, batch)

    # -- the group's state --

    def status(self) -> dict[str, Any]:
        """The ranks, their hosts and memory, and the fault if the group broke."""
        ranks = []
        for rank, host in enumerate(self.hosts):
            row: dict[str, Any] = {"rank": rank, "host": host}
            if rank < len(self.memory):
                row.update(self.memory[rank])
            ranks.append(row)
        fault = self.channel.fault
        return {
            "size": self.channel.size,
            "healthy": fault is None,
            "fault": fault,
            "launch": self.launch,
            "last_fault": self.last_fault or None,
            "sharding": self.sharding,
            "ranks": ranks,
            "models": dict(self._shards),
        }

    def shutdown(self) -> None:
        """Tell the other ranks to end (rank 0's server is stopping, ``Engine.stop``); never
        raises."""
        if self.channel.fault or not self.channel.lock.acquire(timeout=5.0):
            return  # they end anyway when rank 0's connections close
        try:
            self.channel.broadcast({"op": "stop"})
        except Exception as exc:
            log.info("distributed group: stop not delivered: %s", exc)
        finally:
            self.channel.lock.release()

    def _check_group(self) -> None:
        if self.channel.fault:
            raise ModelLoadError(f"the distributed group is down: {self.channel.fault}")

    def _fail(self, jobs: list[Job], reason: str) -> None:
        for job in jobs:
            job.replies.put(Failed(BridgeError(reason, status_code=503)))

    def _watch(self) -> None:
        """End the requests of a step that hangs (a rank stopped answering) and stop rank 0,
        so ``mlx.launch`` stops the group and the supervisor starts it again."""
        while True:
            time.sleep(1.0)
            stepping = self._stepping
            if stepping is None or self.channel.fault:
                continue
            began, jobs = stepping
            # stopping (mlx.launch stops rank 0 when another rank died): a step that still
            # hangs is waiting for that rank; else only a step past the timeout is a fault
            limit = _STOPPING_STEP_S if self.stopping_since is not None else self._step_timeout
            if time.monotonic() - max(began, self.stopping_since or 0.0) < limit:
                continue
            peer = self.channel.peer
            reason = (
                f"{peer} of the distributed group stopped answering (a step took {limit:.0f} s)"
            )
            self._fail(jobs, reason)  # the scheduler thread is stuck in MLX: answer for it
            self.channel.mark_broken(reason)


def stop_after_fault(pid: int, delay_s: float = 2.0, kill_after_s: float = 15.0) -> Any:
    """An ``on_fault`` that logs and, ``delay_s`` later (the error lines go out first),
    sends SIGTERM to ``pid`` (rank 0's server): its exit ends the ``mlx.launch`` run and the
    supervisor starts the group again. If rank 0 is still there ``kill_after_s`` later (its
    worker stuck in a collective with a hung rank, which mlx.launch would wait for forever),
    the launch's whole process group is killed: the supervisor started it as its own."""

    def on_fault(reason: str) -> None:
        log.error("distributed group broken: %s; stopping rank 0 (pid %d)", reason, pid)
        report = os.environ.get("MLX_BRIDGE_GROUP_FAULT_FILE")
        if report:  # the supervisor names it as the last fault if no rank exited
            with contextlib.suppress(OSError):
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                Path(report).write_text(f"{reason} at {stamp}")
        for after, stop in ((delay_s, _terminate), (kill_after_s, _kill_launch)):
            timer = threading.Timer(after, stop, (pid,))
            timer.daemon = True
            timer.start()

    return on_fault


def _terminate(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGTERM)


def _kill_launch(pid: int) -> None:
    """SIGKILL to the process group of ``pid`` if it is a launch's (a session the
    supervisor started, not the shell's group of a rank run by hand)."""
    with contextlib.suppress(OSError):
        group = os.getpgid(pid)
        if "MLX_BRIDGE_GROUP_LAUNCH" in os.environ and group == os.getsid(pid):
            log.error("distributed group: rank 0 did not stop; killing the launch")
            os.killpg(group, signal.SIGKILL)


__all__ = ["GroupBackend", "GroupFault", "MirroredLane", "stop_after_fault"]
