"""The MLX seam: the only module that imports ``mlx`` and ``mlx_lm``.

Everything here runs on the engine's scheduler thread. mlx-lm raises bare ``ValueError`` /
``FileNotFoundError``; they are translated into the bridge's errors at this boundary.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm.generate import generate_step
from mlx_lm.sample_utils import (
    apply_min_p,
    apply_top_k,
    apply_top_p,
    greedy_sampler,
    make_logits_processors,
)
from mlx_lm.utils import load as mlx_load

from ..errors import BadRequest, ModelLoadError
from .options import Options

log = logging.getLogger(__name__)

Sampler = Callable[[mx.array], mx.array]
LogitsProcessor = Callable[[mx.array, mx.array], mx.array]


@dataclass
class LoadedModel:
    """A model and tokenizer resident in memory."""

    path: Path
    model: Any
    tokenizer: Any
    size_bytes: int
    context_length: int
    on_gpu: bool = False

    def is_eos(self, token: int) -> bool:
        """True if ``token`` ends generation for this model."""
        return token in self.tokenizer.eos_token_ids


class MLXBackend:
    """Loads models and runs token generation with mlx-lm."""

    def load(self, path: Path) -> LoadedModel:
        """Load the mlx-lm model directory at ``path`` (weights are evaluated eagerly)."""
        try:
            model, tokenizer = mlx_load(str(path))
        except FileNotFoundError as exc:
            raise ModelLoadError(f"model files are missing in {path}: {exc}") from exc
        except (ValueError, KeyError, OSError, RuntimeError) as exc:
            raise ModelLoadError(f"failed to load model from {path}: {exc}") from exc
        size = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
        on_gpu = mx.default_device().type == mx.DeviceType.gpu
        return LoadedModel(path, model, tokenizer, size, _context_length(path), on_gpu)

    def unload(self, loaded: LoadedModel) -> None:
        """Drop a model's buffers and return the memory to the system."""
        loaded.model = None
        loaded.tokenizer = None
        mx.clear_cache()

    def render_chat(
        self,
        loaded: LoadedModel,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        chat_template: str | None = None,
    ) -> str:
        """Render messages with the model's (or an override) chat template, ready to answer."""
        tokenizer = loaded.tokenizer
        kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": True}
        if tools:
            kwargs["tools"] = tools
        if chat_template:
            kwargs["chat_template"] = chat_template
        elif not tokenizer.has_chat_template:
            return _plain_prompt(messages)
        try:
            return tokenizer.apply_chat_template(messages, **kwargs)
        except Exception as exc:  # jinja2 raises many types; all mean "bad template/input"
            raise BadRequest(f"template error: {exc}") from exc

    def encode(self, loaded: LoadedModel, text: str, *, add_special_tokens: bool) -> list[int]:
        """Tokenize ``text``."""
        return list(loaded.tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def encode_raw(self, loaded: LoadedModel, text: str) -> list[int]:
        """Tokenize a raw prompt, adding BOS only if the model wants one and it is missing."""
        bos = loaded.tokenizer.bos_token
        return self.encode(loaded, text, add_special_tokens=bos is None or not text.startswith(bos))

    def detokenizer(self, loaded: LoadedModel) -> Any:
        """A fresh streaming detokenizer (``add_token``, ``last_segment``, ``finalize``)."""
        return loaded.tokenizer.detokenizer

    def generate(
        self,
        loaded: LoadedModel,
        prompt_tokens: list[int],
        options: Options,
        *,
        max_kv_size: int | None,
    ) -> Iterator[int]:
        """Yield generated token ids forever (the caller decides when to stop)."""
        steps = generate_step(
            mx.array(prompt_tokens),
            loaded.model,
            max_tokens=-1,
            sampler=make_sampler(options),
            logits_processors=make_processors(options, len(prompt_tokens)),
            max_kv_size=max_kv_size,
        )
        for token, _logprobs in steps:
            yield int(token)


def make_sampler(options: Options) -> Sampler:
    """Map Ollama's sampling options onto mlx-lm's filters with a per-request PRNG key.

    Order as Ollama's sampler: top_k, then temperature, then top_p and min_p on the
    tempered distribution. A key owned by the request (rather than MLX's global state) makes
    ``seed`` reproducible even while other requests sample in between.
    """
    if options.temperature <= 0:
        return greedy_sampler
    top_k, top_p, min_p = options.top_k, options.top_p, options.min_p
    seed = options.seed if options.seed >= 0 else int.from_bytes(os.urandom(4), "little")
    state = {"key": mx.random.key(seed % (1 << 63))}
    inv_temp = 1.0 / options.temperature

    def sampler(logprobs: mx.array) -> mx.array:
        if 0 < top_k < logprobs.shape[-1]:
            logprobs = apply_top_k(logprobs, top_k)
        logits = logprobs * inv_temp
        if 0 < top_p < 1.0:
            logits = apply_top_p(logits, top_p)
        if min_p > 0:
            logits = apply_min_p(logits, min_p)
        state["key"], subkey = mx.random.split(state["key"])
        return mx.random.categorical(logits, key=subkey)

    return sampler


def make_processors(options: Options, prompt_length: int) -> list[LogitsProcessor]:
    """Repeat / presence / frequency penalties over the last ``repeat_last_n`` generated tokens.

    Only generated tokens count: penalising the prompt pushes small models away from the
    very words a question asks about (Ollama's own engine applies no penalties at all).
    """
    window = options.repeat_window()
    if window == 0:
        return []
    processors = make_logits_processors(
        repetition_penalty=options.repeat_penalty if options.repeat_penalty != 1.0 else None,
        repetition_context_size=window,
        presence_penalty=options.presence_penalty or None,
        presence_context_size=window,
        frequency_penalty=options.frequency_penalty or None,
        frequency_context_size=window,
    )
    return [_generated_only(p, prompt_length) for p in processors]


def _generated_only(processor: LogitsProcessor, prompt_length: int) -> LogitsProcessor:
    def apply(tokens: mx.array, logits: mx.array) -> mx.array:
        return processor(tokens[prompt_length:], logits)

    return apply


def _plain_prompt(messages: list[dict[str, Any]]) -> str:
    """Fallback for models without a chat template: the contents, one per paragraph."""
    return "\n\n".join(str(m.get("content") or "") for m in messages)


def _context_length(path: Path) -> int:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return 0
    for key in ("max_position_embeddings", "max_sequence_length", "n_positions", "seq_length"):
        value = config.get(key) or config.get("text_config", {}).get(key)
        if isinstance(value, int) and value > 0:
            return value
    return 0
