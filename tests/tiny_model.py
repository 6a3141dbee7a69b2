"""Build a tiny, real, mlx-lm-loadable llama model with random weights, offline, in ~20 ms.

The directory looks like an ``mlx-community`` checkpoint: ``config.json`` (llama, 4-bit affine
quantized), ``model.safetensors``, ``tokenizer.json`` (a byte-level BPE trained here on a
built-in corpus), ``tokenizer_config.json`` (a ChatML chat template, Qwen-style tools and
optional Qwen3-style thinking) and ``generation_config.json``. Nothing is downloaded or cached.

The weights are random, so generated text is gibberish, but deterministic for a given seed.
Added tokens (``<|im_end|>`` and friends), control characters and non-ASCII byte pieces get
near-zero embedding rows: with tied embeddings their logits stay near zero, so greedy decoding
never stops early (``num_predict`` is honoured) and emits printable ASCII only. Sampling at a
temperature can still pick them.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten
from mlx_lm.models import llama
from mlx_lm.utils import quantize_model
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

__all__ = [
    "BOS_TOKEN",
    "CORPUS",
    "EOS_TOKEN",
    "PAD_TOKEN",
    "QUANTIZATION",
    "build_tiny_model",
    "chat_template",
]

BOS_TOKEN = "<|endoftext|>"
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Like Qwen: these are added tokens but not "special", so they survive skip_special_tokens.
TOOL_TOKENS = ["<tool_call>", "</tool_call>"]
THINK_TOKENS = ["<think>", "</think>"]

TARGET_VOCAB = 512  # merges stop early if the corpus runs out of pairs; see _train_tokenizer
# 4-bit affine quantization: it is nearly free for a model this small and it exercises the
# QuantizedLinear/QuantizedEmbedding path that real mlx-community checkpoints take.
QUANTIZATION = {"group_size": 64, "bits": 4}

CORPUS = """\
The quick brown fox jumps over the lazy dog. A model is a function that turns text into
numbers and numbers back into text. This tiny model was trained on nothing at all: its
weights are random, so it writes nonsense, but it writes the same nonsense every time.

Hello! How are you today? I am fine, thank you. What is the weather like in Paris?
It is sunny and warm, with a light wind from the west. Tomorrow it will rain.

You are a helpful assistant. Answer the question of the user in a short and friendly way.
If you do not know the answer, say so. Think step by step before you answer.

def add(a, b):
    return a + b

{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}
{"type": "function", "function": {"name": "add", "description": "Add two numbers",
"parameters": {"type": "object", "properties": {"a": {"type": "number"}}}}}

The server reads a request, loads the model, streams tokens back and stops when it is done.
One, two, three, four, five, six, seven, eight, nine, ten. 1 2 3 4 5 6 7 8 9 10 100 2024.
"""


def build_tiny_model(
    out_dir: Path,
    *,
    seed: int = 0,
    with_tools_template: bool = True,
    thinking: bool = False,
    special_tokens: tuple[str, ...] = (),
    template: str | None = "",
    quantized: bool = True,
    config: dict[str, Any] | None = None,
) -> Path:
    """Write a tiny random llama checkpoint to ``out_dir`` and return ``out_dir``.

    ``quantized=False`` keeps the weights in float16 (a model ``/api/create`` can quantize).
    ``config`` overrides entries of the llama ``config.json`` (layers, heads, ``head_dim``).
    ``seed`` fixes the weights (the tokenizer is deterministic anyway).
    ``with_tools_template`` renders ``tools`` and ``tool`` messages the Qwen2.5 way;
    ``thinking`` adds ``<think>``/``</think>`` tokens and a Qwen3-style ``enable_thinking`` switch.
    ``special_tokens`` are added to the vocabulary as special tokens (fill-in-the-middle
    markers, say); ``template`` replaces the chat template (None: the model has none).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(tools=with_tools_template, thinking=thinking)
    if special_tokens:
        tokenizer.add_special_tokens(
            [AddedToken(t, special=True, normalized=False) for t in special_tokens]
        )
    tokenizer.save(str(out_dir / "tokenizer.json"))
    if template == "":
        template = chat_template(with_tools=with_tools_template, thinking=thinking)
    _write_json(out_dir / "tokenizer_config.json", _tokenizer_config(template))

    ids = {token: tokenizer.token_to_id(token) for token in (BOS_TOKEN, EOS_TOKEN)}
    config = {
        **_model_config(tokenizer.get_vocab_size(), ids[BOS_TOKEN], ids[EOS_TOKEN]),
        **(config or {}),
    }
    config = _write_weights(
        out_dir, config, seed=seed, muted_ids=_muted_ids(tokenizer), quantized=quantized
    )
    _write_json(out_dir / "config.json", config)
    generation = {"bos_token_id": ids[BOS_TOKEN], "eos_token_id": ids[EOS_TOKEN]}
    _write_json(out_dir / "generation_config.json", generation)
    return out_dir


