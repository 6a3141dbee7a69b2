"""The tiny random model helper builds a real, loadable, chat-capable mlx-lm checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlx.nn as nn
import mlx_lm
import pytest
from mlx_lm.sample_utils import make_sampler
from mlx_lm.tokenizer_utils import BPEStreamingDetokenizer, TokenizerWrapper
from tiny_model import EOS_TOKEN, QUANTIZATION, build_tiny_model, chat_template

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the weather in Paris?"},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
TOOL_ROUND = [
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
    },
    {"role": "tool", "content": "sunny"},
    {"role": "tool", "content": "22 degrees"},
]
PLAIN_PROMPT = (
    "<|im_start|>system\nBe brief.<|im_end|>\n"
    "<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def load(path: Path) -> tuple[nn.Module, TokenizerWrapper]:
    """mlx_lm.load on a local directory (HF_HUB_OFFLINE is set by conftest)."""
    return mlx_lm.load(str(path))


def render(tokenizer: TokenizerWrapper, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    """The chat template's text, with the generation prompt."""
    return tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False, **kwargs
    )


def greedy_tokens(model: nn.Module, tokenizer: TokenizerWrapper, max_tokens: int) -> list[int]:
    """Token ids of a greedy (temperature 0) completion of a chat prompt."""
    prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)
    responses = list(
        mlx_lm.stream_generate(
            model, tokenizer, prompt, max_tokens=max_tokens, sampler=make_sampler(temp=0.0)
        )
    )
    return [response.token for response in responses]


