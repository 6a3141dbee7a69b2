"""Go ``text/template``, parsed: the subset Ollama's templates use.

Ollama's model templates (its library's ``template`` layers, ``template/*.gotmpl``) and the
legacy ``template`` field of ``/api/generate`` are Go templates. Parsed here: text with trim
markers (``{{-`` / ``-}}``) and comments; pipelines (``a | b``, parenthesised, with field
chains ``.A.B``, ``$x.A``, ``$``, ``.``, string / raw string / number / bool / nil
constants, function calls); variables (``$x := …``, ``$x = …``); ``if`` / ``else if`` /
``else``, ``range`` (with ``$i, $v :=``, ``else``, ``break``, ``continue``), ``with`` (and
``else with``). ``define``/``template``/``block`` are not (no library template uses them):
they are a 400, as is any syntax error. Executed by :mod:`.gotemplate_exec`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import BadRequest

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>"(?:[^"\\\n]|\\.)*")
    | (?P<raw>`[^`]*`)
    | (?P<char>'(?:[^'\\]|\\.)+')
    | (?P<op>:=|=|\||\(|\)|,)
    | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
    | (?P<num>[-+]?(?:0[xX][0-9a-fA-F]+|[0-9]+\.?[0-9]*(?:[eE][-+]?[0-9]+)?))
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"if", "else", "end", "range", "with", "break", "continue"}


def template_error(message: str) -> BadRequest:
    """A 400 in Ollama's words for a template it cannot use."""
    return BadRequest(f"template error: {message}")


# -- the tree -----------------------------------------------------------------------------


@dataclass
class Operand:
    """One argument: ``kind`` is field, var, const, call (a parenthesised pipeline) or ident
    (a function name); ``chain`` are the fields read after it."""

    kind: str
    value: Any = None
    chain: tuple[str, ...] = ()


@dataclass
class Pipeline:
    """``$a, $b := cmd | cmd``: declared or assigned variables, then commands."""

    commands: list[list[Operand]]
    variables: list[str] = field(default_factory=list)
    assign: bool = False  # ``=`` instead of ``:=``


@dataclass
class Node:
    """text, action, if, range, with, break, continue."""

    kind: str
    text: str = ""
    pipe: Pipeline | None = None
    body: list[Node] = field(default_factory=list)
    otherwise: list[Node] = field(default_factory=list)


# -- parsing -------------------------------------------------------------------------------


def parse(template: str) -> list[Node]:
    """The template's nodes; BadRequest (``template error: …``) on what Go would reject."""
    root: list[Node] = []
    # each frame: (the list being filled, the node that owns it or None, its keyword)
    stack: list[tuple[list[Node], Node | None, str]] = [(root, None, "")]
    for kind, value in _lex(template):
        target = stack[-1][0]
        if kind == "text":
            if value:
                target.append(Node("text", text=value))
            continue
        word, _, rest = value.partition(" ")
        rest = rest.strip()
        word = word.strip()
        if word in ("if", "range", "with"):
            node = Node(word, pipe=_pipeline(rest, allow_decl=True))
            target.append(node)
            stack.append((node.body, node, word))
        elif word == "else":
            _else(stack, rest)
        elif word == "end":
            if len(stack) == 1:
                raise template_error("unexpected {{end}}")
            while stack[-1][2] == "elseif":  # an else-if chain closes with one end
                stack.pop()
            stack.pop()
        elif word in ("break", "continue"):
            if not any(frame[2] == "range" for frame in stack):
                raise template_error(f"{{{{{word}}}}} outside {{{{range}}}}")
            target.append(Node(word))
        elif word in ("define", "template", "block"):
            raise template_error(f"unsupported action {{{{{word}}}}}")
        else:
            target.append(Node("action", pipe=_pipeline(value, allow_decl=True)))
    if len(stack) != 1:
        raise template_error("unexpected EOF (missing {{end}})")
    return root


def _else(stack: list[tuple[list[Node], Node | None, str]], rest: str) -> None:
    _, owner, word = stack[-1]
    if owner is None or word not in ("if", "range", "with", "elseif"):
        raise template_error("unexpected {{else}}")
    if not rest:
        stack[-1] = (owner.otherwise, owner, word)
        return
    chained, _, pipe = rest.partition(" ")
    if chained not in ("if", "with") or word == "range":
        raise template_error(f"unexpected {{{{else {rest}}}}}")
    node = Node(chained, pipe=_pipeline(pipe.strip(), allow_decl=True))
    owner.otherwise.append(node)
    stack[-1] = (owner.otherwise, owner, word)
    stack.append((node.body, node, "elseif"))


def _lex(template: str) -> list[tuple[str, str]]:
    """Text and action bodies, trim markers applied, comments dropped."""
    out: list[tuple[str, str]] = []
    pos, trim_next = 0, False
    for match in _ACTION.finditer(template):
        text = template[pos : match.start()]
        if trim_next:
            text = text.lstrip()
        if match.group(1):
            text = text.rstrip()
        out.append(("text", text))
        body = match.group(2).strip()
        if not (body.startswith("/*") and body.endswith("*/")):
            if not body:
                raise template_error("missing value for command")
            out.append(("action", body))
        trim_next = bool(match.group(3))
        pos = match.end()
    rest = template[pos:]
    if "{{" in rest:
        raise template_error("unclosed action")
    out.append(("text", rest.lstrip() if trim_next else rest))
    return out


