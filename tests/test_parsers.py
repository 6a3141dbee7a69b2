"""The output parser: thinking and tool calls out of streamed text, no MLX involved."""

from __future__ import annotations

import re

import pytest

from mlx_ollama_bridge.engine.parsers import (
    OutputParser,
    ThinkingSplitter,
    ToolCallExtractor,
    make_output_parser,
)
from mlx_ollama_bridge.engine.requests import TextChunk, ThinkingChunk, ToolCalls
from mlx_ollama_bridge.engine.tool_formats import (
    GENERIC,
    LLAMA3,
    MISTRAL,
    QWEN,
    TokenizerMarkup,
    parse_json_calls,
    tool_syntax,
    wrap_mlx_parser,
)

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {}}},
    {"type": "function", "function": {"name": "add", "parameters": {}}},
]
PARIS = {"city": "Paris"}
MARKUP = ("<tool_call>", "</tool_call>", "[TOOL_CALLS]", "<|python_tag|>", '{"name"', "[ARGS]")


def chunked(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def run(parser: OutputParser, pieces: list[str]) -> list:
    events = []
    for piece in pieces:
        events.extend(parser.feed(piece))
    return events + parser.finish()


def tools_parser(syntax, *, thinking: ThinkingSplitter | None = None) -> OutputParser:
    return OutputParser(thinking, ToolCallExtractor(syntax, TOOLS))


def summary(events: list) -> tuple[str, str, list[tuple[str, dict]]]:
    """(content, thinking, [(name, arguments)]) of a whole run."""
    content = "".join(e.text for e in events if isinstance(e, TextChunk))
    thinking = "".join(e.text for e in events if isinstance(e, ThinkingChunk))
    calls = [(c.name, c.arguments) for e in events if isinstance(e, ToolCalls) for c in e.calls]
    return content, thinking, calls


# Every family, fed whole and split at every possible size: same result, no markup leaked.
FAMILY_CASES = [
    (
        QWEN,
        'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
        "</tool_call>",
        ("Let me check.\n", [("get_weather", PARIS)]),
    ),
    (
        QWEN,
        '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}</tool_call>\n'
        '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>',
        ("", [("get_weather", PARIS), ("add", {"a": 1, "b": 2})]),
    ),
    (
        LLAMA3,
        '{"name": "get_weather", "parameters": {"city": "Paris"}}',
        ("", [("get_weather", PARIS)]),
    ),
    (
        LLAMA3,
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}; '
        '{"name": "add", "parameters": {"a": 1}}',
        ("", [("get_weather", PARIS), ("add", {"a": 1})]),
    ),
    (
        MISTRAL,
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, '
        '{"name": "add", "arguments": {"a": 1}}]',
        ("", [("get_weather", PARIS), ("add", {"a": 1})]),
    ),
    (
        MISTRAL,
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]add[ARGS]{"a": 1}',
        ("", [("get_weather", PARIS), ("add", {"a": 1})]),
    ),
    (
        MISTRAL,  # a tokenizer that does not print the [TOOL_CALLS] control token
        '[{"name": "get_weather", "arguments": {"city": "Paris"}}]',
        ("", [("get_weather", PARIS)]),
    ),
    (
        GENERIC,
        '  {"name": "get_weather", "arguments": {"city": "Paris"}}',
        ("", [("get_weather", PARIS)]),
    ),
    (
        GENERIC,
        '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```',
        ('```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```', []),
    ),
]


@pytest.mark.parametrize("syntax, text, expected", FAMILY_CASES)
@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 1000])
def test_families_parse_the_same_whatever_the_chunking(syntax, text, expected, size):
    events = run(tools_parser(syntax), chunked(text, size))
    content, thinking, calls = summary(events)
    assert (content, calls) == expected
    assert thinking == ""
    for event in events:
        if isinstance(event, TextChunk) and calls:
            assert not any(marker in event.text for marker in MARKUP), event


