"""The seam under the scheduler: what it asks of a backend that runs models.

The scheduler (``scheduler``) and the resident set (``residency``) schedule, admit, keep
models loaded and expire them; a ``Backend`` does the model work: load, prepare and unload
a model, start a job on it and step its jobs. ``backend.MLXBackend`` is the one that runs
mlx-lm; the scheduler's policy tests run on a fake one (``tests/fake_backend.py``);
``group_backend.GroupBackend`` runs a model split across the ranks of a distributed group.
As Ollama's ``server/sched.go`` schedules against its ``llm.LlamaServer`` interface.

Nothing here imports MLX.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

if TYPE_CHECKING:
    from .embed_job import EmbeddingJob
    from .jobs import GenerationJob

Job: TypeAlias = "GenerationJob | EmbeddingJob"


class ModelHandle(Protocol):
    """A model a backend loaded: what the scheduler reads of it (``/api/ps``, the budget)."""

    size_bytes: int  # memory its weights take, checked against the budget
    on_gpu: bool  # reported as VRAM by /api/ps
    prompt_cache: Any  # reusable KV caches (``nbytes``, ``trim_to_bytes``) or None


@dataclass
class Stepped:
    """What one step did for one job: the events to send, or the error that ended it."""

    job: Job
    events: list[Any] = field(default_factory=list)  # the last may be Finished/EmbeddingResult
    error: BaseException | None = None


@dataclass
class StepResult:
    """One step of one model's jobs."""

    stepped: list[Stepped] = field(default_factory=list)
    batched: int = 0  # tokens decoded together in one batched forward pass


@runtime_checkable
class Backend(Protocol):
    """Runs models for the scheduler. Every method but ``load`` and ``prepare`` (the loading
    thread) runs on the scheduler thread."""

    def load(self, path: Path) -> Any:
        """Load the model directory at ``path`` and return its handle (a ``ModelHandle``);
        raises ModelLoadError."""
        ...

    def prepare(self, handle: Any, *, digest: str = "", draft_path: Path | None = None) -> None:
        """Finish a load on the loading thread (draft model, caches); never raises."""
        ...

    def unload(self, handle: Any) -> None:
        """Drop the model and everything its jobs hold."""
        ...

    def start(self, job: Job, handle: Any, context_length: int, *, parallel: int) -> None:
        """Admit ``job`` on the loaded model: build its prompt, join the model's batch (of at
        most ``parallel`` sequences) or start it alone. Raises BridgeError on bad input."""
        ...

    def step(self, handle: Any, jobs: list[Job]) -> StepResult:
        """Advance the model's running ``jobs`` once; never raises (errors come per job)."""
        ...

    def kv_bytes_per_token(self, handle: Any) -> int:
        """Bytes one token takes in the model's KV cache (what a sequence of ``num_ctx``
        tokens reserves of the budget); 0 if it keeps none: then it runs one job at a time."""
        ...

    def take_counts(self) -> dict[str, int]:
        """Counters added up since the last call (e.g. draft tokens); names the scheduler's
        ``stats`` reports."""
        ...


__all__ = ["Backend", "Job", "ModelHandle", "StepResult", "Stepped"]
