"""A tiny llama whose weights are set by hand so that greedy decoding says a fixed script.

Tool calls and thinking need a model that actually writes ``<tool_call>{…}</tool_call>`` or
``<think>…</think>``; a random model never will. This one is a real mlx-lm checkpoint run by
the real engine, but its weights make the next token a function of the current one: the
layers' output projections are zero, so the final hidden state is the current token's
embedding, and the (untied) output head maps each script token to the next. Each script
piece is its own added token, so the "successor table" is a function even when the text
repeats characters.

The script starts after the last token of the generation prompt (``<|im_start|>assistant\\n``
ends with a newline token) and ends with ``<|im_end|>``. Any other current token also leads
to ``<|im_end|>``. The chat template is the tiny model's (Qwen-style tools, optional
thinking), so capabilities and prompts are realistic.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten, tree_map
from mlx_lm.models import llama
from tiny_model import (
    BOS_TOKEN,
    EOS_TOKEN,
    _model_config,
    _tokenizer_config,
    _train_tokenizer,
    _write_json,
    chat_template,
)
from tokenizers import AddedToken

__all__ = ["TOOL_SCRIPT", "THINK_SCRIPT", "build_parrot_model"]

# What parrot models say, piece by piece (each piece is one token).
TOOL_SCRIPT = (
    "<tool_call>",
    '\n{"name": "get_weather", ',
    '"arguments": {"city": ',
    '"Paris"}}',
    "\n</tool_call>",
)
THINK_SCRIPT = (
    "<think>",
    "\nThe user greets me.",
    " I should greet back.\n",
    "</think>",
    "\n\nHello",
    " there!",
)
_GENERATION_PROMPT = "<|im_start|>assistant\n"
_LOGIT = 10.0  # hidden states are RMS-normalised to norm 8: a margin of 80 over every other


def build_parrot_model(out_dir: Path, script: Sequence[str], *, thinking: bool = False) -> Path:
    """Write a checkpoint to ``out_dir`` whose greedy answer to any chat is ``script``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(tools=True, thinking=thinking)
    new = [piece for piece in script if tokenizer.token_to_id(piece) is None]
    tokenizer.add_tokens([AddedToken(p, special=False, normalized=False) for p in new])
    tokenizer.save(str(out_dir / "tokenizer.json"))
    template = chat_template(with_tools=True, thinking=thinking)
    _write_json(out_dir / "tokenizer_config.json", _tokenizer_config(template))

    bos, eos = tokenizer.token_to_id(BOS_TOKEN), tokenizer.token_to_id(EOS_TOKEN)
    first = tokenizer.encode(_GENERATION_PROMPT).ids[-1]
    chain = [first, *(tokenizer.token_to_id(p) for p in script), eos]
    if len(set(chain[:-1])) != len(chain) - 1:
        raise ValueError("every script piece must be a distinct token")
    config = {**_model_config(tokenizer.get_vocab_size(), bos, eos), "tie_word_embeddings": False}
    _write_weights(out_dir, config, chain)
    _write_json(out_dir / "config.json", config)
    _write_json(out_dir / "generation_config.json", {"bos_token_id": bos, "eos_token_id": eos})
    return out_dir


def _write_weights(out_dir: Path, config: dict, chain: list[int]) -> None:
    """Zero layers, one embedding direction per chain token, a head mapping each to the next."""
    model = llama.Model(llama.ModelArgs.from_dict(config))
    model.update(tree_map(mx.zeros_like, model.parameters()))
    hidden, vocab = config["hidden_size"], config["vocab_size"]
    if len(chain) > hidden:
        raise ValueError(f"a script of at most {hidden - 2} pieces fits this model")
    fallback = hidden - 1  # every other token points this way, which leads to EOS
    embed = [[0.0] * hidden for _ in range(vocab)]
    head = [[0.0] * hidden for _ in range(vocab)]
    for row in embed:
        row[fallback] = 1.0
    for position, (token, successor) in enumerate(zip(chain, chain[1:], strict=False)):
        embed[token] = [0.0] * hidden
        embed[token][position] = 1.0
        head[successor][position] = _LOGIT
    head[chain[-1]][fallback] = _LOGIT
    norms = {k: mx.ones_like(v) for k, v in tree_flatten(model.parameters()) if "norm" in k}
    weights = {
        **dict(tree_flatten(model.parameters())),
        **norms,
        "model.embed_tokens.weight": mx.array(embed),
        "lm_head.weight": mx.array(head),
    }
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