def test_build_writes_a_checkpoint_directory(tmp_path: Path) -> None:
    out = build_tiny_model(tmp_path / "nested" / "tiny")
    assert out == tmp_path / "nested" / "tiny"
    names = {p.name for p in out.iterdir()}
    assert names == {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["tie_word_embeddings"] is True
    assert config["max_position_embeddings"] == 2048
    assert config["quantization"].items() >= QUANTIZATION.items()
    tokenizer_json = json.loads((out / "tokenizer.json").read_text())
    vocab = tokenizer_json["model"]["vocab"]
    added = {t["content"]: t["id"] for t in tokenizer_json["added_tokens"]}
    assert config["vocab_size"] == len(vocab | added)
    assert 300 <= config["vocab_size"] <= 1000
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == added[EOS_TOKEN] == config["eos_token_id"]
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tokenizer_config["eos_token"] == EOS_TOKEN
    assert tokenizer_config["chat_template"] == chat_template(with_tools=True, thinking=False)


def test_mlx_lm_loads_a_quantized_llama_with_a_bpe_tokenizer(tmp_path: Path) -> None:
    model, tokenizer = load(build_tiny_model(tmp_path / "tiny"))
    assert model.model_type == "llama"
    assert len(model.layers) == 2
    assert isinstance(model.model.embed_tokens, nn.QuantizedEmbedding)
    assert isinstance(model.layers[0].self_attn.q_proj, nn.QuantizedLinear)
    assert isinstance(tokenizer.detokenizer, BPEStreamingDetokenizer)
    assert tokenizer.eos_token == EOS_TOKEN
    assert tokenizer.eos_token_ids == {tokenizer.convert_tokens_to_ids(EOS_TOKEN)}
    assert tokenizer.has_chat_template
    assert tokenizer.has_tool_calling  # mlx-lm recognises the Qwen-style <tool_call> template
    assert not tokenizer.has_thinking


@pytest.mark.parametrize("token", ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<tool_call>"])
def test_added_tokens_encode_as_one_token(tmp_path: Path, token: str) -> None:
    _, tokenizer = load(build_tiny_model(tmp_path / "tiny"))
    ids = tokenizer.encode(f"a{token}b", add_special_tokens=False)
    assert tokenizer.convert_tokens_to_ids(token) in ids
    assert len(ids) == 3


def test_template_without_tools_is_plain_chatml(tmp_path: Path) -> None:
    _, tokenizer = load(build_tiny_model(tmp_path / "tiny"))
    assert render(tokenizer, MESSAGES) == PLAIN_PROMPT
    ids = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)
    assert tokenizer.decode(ids) == PLAIN_PROMPT
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")  # no BOS is prepended


def test_template_renders_tools_in_a_system_block(tmp_path: Path) -> None:
    _, tokenizer = load(build_tiny_model(tmp_path / "tiny"))
    text = render(tokenizer, MESSAGES, tools=TOOLS)
    assert text.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n")
    tools_block = text.split("<tools>\n", 1)[1].split("\n</tools>", 1)[0]
    assert json.loads(tools_block) == TOOLS[0]
    assert "<tool_call>\n{" in text and "</tool_call><|im_end|>\n" in text
    assert text.endswith(PLAIN_PROMPT.split("<|im_end|>\n", 1)[1])
    ids = tokenizer.apply_chat_template(MESSAGES, tools=TOOLS, add_generation_prompt=True)
    assert tokenizer.decode(ids) == text


def test_template_renders_tool_calls_and_tool_results(tmp_path: Path) -> None:
    _, tokenizer = load(build_tiny_model(tmp_path / "tiny"))
    text = render(tokenizer, MESSAGES + TOOL_ROUND, tools=TOOLS)
    expected_tail = (
        "<|im_start|>assistant\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n'
        # Consecutive tool results share one user turn, as in Qwen2.5.
        "<|im_start|>user\n<tool_response>\nsunny\n</tool_response>\n"
        "<tool_response>\n22 degrees\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert text.endswith(expected_tail)


def test_plain_template_variant_ignores_tools(tmp_path: Path) -> None:
    out = build_tiny_model(tmp_path / "tiny", with_tools_template=False)
    _, tokenizer = load(out)
    assert "tools" not in json.loads((out / "tokenizer_config.json").read_text())["chat_template"]
    assert render(tokenizer, MESSAGES, tools=TOOLS) == PLAIN_PROMPT
    assert not tokenizer.has_tool_calling


def test_thinking_variant_has_think_tokens_and_a_switch(tmp_path: Path) -> None:
    out = build_tiny_model(tmp_path / "tiny", thinking=True)
    _, tokenizer = load(out)
    assert "<think>" in json.loads((out / "tokenizer_config.json").read_text())["chat_template"]
    assert tokenizer.has_thinking
    assert tokenizer.think_start == "<think>" and tokenizer.think_end == "</think>"
    thinking_on = render(tokenizer, MESSAGES)  # mlx-lm defaults enable_thinking to True here
    thinking_off = render(tokenizer, MESSAGES, enable_thinking=False)
    assert thinking_on == render(tokenizer, MESSAGES, enable_thinking=True) == PLAIN_PROMPT
    assert thinking_off == PLAIN_PROMPT + "<think>\n\n</think>\n\n"


def test_thinking_variant_drops_old_reasoning(tmp_path: Path) -> None:
    _, tokenizer = load(build_tiny_model(tmp_path / "tiny", thinking=True))
    history = MESSAGES + [
        {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nSunny."},
        {"role": "user", "content": "Thanks"},
    ]
    text = render(tokenizer, history)
    assert "hmm" not in text
    assert "<|im_start|>assistant\nSunny.<|im_end|>\n" in text
    call = {**TOOL_ROUND[0], "content": "<think>\nhmm\n</think>\n\nLet me look."}
    text = render(tokenizer, MESSAGES + [call, TOOL_ROUND[1]], tools=TOOLS)
    assert "hmm" not in text
    assert "<|im_start|>assistant\nLet me look.\n<tool_call>\n" in text


def test_plain_variant_knows_nothing_about_thinking(tmp_path: Path) -> None:
    out = build_tiny_model(tmp_path / "tiny")
    _, tokenizer = load(out)
    assert "<think>" not in tokenizer.get_vocab()
    assert "think" not in json.loads((out / "tokenizer_config.json").read_text())["chat_template"]
    assert render(tokenizer, MESSAGES, enable_thinking=False) == PLAIN_PROMPT


@pytest.mark.parametrize(
    "text",
    [
        "Hello, world!",
        "  two leading spaces,  two inside, and trailing  ",
        "line one\nline two\n\n\tindented with a tab\r\n",
        "déjà vu, naïve café, 東京, emoji 😀",
        'JSON: {"name": "get_weather", "arguments": {"city": "Paris"}}',
    ],
)
def test_decode_round_trips(tmp_path: Path, text: str) -> None:
    _, tokenizer = load(build_tiny_model(tmp_path / "tiny"))
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    detokenizer = tokenizer.detokenizer
    for token in ids:
        detokenizer.add_token(token)
    detokenizer.finalize()
    # mlx-lm's BPE streaming detokenizer drops one leading space of a response, by design.
    assert detokenizer.text == text.removeprefix(" ")


def test_greedy_generation_yields_the_requested_number_of_tokens(tmp_path: Path) -> None:
    model, tokenizer = load(build_tiny_model(tmp_path / "tiny"))
    prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)
    responses = list(
        mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=24, sampler=make_sampler(0.0))
    )
    assert len(responses) == 24
    assert responses[-1].finish_reason == "length"  # greedy never picks <|im_end|>
    text = "".join(response.text for response in responses)
    assert text and text.isascii()
    assert text == tokenizer.decode([response.token for response in responses])


def test_same_seed_gives_identical_files_and_generation(tmp_path: Path) -> None:
    first = build_tiny_model(tmp_path / "a", seed=7)
    second = build_tiny_model(tmp_path / "b", seed=7)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "tokenizer_config.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert greedy_tokens(*load(first), 16) == greedy_tokens(*load(second), 16)


def test_different_seeds_give_different_weights(tmp_path: Path) -> None:
    first = build_tiny_model(tmp_path / "a", seed=0)
    second = build_tiny_model(tmp_path / "b", seed=1)
    assert (first / "model.safetensors").read_bytes() != (second / "model.safetensors").read_bytes()
    assert (first / "tokenizer.json").read_bytes() == (second / "tokenizer.json").read_bytes()
    assert greedy_tokens(*load(first), 16) != greedy_tokens(*load(second), 16)
