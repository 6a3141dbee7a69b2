"""What the HTTP layer hands to the engine, and what the engine sends back.

Requests are plain dataclasses built at the HTTP boundary: the engine never sees Flask's
``request`` or raw JSON. Replies travel on a per-request queue as the events below.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import BridgeError
from .options import Options

if TYPE_CHECKING:
    from ..registry import LocalModel


@dataclass
class GenerationRequest:
    """One ``/api/generate`` or ``/api/chat`` call, validated.

    Exactly one of ``messages`` (chat) and ``prompt`` (generate) is set.
    """

    model: LocalModel
    options: Options
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    images: list[str] | None = None  # base64 images of a generate request (chat: per message)
    system: str | None = None
    template: str | None = None  # legacy Go template override (generate only)
    suffix: str | None = None  # fill-in-the-middle: text after the completion (generate only)
    logprobs: bool = False  # report each generated token's log-probability
    top_logprobs: int = 0  # and this many most likely tokens at each position (0-20)
    raw: bool = False
    context: list[int] | None = None
    tools: list[dict[str, Any]] | None = None
    think: bool | None = None  # None: the model cannot think; else Ollama's resolved `think`
    think_level: str | None = None  # "low", "medium", "high" or "max" when `think` was a level
    render_only: bool = False  # `_debug_render_only`: render the prompt, generate nothing
    keep_alive_s: float | None = None
    truncate: bool = True
    shift: bool = True
    format: dict[str, Any] | str | None = None  # Ollama's `format`: "json" or a JSON Schema
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def is_chat(self) -> bool:
        """True for ``/api/chat`` requests."""
        return self.messages is not None


@dataclass(frozen=True)
class Ready:
    """First event: the model is loaded and the prompt admitted."""

    load_duration_ns: int


@dataclass(frozen=True)
class TextChunk:
    """A piece of generated text (stop strings already removed)."""

    text: str


@dataclass(frozen=True)
class ThinkingChunk:
    """A piece of the model's reasoning (its think tags removed)."""

    text: str


@dataclass(frozen=True)
class ToolCall:
    """One parsed tool call; ``index`` counts calls within the response from 0."""

    index: int
    name: str
    arguments: dict[str, Any]
    id: str


@dataclass(frozen=True)
class ToolCalls:
    """Complete tool calls, sent whole once their markup has been parsed."""

    calls: tuple[ToolCall, ...]


@dataclass(frozen=True)
class TokenLogprob:
    """One token and its log-probability (Ollama's ``api.TokenLogprob``)."""

    token: str
    logprob: float
    bytes: tuple[int, ...]


@dataclass(frozen=True)
class Logprob:
    """A generated token's log-probability and the most likely tokens at its position."""

    token: TokenLogprob
    top: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Logprobs:
    """Log-probabilities of generated tokens, sent before the text they produced."""

    entries: tuple[Logprob, ...]


@dataclass(frozen=True)
class Finished:
    """Last event of a successful generation, with Ollama's metrics."""

    done_reason: str
    prompt_eval_count: int
    prompt_eval_duration_ns: int
    eval_count: int
    eval_duration_ns: int
    context: list[int] | None = None
    stop_sequence: str | None = None  # the stop string that ended it, if one did
    cached_count: int = 0  # of prompt_eval_count, tokens taken from the prompt cache


@dataclass(frozen=True)
class Failed:
    """Generation stopped on an error after it had started."""

    error: BridgeError


@dataclass(frozen=True)
class RunningModel:
    """A snapshot of one loaded model, for ``/api/ps``."""

    model: LocalModel
    name: str
    size_bytes: int
    size_vram_bytes: int  # = size_bytes on a Metal GPU (unified memory), 0 on the CPU backend
    expires_at: float  # wall-clock unix seconds; math.inf = never
    context_length: int
    active_requests: int


Event = Ready | TextChunk | ThinkingChunk | ToolCalls | Logprobs | Finished | Failed
