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
from typing import TYPE_CHECKING, Any

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm.generate import generate_step
from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache
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
from .cpu_dense import maybe_densify
from .kv_quant import KVQuant, kv_quant_for
from .loader import files_signature
from .options import Options
from .prompt_cache import PromptCachePool
from .prompt_disk import DIR_NAME, DiskPromptCache, store_key
from .speculative import DraftTally, align_caches, speculative_tokens
from .tool_formats import TokenizerMarkup

if TYPE_CHECKING:
    from ..config import Settings

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
    draft: Any = None  # draft model for speculative decoding (same tokenizer), or None
    kv: KVQuant | None = None  # KV-cache quantisation, None = f16

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
    draft_layers: int = 0  # speculative: the cache's model layers (the draft's follow)


class MLXBackend:
    """Loads models and runs token generation with mlx-lm."""

    def __init__(
        self,
        prompt_cache_entries: int = 4,
        *,
        kv_cache_type: str = "f16",
        num_draft_tokens: int = 3,
        prompt_cache_dir: Path | None = None,
        prompt_cache_disk_bytes: int = 0,
        prompt_cache_disk_min_tokens: int = 256,
        cpu_dense_max_params: int | None = None,
    ) -> None:
        self._prompt_cache_entries = prompt_cache_entries
        self._dense_max_params = cpu_dense_max_params  # None: read from the environment
        self._kv_cache_type = kv_cache_type
        self._num_draft_tokens = num_draft_tokens
        self._disk_dir = prompt_cache_dir if prompt_cache_disk_bytes > 0 else None
        self._disk_bytes = prompt_cache_disk_bytes
        self._disk_min_tokens = prompt_cache_disk_min_tokens
        self._lock = threading.Lock()
        self._counts = {"draft_tokens": 0, "draft_accepted": 0}  # not yet taken

    @classmethod
    def from_settings(cls, settings: Settings) -> MLXBackend:
        """A backend configured from the settings (prompt caches, KV type, drafts)."""
        return cls(
            settings.prompt_cache_entries,
            kv_cache_type=settings.kv_cache_type,
            num_draft_tokens=settings.num_draft_tokens,
            prompt_cache_dir=Path(settings.models_dir) / DIR_NAME,
            prompt_cache_disk_bytes=settings.prompt_cache_disk_bytes,
            prompt_cache_disk_min_tokens=settings.prompt_cache_disk_min_tokens,
            cpu_dense_max_params=settings.cpu_dense_max_params,
        )

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
        # Linux CPU mode: small models as dense float32; before the size (/api/ps, budget)
        model = self._densify(model, on_gpu)
        size = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
        pooling = embeddings.read_pooling(path)
        pool = PromptCachePool(model, self._prompt_cache_entries)
        return LoadedModel(
            path, model, tokenizer, size, _context_length(path), on_gpu, None, pooling, pool
        )

    def prepare(
        self, loaded: LoadedModel, *, digest: str = "", draft_path: Path | None = None
    ) -> None:
        """Finish loading a generative model: its draft (when ``draft_path`` names one and
        drafts are on), KV-cache quantisation, and a prompt-cache pool with its disk store.

        Runs right after ``load``, on the loading thread. Never raises: a draft that cannot
        be used is left out with a warning and the model works without it.
        """
        if loaded.encoder is not None:
            return
        draft = None
        if draft_path is not None and self._num_draft_tokens > 0:
            draft = self._load_draft(loaded, draft_path)
        kv = kv_quant_for(self._kv_cache_type, loaded.model, *([draft] if draft else []))
        loaded.draft, loaded.kv = draft, kv
        pool = PromptCachePool(loaded.model, self._prompt_cache_entries, draft_model=draft, kv=kv)
        if pool.enabled and self._disk_dir is not None:
            key = store_key(
                files_signature(loaded.path),
                digest,
                files_signature(draft_path) if draft is not None and draft_path else None,
                kv.cache_type if kv else "f16",
                kv.group_size if kv else 0,
            )
            classes = [type(c).__name__ for c in pool.new_cache()]
            pool.disk = DiskPromptCache(
                self._disk_dir,
                key,
                max_bytes=self._disk_bytes,
                min_tokens=self._disk_min_tokens,
                classes=classes,
            )
        loaded.prompt_cache = pool
        log.info(
            "model ready path=%s draft=%s kv_cache=%s",
            loaded.path.name,
            draft_path if draft is not None else None,
            kv.cache_type if kv else "f16",
        )

    def _load_draft(self, loaded: LoadedModel, path: Path) -> Any:
        """The draft model at ``path`` (its bytes added to ``loaded.size_bytes``), or None."""
        if path.resolve() == loaded.path.resolve():
            draft, size = loaded.model, 0  # its own draft (benchmarks): share the weights
        else:
            try:
                draft, tokenizer = mlx_load(str(path))
            except Exception as exc:  # a broken draft must not break its model
                log.warning("draft model not loaded path=%s error=%s", path, exc)
                return None
            if tokenizer.vocab_size != loaded.tokenizer.vocab_size:
                log.warning("draft model ignored: its tokenizer differs path=%s", path)
                return None
            draft = self._densify(draft, loaded.on_gpu)  # the same weight layout as its model
            size = sum(v.nbytes for _, v in tree_flatten(draft.parameters()))
        if not _speculative_capable(loaded.model) or not _speculative_capable(draft):
            log.warning("draft model ignored: a KV cache cannot be trimmed path=%s", path)
            return None
        loaded.size_bytes += size
        return draft

    def _densify(self, model: Any, on_gpu: bool) -> Any:
        """``model`` made dense float32 where Linux CPU mode applies (``cpu_dense``)."""
        return maybe_densify(model, on_gpu=on_gpu, max_params=self._dense_max_params)

    def take_counts(self) -> dict[str, int]:
        """Speculative-decoding counters of generations finished since the last call:
        ``draft_tokens`` proposed by draft models, ``draft_accepted`` of them kept."""
        with self._lock:
            counts = dict(self._counts)
            for name in self._counts:
                self._counts[name] = 0
        return counts

    def unload(self, loaded: LoadedModel) -> None:
        """Drop a model's buffers and return the memory to the system."""
        loaded.model = None
        loaded.draft = None
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

    def vocab_size(self, loaded: LoadedModel) -> int:
        """How many token ids the model takes: its embedding table's rows when the model
        says, else the tokenizer's vocabulary."""
        args = getattr(loaded.model, "args", None)
        size = getattr(args, "vocab_size", None)
        if not isinstance(size, int):
            size = getattr(getattr(args, "text_config", None), "vocab_size", None)
        if not isinstance(size, int):
            size = len(loaded.tokenizer.get_vocab())
        return size

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
        window = max_kv_size is not None
        if not window and pool is not None and pool.enabled:
            cache, rest = pool.fetch(prompt_tokens)
        elif not window and pool is not None:
            cache, rest = pool.new_cache(), prompt_tokens  # no reuse, but quantized if asked
        else:
            cache, rest = None, prompt_tokens  # rotating window: f16, mlx-lm cannot quantize it
        sampler = make_sampler(options)
        extra = list(extra_processors or [])
        layers = len(loaded.model.layers) if loaded.draft is not None else 0
        if layers and cache is not None and not extra and len(cache) > layers:
            return self._speculate(
                loaded, prompt_tokens, rest, cache, layers, sampler, options, cancel
            )
        if layers and cache is not None:
            # no draft for this one (structured output): the pool holds model+draft caches,
            # so this cache, of the model's layers only, is not offered back
            cache = cache[:layers]
        kv_kwargs = loaded.kv.generate_kwargs() if loaded.kv is not None and not window else {}
        steps = generate_step(
            mx.array(rest),
            loaded.model,
            max_tokens=-1,
            sampler=sampler,
            # generate_step shows processors only the tokens it was given: the uncached rest
            logits_processors=make_processors(options, len(rest))
            + extra,  # structured output's token mask, last
            max_kv_size=max_kv_size,
            prompt_cache=cache,
            prefill_step_size=_PREFILL_STEP,
            prompt_progress_callback=_cancel_check(cancel),
            **kv_kwargs,
        )
        kept = None if layers else cache
        generation = Generation(iter(()), list(prompt_tokens), kept, len(prompt_tokens) - len(rest))
        generation.tokens = _track(steps, generation.fed)
        return generation

    def _speculate(
        self,
        loaded: LoadedModel,
        prompt_tokens: list[int],
        rest: list[int],
        cache: list[Any],
        layers: int,
        sampler: Sampler,
        options: Options,
        cancel: threading.Event | None,
    ) -> Generation:
        """``generate`` with the model's draft (``speculative``)."""
        generation = Generation(
            iter(()),
            list(prompt_tokens),
            cache,
            len(prompt_tokens) - len(rest),
            draft_layers=layers,
        )
        check = _cancel_check(cancel)
        name = loaded.path.name

        def done(tally: DraftTally) -> None:
            with self._lock:
                self._counts["draft_tokens"] += tally.drafted
                self._counts["draft_accepted"] += tally.accepted
            log.info(
                "speculative decoding model=%s generated=%d drafted=%d accepted=%d rate=%.2f",
                name,
                tally.generated,
                tally.drafted,
                tally.accepted,
                tally.rate,
            )

        generation.tokens = speculative_tokens(
            rest,
            loaded.model,
            loaded.draft,
            cache,
            num_draft_tokens=self._num_draft_tokens,
            sampler=sampler,
            # mlx-lm shows processors the last prompt token, then the generated ones
            processors=make_processors(options, 1),
            prefill_step=_PREFILL_STEP,
            check=(lambda: check(0, 0)) if check is not None else (lambda: None),
            fed=generation.fed,
            done=done,
            kv_kwargs=loaded.kv.generate_kwargs() if loaded.kv is not None else None,
        )
        return generation

    def batchable(self, loaded: LoadedModel) -> bool:
        """True if ``loaded`` can decode in a batch lane (``batching``); models that
        generate with a draft model or a quantized KV cache stay on ``generate``."""
        return loaded.encoder is None and loaded.draft is None and loaded.kv is None

    def keep_cache(self, loaded: LoadedModel, generation: Generation) -> bool:
        """Offer a finished generation's KV cache to the model's pool, keyed by exactly the
        tokens it holds. False if it is not reusable or does not match."""
        pool, cache = loaded.prompt_cache, generation.cache
        if pool is None or cache is None:
            return False
        tokens = generation.prompt + generation.fed
        if generation.draft_layers:
            aligned = align_caches(cache, generation.draft_layers, tokens)
            if aligned is None:
                return False
            tokens = aligned
        return pool.insert(tokens, cache, prompt_len=len(generation.prompt))


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


def _speculative_capable(model: Any) -> bool:
    """mlx-lm splits the joint cache at ``len(model.layers)`` and rewinds it by trimming."""
    cache = make_prompt_cache(model)
    return len(cache) == len(model.layers) and can_trim_prompt_cache(cache)


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
