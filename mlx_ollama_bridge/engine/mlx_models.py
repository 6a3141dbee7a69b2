"""Models in memory: loading a model directory with mlx-lm, preparing it (draft model, KV
quantisation, prompt-cache pool) and unloading it.

Runs on the loading thread (``loader``) and the scheduler thread. mlx-lm raises bare
``ValueError`` / ``FileNotFoundError``; they become ``ModelLoadError`` here.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache
from mlx_lm.utils import load as mlx_load

from ..config import DEFAULT_PROMPT_CACHE_ENTRIES
from ..errors import ModelLoadError
from ..model_code import check_model_dir
from . import embeddings
from .cpu_dense import maybe_densify
from .kv_quant import KVQuant, kv_quant_for
from .loader import files_signature
from .prompt_cache import PromptCachePool
from .prompt_disk import DiskPromptCache, store_key
from .vision import VisionParts, is_vision_dir, load_vision_model

log = logging.getLogger(__name__)

# Said explicitly: mlx-lm must not import a config's model_file, and Transformers must refuse
# (not prompt for) a tokenizer's auto_map. model_code.py refuses such models before this.
_NO_REMOTE_CODE: dict[str, Any] = {
    "trust_remote_code": False,
    "tokenizer_config": {"trust_remote_code": False},
}


@dataclass(frozen=True)
class ModelSetup:
    """How models are set up once loaded: the backend's settings for loading."""

    prompt_cache_entries: int = DEFAULT_PROMPT_CACHE_ENTRIES
    kv_cache_type: str = "f16"
    num_draft_tokens: int = 3  # 0: draft models are not loaded
    disk_dir: Path | None = None  # None: no prompt caches on disk
    disk_bytes: int = 0
    disk_min_tokens: int = 256
    dense_max_params: int | None = None  # None: read from the environment


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
    kv_bytes_per_token: int = 0  # measured by kv_memory at first use; 0 = not yet
    vision: VisionParts | None = None  # set for vision-language models (``vision``)

    def is_eos(self, token: int) -> bool:
        """True if ``token`` ends generation for this model."""
        return token in self.tokenizer.eos_token_ids


def load_model(path: Path, setup: ModelSetup) -> LoadedModel:
    """Load the model directory at ``path`` (weights are evaluated eagerly).

    BERT-family encoders go to ``embeddings``; vision-language models to mlx-vlm (``vision``:
    imported then, never for text models); everything else to mlx-lm. A directory
    whose config names custom code is refused first (``model_code``), and mlx-lm is never
    told to trust remote code.
    """
    check_model_dir(path, model=path.name)
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
    if is_vision_dir(path):
        model, tokenizer, parts = load_vision_model(path)
        size = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
        pool = PromptCachePool(model, setup.prompt_cache_entries)
        context = _context_length(path)
        return LoadedModel(
            path, model, tokenizer, size, context, on_gpu, prompt_cache=pool, vision=parts
        )
    try:
        model, tokenizer = mlx_load(str(path), **_NO_REMOTE_CODE)
    except FileNotFoundError as exc:
        raise ModelLoadError(f"model files are missing in {path}: {exc}") from exc
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        raise ModelLoadError(f"failed to load model from {path}: {exc}") from exc
    # Linux CPU mode: small models as dense float32; before the size (/api/ps, budget)
    model = _densify(model, on_gpu, setup)
    size = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    pooling = embeddings.read_pooling(path)
    pool = PromptCachePool(model, setup.prompt_cache_entries)
    return LoadedModel(
        path, model, tokenizer, size, _context_length(path), on_gpu, None, pooling, pool
    )


def prepare_model(
    loaded: LoadedModel, setup: ModelSetup, *, digest: str = "", draft_path: Path | None = None
) -> None:
    """Finish loading a generative model: its draft (when ``draft_path`` names one and
    drafts are on), KV-cache quantisation, and a prompt-cache pool with its disk store.

    Runs right after ``load_model``, on the loading thread. Never raises: a draft that
    cannot be used is left out with a warning and the model works without it.
    """
    if loaded.encoder is not None:
        return
    draft = None
    if draft_path is not None and setup.num_draft_tokens > 0 and loaded.vision is None:
        draft = _load_draft(loaded, draft_path, setup)
    kv = kv_quant_for(setup.kv_cache_type, loaded.model, *([draft] if draft else []))
    loaded.draft, loaded.kv = draft, kv
    pool = PromptCachePool(loaded.model, setup.prompt_cache_entries, draft_model=draft, kv=kv)
    if pool.enabled and setup.disk_dir is not None:
        key = store_key(
            files_signature(loaded.path),
            digest,
            files_signature(draft_path) if draft is not None and draft_path else None,
            kv.cache_type if kv else "f16",
            kv.group_size if kv else 0,
        )
        classes = [type(c).__name__ for c in pool.new_cache()]
        pool.disk = DiskPromptCache(
            setup.disk_dir,
            key,
            max_bytes=setup.disk_bytes,
            min_tokens=setup.disk_min_tokens,
            classes=classes,
        )
    loaded.prompt_cache = pool
    log.info(
        "model ready path=%s draft=%s kv_cache=%s",
        loaded.path.name,
        draft_path if draft is not None else None,
        kv.cache_type if kv else "f16",
    )


def unload_model(loaded: LoadedModel) -> None:
    """Drop a model's buffers and return the memory to the system."""
    loaded.model = None
    loaded.draft = None
    loaded.tokenizer = None
    loaded.encoder = None
    if loaded.vision is not None:
        loaded.vision.images.clear()
        loaded.vision = None
    if loaded.prompt_cache is not None:
        loaded.prompt_cache.clear()
        loaded.prompt_cache = None
    mx.clear_cache()


def _load_draft(loaded: LoadedModel, path: Path, setup: ModelSetup) -> Any:
    """The draft model at ``path`` (its bytes added to ``loaded.size_bytes``), or None."""
    if path.resolve() == loaded.path.resolve():
        draft, size = loaded.model, 0  # its own draft (benchmarks): share the weights
    else:
        try:
            check_model_dir(path, model=path.name)
            draft, tokenizer = mlx_load(str(path), **_NO_REMOTE_CODE)
        except Exception as exc:  # a broken draft must not break its model
            log.warning("draft model not loaded path=%s error=%s", path, exc)
            return None
        if tokenizer.vocab_size != loaded.tokenizer.vocab_size:
            log.warning("draft model ignored: its tokenizer differs path=%s", path)
            return None
        draft = _densify(draft, loaded.on_gpu, setup)  # the same weight layout as its model
        size = sum(v.nbytes for _, v in tree_flatten(draft.parameters()))
    if not _speculative_capable(loaded.model) or not _speculative_capable(draft):
        log.warning("draft model ignored: a KV cache cannot be trimmed path=%s", path)
        return None
    loaded.size_bytes += size
    return draft


def _densify(model: Any, on_gpu: bool, setup: ModelSetup) -> Any:
    """``model`` made dense float32 where Linux CPU mode applies (``cpu_dense``)."""
    return maybe_densify(model, on_gpu=on_gpu, max_params=setup.dense_max_params)


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