def test_a_call_arrives_whole_in_one_event_with_index_and_ollama_id():
    text = (
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
        '<tool_call>{"name": "add", "arguments": {}}</tool_call>'
    )
    events = run(tools_parser(QWEN), list(text))
    tool_events = [e for e in events if isinstance(e, ToolCalls)]
    assert [len(e.calls) for e in tool_events] == [1, 1]
    first, second = (e.calls[0] for e in tool_events)
    assert (first.index, second.index) == (0, 1)
    assert re.fullmatch(r"call_[a-z0-9]{8}", first.id) and first.id != second.id


def test_mistral_ids_fit_mistral_templates():
    events = run(tools_parser(MISTRAL), ['[TOOL_CALLS]get_weather[ARGS]{"city": "x"}'])
    (call,) = events[0].calls
    assert re.fullmatch(r"[A-Za-z0-9]{9}", call.id)


def test_text_is_released_as_soon_as_it_cannot_be_markup():
    parser = tools_parser(QWEN)
    assert summary(parser.feed("Hello <tool"))[0] == "Hello "  # "<tool" may start a call
    assert summary(parser.feed("box>"))[0] == "<toolbox>"
    assert parser.finish() == []


@pytest.mark.parametrize(
    "syntax, text",
    [
        (QWEN, "<tool_call>{not json}</tool_call> done"),
        (QWEN, '<tool_call>{"arguments": {}}</tool_call>'),  # no name
        (QWEN, '<tool_call>{"name": "f", "arguments": [1]}</tool_call>'),  # not an object
        (QWEN, '<tool_call>{"name": "get_weather", "argum'),  # cut off
        (MISTRAL, "[TOOL_CALLS]nonsense"),
        (LLAMA3, '{"name": "get_weather", "parameters": {"city"'),  # cut off
    ],
)
def test_malformed_calls_fall_back_to_content_as_written(syntax, text):
    for size in (1, 4, 1000):
        events = run(tools_parser(syntax), chunked(text, size))
        assert summary(events) == (text, "", [])


def test_bare_json_must_name_an_offered_tool_to_be_a_call():
    for syntax in (GENERIC, LLAMA3):
        text = '{"name": "Ann", "arguments": {"age": 3}} is a record'
        assert summary(run(tools_parser(syntax), chunked(text, 3))) == (text, "", [])


def test_json_answers_stream_once_complete():
    parser = tools_parser(GENERIC)
    assert parser.feed('{"answer": ') == []  # could still become a call
    assert summary(parser.feed("42}"))[0] == '{"answer": 42}'
    assert summary(parser.feed(" more"))[0] == " more"


def test_unterminated_qwen_call_is_parsed_at_the_end():
    events = run(tools_parser(QWEN), ['<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n'])
    assert summary(events) == ("", "", [("add", {"a": 1})])


def test_whitespace_between_and_after_calls_is_not_content():
    text = '<tool_call>{"name": "add", "arguments": {}}</tool_call>\n\n<tool_call>'
    text += '{"name": "add", "arguments": {}}</tool_call>\n'
    assert summary(run(tools_parser(QWEN), chunked(text, 2)))[0] == ""


def test_openai_shaped_objects_and_string_arguments_are_accepted():
    text = '{"type": "function", "id": "abc", '
    text += '"function": {"name": "add", "arguments": "{\\"a\\": 1}"}}'
    calls = parse_json_calls(text)
    assert calls == [{"name": "add", "arguments": {"a": 1}, "id": "abc"}]


# -- thinking -----------------------------------------------------------------------------

THINKING_CASES = [
    ("<think>\nI should answer.\n</think>\n\nHello!", ("Hello!", "I should answer.\n")),
    ("\n  <think>plan</think>answer", ("answer", "plan")),
    ("No reasoning here.", ("No reasoning here.", "")),
    ("<think>still thinking", ("", "still thinking")),
    ("<thinker> is a word", ("<thinker> is a word", "")),
    ("  \n", ("  \n", "")),
]


@pytest.mark.parametrize("text, expected", THINKING_CASES)
@pytest.mark.parametrize("size", [1, 2, 3, 1000])
def test_thinking_is_split_from_content_whatever_the_chunking(text, expected, size):
    parser = OutputParser(ThinkingSplitter("<think>", "</think>"))
    content, thinking, _ = summary(run(parser, chunked(text, size)))
    assert (content, thinking) == expected


