"""The engine: the only layer that runs MLX. The server uses ``Engine`` (``facade``)."""

from __future__ import annotations

from .embed_job import EmbeddingRequest, EmbeddingResult
from .facade import Engine
from .options import IGNORED_OPTIONS, Options, merge_options, validate_options
from .requests import (
    Event,
    Failed,
    Finished,
    GenerationRequest,
    Ready,
    RunningModel,
    TextChunk,
)

__all__ = [
    "IGNORED_OPTIONS",
    "EmbeddingRequest",
    "EmbeddingResult",
    "Engine",
    "Event",
    "Failed",
    "Finished",
    "GenerationRequest",
    "Options",
    "Ready",
    "RunningModel",
    "TextChunk",
    "merge_options",
    "validate_options",
]
