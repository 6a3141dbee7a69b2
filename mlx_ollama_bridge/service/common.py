"""What both service back ends share: the service spec, paths, running tools, health probe.

The managers (launchd, systemd) raise :class:`ServiceError` with a one-line message; the CLI
turns it into a ``click.ClickException`` at the command boundary.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..config import APP_NAME, parse_ollama_host

log = logging.getLogger(__name__)

# Test/packaging overrides of where the service files go; they configure the installer, not
# the server, so they are never copied into the service's environment.
LAUNCH_AGENTS_DIR_ENV = "MLX_BRIDGE_LAUNCH_AGENTS_DIR"
SYSTEMD_USER_DIR_ENV = "MLX_BRIDGE_SYSTEMD_USER_DIR"
LOG_DIR_ENV = "MLX_BRIDGE_LOG_DIR"
PLATFORM_ENV = "MLX_BRIDGE_SERVICE_PLATFORM"
LABEL_ENV = "MLX_BRIDGE_SERVICE_LABEL"
INSTALLER_ONLY_ENV = frozenset(
    {LAUNCH_AGENTS_DIR_ENV, SYSTEMD_USER_DIR_ENV, PLATFORM_ENV, LABEL_ENV}
)
CARRIED_PREFIXES = ("OLLAMA_", "MLX_BRIDGE_")
# Where the Hugging Face cache lives decides which models the service sees. Paths only:
# HF_TOKEN stays out (the hub library reads its token file by itself).
CARRIED_NAMES = ("HF_HOME", "HF_HUB_CACHE")
# launchd starts agents with PATH=/usr/bin:/bin:/usr/sbin:/sbin; add Homebrew's prefixes.
SYSTEM_PATH = ("/opt/homebrew/bin", "/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin")
SERVE_MODULE_ARGS = ("-m", "mlx_ollama_bridge", "serve")
TOOL_TIMEOUT_S = 60.0
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ServiceError(Exception):
    """A service operation failed; ``str(exc)`` is one readable line."""


@dataclass(frozen=True)
class ServiceSpec:
    """What to run and how: the same for a LaunchAgent and a systemd unit."""

    label: str
    program_args: tuple[str, ...]  # argv, the interpreter first
    environment: dict[str, str]  # complete: carried settings + PATH + PYTHONUNBUFFERED
    working_dir: Path


@dataclass
class ServiceStatus:
    """What ``service status`` reports."""

    manager: str  # "launchd gui/501" or "systemd --user"
    label: str
    definition: Path  # the plist or unit file
    installed: bool
    loaded: bool = False
    running: bool = False  # the service manager says the server process is up
    state: str = "not loaded"
    pid: int | None = None
    last_exit: str | None = None
    logs: str = ""  # a path, or the journalctl command
    server_url: str = ""
    details: dict[str, str] = field(default_factory=dict)  # extra key: value lines


class ServiceManager(Protocol):
    """The operations behind ``mlx-ollama-bridge service ...``; each returns lines to print."""

    label: str
    definition_path: Path

    def install(self, spec: ServiceSpec) -> list[str]: ...
    def uninstall(self) -> list[str]: ...
    def start(self) -> list[str]: ...
    def stop(self) -> list[str]: ...
    def restart(self) -> list[str]: ...
    def status(self) -> ServiceStatus: ...
    def logs(self, lines: int, follow: bool, echo: Callable[[str], None]) -> None: ...


def check_label(label: str) -> str:
    """A label usable as a file name and in ``gui/<uid>/<label>``; else ServiceError."""
    if not _LABEL.fullmatch(label):
        raise ServiceError(f"invalid service label {label!r}: use letters, digits, '.', '-', '_'")
    return label


def home_dir(env: Mapping[str, str] | None = None) -> Path:
    """The user's home (``$HOME`` first, as launchd and systemd give it to the service)."""
    env = os.environ if env is None else env
    return Path(env["HOME"]) if env.get("HOME") else Path.home()


