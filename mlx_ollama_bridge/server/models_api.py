"""Model management over HTTP: ``/api/copy``, ``/api/delete``, ``/api/create``, ``/api/pull``,
``/api/blobs/:digest``.

Requests are checked here (names, types, parameters typed by the engine's option table);
the store does the work (``store.manage``, ``store.pull``, ``store.blobs``). Copy and delete
answer 200 with an empty body, as Ollama; create and pull stream NDJSON status lines ending
in ``success``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from flask import Response, jsonify, request

from ..engine import validate_options
from ..engine.options import OPTION_TYPES
from ..errors import BadRequest, BridgeError
from ..store.blobs import blob_file, check_files, save_blob
from ..store.create import CreateSpec, plan_create
from ..store.manage import copy_model, delete_model
from ..store.modelfile import Modelfile, parse_modelfile
from ..store.pull import check_pull_name, pull_events
from .context import get_registry
from .model_views import shown_template
from .parsing import model_name, optional, optional_str
from .streaming import ndjson_response

_ROLES = ("system", "user", "assistant", "tool")
_BLOB_LIMIT_BYTES = 1 << 40  # 1 TiB: no model file is bigger
_GO_TEMPLATE = re.compile(r"\{\{-?\s*(\.|if\s|range\s|end\b|else\b|template\s|define\s|block\s)")
_PATH_LIKE = re.compile(r"^(\.{0,2}/|~|[A-Za-z]:\\)|\.gguf$|\.safetensors$", re.IGNORECASE)


def handle_copy(body: dict[str, Any]) -> Response:
    """POST /api/copy: a second name for a model."""
    source = optional(body, "source", str, "")
    destination = optional(body, "destination", str, "")
    copy_model(get_registry(), source, destination)
    return Response(status=200)


def handle_delete(body: dict[str, Any]) -> Response:
    """DELETE /api/delete: remove a name (and weights nothing else uses)."""
    delete_model(get_registry(), model_name(body))
    return Response(status=200)


def handle_create(body: dict[str, Any]) -> Response:
    """POST /api/create: a model from an existing one, with JSON fields or Modelfile text."""
    name = model_name(body)
    text = optional(body, "modelfile", str)
    parsed = parse_modelfile(text) if text else Modelfile()
    _refuse_unsupported(body, parsed)
    files = check_files(body["files"]) if body.get("files") else None
    base = None if files else optional_str(body, "from") or parsed.base
    if not base and not files:
        raise BadRequest("neither 'from' or 'files' was specified")
    if base and _PATH_LIKE.search(base):
        raise BadRequest(
            f"FROM a file path ({base}) is read by the client: upload it to /api/blobs and "
            "send files (ollama create does), or `mlx-ollama-bridge import FILE --name NAME`"
        )
    template = _first(optional(body, "template", str), parsed.template)
    if template is not None and base and _is_shown_form(template, base):
        template = None  # `ollama show --modelfile` output fed back: keep the base's own
    if template is not None:
        check_template(template)
    parameters = typed_parameters(parsed.parameters)
    parameters.update(validate_options(body.get("parameters"), where="parameters"))
    messages = body.get("messages")
    adapters = body.get("adapters")
    spec = CreateSpec(
        name=name,
        base=base,
        files=files,
        system=_first(optional(body, "system", str), parsed.system),
        template=template,
        parameters=parameters or None,
        messages=check_messages(messages) if messages is not None else (parsed.messages or None),
        quantize=optional_str(body, "quantize") or optional_str(body, "quantization"),
        adapters=check_files(adapters, "adapters") if adapters else None,
    )
    plan = plan_create(get_registry(), spec)  # 4xx here, before any line is streamed
    return status_response(plan.events(), body)


def handle_pull(body: dict[str, Any]) -> Response:
    """POST /api/pull: download a model from Hugging Face, streaming Ollama's status lines."""
    name = model_name(body)
    check_pull_name(name)  # 400 before the stream starts
    return status_response(pull_events(get_registry(), name), body)


