"""The MLX backend: the ``interface.Backend`` the scheduler loads, starts and steps models with.

One method per thing the engine asks of a model; the work lives in one module per job:
``mlx_models`` (load, prepare with draft / KV quantisation / prompt caches, unload),
``prompts`` (chat templates, tokenizing, markup), ``generation`` (``generate_step`` and the
speculative loop, KV-cache reuse), ``sampling`` (sampler and penalties) and ``batching`` (a
model's batch lane, kept here per loaded model). Jobs (``jobs``, ``embed_job``) call back
into the prompt and generation methods. Everything here runs on the engine's scheduler
thread or its loading thread.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import DEFAULT_PROMPT_CACHE_ENTRIES
from ..errors import BadRequest
from . import embeddings, generation, mlx_models, prompt_cache, prompt_lookup, prompts
from .batching import BatchLane
from .generation import PREFILL_STEP, Generation
from .interface import Job, Stepped, StepResult
from .jobs import GenerationJob
from .mlx_models import LoadedModel, ModelSetup
from .options import Options
from .prompt_disk import DIR_NAME
from .prompt_lookup import LookupTally
from .sampling import LogitsProcessor
from .speculative import DraftTally

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)

__all__ = ["Generation", "LoadedModel", "MLXBackend"]


class MLXBackend:
    """Loads models and runs token generation with mlx-lm."""

    def __init__(
        self,
        prompt_cache_entries: int = DEFAULT_PROMPT_CACHE_ENTRIES,
        *,
        kv_cache_type: str = "f16",
        num_draft_tokens: int = 3,
        prompt_lookup_tokens: int = 0,
        prompt_cache_dir: Path | None = None,
        prompt_cache_disk_bytes: int = 0,
        prompt_cache_disk_min_tokens: int = 256,
        cpu_dense_max_params: int | None = None,
    ) -> None:
        self._setup = ModelSetup(
            prompt_cache_entries=prompt_cache_entries,
            kv_cache_type=kv_cache_type,
            num_draft_tokens=num_draft_tokens,
            disk_dir=prompt_cache_dir if prompt_cache_disk_bytes > 0 else None,
            disk_bytes=prompt_cache_disk_bytes,
            disk_min_tokens=prompt_cache_disk_min_tokens,
            dense_max_params=cpu_dense_max_params,
        )
        self._lock = threading.Lock()
        self._lookup = prompt_lookup_tokens
        # not yet taken: draft models' proposals, and prompt lookup's (``prompt_lookup``)
        self._counts = {"draft_tokens": 0, "draft_accepted": 0, "lookup_tokens": 0}
        self._counts |= {"lookup_accepted": 0, "image_encodes": 0}
        self._lanes: dict[int, BatchLane] = {}  # id(loaded model) -> its batch lane

    @classmethod
    def from_settings(cls, settings: Settings) -> MLXBackend:
        """A backend configured from the settings (prompt caches, KV type, drafts)."""
        return cls(
            settings.prompt_cache_entries,
            kv_cache_type=settings.kv_cache_type,
            num_draft_tokens=settings.num_draft_tokens,
            prompt_lookup_tokens=settings.prompt_lookup_tokens,
            prompt_cache_dir=Path(settings.models_dir) / DIR_NAME,
            prompt_cache_disk_bytes=settings.prompt_cache_disk_bytes,
            prompt_cache_disk_min_tokens=settings.prompt_cache_disk_min_tokens,
            cpu_dense_max_params=settings.cpu_dense_max_params,
        )

    # -- loading (mlx_models) --

    def load(self, path: Path) -> LoadedModel:
        """Load the model directory at ``path`` (weights are evaluated eagerly); a vision
        model's image encodes are counted here (``take_counts``)."""
        loaded = mlx_models.load_model(path, self._setup)
        if loaded.vision is not None:
            loaded.vision.images.on_encode = self._image_encoded
        return loaded

    def _image_encoded(self) -> None:
        with self._lock:
            self._counts["image_encodes"] += 1

    def prepare(
        self, loaded: LoadedModel, *, digest: str = "", draft_path: Path | None = None
    ) -> None:
        """Finish loading a generative model: draft, KV quantisation, prompt caches.
        Never raises (a draft that cannot be used is left out)."""
        mlx_models.prepare_model(loaded, self._setup, digest=digest, draft_path=draft_path)

    def unload(self, loaded: LoadedModel) -> None:
        """Drop a model's batch lane and buffers and return the memory to the system."""
        self._drop_lane(loaded)  # the lane holds the model: drop it first
        mlx_models.unload_model(loaded)

    # -- jobs: admission and stepping (jobs, embed_job, batching) --

    def start(self, job: Job, loaded: LoadedModel, context_length: int, *, parallel: int) -> None:
        """Build the job's prompt and join the model's batch lane (at most ``parallel``
        sequences decode together), or start it alone; raises BadRequest on bad input."""
        if isinstance(job, GenerationJob):
            job.start(self, loaded, context_length, self._lane(loaded, parallel))
        else:
            job.start(self, loaded, context_length)

    def step(self, loaded: LoadedModel, jobs: list[Job]) -> StepResult:
        """One batched step for the model's lane, each member taking its token, then one
        token for every job that runs alone. Never raises: errors are reported per job."""
        result = StepResult()
        in_lane = [j for j in jobs if isinstance(j, GenerationJob) and j.slot is not None]
        lane = self._lanes.get(id(loaded))
        if lane is not None and len(lane):
            try:
                tokens = lane.step()
            except Exception as exc:  # the batch's state is unknown now: end its members
                log.exception("batched generation failed model=%s", loaded.path.name)
                result.stepped += [Stepped(job, error=exc) for job in in_lane]
                self._drop_lane(loaded)
            else:
                result.batched = len(tokens)
                for job in in_lane:
                    slot = job.slot
                    if slot is not None and slot.uid in tokens:
                        token = tokens[slot.uid]
                        result.stepped.append(_advance(job, lambda j=job, t=token: j.accept(t)))
        for job in jobs:
            if job not in in_lane:
                result.stepped.append(_advance(job, job.step))
        return result

    def _lane(self, loaded: LoadedModel, width: int) -> BatchLane | None:
        """The model's batch lane, created at first use (None for embedding-only models)."""
        if loaded.encoder is not None:
            return None
        lane = self._lanes.get(id(loaded))
        if lane is None:
            lane = BatchLane(loaded, width, PREFILL_STEP)
            self._lanes[id(loaded)] = lane
        return lane

    def _drop_lane(self, loaded: LoadedModel) -> None:
        lane = self._lanes.pop(id(loaded), None)
        if lane is not None:
            lane.close()

    # -- prompts (prompts) --
    # Stateless: the backend exposes the module's functions themselves, called as methods
    # (``backend.encode(loaded, text, add_special_tokens=False)``), rather than restating
    # each signature only to forward it.

    render_chat = staticmethod(prompts.render_chat)
    output_markup = staticmethod(prompts.output_markup)
    vocab_size = staticmethod(prompts.vocab_size)
    encode = staticmethod(prompts.encode)
    encode_raw = staticmethod(prompts.encode_raw)
    detokenizer = staticmethod(prompts.detokenizer)

    # -- generation (generation, sampling, speculative) --

    def generate(
        self,
        loaded: LoadedModel,
        prompt_tokens: list[int],
        options: Options,
        *,
        cancel: threading.Event | None = None,
        extra_processors: list[LogitsProcessor] | None = None,
        first_processors: list[LogitsProcessor] | None = None,
        prompt_lookup: bool = False,
    ) -> Generation:
        """Start generating after ``prompt_tokens``; the tokens never end (the caller stops).
        See ``generation.start_generation``."""
        return generation.start_generation(
            loaded,
            prompt_tokens,
            options,
            cancel=cancel,
            extra_processors=extra_processors,
            first_processors=first_processors,
            num_draft_tokens=self._setup.num_draft_tokens,
            on_draft_done=self._draft_done(loaded.path.name),
            prompt_lookup=self._lookup if prompt_lookup else 0,
            on_lookup_done=self._lookup_done(loaded.path.name),
        )

    def batchable(self, loaded: LoadedModel) -> bool:
        """True if ``loaded`` can decode in a batch lane (``batching``)."""
        return generation.batchable(loaded)

    def keep_cache(self, loaded: LoadedModel, gen: Generation) -> bool:
        """Offer a finished generation's KV cache to the model's pool."""
        return generation.keep_cache(loaded, gen)

    def kv_bytes_per_token(self, loaded: LoadedModel) -> int:
        """Bytes one token takes in the model's KV cache (``prompt_cache``), for the budget;
        0 for an encoder, which keeps none (and runs one request at a time)."""
        if loaded.encoder is not None:
            return 0
        return prompt_cache.kv_bytes_per_token(loaded)

    def uses_prompt_lookup(
        self,
        loaded: LoadedModel,
        options: Options,
        prompt_len: int,
        *,
        constrained: bool,
        alone: bool,
    ) -> bool:
        """True if this request should decode with prompt lookup (``prompt_lookup.worth_it``)."""
        return self._lookup > 0 and prompt_lookup.worth_it(
            greedy=options.temperature <= 0,
            constrained=constrained,
            has_draft=loaded.draft is not None,
            prompt_len=prompt_len,
            alone=alone,
        )

    def take_counts(self) -> dict[str, int]:
        """Counters of generations finished since the last call: ``draft_tokens`` proposed
        by draft models, ``draft_accepted`` of them kept (prompt lookup's likewise), and
        ``image_encodes``, vision-tower runs."""
        with self._lock:
            counts = dict(self._counts)
            for name in self._counts:
                self._counts[name] = 0
        return counts

    def _lookup_done(self, name: str) -> Any:
        def done(tally: LookupTally) -> None:
            with self._lock:
                self._counts["lookup_tokens"] += tally.drafted
                self._counts["lookup_accepted"] += tally.accepted
            log.info(
                "prompt lookup model=%s generated=%d rounds=%d drafted=%d accepted=%d",
                name,
                tally.generated,
                tally.rounds,
                tally.drafted,
                tally.accepted,
            )

        return done

    def _draft_done(self, name: str) -> Any:
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

        return done

    # -- embeddings (embeddings) --

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


def _advance(job: Job, advance: Any) -> Stepped:
    """Run one step of ``job``; an exception becomes the job's error (the others go on)."""
    try:
        return Stepped(job, advance())
    except Exception as exc:
        return Stepped(job, error=exc)
