"""``status``, ``switch`` and ``config show``: which backends answer, which one to use, settings."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from ..client import Client, ClientError
from ..config import CONFIG_FILE_NAME, SETTINGS, trim
from ..upstream import LOCAL_ONLY_HEADER
from .common import BACKENDS, CliState, state
from .format import table
from .group_checks import group_table

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

PROBE_TIMEOUT_S = 5.0  # status must not hang on a server that accepts and never answers
_MEANING = {
    "mlx": "the bridge, its own MLX models only",
    "ollama": "the upstream Ollama directly",
    "auto": "the bridge; models it lacks go to the upstream Ollama",
}


def probe(name: str, url: str | None, local_only: bool = False) -> dict[str, Any]:
    """Up/down, version, round-trip latency and loaded models of one server."""
    report: dict[str, Any] = {"name": name, "url": url or "off", "up": False}
    if not url:
        return report
    headers = {LOCAL_ONLY_HEADER: "1"} if local_only else None
    client = Client(url, headers=headers, connect_timeout_s=2.0, read_timeout_s=PROBE_TIMEOUT_S)
    try:
        started = time.perf_counter()
        report["version"] = client.version()
        report["latency_ms"] = (time.perf_counter() - started) * 1000
        report["loaded"] = [str(m.get("name", "")) for m in client.ps()]
        report["up"] = True
        if local_only:  # serve --hostfile: the ranks (a broken group answers 503)
            report["group"] = _group_of(client)
    except ClientError as exc:
        report["error"] = exc.message
    return report


def _group_of(client: Client) -> dict[str, Any] | None:
    """``/health``'s ``group`` (None on one machine)."""
    try:
        return client.health().get("group")
    except ClientError:
        return None


@click.command()
def status() -> None:
    """Show both backends (the bridge and the upstream Ollama): up/down, version, latency."""
    cli = state()
    reports = [
        probe("mlx (bridge)", cli.bridge_url, local_only=True),
        probe("ollama", cli.upstream_url),
    ]
    rows = []
    for r in reports:
        state_text = "up" if r["up"] else ("off" if r["url"] == "off" else "down")
        latency = f"{r['latency_ms']:.0f} ms" if r["up"] else "-"
        loaded = ", ".join(r.get("loaded", [])) or "-"
        rows.append([r["name"], r["url"], state_text, r.get("version") or "-", latency, loaded])
    click.echo(table(["BACKEND", "URL", "STATE", "VERSION", "LATENCY", "LOADED"], rows))
    for r in reports:
        if r.get("group"):
            click.echo("\n" + group_table(r["group"]))
    backend = cli.preferred_backend()
    click.echo(f"\nrun/chat/list use: {backend} ({_MEANING[backend]})")
    if not any(r["up"] for r in reports):
        click.get_current_context().exit(1)


@click.command()
@click.argument("backend", type=click.Choice(BACKENDS), required=False)
def switch(backend: str | None) -> None:
    """Choose the backend run/chat/list use: mlx, ollama or auto (no argument: show it)."""
    cli = state()
    if backend is None:
        current = cli.preferred_backend()
        click.echo(f"{current} ({_MEANING[current]})")
        return
    if backend == "ollama" and not cli.upstream_url:
        raise click.ClickException("MLX_BRIDGE_UPSTREAM is off: there is no Ollama to switch to")
    try:
        cli.save_backend(backend)
    except OSError as exc:
        raise click.ClickException(f"cannot save {cli.preference_path}: {exc}") from exc
    click.echo(f"run/chat/list now use: {backend} ({_MEANING[backend]})")


@click.group("config")
def config_group() -> None:
    """Inspect the settings (environment, config.toml, defaults)."""


@config_group.command("show")
def config_show() -> None:
    """Every setting with its value and where the value comes from."""
    cli = state()
    settings = cli.settings
    config_file = Path(settings.config_dir) / CONFIG_FILE_NAME
    in_file = _file_keys(config_file) - {"config_dir"}  # config_dir cannot come from the file
    rows = []
    for setting in SETTINGS:
        value = _text(getattr(settings, setting.name))
        if trim(os.environ.get(setting.env, "")):
            source = "environment"
        elif setting.name in in_file:
            source = f"file {config_file}"
        else:
            source = "default"
        if "key" in setting.name or "token" in setting.name:  # never print a secret
            value = "(set)" if getattr(settings, setting.name) else "(not set)"
        if setting.name == "host" and cli.host:
            value, source = cli.bridge_url, "flag --host"
        rows.append([setting.name, setting.env, value, source])
    rows.append(["cli backend", "-", cli.preferred_backend(), _backend_source(cli)])
    click.echo(table(["SETTING", "ENVIRONMENT", "VALUE", "SOURCE"], rows))


def _text(value: Any) -> str:
    if value is None:
        return "off"
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value)) or "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == float("inf"):
        return "forever"
    return str(value)


def _file_keys(path: Path) -> set[str]:
    try:
        return set(tomllib.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return set()


def _backend_source(cli: CliState) -> str:
    return f"file {cli.preference_path}" if cli.preference_path.exists() else "default"


COMMANDS = (status, switch, config_group)
