"""Ollama's template forms, FIM formats, SmolLM2's tools prompt and its streamed tool calls,
think levels and reasoning_effort: the pure parts, without a server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import WEATHER_TOOL
from tiny_model import build_tiny_model
from transformers import PreTrainedTokenizerFast

from mlx_ollama_bridge.engine.parsers import ToolCallExtractor
from mlx_ollama_bridge.engine.requests import TextChunk, ToolCalls
from mlx_ollama_bridge.engine.tool_formats import QWEN, SMOLLM2, TokenizerMarkup, tool_syntax
from mlx_ollama_bridge.errors import BadRequest
from mlx_ollama_bridge.fim import find_fim_format, marker_tokens
from mlx_ollama_bridge.model_details import capabilities
from mlx_ollama_bridge.ollama_templates import chat_family, template_form
from mlx_ollama_bridge.server import openai_translate as oai
from mlx_ollama_bridge.server.think import check_think, resolved_think, think_level
from mlx_ollama_bridge.tool_prompts import SMOLLM2_TOOLS

# SmolLM2-135M-Instruct's own chat template (as its GGUF carries it).
SMOLLM2_JINJA = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
WEATHER = WEATHER_TOOL
FIM_CASES = {
    # name: (vocabulary markers, expected prompt for prompt "def f(" and suffix "return 1")
    "qwen": (
        ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
        "<|fim_prefix|>def f(<|fim_suffix|>return 1<|fim_middle|>",
    ),
    "starcoder": (
        ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
        "<fim_prefix>def f(<fim_suffix>return 1<fim_middle>",
    ),
    "codellama": (("▁<PRE>", "▁<SUF>", "▁<MID>"), "▁<PRE> def f( ▁<SUF>return 1 ▁<MID>"),
    "deepseek": (
        ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
        "<｜fim▁begin｜>def f(<｜fim▁hole｜>return 1<｜fim▁end｜>",
    ),
    "codestral": (("[PREFIX]", "[SUFFIX]"), "[SUFFIX]return 1[PREFIX] def f("),
}


# -- families and Go forms ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("marker", "family"),
    [
        ("<|im_start|>user", "chatml"),
        ("<|im_start|><tool_call>", "qwen"),
        ("<|im_start|><|im_sep|>", "phi4"),
        ("<|start_header_id|>", "llama3"),
        ("<start_of_turn>", "gemma"),
        ("[INST]", "mistral"),
        ("<|user|><|end|>", "phi3"),
        ("{{ messages }}", None),
    ],
)
def test_chat_family_from_the_jinja_markers(marker: str, family: str | None) -> None:
    assert chat_family(marker) == family


def test_smollm2_gets_ollamas_tools_branch_and_the_tools_capability() -> None:
    form = template_form(SMOLLM2_JINJA, None)
    assert form.family == "smollm2" and form.tools and form.tool_prompt == SMOLLM2_TOOLS.jinja
    assert ".Tools" in form.go_template and "<tool_call>[" in form.go_template
    assert ".Suffix" not in form.go_template
    info = {"general.architecture": "llama"}
    assert capabilities(info, SMOLLM2_JINJA, form) == ("completion", "tools")


def test_plain_chatml_has_no_tools_branch() -> None:
    form = template_form("<|im_start|>{{ message.content }}", None)
    assert form.family == "chatml" and not form.tools and ".Tools" not in form.go_template


def test_a_tools_template_shows_tools_and_fim_shows_suffix() -> None:
    fim = find_fim_format(FIM_CASES["qwen"][0])
    form = template_form("<|im_start|>{% if tools %}<tool_call>{% endif %}", fim)
    text = form.go_template
    assert text.startswith("{{- if .Suffix }}<|fim_prefix|>{{ .Prompt }}<|fim_suffix|>")
    assert ".Tools" in text and text.endswith("{{- end }}")
    assert capabilities({}, "tools", form) == ("completion", "tools", "insert")


def test_a_base_code_model_without_chat_template_shows_prompt_and_suffix() -> None:
    form = template_form(None, find_fim_format(FIM_CASES["starcoder"][0]))
    assert form.go_template == (
        "{{- if .Suffix }}<fim_prefix>{{ .Prompt }}<fim_suffix>{{ .Suffix }}<fim_middle>\n"
        "{{- else }}\n{{ .Prompt }}{{- end }}"
    )


def test_go_forms_balance_their_actions() -> None:
    """Every if/range/with has its end (Go's parser would refuse the template otherwise)."""
    import re

    jinjas = ["<|im_start|>", "<|im_start|><tool_call>", "<|start_header_id|> tools", "[INST]"]
    jinjas += ["[INST] tools", "<start_of_turn>", "<|user|><|end|>", SMOLLM2_JINJA]
    for jinja in jinjas:
        text = template_form(jinja, find_fim_format(FIM_CASES["codellama"][0])).go_template
        actions = re.findall(r"\{\{-?\s*(\w+)", text)
        opened = sum(a in ("if", "range", "with") for a in actions)
        assert opened == actions.count("end"), jinja


# -- fill-in-the-middle ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FIM_CASES))
def test_fim_format_found_in_the_vocabulary_and_rendered(name: str, tmp_path: Path) -> None:
    tokens, expected = FIM_CASES[name]
    model = build_tiny_model(tmp_path / name, special_tokens=tokens, template=None)
    fmt = find_fim_format(marker_tokens(model))
    assert fmt is not None and fmt.name == name
    assert fmt.render("def f(", "return 1") == expected
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(model / "tokenizer.json"))
    ids = tokenizer.encode(expected, add_special_tokens=False)
    marker_ids = {tokenizer.convert_tokens_to_ids(t) for t in tokens}
    assert marker_ids <= set(ids)  # each marker is one token, not spelled out


