"""Ollama's Go-template forms of the chat families it knows, shown by ``/api/show``.

The bridge renders prompts with the model's own Jinja chat template (as Hugging Face and
mlx-lm do), but clients read ``/api/show``'s ``template`` as Ollama writes it: Continue
turns on fill-in-the-middle only when it contains ``.Suffix``; Open WebUI and others look for
``.Tools``. So for a recognised family the template is shown in Ollama's Go-template form
(written after Ollama's ``template/*.gotmpl`` and its library templates), with a ``.Tools``
branch when the bridge handles tools for the model and an ``{{ if .Suffix }}`` branch when
its vocabulary has fill-in-the-middle tokens (:mod:`.fim`). Capabilities follow the same
facts, so ``tools`` and ``insert`` are listed exactly when the form has ``.Tools`` and
``.Suffix``, as Ollama derives them from its template.

Recognised from the Jinja text: SmolLM2 (ChatML without tools in its own template; the
bridge adds Ollama's library tools prompt, :mod:`.tool_prompts`), Qwen (ChatML with
``<tool_call>``), Phi-4 (``<|im_sep|>``), ChatML, Llama 3, Gemma, Mistral and Phi-3. Pure
text; no MLX.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .errors import BadRequest
from .fim import FimFormat
from .gotemplate import infer_thinking_tags, template_vars
from .tool_prompts import SMOLLM2_TOOLS

_CHATML = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""

# ChatML with Qwen2.5's tools prompt (the text its own Jinja template writes).
_QWEN_TOOLS = """{{- if or .System .Tools }}<|im_start|>system
{{- if .System }}
{{ .System }}
{{- end }}
{{- if .Tools }}

# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{{- range .Tools }}
{"type": "function", "function": {{ .Function }}}
{{- end }}
</tools>

For each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call>
{{- end }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Content }}{{ .Content }}
{{- else if .ToolCalls }}<tool_call>
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{ end }}</tool_call>
{{- end }}{{ if not $last }}<|im_end|>
{{ end }}
{{- else if eq .Role "tool" }}<|im_start|>user
<tool_response>
{{ .Content }}
</tool_response><|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}"""

# SmolLM2 as Ollama's library has it: with tools, the system prompt is SmolLM2's own
# function-calling prompt and calls are a JSON list inside <tool_call>…</tool_call>.
_SMOLLM2_TOOLS = (
    """{{- if .Tools }}<|im_start|>system
"""
    + SMOLLM2_TOOLS.instructions
    + """<|im_end|>
{{ else if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Content }}{{ .Content }}
{{- else if .ToolCalls }}<tool_call>[
{{ range $j, $c := .ToolCalls }}{{ if $j }},
{{ end }}{"name": "{{ $c.Function.Name }}", "arguments": {{ $c.Function.Arguments }}}{{ end }}
]</tool_call>
{{- end }}{{ if not $last }}<|im_end|>
{{ end }}
{{- else if eq .Role "tool" }}<|im_start|>user
<tool_response>
{{ .Content }}
</tool_response><|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}"""
).replace("{tools}", "{{ .Tools }}")

_PHI4 = """{{- range .Messages }}<|im_start|>{{ .Role }}<|im_sep|>
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant<|im_sep|>
"""

_LLAMA3 = """{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- end }}<|start_header_id|>assistant<|end_header_id|>

"""

# Llama 3.1+: tools in the last user turn, calls as {"name", "parameters"} JSON.
_LLAMA3_TOOLS = """{{- if or .System .Tools }}<|start_header_id|>system<|end_header_id|>
{{- if .System }}

{{ .System }}
{{- end }}
{{- if .Tools }}

