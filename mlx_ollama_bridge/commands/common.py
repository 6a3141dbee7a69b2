"""What every client command shares: where the servers are, which one to use, errors.

The CLI is a client: it reaches the bridge (``--host``, else ``OLLAMA_HOST``, else the
``host`` setting) and the upstream Ollama (``MLX_BRIDGE_UPSTREAM``) over HTTP only. The
preferred backend for ``run``/``chat``/``list`` (``switch``) lives in ``<config_dir>/cli.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import click

from ..client import Client, ClientError
from ..config import DEFAULT_UPSTREAM, Settings, parse_ollama_host
from ..upstream import LOCAL_ONLY_HEADER

BACKENDS = ("mlx", "ollama", "auto")
PREFERENCE_FILE = "cli.json"
BACKEND_HELP = "mlx (the bridge's own models), ollama (the upstream Ollama) or auto."


@dataclass
class CliState:
    """The group's options, shared with every command through ``ctx.obj``."""

    host: str | None = None  # --host
    notes: list[str] = field(default_factory=list)

    @cached_property
    def settings(self) -> Settings:
        """Settings from the environment and config.toml (as the server reads them)."""
        return Settings.from_env()

    @property
    def bridge_url(self) -> str:
        """The bridge: ``--host`` > ``OLLAMA_HOST`` > the ``host`` setting (file) > default."""
        if self.host:
            return parse_ollama_host(self.host).url
        return self.settings.host.url

    @property
    def upstream_url(self) -> str | None:
        """The upstream Ollama, or None when ``MLX_BRIDGE_UPSTREAM=off``."""
        return self.settings.upstream

    @property
    def preference_path(self) -> Path:
        """``<config_dir>/cli.json``."""
        return Path(self.settings.config_dir) / PREFERENCE_FILE

    def preferred_backend(self) -> str:
        """The saved ``switch`` choice, ``auto`` when none (or the file is unreadable)."""
        try:
            value = json.loads(self.preference_path.read_text(encoding="utf-8")).get("backend")
        except (OSError, ValueError, AttributeError):
            return "auto"
        return value if value in BACKENDS else "auto"

    def save_backend(self, backend: str) -> None:
        """Persist the ``switch`` choice (written whole, then renamed into place)."""
        path = self.preference_path
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"backend": backend}) + "\n", encoding="utf-8")
        os.replace(temporary, path)

    def bridge(self, *, local_only: bool = False) -> Client:
        """A client for the bridge; ``local_only`` keeps the upstream Ollama out of it."""
        headers = {LOCAL_ONLY_HEADER: "1"} if local_only else None
        return Client(self.bridge_url, headers=headers, label="mlx" if local_only else "")

    def upstream(self) -> Client:
        """A client for the upstream Ollama; a one-line error when it is switched off."""
        if not self.upstream_url:
            raise click.ClickException(
                "no upstream Ollama: MLX_BRIDGE_UPSTREAM is off (set it to host:port, "
                f"e.g. {DEFAULT_UPSTREAM})"
            )
        return Client(self.upstream_url, label="ollama")

    def client_for(self, backend: str | None) -> Client:
        """The client for ``backend`` (None = the saved preference).

        ``auto`` is the bridge, which forwards models it lacks to Ollama itself; only when
        the bridge is not answering at all does ``auto`` talk to Ollama directly.
        """
        backend = backend or self.preferred_backend()
        if backend == "ollama":
            return self.upstream()
        if backend == "mlx":
            return self.bridge(local_only=True)
        bridge = self.bridge()
        if self.upstream_url and not _answers(bridge):
            fallback = Client(self.upstream_url, label="ollama")
            if _answers(fallback):
                click.echo(
                    f"note: no bridge at {bridge.url}; using Ollama at {fallback.url}", err=True
                )
                return fallback
        return bridge


def _answers(client: Client) -> bool:
    try:
        client.heartbeat()
    except ClientError:
        return False
    return True


def backend_option(func):
    """``--backend mlx|ollama|auto`` (default: the ``switch`` preference)."""
    return click.option("--backend", type=click.Choice(BACKENDS), default=None, help=BACKEND_HELP)(
        func
    )


def state(ctx: click.Context | None = None) -> CliState:
    """The group's :class:`CliState` (a fresh one if a command runs on its own)."""
    ctx = ctx or click.get_current_context()
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def readable(exc: ClientError, cli: CliState | None = None) -> click.ClickException:
    """A ClientError as click's one-line ``Error: ...`` (with a hint when nothing answered)."""
    message = exc.message
    if message.startswith("could not connect"):
        upstream = cli.upstream_url if cli else None
        if upstream and upstream in message:
            message += " - is Ollama running there? (OLLAMA_HOST=127.0.0.1:11435 ollama serve)"
        else:
            message += (
                " - is the bridge running? Start it with `mlx-ollama-bridge serve` "
                "or `mlx-ollama-bridge service start`"
            )
    return click.ClickException(message)


__all__ = ["BACKENDS", "CliState", "backend_option", "readable", "state"]
