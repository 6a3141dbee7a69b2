"""The legacy Go-template subset used by /api/generate's ``template`` field."""

from __future__ import annotations

import pytest

from mlx_ollama_bridge.engine.gotemplate import render_legacy_template
from mlx_ollama_bridge.errors import BadRequest

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
    "template", ["{{ range .Messages }}x{{ end }}", "{{ if .System }}x", "{{ end }}"]
)
def test_unsupported_or_broken_templates_are_rejected(template):
    with pytest.raises(BadRequest, match="template error"):
        render_legacy_template(template, {})
