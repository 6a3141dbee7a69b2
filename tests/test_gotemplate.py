"""Go templates: the legacy ``template`` field of /api/generate, and Ollama's model templates
(range, with, variables, functions, $.Field, trim markers) executed as Go executes them."""

from __future__ import annotations

import pytest
from ollama_library import SMOLLM2_TEMPLATE

from mlx_ollama_bridge.engine.gotemplate_exec import execute, render_legacy_template
from mlx_ollama_bridge.engine.ollama_prompt import render_chat_template
from mlx_ollama_bridge.errors import BadRequest
from mlx_ollama_bridge.gotemplate import template_vars

CHATML = (
    "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n{{ .Response }}<|im_end|>"
)


def test_renders_up_to_response():
    out = render_legacy_template(CHATML, {"System": "be brief", "Prompt": "hi"})
    assert out == (
        "<|im_start|>system\nbe brief<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_if_without_value_takes_else_branch():
    out = render_legacy_template(
        "{{ if .System }}S{{ else }}none{{ end }}:{{ .Prompt }}", {"Prompt": "p"}
    )
    assert out == "none:p"


def test_trim_markers_and_comments():
    out = render_legacy_template("a  {{- /* note */ -}}  b {{- .Prompt -}} \n c", {"Prompt": "P"})
    assert out == "abP" + "c"


@pytest.mark.parametrize(
    "template",
    ['{{ define "x" }}y{{ end }}', "{{ if .System }}x", "{{ end }}", "{{ .A | }}", "{{ nope 1 }}"],
)
def test_unsupported_or_broken_templates_are_rejected(template):
    with pytest.raises(BadRequest, match="template error"):
        render_legacy_template(template, {})


def run(template: str, root: dict | None = None) -> str:
    return execute(template, root or {})


@pytest.mark.parametrize(
    ("template", "root", "expected"),
    [
        ("{{ range $i, $m := .L }}{{ $i }}={{ $m }};{{ end }}", {"L": ["a", "b"]}, "0=a;1=b;"),
        ("{{ range .L }}x{{ else }}empty{{ end }}", {"L": []}, "empty"),
        ("{{ range $k, $v := .M }}{{ $k }}{{ $v }}{{ end }}", {"M": {"b": 2, "a": 1}}, "a1b2"),
        ("{{ with .A }}[{{ . }}]{{ else }}none{{ end }}", {"A": "x"}, "[x]"),
        ("{{ with .A }}[{{ . }}]{{ else with .B }}b{{ end }}", {"A": "", "B": 1}, "b"),
        ("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}", {}, "2"),
        ('{{ if eq .R "user" "tool" }}y{{ else if .Z }}z{{ else }}n{{ end }}', {"R": "tool"}, "y"),
        ("{{ if and .A (not .B) }}y{{ end }}{{ or .B .A }}", {"A": "a", "B": ""}, "ya"),
        (
            '{{ len (slice .L 1) }} {{ index .L 0 }} {{ index .M "k" }}',
            {"L": [1, 2, 3], "M": {"k": "v"}},
            "2 1 v",
        ),
        (
            "{{ json .M }} {{ .M }} {{ .L }}",
            {"M": {"b": "<", "a": 1}, "L": [1, "x"]},
            '{"a":1,"b":"\\u003c"} map[a:1 b:<] [1 x]',
        ),
        (
            '{{ .Missing }}|{{ print 1 2 "a" }}|{{ printf "%s-%d" "x" 3 }}',
            {},
            "<no value>|1 2a|x-3",
        ),
        (
            "{{ range .L }}{{ if eq . 2 }}{{ break }}{{ end }}{{ . }}{{ end }}",
            {"L": [1, 2, 3]},
            "1",
        ),
        (
            "{{ range .L }}{{ if eq . 2 }}{{ continue }}{{ end }}{{ . }}{{ end }}",
            {"L": [1, 2, 3]},
            "13",
        ),
        ("{{- range .L }}\n  {{- $.P }}{{ . -}}\n{{ end }}", {"L": [1, 2], "P": ">"}, ">1>2"),
        ("{{ (index .L 0).Name }} {{ .L | len }}", {"L": [{"Name": "n"}]}, "n 1"),
    ],
)
def test_go_template_constructs(template, root, expected):
    assert run(template, root) == expected


def test_template_vars_are_the_fields_read():
    assert template_vars("{{ range $.Messages }}{{ .Role }}{{ end }}{{ if .Tools }}{{ end }}") == {
        "messages",
        "role",
        "tools",
    }


def test_chat_template_collates_and_prints_tools_as_ollama_does():
    template = (
        "{{ if .System }}S:{{ .System }}\n{{ end }}{{ .Tools }}\n"
        "{{- range $i, $_ := .Messages }}\n{{ .Role }}:{{ .Content }}"
        "{{ range .ToolCalls }} call {{ .Function.Name }}{{ .Function.Arguments }}{{ end }}"
        "{{ $last := eq (len (slice $.Messages $i)) 1 }}{{ if $last }}!{{ end }}{{ end }}"
    )
    messages = [
        {"role": "system", "content": "a"},
        {"role": "user", "content": "u1"},
        {"role": "user", "content": "u2"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "f", "arguments": {"y": 1, "x": "<"}}}],
        },
    ]
    tools = [
        {
            "type": "function",
            "function": {
                "name": "f",
                "description": "d",
                "parameters": {"type": "object", "properties": {"x": {"type": "string"}}},
            },
        }
    ]
    assert render_chat_template(template, messages, tools) == (
        "S:a\n"
        '[{"type":"function","function":{"name":"f","description":"d","parameters":'
        '{"type":"object","properties":{"x":{"type":"string"}}}}}]'
        '\nsystem:a\nuser:u1\n\nu2\nassistant: call f{"x":"\\u003c","y":1}!'
    )