You are a helpful assistant with tool calling capabilities. When you receive a tool call \
response, use the output to format an answer to the original user question.
{{- end }}<|eot_id|>
{{- end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>
{{- if and $.Tools $last }}

Given the following functions, please respond with a JSON for a function call with its \
proper arguments that best answers the given prompt.

Respond in the format {"name": function name, "parameters": dictionary of argument name \
and its value}. Do not use variables.

{{ range $.Tools }}
{{- . }}
{{ end }}
{{ .Content }}<|eot_id|>
{{- else }}

{{ .Content }}<|eot_id|>
{{- end }}{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>
{{- if .ToolCalls }}
{{ range .ToolCalls }}
{"name": "{{ .Function.Name }}", "parameters": {{ .Function.Arguments }}}{{ end }}
{{- else }}

{{ .Content }}
{{- end }}{{ if not $last }}<|eot_id|>{{ end }}
{{- else if eq .Role "tool" }}<|start_header_id|>ipython<|end_header_id|>

{{ .Content }}<|eot_id|>{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- end }}
{{- end }}"""

_GEMMA = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<start_of_turn>user
{{- if and (eq $i 1) $.System }}
{{ $.System }}
{{ end }}
{{ .Content }}<end_of_turn>
{{ else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}<end_of_turn>
{{ end }}
{{- if $last }}<start_of_turn>model
{{ end }}
{{- end }}"""

_MISTRAL = """[INST] {{ range $index, $_ := .Messages }}
{{- if eq .Role "system" }}{{ .Content }}

{{ else if eq .Role "user" }}{{ .Content }}[/INST]
{{- else if eq .Role "assistant" }} {{ .Content }}</s>[INST] {{ end }}
{{- end }}"""

# Mistral v3+: [AVAILABLE_TOOLS] before the last user turn, [TOOL_CALLS] with a JSON list.
_MISTRAL_TOOLS = """{{- range $index, $_ := .Messages }}
{{- if eq .Role "user" }}
{{- if and (eq (len (slice $.Messages $index)) 1) $.Tools }}[AVAILABLE_TOOLS] {{ $.Tools }}\
[/AVAILABLE_TOOLS]
{{- end }}[INST] {{ if and $.System (eq (len (slice $.Messages $index)) 1) }}{{ $.System }}

{{ end }}{{ .Content }}[/INST]
{{- else if eq .Role "assistant" }}
{{- if .Content }} {{ .Content }}
{{- else if .ToolCalls }}[TOOL_CALLS] [
{{- range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{- end }}]
{{- end }}</s>
{{- else if eq .Role "tool" }}[TOOL_RESULTS] {"content": {{ .Content }}} [/TOOL_RESULTS]
{{- end }}
{{- end }}"""

_PHI3 = """{{- range .Messages }}<|{{ .Role }}|>
{{ .Content }}<|end|>
{{ end }}<|assistant|>
"""

# family -> (form without tools, form with tools or None)
_FORMS: dict[str, tuple[str, str | None]] = {
    "smollm2": (_CHATML, _SMOLLM2_TOOLS),
    "qwen": (_CHATML, _QWEN_TOOLS),
    "chatml": (_CHATML, _QWEN_TOOLS),
    "phi4": (_PHI4, None),
    "llama3": (_LLAMA3, _LLAMA3_TOOLS),
    "gemma": (_GEMMA, None),
    "mistral": (_MISTRAL, _MISTRAL_TOOLS),
    "phi3": (_PHI3, None),
}
FAMILIES = tuple(_FORMS)


@dataclass(frozen=True)
class TemplateForm:
    """What the bridge knows about a model's prompt format beyond its Jinja template."""

    family: str | None  # one of FAMILIES; None = not recognised
    go_template: str | None  # the Go-template form /api/show shows; None = show the Jinja
    tools: bool  # the bridge handles `tools` for this model (the form has .Tools)
    fim: FimFormat | None  # fill-in-the-middle format (the form has .Suffix)
    tool_prompt: str | None = None  # Jinja the bridge renders tool requests with, if not own


def chat_family(jinja: str | None) -> str | None:
    """The chat family a Jinja chat template belongs to, from its markers; None if unknown."""
    text = jinja or ""
    if "<|im_start|>" in text:
        if "SmolLM" in text and "tools" not in text:
            return "smollm2"
        if "<|im_sep|>" in text:
            return "phi4"
        return "qwen" if "<tool_call>" in text else "chatml"
    if "<|start_header_id|>" in text:
        return "llama3"
    if "<start_of_turn>" in text:
        return "gemma"
    if "[INST]" in text:
        return "mistral"
    if "<|user|>" in text and "<|end|>" in text:
        return "phi3"
    return None


def jinja_has_tools(jinja: str | None) -> bool:
    """Ollama's test for tool support in a Jinja chat template."""
    return bool(jinja) and ("tools" in jinja or "tool_call" in jinja)  # type: ignore[operator]


def template_form(jinja: str | None, fim: FimFormat | None) -> TemplateForm:
    """The model's template facts: family, Go form, tools, fill-in-the-middle."""
    family = chat_family(jinja)
    tool_prompt = SMOLLM2_TOOLS.jinja if family == "smollm2" else None
    tools = jinja_has_tools(jinja) or tool_prompt is not None
    body: str | None = None
    if family is not None:
        plain, with_tools = _FORMS[family]
        body = with_tools if tools and with_tools else plain
    elif jinja is None and fim is not None:
        body = "{{ .Prompt }}"  # a base code model: completion and FIM only
    if body is not None and fim is not None:
        body = f"{fim.go_branch()}\n{{{{- else }}}}\n{body}{{{{- end }}}}"
    return TemplateForm(family, body, tools, fim, tool_prompt)


def go_template_capabilities(template: str) -> tuple[str, ...]:
    """What Ollama derives from a model's Go template (``goTemplateCapabilities``): ``tools``
    when it reads ``.Tools``, ``insert`` for ``.Suffix``, ``thinking`` when it writes a
    message's ``.Thinking`` between tags (``thinking.InferTags``). A template with errors
    gives none, as Ollama logs and moves on."""
    try:
        names = template_vars(template)
        opening, closing = infer_thinking_tags(template)
    except BadRequest:
        return ()
    found = []
    if "tools" in names:
        found.append("tools")
    if "suffix" in names:
        found.append("insert")
    if opening and closing:
        found.append("thinking")
    return tuple(found)


def with_go_template(form: TemplateForm | None, template: str) -> TemplateForm:
    """``form`` with Ollama's own template (a pulled model's template layer) in place of the
    bridge's rendition; ``tools`` as that template says."""
    tools = "tools" in go_template_capabilities(template)
    if form is None:
        return TemplateForm(None, template, tools, None)
    return replace(form, go_template=template, tools=tools)


__all__ = [
    "FAMILIES",
    "TemplateForm",
    "chat_family",
    "go_template_capabilities",
    "jinja_has_tools",
    "template_form",
    "with_go_template",
]
