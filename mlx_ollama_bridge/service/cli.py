"""``mlx-ollama-bridge service ...``: install and drive the background service.

Registered in the main CLI with ``main.add_command(service_group)``. Every ServiceError
becomes a ``click.ClickException`` here: one line on stderr, exit status 1, no traceback.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from . import PLATFORMS, ServiceError, ServiceManager, ServiceStatus, make_manager
from .common import (
    LABEL_ENV,
    PLATFORM_ENV,
    carried_environment,
    current_python,
    home_dir,
    make_spec,
    parse_env_assignments,
    probe_server,
)

F = TypeVar("F", bound=Callable[..., Any])
_META_KEY = "mlx_ollama_bridge.service"
# `status` exit code when the service is not running (LSB "program is not running").
EXIT_NOT_RUNNING = 3


@click.group("service", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--label",
    envvar=LABEL_ENV,
    help="Service name. Default: com.github.mlx-ollama-bridge (macOS), mlx-ollama-bridge (Linux).",
)
@click.option(
    "--platform",
    "platform_name",
    type=click.Choice(PLATFORMS),
    envvar=PLATFORM_ENV,
    hidden=True,  # for tests: drive launchd's code path on Linux and back
)
@click.pass_context
def service_group(ctx: click.Context, label: str | None, platform_name: str | None) -> None:
    """Run the bridge in the background at login (launchd on macOS, systemd on Linux)."""
    # The manager is made lazily, so `service <command> --help` works on any platform.
    ctx.meta[_META_KEY] = (platform_name, label)


def _one_line_errors(func: F) -> F:
    """Turn a ServiceError (or a file that cannot be written) into click's one-line error."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ServiceError as exc:
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:  # e.g. ~/Library/LaunchAgents not writable
            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{where}{exc.strerror or exc}") from exc

    return wrapper  # type: ignore[return-value]


def _manager() -> ServiceManager:
    platform_name, label = click.get_current_context().meta.get(_META_KEY, (None, None))
    return make_manager(platform_name, label)


def _echo_lines(lines: list[str]) -> None:
    for line in lines:
        click.echo(line)


@service_group.command()
@click.option(
    "--env",
    "-e",
    "env_items",
    multiple=True,
    metavar="NAME=VALUE",
    help="Extra environment for the service (repeatable). OLLAMA_*, MLX_BRIDGE_*, HF_HOME "
    "and HF_HUB_CACHE set in this shell are carried over anyway.",
)
@_one_line_errors
def install(env_items: tuple[str, ...]) -> None:
    """Install the service, start it now and at every login (reinstalling updates it)."""
    manager = _manager()
    carried = carried_environment(os.environ, parse_env_assignments(env_items))
    spec = make_spec(manager.label, python=current_python(), home=home_dir(), carried=carried)
    _echo_lines(manager.install(spec))


@service_group.command()
@_one_line_errors
def uninstall() -> None:
    """Stop and remove the service; models, settings and logs are kept."""
    _echo_lines(_manager().uninstall())


@service_group.command()
@_one_line_errors
def start() -> None:
    """Start the installed service (nothing to do if it runs)."""
    _echo_lines(_manager().start())


@service_group.command()
@_one_line_errors
def stop() -> None:
    """Stop the service until the next login or `service start`."""
    _echo_lines(_manager().stop())


@service_group.command()
@_one_line_errors
def restart() -> None:
    """Restart the service, e.g. after upgrading the bridge."""
    _echo_lines(_manager().restart())


@service_group.command()
@_one_line_errors
def status() -> None:
    """Show whether the service runs and whether the server answers (exit 3: not running)."""
    result = _manager().status()
    for key, value in _status_rows(result):
        click.echo(f"{key + ':':<12} {value}")
    if not result.running:
        click.get_current_context().exit(EXIT_NOT_RUNNING)


def _status_rows(result: ServiceStatus) -> list[tuple[str, str]]:
    if not result.installed:
        file_row = f"{result.definition} (not installed: run `mlx-ollama-bridge service install`)"
    else:
        file_row = str(result.definition)
    rows = [
        ("service", f"{result.label} ({result.manager})"),
        ("file", file_row),
        ("state", result.state),
    ]
    if result.pid is not None:
        rows.append(("pid", str(result.pid)))
    if result.last_exit is not None:
        rows.append(("last exit", result.last_exit))
    rows.extend(result.details.items())
    rows.append(("logs", result.logs))
    rows.append(("server", probe_server(result.server_url)))
    return rows


@service_group.command()
@click.option(
    "--lines",
    "-n",
    default=50,
    show_default=True,
    type=click.IntRange(min=0),
    help="How many of the last lines to show.",
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@_one_line_errors
def logs(lines: int, follow: bool) -> None:
    """Print the end of the service's log."""
    _manager().logs(lines, follow, click.echo)
