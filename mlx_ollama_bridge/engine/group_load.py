"""Loading one model as shards across the ranks of a distributed group.

The steps of mlx-lm's ``sharded_load`` on a model directory that is already local (the store
holds every file, so nothing is downloaded): the model is built lazily, split, and only then
evaluated, so each rank reads and keeps only its part. How it is split is chosen per model
(``sharding_of``): pipeline parallel where mlx-lm's model has ``model.pipeline`` (Qwen2/3,
DeepSeek, GLM-4 MoE, ...) or is a plain Llama body (``group_pipeline``): each rank holds a
contiguous run of layers, the same arithmetic as one process; else tensor parallel where it
has ``shard`` and its heads divide by the ranks (Mistral, Gemma, ...): each rank holds a
slice of every matrix and the partial sums meet in an ``all_sum``. Linux CPU
mode's dense float32 (``cpu_dense``) is decided by rank 0 and applied by all before the split.

Every rank runs ``load_shard`` at the same time (rank 0 broadcasts the command first); a
failure on any rank fails the load on all of them, so no rank keeps a model the others lack.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlx.core as mx
import psutil
from mlx.utils import tree_flatten
from mlx_lm.utils import load_model, load_tokenizer

from ..errors import ModelLoadError
from ..model_code import check_model_dir
from .cpu_dense import (
    configured_max_params,
    dense_decision,
    densify,
    is_quantized,
    openblas_in_use,
    parameter_count,
)
from .group_channel import Channel
from .group_pipeline import can_pipeline, pipeline
from .mlx_models import LoadedModel, ModelSetup, _context_length
from .prompt_cache import PromptCachePool

log = logging.getLogger(__name__)

SHARDINGS = ("auto", "pipeline", "tensor")


def sharding_of(model: Any, ranks: int, wanted: str = "auto") -> str:
    """``pipeline`` or ``tensor``: how ``model`` is split across ``ranks`` (``wanted`` if
    the model allows it); ModelLoadError if it can be split neither way."""
    pipeline = can_pipeline(model) and len(model.layers) >= ranks
    tensor = hasattr(model, "shard") and _heads_divide(model, ranks)
    if wanted == "pipeline" and pipeline or wanted == "tensor" and tensor:
        return wanted
    if pipeline:  # same arithmetic as one process, and one activation per step on the wire
        return "pipeline"
    if tensor:
        return "tensor"
    raise ModelLoadError(
        f"this model ({type(model).__module__.rsplit('.', 1)[-1]}) cannot be split across "
        f"{ranks} ranks: no pipeline parallelism, and no tensor parallelism for this many "
        "ranks (its attention heads must divide evenly); serve it without --hostfile"
    )


def _heads_divide(model: Any, ranks: int) -> bool:
    """Tensor parallelism splits every layer's query and KV heads evenly across the ranks."""
    args = getattr(model, "args", None)
    heads = getattr(args, "num_attention_heads", None)
    kv_heads = getattr(args, "num_key_value_heads", None) or heads
    if not isinstance(heads, int) or not isinstance(kv_heads, int):
        return True  # not a shape this check knows: mlx-lm's shard decides
    return heads % ranks == 0 and kv_heads % ranks == 0


def load_shard(channel: Channel, path: Path, setup: ModelSetup, wanted: str) -> LoadedModel:
    """This rank's part of the model at ``path`` (every rank calls it together). The
    returned ``size_bytes`` is the whole group's: every rank's shard added up."""
    model = tokenizer = None
    error = ""
    dense = 0
    try:
        check_model_dir(path, model=path.name)
        model, config = load_model(path, lazy=True, trust_remote_code=False)
        tokenizer = load_tokenizer(
            path, {"trust_remote_code": False}, eos_token_ids=config.get("eos_token_id")
        )
        if channel.rank == 0 and is_quantized(model):
            dense = 1 if _dense_wanted(model, setup) else 0
    except Exception as exc:  # every rank still takes part in the vote below
        error = str(exc) or type(exc).__name__
    (ok_all, dense_all) = _vote(channel, [0 if error else 1, dense])
    if min(ok_all) == 0:
        raise ModelLoadError(_failure(path, error, ok_all))
    mode = ""
    try:
        mode = sharding_of(model, channel.size, wanted)
        # a Llama body is cut first, so only this rank's layers are made dense; mlx-lm's own
        # pipelines leave None in place of the other layers, and a quantized matrix cannot
        # be cut across its quantization groups: those are made dense first
        cut_first = mode == "pipeline" and not hasattr(model.model, "pipeline")
        if cut_first:
            pipeline(model, channel.group)
        if dense_all[0]:
            model = densify(model)
        if mode == "tensor":
            model.shard(channel.group)
        elif not cut_first:
            pipeline(model, channel.group)
        mx.eval(model.parameters())
    except Exception as exc:
        error = str(exc) or type(exc).__name__
    size = sum(v.nbytes for _, v in tree_flatten(model.parameters())) if model else 0
    (ok_all, sizes) = _vote(channel, [0 if error else 1, size])
    if min(ok_all) == 0:
        raise ModelLoadError(_failure(path, error, ok_all))
    log.info(
        "group load model=%s sharding=%s rank=%d bytes=%d", path.name, mode, channel.rank, size
    )
    pool = PromptCachePool(model, setup.prompt_cache_entries)
    loaded = LoadedModel(path, model, tokenizer, sum(sizes), _context_length(path), False)
    loaded.prompt_cache = pool
    loaded.sharding = mode  # type: ignore[attr-defined]  # shown by /api/ps and diagnostics
    loaded.rank_bytes = sizes  # type: ignore[attr-defined]
    return loaded


def _dense_wanted(model: Any, setup: ModelSetup) -> bool:
    """Rank 0's Linux CPU mode decision for the whole model (``cpu_dense.dense_decision``)."""
    max_params = setup.dense_max_params
    if max_params is None:
        max_params = configured_max_params()
    reason = dense_decision(
        parameter_count(model),
        on_cpu=mx.default_device().type == mx.DeviceType.cpu,
        quantized=True,
        max_params=max_params,
        openblas=openblas_in_use(),
        available_bytes=int(psutil.virtual_memory().available),
    )
    return reason is None


def memory_report(channel: Channel) -> list[dict[str, int]]:
    """Every rank's memory, in rank order: RAM total and available, this process's RSS."""
    vm = psutil.virtual_memory()
    rss = psutil.Process().memory_info().rss
    rows = channel.gather_ints([int(vm.total), int(vm.available), int(rss)])
    return [{"total_bytes": t, "available_bytes": a, "rss_bytes": r} for t, a, r in rows]


def _vote(channel: Channel, values: list[int]) -> list[list[int]]:
    """Each of ``values`` as every rank has it (a column per value)."""
    rows = channel.gather_ints(values)
    return [list(column) for column in zip(*rows, strict=True)]


def _failure(path: Path, error: str, ok: list[int]) -> str:
    failed = [rank for rank, flag in enumerate(ok) if not flag]
    where = ", ".join(f"rank {r}" for r in failed)
    detail = f": {error}" if error else ""
    return f"failed to load model from {path} on {where}{detail}"


__all__ = ["SHARDINGS", "load_shard", "memory_report", "sharding_of"]
