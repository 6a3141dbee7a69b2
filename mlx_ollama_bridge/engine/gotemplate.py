"""The small subset of Go ``text/template`` that Ollama's legacy ``template`` field uses.

``/api/generate`` accepts a ``template`` written for Ollama's legacy prompt path, e.g.
``{{ if .System }}<|system|>{{ .System }}{{ end }}<|user|>{{ .Prompt }}<|assistant|>``.
Supported: ``{{ .Field }}``, ``{{ if .Field }} … {{ else }} … {{ end }}``, trim markers
(``{{-`` / ``-}}``) and comments. The prompt is the text rendered before ``{{ .Response }}``,
as in Ollama. Anything else is rejected with a 400 rather than rendered wrongly.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field

from ..errors import BadRequest

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.DOTALL)
_FIELD = re.compile(r"^\.([A-Za-z_][A-Za-z0-9_]*)$")
_IF = re.compile(r"^if\s+\.([A-Za-z_][A-Za-z0-9_]*)$")


@dataclass
class _Node:
    kind: str  # "text" | "field" | "if"
    value: str = ""
    then: list[_Node] = field(default_factory=list)
    otherwise: list[_Node] = field(default_factory=list)


class _StopAtResponse(Exception):
    """Raised when rendering reaches ``.Response``: the prompt ends there."""


def render_legacy_template(template: str, values: dict[str, str]) -> str:
    """Render ``template`` with ``values`` (System, Prompt, Suffix…) up to ``.Response``."""
    nodes = _parse(_tokenize(template))
    out: list[str] = []
    with contextlib.suppress(_StopAtResponse):
        _render(nodes, values, out)
    return "".join(out)


def _tokenize(template: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    for match in _ACTION.finditer(template):
        text = template[pos : match.start()]
        if match.group(1):
            text = text.rstrip()
        if tokens and tokens[-1][0] == "trim-next":
            tokens.pop()
            text = text.lstrip()
        tokens.append(("text", text))
        body = match.group(2)
        if not body.startswith("/*"):
            tokens.append(("action", body))
        if match.group(3):
            tokens.append(("trim-next", ""))
        pos = match.end()
    rest = template[pos:]
    if tokens and tokens[-1][0] == "trim-next":
        tokens.pop()
        rest = rest.lstrip()
    tokens.append(("text", rest))
    return [t for t in tokens if t[0] != "trim-next"]


def _parse(tokens: list[tuple[str, str]]) -> list[_Node]:
    root: list[_Node] = []
    # Stack of (node list being filled, the enclosing if-node or None).
    stack: list[tuple[list[_Node], _Node | None]] = [(root, None)]
    for kind, value in tokens:
        target = stack[-1][0]
        if kind == "text":
            if value:
                target.append(_Node("text", value))
        elif m := _FIELD.match(value):
            target.append(_Node("field", m.group(1)))
        elif m := _IF.match(value):
            node = _Node("if", m.group(1))
            target.append(node)
            stack.append((node.then, node))
        elif value == "else" and stack[-1][1] is not None:
            node = stack[-1][1]
            stack[-1] = (node.otherwise, node)
        elif value == "end" and len(stack) > 1:
            stack.pop()
        else:
            raise BadRequest(f"template error: unsupported action {{{{ {value} }}}}")
    if len(stack) != 1:
        raise BadRequest("template error: unexpected EOF (missing {{ end }})")
    return root


def _render(nodes: list[_Node], values: dict[str, str], out: list[str]) -> None:
    for node in nodes:
        if node.kind == "text":
            out.append(node.value)
        elif node.kind == "field":
            if node.value == "Response":
                raise _StopAtResponse
            out.append(values.get(node.value, ""))
        else:
            branch = node.then if values.get(node.value) else node.otherwise
            _render(branch, values, out)
