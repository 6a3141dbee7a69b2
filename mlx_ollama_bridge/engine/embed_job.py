"""One ``/api/embed`` call in the engine: its request, its job and its result.

An embedding job goes through the scheduler's admission exactly like a generation (same
queue, keep-alive, loading and eviction), then runs in batches: each scheduler step embeds
up to ``BATCH`` inputs, so generations sharing the thread keep streaming in between.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import BridgeError
from .options import Options
from .requests import Failed

if TYPE_CHECKING:
    from ..registry import LocalModel
    from .backend import MLXBackend
    from .mlx_models import LoadedModel

BATCH = 16  # inputs per scheduler step


@dataclass
class EmbeddingRequest:
    """Texts to embed with one model, validated at the HTTP boundary."""

    model: LocalModel
    inputs: list[str]
    options: Options
    keep_alive_s: float | None = None
    truncate: bool = True
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class EmbeddingResult:
    """Last event of an embedding job: one vector per input, in input order."""

    embeddings: list[list[float]]  # as the model pools them (float32 values)
    prompt_eval_count: int  # tokens over all inputs
    duration_ns: int


class EmbeddingJob:
    """Holds an embedding request's state between scheduler steps (generation's interface)."""

    def __init__(self, request: EmbeddingRequest, replies: queue.Queue[Any]) -> None:
        self.request = request
        self.replies = replies
        self._backend: MLXBackend | None = None
        self._loaded: LoadedModel | None = None
        self._tokens: list[list[int]] = []
        self._order: list[int] = []  # input indexes, shortest first (less padding per batch)
        self._done = 0
        self._vectors: dict[int, list[float]] = {}
        self._started_at = 0.0

    def start(self, backend: MLXBackend, loaded: LoadedModel, context_length: int) -> None:
        """Tokenize every input; raises BadRequest (before any work) if one is too long."""
        self._backend, self._loaded = backend, loaded
        self._started_at = time.perf_counter()
        truncate = self.request.truncate
        self._tokens = [
            backend.embedding_tokens(loaded, text, context_length, truncate=truncate)
            for text in self.request.inputs
        ]
        self._order = sorted(range(len(self._tokens)), key=lambda i: len(self._tokens[i]))

    def step(self) -> list[EmbeddingResult]:
        """Embed the next batch; returns ``[EmbeddingResult]`` once all inputs are done."""
        assert self._backend is not None and self._loaded is not None
        chosen = self._order[self._done : self._done + BATCH]
        if chosen:
            vectors = self._backend.embed(self._loaded, [self._tokens[i] for i in chosen])
            self._vectors.update(zip(chosen, vectors, strict=True))
            self._done += len(chosen)
        if self._done < len(self._order):
            return []
        return [
            EmbeddingResult(
                embeddings=[self._vectors[i] for i in range(len(self._tokens))],
                prompt_eval_count=sum(len(t) for t in self._tokens),
                duration_ns=int((time.perf_counter() - self._started_at) * 1e9),
            )
        ]

    def wait_for_result(self, engine_alive: Callable[[], bool]) -> EmbeddingResult:
        """Block (an HTTP thread) until the result; raises the job's BridgeError."""
        while True:
            try:
                event = self.replies.get(timeout=1.0)
            except queue.Empty:
                if not engine_alive():
                    raise BridgeError("the model runner stopped unexpectedly") from None
                continue
            if isinstance(event, Failed):
                raise event.error
            if isinstance(event, BaseException):
                raise event
            return event

    def close(self) -> None:
        """Drop references to the model."""
        self._loaded = None
        self._backend = None


__all__ = ["BATCH", "EmbeddingJob", "EmbeddingRequest", "EmbeddingResult"]