def test_a_prompt_ending_with_the_open_tag_starts_in_thinking():
    parser = OutputParser(ThinkingSplitter("<think>", "</think>", started=True))
    events = run(parser, chunked("\nreasoning</think>\n\nanswer", 3))
    assert summary(events)[:2] == ("answer", "reasoning")


def test_thinking_then_a_tool_call():
    parser = tools_parser(QWEN, thinking=ThinkingSplitter("<think>", "</think>"))
    text = "<think>Need weather.</think>\n"
    text += '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    assert summary(run(parser, chunked(text, 4))) == ("", "Need weather.", [("get_weather", PARIS)])


def test_events_are_merged_and_empty_ones_dropped():
    parser = OutputParser(ThinkingSplitter("<think>", "</think>"))
    assert parser.feed("<think>a</think>b") == [ThinkingChunk("a"), TextChunk("b")]
    assert parser.feed("") == []


# -- choosing the parser for a request ----------------------------------------------------


def make(*, think, prompt="<|im_start|>assistant\n", tools=None, capable=True):
    return make_output_parser(
        template="{{ '<tool_call>' }}",
        markup=TokenizerMarkup(think_start="<think>", think_end="</think>"),
        thinking_capable=capable,
        think=think,
        prompt_text=prompt,
        tools=tools,
    )


def test_request_settings_choose_the_stages():
    text = "<think>x</think>y"
    assert summary(run(make(think=True), [text]))[:2] == ("y", "x")
    assert summary(run(make(think=False), [text]))[:2] == (text, "")
    assert summary(run(make(think=None, capable=False), [text]))[:2] == (text, "")
    # The template could not turn thinking off: it is still kept out of the content.
    forced = make(think=False, prompt="assistant\n<think>\n")
    assert summary(run(forced, ["x</think>y"]))[:2] == ("y", "x")
    call = '<tool_call>{"name": "add", "arguments": {}}</tool_call>'
    assert summary(run(make(think=None, capable=False), [call]))[0] == call  # no tools passed
    assert summary(run(make(think=None, capable=False, tools=TOOLS), [call]))[2] == [("add", {})]


@pytest.mark.parametrize(
    "template, markup, family",
    [
        (
            "{{ '<tool_call>' }}{{ tool_call.name }}",
            TokenizerMarkup(tool_family="json_tools"),
            "qwen",
        ),
        ("{{ '<tool_call>' }}", TokenizerMarkup(), "qwen"),
        ("[TOOL_CALLS]", TokenizerMarkup(tool_family="mistral"), "mistral"),
        ('<|start_header_id|> {"name": ..., "parameters": ...}', TokenizerMarkup(), "llama3"),
        ("{{- '<|python_tag|>' }}", TokenizerMarkup(), "llama3"),
        ("{{ messages }}", TokenizerMarkup(), "json"),
    ],
)
def test_tool_syntax_is_chosen_from_mlx_lm_and_the_template(template, markup, family):
    assert tool_syntax(template, markup).family == family


def test_other_families_use_mlx_lms_own_parser():
    from mlx_lm.tool_parsers import qwen3_coder

    markup = TokenizerMarkup(
        tool_family="qwen3_coder",
        tool_call_start=qwen3_coder.tool_call_start,
        tool_call_end=qwen3_coder.tool_call_end,
        tool_parser=qwen3_coder.parse_tool_call,
    )
    syntax = tool_syntax("", markup)
    assert syntax.family == "qwen3_coder"
    text = (
        "Sure.<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
        "</function>\n</tool_call>"
    )
    events = run(OutputParser(None, ToolCallExtractor(syntax, TOOLS)), chunked(text, 3))
    assert summary(events) == ("Sure.", "", [("get_weather", PARIS)])


def test_a_failing_mlx_lm_parser_means_content():
    def broken(text, tools):
        raise KeyError("boom")

    parse = wrap_mlx_parser(broken)
    with pytest.raises(ValueError):
        parse("x", None)
