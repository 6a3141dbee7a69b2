"""Tool prompts the bridge supplies for models whose own chat template has none.

SmolLM2's Hugging Face template is plain ChatML, yet Ollama's library lists ``smollm2`` with
the ``tools`` capability: its template has a tools branch that replaces the system prompt
with SmolLM2's function-calling prompt (from the model card) and has the model answer
``<tool_call>[{"name": …, "arguments": {…}}]</tool_call>``. The same prompt is rendered here
as a Jinja chat template, used only for requests that pass ``tools``; earlier calls are
written back as that list, tool results as ``<tool_response>`` user turns. Pure text.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ToolPrompt:
    """A family's tools prompt: the system text (``{tools}`` marks the tool list) and the
    whole Jinja chat template that renders a tools request with it."""

    instructions: str
    jinja: str


_SMOLLM2_INSTRUCTIONS = """\
You are an expert in composing functions. You are given a question and a set of possible \
functions.
Based on the question, you will need to make one or more function/tool calls to achieve the \
purpose.
If none of the functions can be used, point it out and refuse to answer.
If the given question lacks the parameters required by the function, also point it out.
You have access to the following tools:
<tools>{tools}</tools>
The output MUST strictly adhere to the following format, and NO other text MUST be included.
The example format is as follows. Please make sure the parameter type is correct. If no \
function call is needed, please make the tool calls an empty list '[]'.
<tool_call>[
{"name": "func_name1", "arguments": {"argument1": "value1", "argument2": "value2"}},
(more tool calls as required)
]</tool_call>"""

# Jinja for transformers' apply_chat_template: `tools` is the request's tool list.
_SMOLLM2_JINJA = (
    "{%- if tools %}<|im_start|>system\n"
    + _SMOLLM2_INSTRUCTIONS.replace("{tools}", "{{ tools | tojson(separators=(',', ':')) }}")
    + """<|im_end|>
{% elif messages and messages[0].role == 'system' %}<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'user' %}<|im_start|>user
{{ message.content }}<|im_end|>
{% elif message.role == 'assistant' %}<|im_start|>assistant
{% if message.content %}{{ message.content }}
{%- elif message.tool_calls %}<tool_call>[
{% for call in message.tool_calls %}{% if not loop.first %},
{% endif %}{"name": "{{ call.function.name }}", "arguments": \
{{ call.function.arguments | tojson }}}{% endfor %}{{ "\\n" }}]</tool_call>
{%- endif %}{% if not loop.last %}<|im_end|>
{% endif %}
{%- elif message.role == 'tool' %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% endif %}
{%- if loop.last and message.role != 'assistant' %}<|im_start|>assistant
{% endif %}
{%- endfor %}"""
)

SMOLLM2_TOOLS = ToolPrompt(_SMOLLM2_INSTRUCTIONS, _SMOLLM2_JINJA)

__all__ = ["SMOLLM2_TOOLS", "ToolPrompt"]
