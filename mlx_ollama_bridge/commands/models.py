"""``list``, ``ps``, ``show``, ``rm``, ``cp``, ``stop``: the model commands of ``ollama``."""

from __future__ import annotations

from typing import Any

import click

from ..client import ClientError
from .common import backend_option, state
from .format import human_bytes, human_time, processor, table, until

BACKEND_COLUMN = "BACKEND"


def _backend(entry: dict[str, Any], label: str) -> str:
    details = entry.get("details")
    said = details.get("backend") if isinstance(details, dict) else None
    return label or str(said or "")


def _with_backend(
    headers: list[str], rows: list[list[str]], entries: list[dict], label: str
) -> list[str]:
    """Add a BACKEND column when the server says where models run (the bridge does), or
    when the CLI knows whom it asked (``--backend ollama`` talks to Ollama directly)."""
    if not any(_backend(e, label) for e in entries):
        return headers
    for row, entry in zip(rows, entries, strict=True):
        row.append(_backend(entry, label))
    return [*headers, BACKEND_COLUMN]


@click.command("list")
@click.argument("prefix", required=False)
@backend_option
def list_models(prefix: str | None, backend: str | None) -> None:
    """List models (NAME, ID, SIZE, MODIFIED), like `ollama list`."""
    client = state().client_for(backend)
    models = client.tags()
    if prefix:
        models = [m for m in models if str(m.get("name", "")).lower().startswith(prefix.lower())]
    rows = [
        [
            str(m.get("name", "")),
            str(m.get("digest", ""))[:12],
            "-" if m.get("remote_model") else human_bytes(int(m.get("size") or 0)),
            human_time(m.get("modified_at")),
        ]
        for m in models
    ]
    headers = _with_backend(["NAME", "ID", "SIZE", "MODIFIED"], rows, models, client.label)
    click.echo(table(headers, rows))


@click.command("ps")
@click.argument("prefix", required=False)
@backend_option
def ps(prefix: str | None, backend: str | None) -> None:
    """List loaded models (NAME, ID, SIZE, PROCESSOR, CONTEXT, UNTIL), like `ollama ps`."""
    client = state().client_for(backend)
    models = client.ps()
    if prefix:
        models = [m for m in models if str(m.get("name", "")).startswith(prefix)]
    rows = []
    for m in models:
        size, vram = int(m.get("size") or 0), int(m.get("size_vram") or 0)
        rows.append(
            [
                str(m.get("name", "")),
                str(m.get("digest", ""))[:12],
                human_bytes(size),
                processor(size, vram),
                str(m.get("context_length", "")),
                until(m.get("expires_at")),
            ]
        )
    columns = ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    headers = _with_backend(columns, rows, models, client.label)
    click.echo(table(headers, rows))


_SHOW_PARTS = ("license", "modelfile", "parameters", "system", "template")


@click.command()
@click.argument("model")
@click.option("--license", "part", flag_value="license", help="Show the license.")
@click.option("--modelfile", "part", flag_value="modelfile", help="Show the Modelfile.")
@click.option("--parameters", "part", flag_value="parameters", help="Show the parameters.")
@click.option("--system", "part", flag_value="system", help="Show the system message.")
@click.option("--template", "part", flag_value="template", help="Show the template.")
@click.option("-v", "--verbose", is_flag=True, help="Also show the model's metadata.")
def show(model: str, part: str | None, verbose: bool) -> None:
    """Show a model's details, like `ollama show`."""
    info = state().bridge().show(model, verbose=verbose)
    if part in ("system", "template"):
        click.echo(info.get(part, ""), nl=False)
        return
    if part:
        click.echo(info.get(part, ""))
        return
    click.echo(render_show(info, verbose))


def render_show(info: dict[str, Any], verbose: bool = False) -> str:
    """The sections ``ollama show`` prints: Model, Capabilities, Parameters, System, ..."""
    sections = [("Model", _model_rows(info))]
    if info.get("capabilities"):
        sections.append(("Capabilities", [[c] for c in info["capabilities"]]))
    if info.get("parameters"):
        rows = [line.split() for line in str(info["parameters"]).splitlines() if line.strip()]
        sections.append(("Parameters", [[r[0], " ".join(r[1:])] for r in rows]))
    if verbose and isinstance(info.get("model_info"), dict):
        meta = info["model_info"]
        sections.append(("Metadata", [[k, _short(meta[k])] for k in sorted(meta)]))
    for key, title in (("system", "System"), ("license", "License")):
        if info.get(key):
            sections.append((title, _head(str(info[key]), 2)))
    out = []
    for title, rows in sections:
        out.append(f"  {title}\n{table(None, rows, indent='    ')}\n")
    return "\n".join(out)


def _model_rows(info: dict[str, Any]) -> list[list[str]]:
    details = info.get("details") or {}
    meta = info.get("model_info")
    if not isinstance(meta, dict):
        return [
            ["architecture", str(details.get("family", ""))],
            ["parameters", str(details.get("parameter_size", ""))],
            ["quantization", str(details.get("quantization_level", ""))],
        ]
    arch = meta.get("general.architecture")
    rows = [["architecture", str(arch)]] if arch else []
    if details.get("parameter_size"):
        rows.append(["parameters", str(details["parameter_size"])])
    for key in ("context_length", "embedding_length"):
        label = key.replace("_", " ")
        value = meta.get(f"{arch}.{key}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append([label, f"{value:g}" if isinstance(value, float) else str(value)])
    rows.append(["quantization", str(details.get("quantization_level", ""))])
    return rows


def _short(value: Any) -> str:
    if isinstance(value, list):
        shown = ", ".join(map(str, value[:3]))
        return f"[{shown} ...+{len(value) - 3} more]" if len(value) > 3 else f"[{shown}]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _head(text: str, count: int) -> list[list[str]]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return [[line] for line in lines[:count]] + ([["..."]] if len(lines) > count else [])


@click.command("rm")
@click.argument("models", nargs=-1, required=True)
def remove(models: tuple[str, ...]) -> None:
    """Remove models (unloading them first), like `ollama rm`."""
    client = state().bridge()
    for name in models:
        try:
            client.unload(name)
        except ClientError as exc:
            if "not found" not in exc.message.lower():
                click.echo(f"Warning: unable to stop model '{name}'", err=True)
        client.delete(name)
        click.echo(f"deleted '{name}'")


@click.command("cp")
@click.argument("source")
@click.argument("destination")
def copy(source: str, destination: str) -> None:
    """Copy a model under a new name, like `ollama cp`."""
    state().bridge().copy(source, destination)
    click.echo(f"copied '{source}' to '{destination}'")


@click.command()
@click.argument("model")
def stop(model: str) -> None:
    """Unload a model now (keep_alive 0), like `ollama stop`."""
    try:
        state().bridge().unload(model)
    except ClientError as exc:
        if "not found" in exc.message.lower():
            raise click.ClickException(f'couldn\'t find model "{model}" to stop') from exc
        raise


COMMANDS = (list_models, ps, show, remove, copy, stop)