def _train_tokenizer(*, tools: bool, thinking: bool) -> Tokenizer:
    """A GPT-2/Qwen-style byte-level BPE: any text round-trips, spaces and newlines included."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    # A post-processor keeps transformers from installing its own bos/eos TemplateProcessing.
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=TARGET_VOCAB,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: no unknowns
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS.splitlines(keepends=True), trainer)
    extra = (TOOL_TOKENS if tools else []) + (THINK_TOKENS if thinking else [])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in extra])
    return tokenizer


def _muted_ids(tokenizer: Tokenizer) -> list[int]:
    """Tokens greedy decoding must not pick: added tokens, and pieces that are not tidy ASCII.

    Muting the 128 non-ASCII byte tokens and control characters keeps greedy output valid,
    printable UTF-8, so streamed and whole responses compare cleanly.
    """
    size = tokenizer.get_vocab_size()
    texts = tokenizer.decode_batch([[i] for i in range(size)], skip_special_tokens=False)
    added = set(tokenizer.get_added_tokens_decoder())
    return [
        i
        for i, text in enumerate(texts)
        if i in added or not (text.isascii() and text.replace("\n", "").isprintable())
    ]


def _tokenizer_config(template: str | None) -> dict[str, Any]:
    """``tokenizer_config.json``: a class transformers 4.x and 5.x both load from tokenizer.json."""
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "unk_token": None,
        "model_max_length": 2048,
        "clean_up_tokenization_spaces": False,
        "chat_template": template,
    }
    if template is None:
        del config["chat_template"]
    return config


def _model_config(vocab_size: int, bos_id: int, eos_id: int) -> dict[str, Any]:
    """A llama ``config.json`` small enough to run instantly on a CPU."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "vocab_size": vocab_size,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "hidden_act": "silu",
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "torch_dtype": "float32",
    }


def _write_weights(
    out_dir: Path, config: dict[str, Any], *, seed: int, muted_ids: list[int], quantized: bool
) -> dict[str, Any]:
    """Randomly initialise, quantize (or cast to float16) and save the weights; return the
    config to write."""
    model = llama.Model(llama.ModelArgs.from_dict(config))
    _init_weights(model, seed=seed, muted_ids=muted_ids)
    if quantized:
        with contextlib.redirect_stdout(io.StringIO()):  # quantize_model prints bits per weight
            model, config = quantize_model(
                model, config, QUANTIZATION["group_size"], QUANTIZATION["bits"]
            )
    else:
        model.set_dtype(mx.float16)
    weights = dict(tree_flatten(model.parameters()))
    mx.eval(weights)
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    return config


def _init_weights(model: llama.Model, *, seed: int, muted_ids: list[int]) -> None:
    """Draw every matrix from its own explicit key: deterministic, global RNG left alone."""
    params = tree_flatten(model.parameters())
    keys = mx.random.split(mx.random.key(seed), len(params))
    fresh = []
    for (name, value), key in zip(params, keys, strict=True):
        if value.ndim < 2:  # RMSNorm gains stay at one
            fresh.append((name, value))
            continue
        std = 1.0 / math.sqrt(value.shape[-1])
        fresh.append((name, mx.random.normal(value.shape, key=key) * std))
    model.update(tree_unflatten(fresh))
    # Tied embeddings: a tiny row means a logit near zero, below the best of ~300 random
    # logits, so greedy decoding never picks <|im_end|> or a stray byte.
    embed = model.model.embed_tokens.weight
    embed[mx.array(muted_ids)] = embed[mx.array(muted_ids)] * 0.01
    model.model.embed_tokens.weight = embed


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# The chat template, assembled from pieces so each variant reads like a real checkpoint's.
# Jinja string literals understand '\n'; every tag trims whitespace, so layout is free.

_SYSTEM_PLAIN = r"""
{%- if messages[0].role == 'system' %}
    {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
{%- endif %}
"""

_SYSTEM_TOOLS = r"""
{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- '# Tools\n\nYou may call one or more functions to assist with the user query.\n\n' }}
    {{- 'You are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}
    {%- for tool in tools %}
        {{- '\n' + (tool | tojson) }}
    {%- endfor %}
    {{- '\n</tools>\n\nFor each function call, return a json object with function name and ' }}
    {{- 'arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n' }}
    {{- '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' }}
{%- elif messages[0].role == 'system' %}
    {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
{%- endif %}
"""

_LOOP_START = r"""
{%- for message in messages %}
    {%- set content = message.content or '' %}
"""

# Qwen3 drops the reasoning of earlier assistant turns from the prompt.
_STRIP_THINKING = r"""
    {%- if message.role == 'assistant' and '</think>' in content %}
        {%- set content = content.split('</think>')[-1].lstrip('\n') %}
    {%- endif %}
"""

_SKIP_FIRST_SYSTEM = r"""
    {%- if message.role == 'system' and loop.first %}
"""

_TOOL_MESSAGES = r"""
    {%- elif message.role == 'assistant' and message.tool_calls %}
        {{- '<|im_start|>assistant' }}
        {%- if content %}
            {{- '\n' + content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' + tool_call.name + '", "arguments": ' }}
            {%- if tool_call.arguments is string %}
                {{- tool_call.arguments }}
            {%- else %}
                {{- tool_call.arguments | tojson }}
            {%- endif %}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == 'tool' %}
        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' + content + '\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
"""

_LOOP_END = r"""
    {%- else %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
"""

# Qwen3: thinking is on unless the caller passes enable_thinking=False.
_THINKING_SWITCH = r"""
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
"""

_GENERATION_END = r"""
{%- endif %}
"""


def chat_template(*, with_tools: bool = True, thinking: bool = False) -> str:
    """The Jinja ChatML template that ``build_tiny_model`` writes for these options."""
    pieces = [
        _SYSTEM_TOOLS if with_tools else _SYSTEM_PLAIN,
        _LOOP_START,
        _STRIP_THINKING if thinking else "",
        _SKIP_FIRST_SYSTEM,
        _TOOL_MESSAGES if with_tools else "",
        _LOOP_END,
        _THINKING_SWITCH if thinking else "",
        _GENERATION_END,
    ]
    return "\n".join(piece.strip("\n") for piece in pieces if piece)
