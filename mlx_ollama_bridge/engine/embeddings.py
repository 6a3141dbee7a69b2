"""Sentence embeddings on MLX: a small BERT encoder and the pooling sentence-transformers does.

Embedding models (all-MiniLM-L6-v2, bge, e5 …) are BERT-family encoders that mlx-lm does not
load. This module holds the encoder (``BertModel``, weight names as in Hugging Face's
``BertModel`` so a safetensors file loads as is), its tokenizer (``tokenizers``, from
``tokenizer.json``) and pooling read from sentence-transformers' ``modules.json`` /
``1_Pooling/config.json``: mean, CLS or last token, then L2 normalisation if a ``Normalize``
module is listed. Decoder LLMs reuse the pooling on mlx-lm's last hidden states.

Like ``backend``, this runs on the scheduler thread only.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from tokenizers import Tokenizer

from ..errors import BadRequest, ModelLoadError

log = logging.getLogger(__name__)

ENCODER_TYPES = ("bert", "roberta", "xlm-roberta")  # config.json model_type values we run
_ROBERTA_TYPES = ("roberta", "xlm-roberta")  # positions start after the padding index
_ACTIVATIONS = {"gelu": nn.gelu, "gelu_new": nn.gelu_approx, "gelu_pytorch_tanh": nn.gelu_approx}
_POOLING_KEYS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_lasttoken": "last",
}
_DROPPED_WEIGHTS = ("pooler.", "embeddings.position_ids", "cls.", "lm_head.")
TOO_LONG = "the input length exceeds the context length"


@dataclass(frozen=True)
class Pooling:
    """How token states become one vector: ``mean``, ``cls`` or ``last``; then normalise?"""

    mode: str = "mean"
    normalize: bool = False


@dataclass(frozen=True)
class BertConfig:
    """The config.json fields the encoder needs."""

    model_type: str
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    pad_token_id: int = 0

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> BertConfig:
        """Read a Hugging Face BERT/RoBERTa config; raises ModelLoadError if unsupported."""
        model_type = str(config.get("model_type", ""))
        if model_type not in ENCODER_TYPES:
            raise ModelLoadError(
                f"unsupported embedding architecture {model_type!r}; "
                f"supported: {', '.join(ENCODER_TYPES)}"
            )
        names = [f for f in cls.__dataclass_fields__ if f != "model_type"]
        values = {k: config[k] for k in names if config.get(k) is not None}
        try:
            return cls(model_type=model_type, **values)
        except TypeError as exc:
            raise ModelLoadError(f"incomplete encoder config.json: {exc}") from exc


# -- the encoder (attribute names follow Hugging Face's BertModel) ----------------------------


class BertEmbeddings(nn.Module):
    """Token + position + token-type embeddings, then LayerNorm."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        # RoBERTa numbers positions from padding_idx + 1 (HF create_position_ids_from_input_ids)
        roberta = config.model_type in _ROBERTA_TYPES
        self._offset = config.pad_token_id + 1 if roberta else 0

    def __call__(self, input_ids: mx.array) -> mx.array:
        positions = mx.arange(input_ids.shape[1]) + self._offset
        token_types = mx.zeros_like(input_ids)
        hidden = self.word_embeddings(input_ids) + self.position_embeddings(positions)[None]
        return self.LayerNorm(hidden + self.token_type_embeddings(token_types))


