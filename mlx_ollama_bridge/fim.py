"""Fill-in-the-middle: the FIM formats of code models, found in their vocabulary.

Ollama's templates for code models open with ``{{- if .Suffix }}`` and a FIM prompt; a
model whose template has ``.Suffix`` gets the ``insert`` capability and ``/api/generate``
accepts a ``suffix``. Here the format is recognised from the special tokens the tokenizer
carries (a model that has them was trained on them):

* Qwen2.5-Coder: ``<|fim_prefix|>P<|fim_suffix|>S<|fim_middle|>``
* StarCoder / StarCoder2: ``<fim_prefix>P<fim_suffix>S<fim_middle>``
* CodeLlama: ``<PRE> P <SUF>S <MID>`` (its tokenizer spells them ``▁<PRE>`` …)
* DeepSeek-Coder: ``<｜fim▁begin｜>P<｜fim▁hole｜>S<｜fim▁end｜>``
* Codestral: ``[SUFFIX]S[PREFIX] P`` (the suffix first)

Pure text; no MLX.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FimFormat:
    """One model family's fill-in-the-middle prompt."""

    name: str
    prefix: str  # the vocabulary's spelling of each marker
    suffix: str
    middle: str = ""  # "" = none (Codestral generates right after the prefix)
    suffix_first: bool = False  # Codestral: [SUFFIX]S[PREFIX] P
    spaced: bool = False  # CodeLlama: a space after <PRE> and before <SUF>/<MID>

    def render(self, prompt: str, suffix: str) -> str:
        """The prompt the model completes between ``prompt`` and ``suffix``."""
        if self.suffix_first:
            return f"{self.suffix}{suffix}{self.prefix} {prompt}"
        if self.spaced:
            return f"{self.prefix} {prompt} {self.suffix}{suffix} {self.middle}"
        return f"{self.prefix}{prompt}{self.suffix}{suffix}{self.middle}"

    def go_branch(self) -> str:
        """The ``{{ if .Suffix }}`` branch of the model's Go template, as Ollama writes it."""
        pre, suf, mid = (_display(t) for t in (self.prefix, self.suffix, self.middle))
        if self.suffix_first:
            return f"{{{{- if .Suffix }}}}{suf}{{{{ .Suffix }}}}{pre} {{{{ .Prompt }}}}"
        if self.spaced:
            return f"{{{{- if .Suffix }}}}{pre} {{{{ .Prompt }}}} {suf}{{{{ .Suffix }}}} {mid}"
        return f"{{{{- if .Suffix }}}}{pre}{{{{ .Prompt }}}}{suf}{{{{ .Suffix }}}}{mid}"


# Most specific first; each entry lists the vocabulary spellings it accepts.
_FORMATS: tuple[tuple[FimFormat, ...], ...] = (
    (FimFormat("qwen", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),),
    (FimFormat("starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>"),),
    (FimFormat("deepseek", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),),
    (
        FimFormat("codellama", "▁<PRE>", "▁<SUF>", "▁<MID>", spaced=True),
        FimFormat("codellama", "<PRE>", "<SUF>", "<MID>", spaced=True),
    ),
    (FimFormat("codestral", "[PREFIX]", "[SUFFIX]", suffix_first=True),),
)
FORMAT_NAMES = tuple(group[0].name for group in _FORMATS)
_MARKERS = frozenset(
    marker
    for group in _FORMATS
    for fmt in group
    for marker in (fmt.prefix, fmt.suffix, fmt.middle)
    if marker
)


def find_fim_format(tokens: Iterable[str]) -> FimFormat | None:
    """The FIM format whose markers are all among ``tokens`` (special tokens), or None."""
    vocabulary = set(tokens)
    for group in _FORMATS:
        for fmt in group:
            markers = [fmt.prefix, fmt.suffix] + ([fmt.middle] if fmt.middle else [])
            if all(marker in vocabulary for marker in markers):
                return fmt
    return None


def fim_format_named(name: str | None) -> FimFormat | None:
    """The first format called ``name`` (as stored in a model description)."""
    return next((g[0] for g in _FORMATS if g[0].name == name), None) if name else None


def marker_tokens(path: Path) -> set[str]:
    """The FIM markers a model directory's tokenizer has: among its added tokens
    (tokenizer.json, tokenizer_config.json's ``added_tokens_decoder``), its vocabulary, or
    named by tokenizer_config.json (CodeLlama's ``prefix_token`` …)."""
    found: set[str] = set()
    data = _read_json(path / "tokenizer.json")
    for token in data.get("added_tokens") or ():
        if isinstance(token, dict) and isinstance(token.get("content"), str):
            found.add(token["content"])
    model = data.get("model")
    vocab = model.get("vocab") if isinstance(model, dict) else None
    if isinstance(vocab, dict):
        found.update(marker for marker in _MARKERS if marker in vocab)
    config = _read_json(path / "tokenizer_config.json")
    for key in ("prefix_token", "suffix_token", "middle_token"):
        if isinstance(config.get(key), str):
            found.add(config[key])
    decoder = config.get("added_tokens_decoder")
    if isinstance(decoder, dict):
        for token in decoder.values():
            if isinstance(token, dict) and isinstance(token.get("content"), str):
                found.add(token["content"])
    return found & _MARKERS


def _display(token: str) -> str:
    """A marker as Ollama's templates write it (CodeLlama's ``▁<PRE>`` is ``<PRE>``)."""
    return token[1:] if token.startswith("▁<") else token


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("unreadable tokenizer file=%s error=%s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


__all__ = ["FORMAT_NAMES", "FimFormat", "find_fim_format", "fim_format_named", "marker_tokens"]