def _pipeline(text: str, *, allow_decl: bool) -> Pipeline:
    tokens = _tokens(text)
    variables: list[str] = []
    assign = False
    decl = next((i for i, t in enumerate(tokens) if t[0] == "op" and t[1] in (":=", "=")), None)
    if (
        decl is not None
        and allow_decl
        and all(t[0] == "var" or t == ("op", ",") for t in tokens[:decl])
    ):
        variables = [t[1] for t in tokens[:decl] if t[0] == "var"]
        assign = tokens[decl][1] == "="
        tokens = tokens[decl + 1 :]
    commands, _ = _commands(tokens, 0, closing=False)
    if not commands or any(not c for c in commands):
        raise template_error(f"missing value in {{{{{text}}}}}")
    return Pipeline(commands, variables, assign)


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise template_error(f"unexpected {text[pos : pos + 20]!r} in {{{{{text}}}}}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


def _commands(
    tokens: list[tuple[str, str]], pos: int, *, closing: bool
) -> tuple[list[list[Operand]], int]:
    commands: list[list[Operand]] = [[]]
    while pos < len(tokens):
        kind, value = tokens[pos]
        if kind == "op" and value == ")":
            if not closing:
                raise template_error("unexpected )")
            return commands, pos + 1
        if kind == "op" and value == "|":
            commands.append([])
            pos += 1
            continue
        if kind == "op" and value == "(":
            inner, pos = _commands(tokens, pos + 1, closing=True)
            operand = Operand("call", Pipeline(inner))
            if pos < len(tokens) and tokens[pos][0] == "field" and tokens[pos][1] != ".":
                operand.chain = tuple(tokens[pos][1].split(".")[1:])
                pos += 1
            commands[-1].append(operand)
            continue
        commands[-1].append(_operand(kind, value))
        pos += 1
    if closing:
        raise template_error("unclosed left paren")
    return commands, pos


def _operand(kind: str, value: str) -> Operand:
    if kind == "field":
        return Operand("field", chain=tuple(value.split(".")[1:]) if value != "." else ())
    if kind == "var":
        name, _, rest = value.partition(".")
        return Operand("var", name, tuple(rest.split(".")) if rest else ())
    if kind == "str":
        return Operand("const", _unquote(value))
    if kind == "raw":
        return Operand("const", value[1:-1])
    if kind == "char":
        return Operand("const", ord(_unquote('"' + value[1:-1] + '"')))
    if kind == "num":
        number = value.lower()
        if number.lstrip("+-").startswith("0x"):
            return Operand("const", int(number, 16))
        return Operand("const", float(value) if any(c in number for c in ".e") else int(value))
    if kind == "ident":
        if value in ("true", "false"):
            return Operand("const", value == "true")
        if value == "nil":
            return Operand("const", None)
        if value in _KEYWORDS:
            raise template_error(f"unexpected keyword {value}")
        return Operand("ident", value)
    raise template_error(f"unexpected {value!r}")


def _unquote(literal: str) -> str:
    import json

    try:
        return json.loads(literal)
    except ValueError:
        raise template_error(f"bad string {literal}") from None


def template_vars(template: str) -> set[str]:
    """Ollama's ``Template.Vars``: every field name read, lower-cased."""
    found: set[str] = set()

    def operands(pipe: Pipeline | None) -> None:
        for command in pipe.commands if pipe else []:
            for operand in command:
                found.update(name.lower() for name in operand.chain)
                if operand.kind == "call":
                    operands(operand.value)

    def walk(nodes: list[Node]) -> None:
        for node in nodes:
            operands(node.pipe)
            walk(node.body)
            walk(node.otherwise)

    walk(parse(template))
    return found


def infer_thinking_tags(template: str) -> tuple[str, str]:
    """Ollama's ``thinking.InferTags``: the text around the last ``.Thinking`` read inside a
    ``range`` over ``.Messages`` (the first and last nodes of the innermost list holding it,
    when both are text), e.g. ``("<think>", "</think>")``; empty strings when there is none."""
    found = ("", "")

    def fields(pipe: Pipeline | None) -> Iterator[Operand]:
        for command in pipe.commands if pipe else []:
            for operand in command:
                yield operand
                if operand.kind == "call":
                    yield from fields(operand.value)

    def walk(nodes: list[Node], in_messages: bool | None) -> None:
        nonlocal found
        for node in nodes:
            reads = any(
                o.kind == "field" and o.chain[:1] == ("Thinking",) for o in fields(node.pipe)
            )
            if reads and in_messages and nodes[0].kind == "text" and nodes[-1].kind == "text":
                found = (nodes[0].text.strip(), nodes[-1].text.strip())
            inner = in_messages
            if node.kind == "range":
                inner = any(
                    o.kind == "field" and o.chain[:1] == ("Messages",) for o in fields(node.pipe)
                )
            walk(node.body, inner)
            walk(node.otherwise, inner)

    walk(parse(template), None)
    return found


__all__ = [
    "Node",
    "Operand",
    "Pipeline",
    "infer_thinking_tags",
    "parse",
    "template_error",
    "template_vars",
]
