"""A GGUF file's vocabulary as Hugging Face tokenizer files (``tokenizer.json`` and configs).

A GGUF carries no ``tokenizer.json``: llama.cpp stores the vocabulary, the merges, the token
types and the special ids as ``tokenizer.ggml.*`` metadata. Byte-level BPE vocabularies whose
pre-tokenizer is known here are rebuilt directly; SentencePiece vocabularies (Mistral,
Gemma, Phi-3: ``tokenizer.ggml.model = llama``) and the other byte-level pre-tokenizers
(Qwen 2/3's ``qwen2``, Mistral's ``tekken``, …) go through transformers' GGUF tokenizer
converter, which knows each family's quirks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from ..errors import BadRequest

__all__ = ["check_tokenizer", "eos_token_ids", "write_tokenizer"]

# tokenizer.ggml.pre values per pre-tokenizer family (as grouped in llama.cpp's llama-vocab.cpp)
_GPT2_PRE = ("default", "gpt2", "gpt-2")
_DIGIT_GPT2_PRE = ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva")
_LLAMA3_PRE = ("llama3", "llama-bpe", "smaug-bpe", "falcon3", "dbrx")
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_EOS_KEYS = tuple(f"tokenizer.ggml.{k}_token_id" for k in ("eos", "eot", "eom"))
_CONTROL, _USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values
_SENTENCEPIECE = "llama"  # tokenizer.ggml.model of SentencePiece vocabularies


def _transformers_splits() -> dict[str, str]:
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    return GGUF_PRE_TOKENIZER_SPLITS


def _ours(meta: dict[str, Any]) -> bool:
    """Whether the byte-level BPE builder here handles this vocabulary (else transformers')."""
    pre = meta.get("tokenizer.ggml.pre", "default")
    return meta.get("tokenizer.ggml.model") == "gpt2" and pre in (
        _GPT2_PRE + _DIGIT_GPT2_PRE + _LLAMA3_PRE
    )


def check_tokenizer(meta: dict[str, Any]) -> None:
    """Raise :class:`BadRequest` unless this file's vocabulary can be rebuilt."""
    model = meta.get("tokenizer.ggml.model")
    if model not in ("gpt2", _SENTENCEPIECE):
        raise BadRequest(
            f"unsupported GGUF tokenizer {model!r}: only gpt2 (byte-level BPE) and llama "
            "(SentencePiece)"
        )
    pre = meta.get("tokenizer.ggml.pre", "default")
    if model == "gpt2" and not _ours(meta) and pre not in _transformers_splits():
        supported = sorted({*_GPT2_PRE, *_DIGIT_GPT2_PRE, *_LLAMA3_PRE, *_transformers_splits()})
        raise BadRequest(
            f"unsupported GGUF pre-tokenizer {pre!r} (supported: {', '.join(supported)})"
        )


def eos_token_ids(meta: dict[str, Any]) -> list[int]:
    """eos plus end-of-turn ids, so generation stops at the end of a chat turn."""
    return list(dict.fromkeys(meta[k] for k in _EOS_KEYS if meta.get(k) is not None))


def _pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
    """The Hugging Face equivalent of llama.cpp's pre-tokenizer ``pre``."""
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in _GPT2_PRE:
        return byte_level
    if pre in _DIGIT_GPT2_PRE:  # digits are split one by one before the GPT-2 regex
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    split = pre_tokenizers.Split(Regex(_LLAMA3_REGEX), behavior="isolated", invert=False)
    no_regex = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    return pre_tokenizers.Sequence([split, no_regex])


def _byte_level_bpe(meta: dict[str, Any]) -> Tokenizer:
    """A byte-level BPE ``tokenizers.Tokenizer`` from the GGUF vocabulary and merges."""
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    types: list[int] = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    vocab = {token: index for index, token in reversed(list(enumerate(tokens)))}  # first id wins
    merges = [tuple(merge.split(" ", 1)) for merge in meta.get("tokenizer.ggml.merges", [])]
    pre = meta.get("tokenizer.ggml.pre", "default")
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=pre in _LLAMA3_PRE))
    tokenizer.pre_tokenizer = _pre_tokenizer(pre)
    tokenizer.decoder = decoders.ByteLevel()
    # Control tokens must never be split, merged into neighbours, or shown when decoding.
    kinds = dict(zip(tokens, types, strict=False))
    control = [t for t, k in kinds.items() if k == _CONTROL]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    user = [t for t, k in kinds.items() if k == _USER_DEFINED]
    tokenizer.add_tokens([AddedToken(t, normalized=False) for t in user])
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def _converted(meta: dict[str, Any]) -> Tokenizer:
    """transformers' GGUF tokenizer converter, fed from the metadata read (and bounded) here."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        GGUF_TOKENIZER_MAPPING,
        convert_gguf_tokenizer,
    )

    renames = GGUF_TOKENIZER_MAPPING["tokenizer"]
    wanted = {
        name: meta[f"tokenizer.{key}"]
        for key, name in renames.items()
        if f"tokenizer.{key}" in meta
    }
    try:
        tokenizer, _ = convert_gguf_tokenizer(meta["general.architecture"], wanted)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise BadRequest(f"cannot rebuild the GGUF tokenizer: {exc}") from exc
    if meta.get("tokenizer.ggml.model") == "gpt2":
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def _adds_bos(meta: dict[str, Any]) -> bool:
    """Whether encoding prepends BOS; llama.cpp's default is on for SentencePiece vocabularies
    and the Llama 3 family."""
    default = (
        meta.get("tokenizer.ggml.model") == _SENTENCEPIECE
        or meta.get("tokenizer.ggml.pre", "default") in _LLAMA3_PRE
    )
    wanted = meta.get("tokenizer.ggml.add_bos_token", default)
    return bool(wanted) and meta.get("tokenizer.ggml.bos_token_id") is not None


def _build_tokenizer(meta: dict[str, Any]) -> Tokenizer:
    tokenizer = _byte_level_bpe(meta) if _ours(meta) else _converted(meta)
    if _adds_bos(meta):
        bos_id = meta["tokenizer.ggml.bos_token_id"]
        bos = meta["tokenizer.ggml.tokens"][bos_id]
        template = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1", special_tokens=[(bos, bos_id)]
        )
        if meta.get("tokenizer.ggml.model") == "gpt2":
            template = processors.Sequence([processors.ByteLevel(trim_offsets=False), template])
        tokenizer.post_processor = template
    elif meta.get("tokenizer.ggml.model") == _SENTENCEPIECE:
        tokenizer.post_processor = processors.Sequence([])  # no BOS/EOS added
    return tokenizer


def write_tokenizer(out: Path, meta: dict[str, Any], config: dict[str, Any]) -> None:
    """tokenizer.json, tokenizer_config.json and generation_config.json for transformers."""
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    _build_tokenizer(meta).save(str(out / "tokenizer.json"))
    tokenizer_config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": config["max_position_embeddings"],
        "clean_up_tokenization_spaces": False,
        "add_bos_token": _adds_bos(meta),
    }
    generation = {"eos_token_id": config["eos_token_id"]}
    for role in ("bos", "eos", "pad", "unk"):
        key = "unknown" if role == "unk" else "padding" if role == "pad" else role
        token_id = meta.get(
            f"tokenizer.ggml.{key}_token_id", meta.get(f"tokenizer.ggml.{role}_token_id")
        )
        if token_id is not None and 0 <= token_id < len(tokens):
            tokenizer_config[f"{role}_token"] = tokens[token_id]
            if role in ("bos", "pad"):
                generation[f"{role}_token_id"] = token_id
    if (template := meta.get("tokenizer.chat_template")) is not None:
        tokenizer_config["chat_template"] = template
    _write_json(out / "tokenizer_config.json", tokenizer_config)
    _write_json(out / "generation_config.json", generation)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
