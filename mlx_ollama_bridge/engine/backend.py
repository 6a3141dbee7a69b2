"""The MLX seam: the only module that imports ``mlx`` and ``mlx_lm``.

Everything here runs on the engine's scheduler thread. mlx-lm raises bare ``ValueError`` /
``FileNotFoundError``; they are translated into the bridge's errors at this boundary.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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

from ..errors import BadRequest, ModelLoadError, RequestCanceled
from . import embeddings
from .options import Options
from .prompt_cache import PromptCachePool, cache_offset
from .tool_formats import TokenizerMarkup

log = logging.getLogger(__name__)

Sampler = Callable[[mx.array], mx.array]
LogitsProcessor = Callable[[mx.array, mx.array], mx.array]
_PREFILL_STEP = 512  # prompt tokens per forward pass; cancellation is checked between them


@dataclass
class LoadedModel:
    """A model and tokenizer resident in memory."""

    path: Path
    model: Any
    tokenizer: Any
    size_bytes: int
    context_length: int
    on_gpu: bool = False
    encoder: embeddings.Encoder | None = None  # set for BERT-family embedding models
    pooling: embeddings.Pooling = embeddings.Pooling()  # how embed() pools hidden states
    prompt_cache: PromptCachePool | None = None  # KV caches reusable across turns

    def is_eos(self, token: int) -> bool:
        """True if ``token`` ends generation for this model."""
        return token in self.tokenizer.eos_token_ids


@dataclass
class Generation:
    """A running ``generate_step``: its token ids and the KV cache it fills.

    ``fed`` lists every token yielded so far; ``generate_step`` feeds a token to the model
    before yielding it, so the cache holds ``prompt + fed`` (see ``MLXBackend.keep_cache``).
    """

    tokens: Iterator[int]
    prompt: list[int]
    cache: list[Any] | None  # None: not reusable (rotating window)
    reused: int = 0  # prompt tokens taken from the prompt cache, not evaluated
    fed: list[int] = field(default_factory=list)


class MLXBackend:
    """Loads models and runs token generation with mlx-lm."""

    def __init__(self, prompt_cache_entries: int = 4) -> None:
        self._prompt_cache_entries = prompt_cache_entries

    def load(self, path: Path) -> LoadedModel:
        """Load the model directory at ``path`` (weights are evaluated eagerly).

        BERT-family encoders go to ``embeddings``; everything else to mlx-lm.
        """
        on_gpu = mx.default_device().type == mx.DeviceType.gpu
        if on_gpu:
            _wire_recommended_memory()
        if embeddings.is_encoder_dir(path):
            encoder = embeddings.load_encoder(path)
            context = encoder.model.config.max_position_embeddings
            return LoadedModel(
                path,
                encoder.model,
                encoder.tokenizer,
                encoder.size_bytes,
                context,
                on_gpu,
                encoder=encoder,
                pooling=encoder.pooling,
            )
        try:
            model, tokenizer = mlx_load(str(path))
        except FileNotFoundError as exc:
            raise ModelLoadError(f"model files are missing in {path}: {exc}") from exc
        except (ValueError, KeyError, OSError, RuntimeError) as exc:
            raise ModelLoadError(f"failed to load model from {path}: {exc}") from exc
        size = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
        pooling = embeddings.read_pooling(path)
        pool = PromptCachePool(model, self._prompt_cache_entries)
        return LoadedModel(
            path, model, tokenizer, size, _context_length(path), on_gpu, None, pooling, pool
        )

    def unload(self, loaded: LoadedModel) -> None:
        """Drop a model's buffers and return the memory to the system."""
        loaded.model = None
        loaded.tokenizer = None
        loaded.encoder = None
        if loaded.prompt_cache is not None:
            loaded.prompt_cache.clear()
            loaded.prompt_cache = None
        mx.clear_cache()

    def embedding_tokens(
        self, loaded: LoadedModel, text: str, limit: int, *, truncate: bool
    ) -> list[int]:
        """Token ids to embed ``text``, at most ``limit``; BadRequest if too long and not
        ``truncate`` (Ollama keeps the beginning of an over-long input)."""
        if loaded.encoder is not None:
            return embeddings.tokenize(loaded.encoder, text, limit, truncate=truncate)
        if not callable(getattr(loaded.model, "model", None)):  # no body exposing hidden states
            raise BadRequest("this model does not support embeddings", status_code=501)
        ids = list(loaded.tokenizer.encode(text))
        if len(ids) > limit and not truncate:
            raise BadRequest(embeddings.TOO_LONG)
        if not ids:  # "" on a tokenizer that adds no BOS: pool over one special token instead
            tokenizer = loaded.tokenizer
            special = tokenizer.bos_token_id
            ids = [special if special is not None else next(iter(tokenizer.eos_token_ids), 0)]
        return ids[: max(limit, 1)]

    def embed(self, loaded: LoadedModel, batch: list[list[int]]) -> list[list[float]]:
        """One pooled vector per token list (float32 values; normalised only if the model's
        sentence-transformers config says so)."""
        if loaded.encoder is not None:
            return embeddings.encode_batch(loaded.encoder, batch)
        # decoder LLMs: one sequence at a time, so no padding mask is needed
        return [embeddings.pool_decoder_states(loaded.model, ids, loaded.pooling) for ids in batch]

    def render_chat(
        self,
        loaded: LoadedModel,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        chat_template: str | None = None,
        enable_thinking: bool | None = None,
    ) -> str:
        """Render messages with the model's (or an override) chat template, ready to answer.

        ``enable_thinking`` is the Qwen3-style template switch (mlx-lm maps it to the name a
        custom renderer uses); None leaves mlx-lm's default.
        """
        tokenizer = loaded.tokenizer
        kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": True}
        if tools:
            kwargs["tools"] = tools
        if enable_thinking is not None:
            kwargs["enable_thinking"] = enable_thinking
        if chat_template:
            kwargs["chat_template"] = chat_template
        elif not tokenizer.has_chat_template:
            return _plain_prompt(messages)
        try:
            return tokenizer.apply_chat_template(messages, **kwargs)
        except Exception as exc:  # jinja2 raises many types; all mean "bad template/input"
            raise BadRequest(f"template error: {exc}") from exc

    def output_markup(self, loaded: LoadedModel) -> TokenizerMarkup:
        """Think tags and tool-call syntax as mlx-lm inferred them from the tokenizer."""
        tokenizer = loaded.tokenizer
        parser = getattr(tokenizer, "tool_parser", None)
        return TokenizerMarkup(
            think_start=getattr(tokenizer, "think_start", None),
            think_end=getattr(tokenizer, "think_end", None),
            tool_family=parser.__module__.rsplit(".", 1)[-1] if parser is not None else None,
            tool_call_start=getattr(tokenizer, "tool_call_start", None),
            tool_call_end=getattr(tokenizer, "tool_call_end", None),
            tool_parser=parser,
        )

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
        cancel: threading.Event | None = None,
        extra_processors: list[LogitsProcessor] | None = None,
    ) -> Generation:
        """Start generating after ``prompt_tokens``; the tokens never end (the caller stops).

        Without a rotating window (``max_kv_size``) the longest cached prefix is reused and
        only the rest of the prompt is evaluated. ``cancel`` aborts a long prompt between
        prefill chunks (RequestCanceled).
        """
        pool = loaded.prompt_cache
        if max_kv_size is None and pool is not None and pool.enabled:
            cache, rest = pool.fetch(prompt_tokens)
        else:
            cache, rest = None, prompt_tokens
        steps = generate_step(
            mx.array(rest),
            loaded.model,
            max_tokens=-1,
            sampler=make_sampler(options),
            # generate_step shows processors only the tokens it was given: the uncached rest
            logits_processors=make_processors(options, len(rest))
            + list(extra_processors or []),  # structured output's token mask, last
            max_kv_size=max_kv_size,
            prompt_cache=cache,
            prefill_step_size=_PREFILL_STEP,
            prompt_progress_callback=_cancel_check(cancel),
        )
        generation = Generation(
            iter(()), list(prompt_tokens), cache, len(prompt_tokens) - len(rest)
        )
        generation.tokens = _track(steps, generation.fed)
        return generation

    def keep_cache(self, loaded: LoadedModel, generation: Generation) -> bool:
        """Offer a finished generation's KV cache to the model's pool, keyed by exactly the
        tokens it holds. False if it is not reusable or does not match."""
        pool, cache = loaded.prompt_cache, generation.cache
        if pool is None or cache is None:
            return False
        tokens = generation.prompt + generation.fed
        if cache_offset(cache) != len(tokens):
            log.debug(
                "prompt cache not kept: offset=%d tokens=%d", cache_offset(cache), len(tokens)
            )
            return False
        # The last step was evaluated asynchronously: materialise the cache before it is kept
        # (and deep-copied by later requests), so no lazy graph outlives its generator.
        mx.eval([c.state for c in cache])
        return pool.insert(tokens, cache)


def _track(steps: Iterator[tuple[Any, Any]], fed: list[int]) -> Iterator[int]:
    try:
        for token, _logprobs in steps:
            fed.append(int(token))
            yield fed[-1]
    finally:
        # Close generate_step here, on the scheduler thread, rather than whenever the
        # garbage collector gets to it on whatever thread: its exit touches MLX streams.
        close = getattr(steps, "close", None)
        if close is not None:
            close()


def _cancel_check(cancel: threading.Event | None) -> Callable[[int, int], None] | None:
    if cancel is None:
        return None

    def check(_done: int, _total: int) -> None:
        if cancel.is_set():
            raise RequestCanceled()

    return check


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


def _wire_recommended_memory() -> None:
    """Let Metal keep up to its recommended working set wired (mlx-lm does this only while
    generating; a server keeps models resident between requests, so it is set for good)."""
    try:
        from mlx_lm.utils import maybe_set_recommended_wired_limit
    except ImportError:  # older mlx-lm
        return
    try:
        maybe_set_recommended_wired_limit()
    except (RuntimeError, ValueError) as exc:
        log.warning("could not set the wired memory limit: %s", exc)


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
