"""Responses API tools (``tools``, ``tool_choice``) -> native function tools.

Flat function tools (``{"type": "function", "name", "description", "parameters"}``) become
Ollama's nested ``{"type": "function", "function": {...}}``. As Ollama: ``namespace`` tools
expand to ``namespace.member`` functions and other named tools (``custom``) are shown to the
model by name. Tools the bridge cannot run or show are skipped, never refused: ``web_search*``
(Ollama runs it through its cloud service) and tools without a name (``local_shell``,
``file_search``, ``computer_use_preview`` …). Beyond Ollama, which ignores ``tool_choice``:
``none`` hides the tools and a named function or ``allowed_tools`` narrows them.
"""

from __future__ import annotations

from typing import Any

from .openai_translate import InvalidField


def native_tools(tools: Any, choice: Any) -> list[dict[str, Any]]:
    """The native tools a request's ``tools`` and ``tool_choice`` leave the model."""
    return _apply_tool_choice(_tools(tools), choice)


def namespaced(tools: Any) -> dict[str, tuple[str, str]]:
    """``namespace.member`` -> (namespace, member) for every function a namespace declares,
    so that a call the model writes by the qualified name is answered as OpenAI answers it:
    ``name`` the member and ``namespace`` its namespace (Ollama leaves the qualified name)."""
    found: dict[str, tuple[str, str]] = {}

    def walk(tool: dict[str, Any], prefix: str) -> None:
        if tool.get("type") == "namespace":
            name = tool.get("name") if isinstance(tool.get("name"), str) else ""
            inner = f"{prefix}{name}." if name else prefix
            for member in tool.get("tools") if isinstance(tool.get("tools"), list) else []:
                if isinstance(member, dict):
                    walk(member, inner)
        elif prefix and isinstance(tool.get("name"), str) and tool["name"]:
            member = tool["name"].removeprefix(prefix)
            found[prefix + member] = (prefix[:-1], member)

    for tool in tools if isinstance(tools, list) else []:
        if isinstance(tool, dict):
            walk(tool, "")
    return found


# -- tools --------------------------------------------------------------------------------


def _tools(value: Any) -> list[dict[str, Any]]:
    """Responses tools (flat ``{"type", "name", "parameters"}``) -> native function tools."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidField("'tools' must be an array", "tools")
    tools: list[dict[str, Any]] = []
    for index, tool in enumerate(value):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise InvalidField(f"tools[{index}] must be an object with a type", "tools")
        tools.extend(_expand(tool, ""))
    return tools


def _expand(tool: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    kind = tool.get("type")
    if _is_web_search(tool):
        return []  # Ollama runs web search through its cloud service; nothing to run here
    if kind == "namespace":
        name = tool.get("name") if isinstance(tool.get("name"), str) else ""
        members = tool.get("tools") if isinstance(tool.get("tools"), list) else []
        inner = f"{prefix}{name}." if name else prefix
        return [t for m in members if isinstance(m, dict) for t in _expand(m, inner)]
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        if kind == "function":
            raise InvalidField("function tools need a 'name'", "tools")
        return []  # local_shell, file_search, computer_use…: nothing a model can call here
    if prefix and not name.startswith(prefix):
        name = prefix + name
    parameters = tool.get("parameters")
    if not isinstance(parameters, dict):
        parameters = {"type": "object", "properties": {}}
    function = {
        "name": name,
        "description": tool.get("description") or "",
        "parameters": parameters,
    }
    return [{"type": kind, "function": function}]


def _is_web_search(tool: Any) -> bool:
    return isinstance(tool, dict) and str(tool.get("type", "")).startswith("web_search")


def _apply_tool_choice(tools: list[dict[str, Any]], choice: Any) -> list[dict[str, Any]]:
    """``none`` drops the tools, a named function keeps only it, ``allowed_tools`` keeps
    its list; ``auto`` and ``required`` keep them all (a model cannot be forced to call)."""
    if choice is None or choice in ("auto", "required"):
        return tools
    if choice == "none":
        return []
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
        raise InvalidField(
            "'tool_choice' must be 'none', 'auto', 'required' or an object", "tool_choice"
        )
    if choice["type"] in ("function", "custom"):
        return _keep(tools, [choice.get("name")])
    if choice["type"] == "allowed_tools":
        allowed = choice.get("tools")
        if not isinstance(allowed, list):
            raise InvalidField("'tool_choice.tools' must be an array", "tool_choice")
        names = [t.get("name") for t in allowed if isinstance(t, dict) and t.get("name")]
        return [] if choice.get("mode") == "none" else _keep(tools, names, missing_ok=True)
    return tools  # a hosted tool (web_search, mcp, …): nothing to narrow


def _keep(
    tools: list[dict[str, Any]], names: list[Any], *, missing_ok: bool = False
) -> list[dict[str, Any]]:
    kept = [t for t in tools if t["function"]["name"] in names]
    if not kept and not missing_ok:
        raise InvalidField(
            f"Tool choice '{names[0]}' not found in 'tools' parameter.", "tool_choice"
        )
    return kept