def handle_blob(digest: str) -> Response:
    """HEAD/POST /api/blobs/<digest>: does the blob exist / upload it (raw bytes, not JSON)."""
    registry = get_registry()
    if request.method == "HEAD":
        return Response(status=200 if blob_file(registry, digest).is_file() else 404)
    request.max_content_length = _BLOB_LIMIT_BYTES  # model files dwarf JSON bodies
    created = save_blob(registry, digest, request.stream)
    return Response(status=201 if created else 200)


def status_response(lines: Iterable[dict[str, Any]], body: dict[str, Any]) -> Response:
    """NDJSON status lines, or with ``stream: false`` the last one (an error line's ``status``,
    else 500, if it is an error)."""
    if optional(body, "stream", bool, True):
        return ndjson_response(lines)
    last: dict[str, Any] = {}
    for last in lines:
        if "error" in last:
            raise BridgeError(last["error"], status_code=getattr(last, "status", 500))
    if not last:
        raise BridgeError("no status was produced")
    return jsonify(last)


def typed_parameters(raw: dict[str, list[str]]) -> dict[str, Any]:
    """Modelfile PARAMETER strings -> typed option values; 400 for unknown names or bad values."""
    typed: dict[str, Any] = {}
    for key, values in raw.items():
        kind = OPTION_TYPES.get(key)
        if kind is None:
            raise BadRequest(f"unknown parameter '{key}'")
        try:
            typed[key] = values if kind == "array" else _convert(kind, values[-1])
        except ValueError:
            raise BadRequest(f"invalid value for parameter '{key}': {values[-1]!r}") from None
    return validate_options(typed, where="parameters")


def _is_shown_form(template: str, base: str) -> bool:
    """True if ``template`` is the Go-template form ``/api/show`` gives for ``base``."""
    try:
        model = get_registry().resolve(base)
    except BridgeError:
        return False  # the create itself reports the missing base
    return template.strip() == shown_template(model).strip() != model.chat_template


def check_template(template: str) -> None:
    """Chat templates here are Jinja (as in Hugging Face tokenizers); 400 otherwise."""
    if _GO_TEMPLATE.search(template) and "{%" not in template:
        raise BadRequest(
            "template error: this is a Go template ({{ .Prompt }} style); this bridge renders "
            "chat templates with Jinja, as Hugging Face tokenizers do: give a Jinja template "
            "(see /api/show of the base model)"
        )
    try:
        import jinja2  # comes with transformers, which mlx-lm needs
    except ImportError:  # pragma: no cover - not checked rather than refused
        return
    try:
        jinja2.Environment().parse(template)
    except jinja2.TemplateSyntaxError as exc:
        raise BadRequest(f"template error: {exc}") from exc


def check_messages(messages: Any) -> list[dict[str, str]]:
    """``messages``: a list of {role, content} with Ollama's roles."""
    if not isinstance(messages, list):
        raise BadRequest('field "messages" must be an array')
    out = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise BadRequest(f"each message needs a role: one of {', '.join(_ROLES)}")
        content = message.get("content") or ""
        if not isinstance(content, str):
            raise BadRequest("message content must be a string")
        out.append({"role": message["role"], "content": content})
    return out


def _refuse_unsupported(body: dict[str, Any], parsed: Modelfile) -> None:
    if parsed.adapters:
        raise BadRequest(
            f"ADAPTER {parsed.adapters[0]} is read by the client: upload the adapter's files "
            "to /api/blobs and send adapters (ollama create does)"
        )


def _convert(kind: str, value: str) -> Any:
    if kind == "integer":
        return int(float(value)) if "." in value else int(value)
    if kind == "float32":
        return float(value)
    if kind == "boolean":
        if value.lower() not in ("true", "false"):
            raise ValueError(value)
        return value.lower() == "true"
    return value


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)
