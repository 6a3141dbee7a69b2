"""Chat prompts from an Ollama model template (a pulled model's ``template`` layer).

:func:`render_chat_template` is Ollama's ``template.Execute``: a template that reads
``.Messages`` gets the collated messages (consecutive turns of one role merged, system
texts joined into ``.System``), ``.Tools``, ``.Think``/``.ThinkLevel``/``.IsThinkSet``;
an older template is run once per turn with ``.System``/``.Prompt``/``.Response`` and cut at
the last turn's ``.Response``. Messages, tool calls and tools are Ollama's template types
(``templateMessage``, ``templateToolCall``, ``templateTool``): tools and arguments print as
JSON, as their ``String()`` methods do.
"""

from __future__ import annotations

from typing import Any

from .gotemplate_exec import execute, template_vars
from .gotemplate_funcs import GoList, GoMap, GoStruct


def render_chat_template(
    template: str,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    *,
    think: bool = False,
    think_level: str = "",
    think_set: bool = False,
) -> str:
    """A chat prompt from an Ollama model template, as Ollama's ``template.Execute``."""
    system, collated = _collate(messages)
    flags = {"Think": think, "ThinkLevel": think_level, "IsThinkSet": think_set}
    if "messages" in template_vars(template):
        root = {
            "System": system,
            "Messages": [_message(m) for m in collated],
            "Tools": GoList(_tool(t) for t in tools) if tools else None,
            "Response": "",
            **flags,
        }
        return execute(template, root)
    out, turn = [], {"System": "", "Prompt": "", "Response": ""}
    for message in collated:  # an older template: once per turn, cut at the last .Response
        role, content = message.get("role"), message.get("content") or ""
        if (role == "system" and (turn["Prompt"] or turn["Response"])) or (
            role == "user" and turn["Response"]
        ):
            out.append(execute(template, {**turn, **flags}))
            turn = {"System": "", "Prompt": "", "Response": ""}
        key = {"system": "System", "user": "Prompt", "assistant": "Response"}.get(str(role))
        if key:
            turn[key] = content
    out.append(execute(template, {**turn, **flags}, stop_at_response=True))
    return "".join(out)


def render_fim_template(template: str, prompt: str, suffix: str) -> str:
    """A fill-in-the-middle prompt: Ollama runs the whole template with only ``.Prompt`` and
    ``.Suffix`` (and the think flags) when a request has both."""
    root = {"Prompt": prompt, "Suffix": suffix, "Response": ""}
    return execute(template, {**root, "Think": False, "ThinkLevel": "", "IsThinkSet": False})


def _collate(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    systems: list[str] = []
    collated: list[dict[str, Any]] = []
    for message in messages:
        if message.get("role") == "system":
            systems.append(message.get("content") or "")
        last = collated[-1] if collated else None
        if last is not None and last["role"] == message.get("role") and last["role"] != "tool":
            last["content"] = f"{last.get('content') or ''}\n\n{message.get('content') or ''}"
        else:
            collated.append(dict(message))
    return "\n\n".join(systems), collated


def _message(message: dict[str, Any]) -> GoStruct:
    calls = [
        GoStruct(
            [
                ("ID", "id", call.get("id") or "", False),
                (
                    "Function",
                    "function",
                    GoStruct(
                        [
                            ("Index", "index", (call.get("function") or {}).get("index", 0), False),
                            ("Name", "name", (call.get("function") or {}).get("name", ""), False),
                            (
                                "Arguments",
                                "arguments",
                                GoMap((call.get("function") or {}).get("arguments") or {}),
                                False,
                            ),
                        ]
                    ),
                    False,
                ),
            ]
        )
        for call in message.get("tool_calls") or []
    ]
    return GoStruct(
        [
            ("Role", "role", message.get("role", ""), False),
            ("Content", "content", message.get("content") or "", False),
            ("Thinking", "thinking", message.get("thinking") or "", False),
            ("Images", "images", message.get("images") or [], False),
            ("ToolCalls", "tool_calls", calls or None, False),
            ("ToolName", "tool_name", message.get("tool_name") or "", False),
            ("ToolCallID", "tool_call_id", message.get("tool_call_id") or "", False),
        ]
    )


def _tool(tool: dict[str, Any]) -> GoStruct:
    function = tool.get("function") or {}
    params = function.get("parameters") or {}
    parameters = GoStruct(
        [
            ("Type", "type", params.get("type", ""), False),
            ("Defs", "$defs", params.get("$defs"), True),
            ("Items", "items", params.get("items"), True),
            ("Required", "required", params.get("required"), True),
            ("Properties", "properties", _properties(params.get("properties")), False),
        ]
    )
    inner = GoStruct(
        [
            ("Name", "name", function.get("name", ""), False),
            ("Description", "description", function.get("description", ""), False),
            ("Parameters", "parameters", parameters, False),
        ]
    )
    return GoStruct(
        [
            ("Type", "type", tool.get("type", "function"), False),
            ("Items", "items", tool.get("items"), True),
            ("Function", "function", inner, False),
        ],
        json_string=True,
    )


def _properties(properties: Any) -> GoMap:
    """``templateProperties``: name -> ``api.ToolProperty`` (a struct: its fields' order)."""
    if not isinstance(properties, dict):
        return GoMap()
    return GoMap({str(k): _property(v) for k, v in properties.items()})


def _property(prop: Any) -> Any:
    if not isinstance(prop, dict):
        return prop
    any_of = prop.get("anyOf")
    return GoStruct(
        [
            ("AnyOf", "anyOf", [_property(p) for p in any_of] if any_of else None, True),
            ("Type", "type", prop.get("type"), True),
            ("Items", "items", prop.get("items"), True),
            ("Description", "description", prop.get("description", ""), True),
            ("Enum", "enum", prop.get("enum"), True),
            ("Properties", "properties", _properties(prop.get("properties")) or None, True),
            ("Required", "required", prop.get("required"), True),
        ]
    )


__all__ = ["render_chat_template", "render_fim_template"]