def parse_env_assignments(items: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings (from ``--env``) to a dict; ServiceError for a malformed one."""
    result: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not _ENV_NAME.fullmatch(name):
            raise ServiceError(f"--env expects NAME=VALUE, got {item!r}")
        result[name] = value
    return result


def carried_environment(env: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The bridge's settings present in ``env`` (``OLLAMA_*``, ``MLX_BRIDGE_*``, HF cache
    paths), minus the installer's own variables, plus ``extra`` (which wins)."""
    carried = {
        key: value
        for key, value in env.items()
        if (key.startswith(CARRIED_PREFIXES) or key in CARRIED_NAMES)
        and key not in INSTALLER_ONLY_ENV
    }
    carried.update(extra)
    return dict(sorted(carried.items()))


def make_spec(
    label: str,
    *,
    python: str,
    home: Path,
    carried: Mapping[str, str],
) -> ServiceSpec:
    """The service spec: ``python -m mlx_ollama_bridge serve`` with a sane PATH.

    ``python`` is the interpreter of the environment the bridge is installed in (not
    resolved: a venv's ``bin/python`` symlink is what makes the venv active).
    """
    if not python:
        raise ServiceError("cannot tell which Python runs the bridge (sys.executable is empty)")
    path_dirs = [str(Path(python).parent), *SYSTEM_PATH]
    environment = {
        "PATH": ":".join(dict.fromkeys(path_dirs)),
        # Without it print() output reaches the log file in 8 KiB blocks, late.
        "PYTHONUNBUFFERED": "1",
        **carried,
    }
    return ServiceSpec(
        label=label,
        program_args=(python, *SERVE_MODULE_ARGS),
        environment=dict(sorted(environment.items())),
        working_dir=home,
    )


def default_log_dir(env: Mapping[str, str] | None = None) -> Path:
    """``~/Library/Logs/mlx-ollama-bridge`` (or ``$MLX_BRIDGE_LOG_DIR``)."""
    env = os.environ if env is None else env
    if env.get(LOG_DIR_ENV):
        return Path(env[LOG_DIR_ENV]).expanduser()
    return home_dir(env) / "Library" / "Logs" / APP_NAME


def current_python() -> str:
    """The interpreter running this CLI: the one the service should run too."""
    return sys.executable or ""


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` in one step (a reader never sees half a file).

    Mode 0600: the environment may carry ``MLX_BRIDGE_API_KEY``.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ServiceError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_tool(
    argv: Sequence[str], *, check: bool = True, timeout: float = TOOL_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run ``launchctl``/``systemctl``/``journalctl``; with ``check``, a failure becomes a
    ServiceError carrying the tool's own message on one line."""
    log.debug("running argv=%s", shlex.join(argv))
    try:
        result = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        raise ServiceError(f"{argv[0]} not found on PATH") from exc
    except subprocess.TimeoutExpired as exc:
        raise ServiceError(f"`{shlex.join(argv)}` did not finish within {timeout:g} s") from exc
    except OSError as exc:
        raise ServiceError(f"cannot run {argv[0]}: {exc}") from exc
    log.debug("finished argv=%s rc=%s", shlex.join(argv), result.returncode)
    if check and result.returncode != 0:
        raise tool_failure(argv, result.returncode, result.stderr or result.stdout)
    return result


def tool_failure(argv: Sequence[str], returncode: int, output: str) -> ServiceError:
    """ServiceError for a failed tool run: the command, its exit code, its message."""
    message = one_line(output) or "no output"
    return ServiceError(f"`{shlex.join(argv)}` failed (exit {returncode}): {message}")


def one_line(text: str, limit: int = 300) -> str:
    """A tool's multi-line message as one line (``; `` between lines), capped in length."""
    joined = "; ".join(line.strip() for line in text.splitlines() if line.strip())
    return joined if len(joined) <= limit else joined[: limit - 1] + "…"


def server_url(environment: Mapping[str, str]) -> str:
    """Base URL of the server a service with this environment listens on."""
    return parse_ollama_host(environment.get("OLLAMA_HOST")).url


def probe_server(url: str, timeout_s: float = 2.0) -> str:
    """``responding at <url>`` or ``not responding at <url> (reason)`` for ``GET <url>/``.

    ``/`` answers without the API key, like Ollama's "Ollama is running".
    """
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/", timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        reason = getattr(reason, "strerror", None) or reason  # drop "[Errno 111]"
        return f"not responding at {url} ({reason})"
    if status != 200:
        return f"answering HTTP {status} at {url}"
    return f"responding at {url}"


__all__ = [
    "ServiceError",
    "ServiceManager",
    "ServiceSpec",
    "ServiceStatus",
    "carried_environment",
    "check_label",
    "default_log_dir",
    "make_spec",
    "parse_env_assignments",
    "probe_server",
    "run_tool",
    "server_url",
    "write_atomically",
]
