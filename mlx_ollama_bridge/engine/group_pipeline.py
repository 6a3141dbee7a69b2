"""Pipeline parallelism for Llama-style models that mlx-lm does not pipeline itself.

mlx-lm pipelines some families (``models/pipeline.py``: Qwen2/3, DeepSeek, GLM-4 MoE, ...)
and tensor-splits others (``shard``: Llama, Mistral, ...). Tensor parallelism needs the
attention heads to divide evenly by the ranks (SmolLM2-135M has 9 query and 3 KV heads: not
across 2 ranks), and sums partial products in another order than one process. This applies
mlx-lm's own pipeline scheme to a model body of the plain Llama shape (``embed_tokens``,
``layers`` of full attention, ``norm``): rank r keeps a contiguous run of layers (rank 0 the
last ones), takes the hidden state from rank r+1, hands its output to rank r-1, and the last
hidden state is gathered on every rank - the same arithmetic as one process.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
from mlx_lm.models.base import create_attention_mask


def can_pipeline(model: Any) -> bool:
    """True if ``model`` has mlx-lm's pipeline or the plain Llama body this module splits."""
    body = getattr(model, "model", None)
    if body is None:
        return False
    if hasattr(body, "pipeline"):
        return True
    plain = all(hasattr(body, name) for name in ("embed_tokens", "layers", "norm"))
    sliding = any(getattr(layer, "use_sliding", False) for layer in getattr(body, "layers", []))
    return plain and not sliding and type(body).__name__ == "LlamaModel"


def pipeline(model: Any, group: Any) -> None:
    """Split ``model``'s layers across ``group`` (before its weights are evaluated)."""
    body = model.model
    if hasattr(body, "pipeline"):
        body.pipeline(group)
        return
    rank, size = int(group.rank()), int(group.size())
    count = len(body.layers)
    if count < size:
        raise ValueError(f"{count} layers cannot be split across {size} ranks")
    base, extra = divmod(count, size)
    split = [base + (1 if r < extra else 0) for r in range(size)]
    start = sum(split[rank + 1 :])  # rank r runs after ranks r+1 ... size-1, as mlx-lm's
    body.layers = body.layers[start : start + split[rank]]
    body.pipeline_rank, body.pipeline_size, body.pipeline_group = rank, size, group
    body.__class__ = _pipelined(type(body))


_CLASSES: dict[type, type] = {}


def _pipelined(cls: type) -> type:
    """``cls`` with a pipelined ``__call__`` (one subclass per model class)."""
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"Pipelined{cls.__name__}", (cls,), {"__call__": _forward})
    return _CLASSES[cls]


def _forward(self: Any, inputs: mx.array, cache: Any = None, input_embeddings: Any = None):
    """The body's forward pass on this rank's layers, as mlx-lm's pipelined models run it."""
    h = input_embeddings if input_embeddings is not None else self.embed_tokens(inputs)
    rank, size, group = self.pipeline_rank, self.pipeline_size, self.pipeline_group
    if cache is None:
        cache = [None] * len(self.layers)
    mask = create_attention_mask(h, cache[0])
    if rank < size - 1:  # the earlier layers ran on the next rank
        h = mx.distributed.recv_like(h, rank + 1, group=group)
    for layer, layer_cache in zip(self.layers, cache, strict=True):
        h = layer(h, mask, cache=layer_cache)
    if rank != 0:
        h = mx.distributed.send(h, (rank - 1) % size, group=group)
        if cache[-1] is not None:  # the cache update must not be scheduled before the send
            cache[-1].keys = mx.depends(cache[-1].keys, h)
    h = mx.distributed.all_gather(h, group=group)[: h.shape[0]]
    return self.norm(h)


__all__ = ["can_pipeline", "pipeline"]
