"""Executing Go templates (parsed by :mod:`.gotemplate`) as Ollama executes model templates.

Values follow Go's rules: truth (``false``, ``0``, ``nil``, empty string, list or map are
false), printing (``fmt``'s ``%v``: ``true``, ``[a b]``, ``map[k:v]``, ``{a b}`` for a
struct, ``<no value>`` for a missing map key), ``range`` over lists, maps (sorted keys) and
integers. Functions: Go's ``and``/``or`` (short-circuit), ``not``, ``len``, ``index``,
``slice``, ``eq``/``ne``/``lt``/``le``/``gt``/``ge``, ``print``/``printf``/``println``,
``html``, ``urlquery``; Ollama's ``json``, ``currentDate``, ``yesterdayDate``,
``toTypeScriptType``.

``GoMap``/``GoStruct``/``GoList`` stand for Go's maps, structs and slices, printing as
Ollama's template types do (``go_print``); :mod:`.ollama_prompt` builds them from a chat.
"""

from __future__ import annotations

from typing import Any

from ..gotemplate import Node, Operand, Pipeline, parse, template_error, template_vars
from .gotemplate_funcs import FUNCS, MISSING, field_of, go_print, truth


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _StopAtResponse(Exception):
    pass


class _Run:
    def __init__(self, root: Any, stop_at_response: bool) -> None:
        self.root = root
        self.stop_at_response = stop_at_response
        self.scopes: list[dict[str, Any]] = [{"$": root}]
        self.out: list[str] = []

    def nodes(self, nodes: list[Node], dot: Any) -> None:
        for node in nodes:
            if node.kind == "text":
                self.out.append(node.text)
            elif node.kind == "action":
                assert node.pipe is not None
                value = self.pipeline(node.pipe, dot)
                if not node.pipe.variables:
                    self.out.append(go_print(value))
            elif node.kind in ("if", "with"):
                self._branch(node, dot)
            elif node.kind == "range":
                self._range(node, dot)
            elif node.kind == "break":
                raise _Break
            else:
                raise _Continue

    def _scoped(self, nodes: list[Node], dot: Any, bound: dict[str, Any] | None = None) -> None:
        self.scopes.append(dict(bound or {}))
        try:
            self.nodes(nodes, dot)
        finally:
            self.scopes.pop()

    def _branch(self, node: Node, dot: Any) -> None:
        assert node.pipe is not None
        self.scopes.append({})
        try:
            value = self.pipeline(node.pipe, dot)
            if truth(value):
                self._scoped(node.body, value if node.kind == "with" else dot)
            else:
                self._scoped(node.otherwise, dot)
        finally:
            self.scopes.pop()

    def _range(self, node: Node, dot: Any) -> None:
        assert node.pipe is not None
        names = node.pipe.variables
        value = self.pipeline(Pipeline(node.pipe.commands), dot)
        if isinstance(value, dict):
            items = [(k, value[k]) for k in sorted(value)]
        elif isinstance(value, int) and not isinstance(value, bool):
            items = [(i, i) for i in range(value)]
        elif isinstance(value, (list, tuple)):
            items = list(enumerate(value))
        elif value is None or value is MISSING:
            items = []
        else:
            raise template_error(f"range can't iterate over {go_print(value)}")
        if not items:
            self._scoped(node.otherwise, dot)
            return
        for key, item in items:
            bound = {names[-1]: item} if names else {}
            if len(names) == 2:
                bound[names[0]] = key
            try:
                self._scoped(node.body, item, bound)
            except _Break:
                break
            except _Continue:
                continue

    def pipeline(self, pipe: Pipeline, dot: Any) -> Any:
        value: Any = MISSING
        for i, command in enumerate(pipe.commands):
            value = self._command(command, dot, value, i > 0)
        for name in pipe.variables:
            if pipe.assign:
                scope = next((s for s in reversed(self.scopes) if name in s), None)
                if scope is None:
                    raise template_error(f"undefined variable: {name}")
                scope[name] = value
            else:
                self.scopes[-1][name] = value
        return value

    def _command(self, command: list[Operand], dot: Any, piped: Any, has_piped: bool) -> Any:
        first, args = command[0], command[1:]
        if first.kind == "ident":
            return self._call(first.value, args, dot, piped, has_piped)
        if args or has_piped:
            raise template_error("can't give argument to non-function")
        return self.operand(first, dot)

    def operand(self, operand: Operand, dot: Any) -> Any:
        if operand.kind == "const":
            return operand.value
        if operand.kind == "ident":
            return self._call(operand.value, [], dot, MISSING, False)
        if operand.kind == "var":
            scope = next((s for s in reversed(self.scopes) if operand.value in s), None)
            if scope is None:
                raise template_error(f"undefined variable: {operand.value}")
            value = scope[operand.value]
        elif operand.kind == "call":
            value = self.pipeline(operand.value, dot)
        else:
            value = dot
        for name in operand.chain:
            if self.stop_at_response and name == "Response":
                raise _StopAtResponse
            value = field_of(value, name)
        return value

    def _call(self, name: str, args: list[Operand], dot: Any, piped: Any, has_piped: bool) -> Any:
        if name in ("and", "or"):  # short-circuit, as Go 1.18+
            thunks = [lambda a=a: self.operand(a, dot) for a in args]
            if has_piped:
                thunks.append(lambda: piped)
            if not thunks:
                raise template_error(f"wrong number of args for {name}")
            value: Any = MISSING
            for thunk in thunks:
                value = thunk()
                if truth(value) == (name == "or"):
                    return value
            return value
        function = FUNCS.get(name)
        if function is None:
            raise template_error(f'function "{name}" not defined')
        values = [self.operand(a, dot) for a in args] + ([piped] if has_piped else [])
        try:
            return function(*values)
        except TypeError as exc:
            raise template_error(f"wrong arguments for {name}: {exc}") from None


def execute(template: str, root: Any, *, stop_at_response: bool = False) -> str:
    """Render ``template`` with ``root`` as ``.`` and ``$``; BadRequest on template errors."""
    run = _Run(root, stop_at_response)
    try:
        run.nodes(parse(template), root)
    except _StopAtResponse:
        pass
    except RecursionError:
        raise template_error("template nests too deeply") from None
    return "".join(run.out)


def render_legacy_template(template: str, values: dict[str, Any]) -> str:
    """``/api/generate``'s ``template``: rendered with ``values`` up to ``.Response``."""
    root = {"System": "", "Prompt": "", "Suffix": "", "Response": "", "Think": False}
    root.update({"ThinkLevel": "", "IsThinkSet": False, **values})  # the keys Ollama passes
    return execute(template, root, stop_at_response=True)


__all__ = ["execute", "render_legacy_template", "template_vars"]