def test_no_fim_format_without_all_markers() -> None:
    assert find_fim_format(["<|fim_prefix|>", "<|fim_suffix|>"]) is None
    assert find_fim_format(["<|im_start|>", "<|im_end|>"]) is None


# -- SmolLM2's tools prompt and tool calls ------------------------------------------------


def _smollm2_tokenizer(tmp_path: Path) -> PreTrainedTokenizerFast:
    model = build_tiny_model(tmp_path / "smol", template=SMOLLM2_JINJA)
    return PreTrainedTokenizerFast(tokenizer_file=str(model / "tokenizer.json"))


def test_smollm2_tools_prompt_renders_as_ollamas_library_template(tmp_path: Path) -> None:
    tokenizer = _smollm2_tokenizer(tmp_path)
    messages = [
        {"role": "system", "content": "Dropped with tools, as in Ollama's library template."},
        {"role": "user", "content": "Weather in London?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "London"}}}],
        },
        {"role": "tool", "content": "rain"},
    ]
    text = tokenizer.apply_chat_template(
        messages,
        tools=[WEATHER],
        chat_template=SMOLLM2_TOOLS.jinja,
        tokenize=False,
        add_generation_prompt=True,
    )
    tools_json = json.dumps([WEATHER], separators=(",", ":"))
    expected_system = SMOLLM2_TOOLS.instructions.replace("{tools}", tools_json)
    assert text == (
        f"<|im_start|>system\n{expected_system}<|im_end|>\n"
        "<|im_start|>user\nWeather in London?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>[\n{"name": "get_weather", "arguments": '
        '{"city": "London"}}\n]</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\nrain\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_smollm2_syntax_chosen_by_its_tools_prompt() -> None:
    assert tool_syntax(SMOLLM2_TOOLS.jinja, TokenizerMarkup()) is SMOLLM2
    assert tool_syntax("<tool_call>", TokenizerMarkup()) is QWEN


def test_smollm2_calls_stream_one_by_one_as_each_completes() -> None:
    extractor = ToolCallExtractor(SMOLLM2, [WEATHER])
    text = (
        '<tool_call>[\n{"name": "get_weather", "arguments": {"city": "Paris"}},\n'
        '{"name": "get_weather", "arguments": {"city": "Rome"}}\n]</tool_call>'
    )
    first_at = text.index("}}") + 2
    second_at = text.index("}}", first_at) + 2
    seen: list[tuple[int, ToolCalls]] = []
    for position, char in enumerate(text, start=1):
        for event in extractor.feed(char):
            assert not (isinstance(event, TextChunk) and event.text)
            if isinstance(event, ToolCalls):
                seen.append((position, event))
    assert extractor.finish() == []
    assert [p for p, _ in seen] == [first_at, second_at]
    calls = [call for _, event in seen for call in event.calls]
    assert [(c.index, c.name, c.arguments) for c in calls] == [
        (0, "get_weather", {"city": "Paris"}),
        (1, "get_weather", {"city": "Rome"}),
    ]


def test_smollm2_empty_call_list_is_no_call_and_no_text() -> None:
    extractor = ToolCallExtractor(SMOLLM2, [WEATHER])
    events = extractor.feed("<tool_call>[]</tool_call>") + extractor.finish()
    assert not [e for e in events if isinstance(e, ToolCalls) or (getattr(e, "text", ""))]


def test_smollm2_text_that_is_not_a_call_stays_content() -> None:
    extractor = ToolCallExtractor(SMOLLM2, [WEATHER])
    events = extractor.feed("<tool_call>nope</tool_call>") + extractor.finish()
    assert "".join(e.text for e in events if isinstance(e, TextChunk)) == (
        "<tool_call>nope</tool_call>"
    )


# -- think levels and reasoning_effort ----------------------------------------------------


def test_think_levels_as_ollama() -> None:
    for level in ("low", "medium", "high", "max"):
        assert check_think(level) == level
        assert resolved_think(["completion", "thinking"], level) is True
        assert think_level(["completion", "thinking"], level) == level
    assert think_level(["completion"], "max") is None
    assert resolved_think(["completion", "thinking"], None) is True
    assert resolved_think(["completion"], True) is None
    with pytest.raises(BadRequest, match='invalid think value: "extreme"'):
        check_think("extreme")
    with pytest.raises(BadRequest, match="think must be a boolean or string"):
        check_think(3)


@pytest.mark.parametrize(
    ("effort", "think"),
    [
        ("none", False),
        ("minimal", "low"),
        ("low", "low"),
        ("medium", "medium"),
        ("high", "high"),
        ("max", "max"),
        ("xhigh", "max"),
        ("ultra", "max"),
    ],
)
def test_reasoning_effort_maps_as_ollama(effort: str, think: bool | str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert oai.chat_to_native({**body, "reasoning_effort": effort})["think"] == think
    assert oai.chat_to_native({**body, "reasoning": {"effort": effort}})["think"] == think


def test_reasoning_effort_unknown_is_a_400_and_reasoning_wins() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(BadRequest, match='invalid reasoning value: "huge"'):
        oai.chat_to_native({**body, "reasoning_effort": "huge"})
    native = oai.chat_to_native({**body, "reasoning": {"effort": "low"}, "reasoning_effort": "x"})
    assert native["think"] == "low"
