"""A fake ``engine.interface.Backend`` and a fake clock: the scheduler's policies run on them
in milliseconds, with no model and no MLX (``test_scheduler_policies.py``, ``test_arrivals.py``),
and the helpers that drive an engine from a test (submit, read, wait on its loop's turns).

Loads return at once (or when their gate opens, or fail as told); a job finishes at its
first step unless it is held, then it finishes once released.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mlx_ollama_bridge.engine import Engine, GenerationRequest, Options
from mlx_ollama_bridge.engine.interface import Job, Stepped, StepResult
from mlx_ollama_bridge.engine.requests import Failed, Finished, TextChunk
from mlx_ollama_bridge.errors import BadRequest
from mlx_ollama_bridge.manifest import Manifest
from mlx_ollama_bridge.names import ModelName
from mlx_ollama_bridge.registry import LocalModel

HELD_STEP_S = 0.005  # how long a held job's step lasts (so a busy scheduler does not spin)


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock on."""
        self.now += seconds


@dataclass
class FakeHandle:
    """What the fake backend "loaded"."""

    path: Path
    size_bytes: int
    on_gpu: bool = False
    prompt_cache: Any = None


@dataclass
class FakeBackend:
    """Records what the scheduler asks; loads and steps as the test arranges."""

    sizes: dict[str, int] = field(default_factory=dict)  # model dir name -> bytes
    failures: dict[str, BaseException] = field(default_factory=dict)  # dir name -> load error
    gates: dict[str, threading.Event] = field(default_factory=dict)  # dir name -> load waits
    loads: list[str] = field(default_factory=list)  # dir names, in order of load calls
    unloads: list[str] = field(default_factory=list)
    load_started: threading.Event = field(default_factory=threading.Event)
    holds: dict[str, threading.Event] = field(default_factory=dict)  # prompt -> its release
    counts: dict[str, int] = field(default_factory=dict)
    step_sizes: list[int] = field(default_factory=list)  # jobs per step, in order
    kv_per_token: int = 0  # > 0: jobs reserve KV caches and leave them in a FakePool
    pool_inserted: threading.Event = field(default_factory=threading.Event)  # a cache joined
    pool_insert_hold: threading.Event | None = None  # set: the step waits for it after joining

    def hold(self, prompt: str) -> threading.Event:
        """Jobs with this prompt run until the returned event is set."""
        return self.holds.setdefault(prompt, threading.Event())

    def load(self, path: Path) -> FakeHandle:
        self.loads.append(path.name)
        self.load_started.set()
        gate = self.gates.get(path.name)
        if gate is not None:
            gate.wait(30)
        if path.name in self.failures:
            raise self.failures[path.name]
        pool = FakePool() if self.kv_per_token else None
        return FakeHandle(path, self.sizes.get(path.name, 1000), prompt_cache=pool)

    def prepare(self, handle: Any, *, digest: str = "", draft_path: Path | None = None) -> None:
        pass

    def unload(self, handle: FakeHandle) -> None:
        self.unloads.append(handle.path.name)

    def start(self, job: Job, handle: Any, context_length: int, *, parallel: int) -> None:
        if job.request.prompt == "bad":
            raise BadRequest("a bad prompt")
        job.prompt_tokens = [1, 2, 3]

    def step(self, handle: Any, jobs: list[Job]) -> StepResult:
        if any(job.request.prompt == "crash" for job in jobs):
            raise RuntimeError("a backend bug")  # breaks the protocol: step never raises
        self.step_sizes.append(len(jobs))
        result = StepResult()
        for job in jobs:
            prompt = job.request.prompt
            release = self.holds.get(prompt)
            if prompt == "explode":
                result.stepped.append(Stepped(job, error=RuntimeError("the step broke")))
            elif release is not None and not release.wait(HELD_STEP_S):
                result.stepped.append(Stepped(job, []))
            else:
                self._keep_cache(handle)
                result.stepped.append(Stepped(job, [TextChunk("ok"), _finished()]))
        return result

    def _keep_cache(self, handle: FakeHandle) -> None:
        """A finished job's cache joins the pool (as the real backend's does, in the step)."""
        if handle.prompt_cache is None:
            return
        handle.prompt_cache.nbytes += self.kv_per_token * 3  # the job's 3 prompt tokens
        self.pool_inserted.set()
        if self.pool_insert_hold is not None:
            self.pool_insert_hold.wait(30)

    def kv_bytes_per_token(self, handle: Any) -> int:
        return self.kv_per_token  # 0: one job at a time per model unless OLLAMA_NUM_PARALLEL

    def take_counts(self) -> dict[str, int]:
        counts, self.counts = self.counts, {}
        return counts


@dataclass
class FakePool:
    """A prompt-cache pool that only counts bytes."""

    nbytes: int = 0
    enabled: bool = True

    def trim_to_bytes(self, limit: int) -> None:
        self.nbytes = min(self.nbytes, limit)


def _finished() -> Finished:
    return Finished(
        done_reason="stop",
        prompt_eval_count=3,
        prompt_eval_duration_ns=0,
        eval_count=1,
        eval_duration_ns=0,
    )


def fake_model(root: Path, name: str, size: int = 1000) -> LocalModel:
    """A model named ``name`` whose directory (empty, no files to check) is under ``root``."""
    path = root / name.replace(":", "-")
    path.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(model_dir=str(path), format="mlx", source="test", files={}, created_at=0.0)
    return LocalModel(
        name=ModelName.parse(name),
        manifest=manifest,
        path=path,
        modified_at=datetime.now(),
        digest="0" * 64,
        size=size,
        details={},
        model_info={},
        capabilities=["completion"],
        chat_template=None,
        context_length=4096,
        system=None,
        parameters={},
        messages=[],
    )


def until(engine: Engine, condition: Callable[[], bool], turns: int = 500) -> None:
    """Let the scheduler loop turn (one ping each) until ``condition`` holds."""
    for _ in range(turns):
        if condition():
            return
        assert engine.ping(10) is not None, "the scheduler thread does not answer"
    raise AssertionError("the condition never held")


def settle(engine: Engine) -> None:
    """Let the scheduler loop turn a few times (for "nothing happened" checks)."""
    for _ in range(3):
        assert engine.ping(10) is not None


def request(model: LocalModel, prompt: str = "hi", keep_alive_s: float | None = None):
    return GenerationRequest(
        model=model, options=Options(), prompt=prompt, keep_alive_s=keep_alive_s
    )


def last_event(job: Any) -> Any:
    """Read a submitted job's events to its end: the last one."""
    while True:
        event = job.replies.get(timeout=10)
        if isinstance(event, (Finished, Failed)):
            return event


def in_thread(action: Callable[[], Any]) -> tuple[threading.Thread, queue.Queue[Any]]:
    """Run ``action`` on a thread; its result (or exception) lands in the queue."""
    out: queue.Queue[Any] = queue.Queue()

    def target() -> None:
        try:
            out.put(action())
        except BaseException as exc:
            out.put(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out