class BertSelfAttention(nn.Module):
    """Multi-head self-attention projections (``query``/``key``/``value``)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.heads = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        batch, length, width = x.shape

        def split(t: mx.array) -> mx.array:
            return t.reshape(batch, length, self.heads, -1).transpose(0, 2, 1, 3)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scale = 1.0 / math.sqrt(q.shape[-1])
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
        return out.transpose(0, 2, 1, 3).reshape(batch, length, width)


class BertDenseNorm(nn.Module):
    """``dense`` projection, residual add, ``LayerNorm`` (BertSelfOutput and BertOutput)."""

    def __init__(self, dims_in: int, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(dims_in, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def __call__(self, x: mx.array, residual: mx.array) -> mx.array:
        return self.LayerNorm(self.dense(x) + residual)


class BertAttention(nn.Module):
    """Attention block: ``self`` (the projections, HF's name) and ``output``."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        setattr(self, "self", BertSelfAttention(config))  # noqa: B010 - HF weight name
        self.output = BertDenseNorm(config.hidden_size, config)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        return self.output(self["self"](x, mask), x)


class BertIntermediate(nn.Module):
    """The feed-forward expansion with its activation."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self._act = _ACTIVATIONS.get(config.hidden_act, nn.gelu)

    def __call__(self, x: mx.array) -> mx.array:
        return self._act(self.dense(x))


class BertLayer(nn.Module):
    """One transformer encoder layer (post-LayerNorm, as BERT)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertDenseNorm(config.intermediate_size, config)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        attended = self.attention(x, mask)
        return self.output(self.intermediate(attended), attended)


class BertEncoder(nn.Module):
    """The stack of layers (``encoder.layer.N``)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.layer = [BertLayer(config) for _ in range(config.num_hidden_layers)]


class BertModel(nn.Module):
    """A BERT/RoBERTa encoder returning the last hidden states, ``(batch, length, hidden)``."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)

    def __call__(self, input_ids: mx.array, attention_mask: mx.array) -> mx.array:
        hidden = self.embeddings(input_ids)
        # additive mask: 0 for real tokens, a large negative number for padding
        mask = (1.0 - attention_mask[:, None, None, :].astype(hidden.dtype)) * -1e9
        mask = mask.astype(hidden.dtype)
        for layer in self.encoder.layer:
            hidden = layer(hidden, mask)
        return hidden


# -- loading ----------------------------------------------------------------------------------


@dataclass
class Encoder:
    """A loaded embedding encoder: model, tokenizer, longest input, pooling."""

    model: BertModel
    tokenizer: Tokenizer
    max_length: int  # tokens, special tokens included
    pooling: Pooling

    @property
    def size_bytes(self) -> int:
        """Bytes of parameters."""
        from mlx.utils import tree_flatten

        return sum(v.nbytes for _, v in tree_flatten(self.model.parameters()))


def is_encoder_dir(path: Path) -> bool:
    """True if ``path`` holds a BERT-family encoder this module runs (by config.json)."""
    return str(_read_json(path / "config.json").get("model_type", "")) in ENCODER_TYPES


def load_encoder(path: Path) -> Encoder:
    """Load an encoder directory: config.json, *.safetensors, tokenizer.json (or vocab.txt)."""
    config = BertConfig.from_dict(_read_json(path / "config.json"))
    model = BertModel(config)
    try:
        model.load_weights(_read_weights(path), strict=True)
    except ValueError as exc:  # missing, extra or mis-shaped tensors
        raise ModelLoadError(f"weights in {path} do not match its config.json: {exc}") from exc
    mx.eval(model.parameters())
    model.eval()
    tokenizer = _load_tokenizer(path)
    return Encoder(model, tokenizer, _max_length(path, config), read_pooling(path))


def _read_weights(path: Path) -> list[tuple[str, mx.array]]:
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"no *.safetensors weights in {path}")
    weights: dict[str, mx.array] = {}
    for file in files:
        try:
            weights.update(mx.load(str(file)))
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(
                f"model file {file.name} is corrupt or truncated ({exc}); pull the model again"
            ) from exc
    renamed = {}
    for name, value in weights.items():
        for prefix in ("bert.", "roberta.", "model."):  # task heads save the encoder under these
            name = name.removeprefix(prefix)
        if not name.startswith(_DROPPED_WEIGHTS):
            renamed[name] = value
    return list(renamed.items())


def _load_tokenizer(path: Path) -> Tokenizer:
    if (path / "tokenizer.json").is_file():
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    elif (path / "vocab.txt").is_file():
        from tokenizers.implementations import BertWordPieceTokenizer

        lower = _read_json(path / "tokenizer_config.json").get("do_lower_case", True)
        tokenizer = BertWordPieceTokenizer(str(path / "vocab.txt"), lowercase=bool(lower))
    else:
        raise ModelLoadError(f"no tokenizer.json or vocab.txt in {path}")
    tokenizer.no_padding()  # the file may ask for fixed padding; batches are padded here
    tokenizer.no_truncation()
    return tokenizer