def test_a_template_without_messages_runs_per_turn_and_stops_at_the_last_response():
    template = "{{ if .System }}[{{ .System }}]{{ end }}<{{ .Prompt }}>{{ .Response }}|"
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
    assert render_chat_template(template, messages) == "[s]<q1>a1|<q2>"


def test_the_library_smollm2_template_renders_what_its_jinja_form_does(smollm2_tokenizer):
    """The Go form (the template layer of the fake registry's smollm2) and the model's own
    Jinja chat template give the same prompt for plain chats."""
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ]
    jinja = smollm2_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    assert render_chat_template(SMOLLM2_TEMPLATE, messages) == jinja


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_gguf, tmp_path_factory):
    from transformers import AutoTokenizer

    from mlx_ollama_bridge.store.gguf import convert_gguf

    out = tmp_path_factory.mktemp("smollm2-tokenizer") / "model"
    convert_gguf(smollm2_gguf, out)
    return AutoTokenizer.from_pretrained(str(out))


QWEN3_LIKE = (
    '{{- range $i, $_ := .Messages }}{{ if eq .Role "assistant" }}<|im_start|>assistant\n'
    "{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }}{{ end }}{{ end }}"
)


@pytest.mark.parametrize(
    ("template", "tags", "capabilities"),
    [
        (QWEN3_LIKE, ("<think>", "</think>"), ("thinking",)),
        # .Thinking outside a range over .Messages, or via $.Messages: not inferred (as Ollama)
        ("<think>{{ .Thinking }}</think>", ("", ""), ()),
        ("{{ range $.Messages }}<t>{{ .Thinking }}</t>{{ end }}", ("", ""), ()),
        (
            "{{ if .Tools }}T{{ end }}{{ if .Suffix }}S{{ end }}{{ .Prompt }}",
            ("", ""),
            ("tools", "insert"),
        ),
        ("{{ if .Tools }}broken", ("", ""), ()),  # a template with errors gives nothing
    ],
)
def test_capabilities_come_from_the_template_as_ollama_infers_them(template, tags, capabilities):
    from mlx_ollama_bridge.gotemplate import infer_thinking_tags
    from mlx_ollama_bridge.ollama_templates import go_template_capabilities

    assert go_template_capabilities(template) == capabilities
    if "broken" not in template:
        assert infer_thinking_tags(template) == tags
