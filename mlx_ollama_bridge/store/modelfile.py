"""Reading an Ollama Modelfile's text: ``FROM``, ``PARAMETER``, ``SYSTEM``, ``TEMPLATE`` …

Ollama's clients parse Modelfiles themselves and send ``/api/create`` JSON; older clients
and scripts still send the text in a ``modelfile`` field, which is read here. Values may be
bare, ``"quoted"`` or ``\"\"\"triple-quoted\"\"\"`` (spanning lines); ``#`` starts a comment
line; instructions are case-insensitive. Parameter values stay strings: their types are
the engine's business (``engine.options``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import BadRequest

_INSTRUCTION = re.compile(r"([A-Za-z]+)[ \t]+", re.ASCII)
_KNOWN = {"from", "parameter", "system", "template", "message", "license", "adapter", "requires"}
_ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Modelfile:
    """What a Modelfile says; None/empty means the instruction was absent."""

    base: str | None = None
    system: str | None = None
    template: str | None = None
    parameters: dict[str, list[str]] = field(default_factory=dict)  # key -> values, in order
    messages: list[dict[str, str]] = field(default_factory=list)
    license: list[str] = field(default_factory=list)
    adapters: list[str] = field(default_factory=list)


def parse_modelfile(text: str) -> Modelfile:
    """Parse Modelfile ``text``; raises BadRequest naming the line of a mistake."""
    result = Modelfile()
    for number, command, value in _instructions(text):
        if command == "from":
            result.base = value
        elif command == "system":
            result.system = value
        elif command == "template":
            result.template = value
        elif command == "license":
            result.license.append(value)
        elif command == "adapter":
            result.adapters.append(value)
        elif command == "parameter":
            key, _, raw = value.partition(" ")
            if not raw.strip():
                raise BadRequest(f"modelfile line {number}: PARAMETER needs a name and a value")
            result.parameters.setdefault(key.lower(), []).append(_unquote(raw.strip()))
        elif command == "message":
            role, _, content = value.partition(" ")
            if role.lower() not in _ROLES:
                raise BadRequest(
                    f"modelfile line {number}: message role must be one of {', '.join(_ROLES)}"
                )
            result.messages.append({"role": role.lower(), "content": _unquote(content.strip())})
    if result.base is None:
        raise BadRequest("no FROM line in the modelfile")
    return result


def _instructions(text: str):
    """Yield (line number, instruction, value) with quoted values resolved."""
    lines = text.replace("\r\n", "\n").split("\n")
    index = 0
    while index < len(lines):
        number, line = index + 1, lines[index].strip()
        index += 1
        if not line or line.startswith("#"):
            continue
        match = _INSTRUCTION.match(line + " ")
        command = match.group(1).lower() if match else line.split()[0].lower()
        if not match or command not in _KNOWN:
            raise BadRequest(f"modelfile line {number}: unknown instruction {line.split()[0]!r}")
        value = line[match.end() :].strip() if match.end() <= len(line) else ""
        if '"""' in value:
            value, index = _triple_quoted(value, lines, index, number)
        elif command in ("system", "template", "license", "from", "adapter"):
            value = _unquote(value)
        if not value and command == "from":
            raise BadRequest(f"modelfile line {number}: FROM needs a model name")
        yield number, command, value


def _triple_quoted(value: str, lines: list[str], index: int, number: int) -> tuple[str, int]:
    """The text between ``\"\"\"`` and the closing ``\"\"\"`` (the prefix is kept for
    ``MESSAGE user \"\"\"…\"\"\"`` and ``PARAMETER stop \"\"\"…\"\"\"``)."""
    prefix, _, rest = value.partition('"""')
    parts = [rest]
    while '"""' not in parts[-1]:
        if index >= len(lines):
            raise BadRequest(f'modelfile line {number}: unterminated """')
        parts.append(lines[index])
        index += 1
    body = "\n".join(parts)
    body, _, trailing = body.partition('"""')
    if trailing.strip():
        raise BadRequest(f'modelfile line {number}: text after closing """')
    return (f"{prefix}{body}" if prefix else body), index


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


__all__ = ["Modelfile", "parse_modelfile"]