def _max_length(path: Path, config: BertConfig) -> int:
    """sentence-transformers' ``max_seq_length`` if given, capped at the position table."""
    limit = config.max_position_embeddings - (config.pad_token_id + 1) * (
        config.model_type in _ROBERTA_TYPES
    )
    for name, key in (("sentence_bert_config.json", "max_seq_length"),):
        value = _read_json(path / name).get(key)
        if isinstance(value, int) and 0 < value < limit:
            return value
    return limit


def read_pooling(path: Path) -> Pooling:
    """Pooling from sentence-transformers' modules.json; mean without normalisation otherwise."""
    modules = _read_json(path / "modules.json", default=[])
    if not isinstance(modules, list):
        return Pooling()
    types = [str(m.get("type", "")) for m in modules if isinstance(m, dict)]
    normalize = any(t.endswith(".Normalize") for t in types)
    mode = "mean"
    for module in modules:
        if isinstance(module, dict) and str(module.get("type", "")).endswith(".Pooling"):
            config = _read_json(path / str(module.get("path") or "1_Pooling") / "config.json")
            mode = next((m for k, m in _POOLING_KEYS.items() if config.get(k)), "mean")
    return Pooling(mode, normalize)


# -- running ----------------------------------------------------------------------------------


def tokenize(encoder: Encoder, text: str, limit: int, *, truncate: bool) -> list[int]:
    """Token ids of ``text`` with special tokens, at most ``limit`` long.

    Over-long input is truncated as the Hugging Face tokenizer does (the closing special
    token is kept), or refused with Ollama's message when ``truncate`` is false.
    """
    limit = max(min(limit, encoder.max_length), 2)
    ids = encoder.tokenizer.encode(text).ids
    if len(ids) <= limit:
        return ids
    if not truncate:
        raise BadRequest(TOO_LONG)
    encoder.tokenizer.enable_truncation(limit)
    try:
        return encoder.tokenizer.encode(text).ids
    finally:
        encoder.tokenizer.no_truncation()


def encode_batch(encoder: Encoder, batch: list[list[int]]) -> list[list[float]]:
    """Pooled vectors (float32 values) for token-id lists, padded to the longest one."""
    width = max(len(ids) for ids in batch)
    ids = mx.array([seq + [0] * (width - len(seq)) for seq in batch])
    mask = mx.array([[1] * len(seq) + [0] * (width - len(seq)) for seq in batch])
    hidden = encoder.model(ids, mask)
    pooled = pool(hidden, mask, encoder.pooling)
    mx.eval(pooled)
    return pooled.tolist()


def pool(hidden: mx.array, mask: mx.array, pooling: Pooling) -> mx.array:
    """``(batch, length, dims)`` states -> ``(batch, dims)`` float32 vectors."""
    hidden = hidden.astype(mx.float32)
    weights = mask.astype(mx.float32)[..., None]
    if pooling.mode == "cls":
        vectors = hidden[:, 0, :]
    elif pooling.mode == "last":
        last = mask.astype(mx.int32).sum(axis=1) - 1
        vectors = mx.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0, :]
    else:
        vectors = (hidden * weights).sum(axis=1) / mx.maximum(weights.sum(axis=1), 1e-9)
    if pooling.normalize:
        vectors = vectors / mx.maximum(mx.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
    return vectors


def pool_decoder_states(model: Any, ids: list[int], pooling: Pooling) -> list[float]:
    """One embedding from an mlx-lm model's last hidden states (its ``model.model`` body)."""
    body = getattr(model, "model", None)
    if body is None or not callable(body):
        raise BadRequest("this model does not support embeddings", status_code=501)
    hidden = body(mx.array(ids)[None])
    vector = pool(hidden, mx.ones((1, len(ids))), pooling)
    mx.eval(vector)
    return vector[0].tolist()


def _read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {} if default is None else default
    except (OSError, ValueError) as exc:
        log.warning("unreadable json file=%s error=%s", path, exc)
        return {} if default is None else default


__all__ = [
    "ENCODER_TYPES",
    "TOO_LONG",
    "BertConfig",
    "BertModel",
    "Encoder",
    "Pooling",
    "encode_batch",
    "is_encoder_dir",
    "load_encoder",
    "pool",
    "pool_decoder_states",
    "read_pooling",
    "tokenize",
]
