"""Linux: the bridge as a systemd user unit (``~/.config/systemd/user/<label>.service``),
driven with ``systemctl --user``; its output goes to the journal (``journalctl --user``)."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from .common import (
    SYSTEMD_USER_DIR_ENV,
    ServiceError,
    ServiceSpec,
    ServiceStatus,
    home_dir,
    run_tool,
    server_url,
    write_atomically,
)
from .logs import stream_command

log = logging.getLogger(__name__)

DEFAULT_LABEL = "mlx-ollama-bridge"
RESTART_SEC = 15  # the same pause as launchd's ThrottleInterval
STOP_TIMEOUT_S = 30
SHOW_PROPERTIES = "LoadState,ActiveState,SubState,MainPID,ExecMainStatus,UnitFileState"
_ESCAPED = re.compile(r"\\(.)|%%")
_NEEDS_QUOTES = re.compile(r"[\s\"'\\;]")
_NOT_INSTALLED = "{unit} is not installed: run `mlx-ollama-bridge service install` first"


def systemd_user_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where the user manager looks for units (or ``$MLX_BRIDGE_SYSTEMD_USER_DIR``)."""
    env = os.environ if env is None else env
    if env.get(SYSTEMD_USER_DIR_ENV):
        return Path(env[SYSTEMD_USER_DIR_ENV]).expanduser()
    config = Path(env.get("XDG_CONFIG_HOME") or home_dir(env) / ".config")
    return config / "systemd" / "user"


def quote(value: str, *, exec_arg: bool = False) -> str:
    """``value`` as one systemd word: C escapes, ``%%`` for specifiers, ``$$`` in commands."""
    if "\n" in value or "\r" in value:
        raise ServiceError(f"a systemd unit cannot hold a line break: {value!r}")
    escaped = re.sub(r'[\\"]', r"\\\g<0>", value).replace("%", "%%")
    if exec_arg:
        escaped = escaped.replace("$", "$$")  # ExecStart expands $VAR, Environment= does not
        if value and not _NEEDS_QUOTES.search(value):
            return escaped
    return f'"{escaped}"'


def unquote(word: str) -> str:
    """The inverse of :func:`quote` for an ``Environment=`` value."""
    if len(word) >= 2 and word[0] == word[-1] == '"':
        word = word[1:-1]
    return _ESCAPED.sub(lambda m: m.group(1) if m.group(1) is not None else "%", word)


def render_unit(spec: ServiceSpec) -> str:
    """The unit file text for ``spec``."""
    exec_start = " ".join(quote(arg, exec_arg=True) for arg in spec.program_args)
    environment = [
        f"Environment={quote(f'{key}={value}')}" for key, value in spec.environment.items()
    ]
    return "\n".join(
        [
            "# Written by `mlx-ollama-bridge service install`; reinstall rather than edit.",
            "[Unit]",
            "Description=mlx-ollama-bridge: the Ollama API on Apple MLX",
            "",
            "[Service]",
            "Type=simple",
            f"ExecStart={exec_start}",
            f"WorkingDirectory={str(spec.working_dir).replace('%', '%%')}",
            *environment,
            # Come back after a crash or an out-of-memory kill, not after a clean stop.
            "Restart=on-failure",
            f"RestartSec={RESTART_SEC}",
            # SIGTERM to gunicorn's master only: it shuts its worker down gracefully.
            "KillMode=mixed",
            f"TimeoutStopSec={STOP_TIMEOUT_S}",
            "",
            "[Install]",
            "WantedBy=default.target",
            "",
        ]
    )


def unit_environment(text: str) -> dict[str, str]:
    """The ``Environment=`` assignments of a unit file written by :func:`render_unit`."""
    result = {}
    for line in text.splitlines():
        if line.startswith("Environment="):
            name, _, value = unquote(line.removeprefix("Environment=")).partition("=")
            result[name] = value
    return result


class SystemdManager:
    """``service`` commands for a systemd user unit."""

    def __init__(self, label: str, *, unit_dir: Path):
        self.label = label
        self.unit = f"{label}.service"
        self.definition_path = unit_dir / self.unit

    def install(self, spec: ServiceSpec) -> list[str]:
        """Write the unit, enable it at login and (re)start it with the new definition."""
        was_active = self._show().get("ActiveState") == "active"
        write_atomically(self.definition_path, render_unit(spec).encode())
        self._systemctl("daemon-reload")
        self._systemctl("enable", self.unit)
        # restart starts a stopped unit and reloads a running one: installing is idempotent.
        self._systemctl("restart", self.unit)
        log.info("systemd installed unit=%s path=%s", self.unit, self.definition_path)
        return [
            f"wrote {self.definition_path}",
            f"{'restarted' if was_active else 'started'} {self.unit}; enabled at every login",
            f"logs: journalctl --user -u {self.unit}",
        ]

    def uninstall(self) -> list[str]:
        """Stop, disable and delete the unit; models, settings and logs stay."""
        if not self.definition_path.exists():
            return [f"{self.unit} is not installed: nothing to do"]
        self._systemctl("disable", "--now", self.unit)
        self.definition_path.unlink()
        self._systemctl("daemon-reload")
        return [
            f"stopped and disabled {self.unit}",
            f"removed {self.definition_path}",
            "models, settings and logs are left in place",
        ]

    def start(self) -> list[str]:
        """Start unless it already runs."""
        self._require_installed()
        show = self._show()
        if show.get("ActiveState") == "active":
            return [f"{self.unit} is already running (pid {show.get('MainPID', '?')})"]
        self._systemctl("start", self.unit)
        return [f"started {self.unit}"]

    def stop(self) -> list[str]:
        """Stop until the next login or ``start``."""
        if self._show().get("ActiveState") not in ("active", "activating", "reloading"):
            return [f"{self.unit} is not running"]
        self._systemctl("stop", self.unit)
        return [f"stopped {self.unit}; it starts again at next login (uninstall removes it)"]

    def restart(self) -> list[str]:
        """Restart (starts it if it was stopped)."""
        self._require_installed()
        self._systemctl("restart", self.unit)
        return [f"restarted {self.unit}"]

    def status(self) -> ServiceStatus:
        """Installed? state, pid and last exit status from ``systemctl --user show``."""
        installed = self.definition_path.exists()
        environment = unit_environment(self.definition_path.read_text()) if installed else {}
        result = ServiceStatus(
            manager="systemd --user",
            label=self.unit,
            definition=self.definition_path,
            installed=installed,
            logs=f"journalctl --user -u {self.unit}",
            server_url=server_url(environment),
        )
        show = self._show()
        result.loaded = show.get("LoadState") == "loaded"
        active, sub = show.get("ActiveState", "unknown"), show.get("SubState", "")
        result.state = f"{active} ({sub})" if sub else active
        result.running = active == "active"
        pid = show.get("MainPID", "0")
        result.pid = int(pid) if pid.isdigit() and int(pid) > 0 else None
        result.last_exit = show.get("ExecMainStatus")
        if enabled := show.get("UnitFileState"):
            result.details["at login"] = enabled
        return result

    def logs(self, lines: int, follow: bool, echo: Callable[[str], None]) -> None:
        """The unit's journal: the last ``lines`` entries, then new ones with ``follow``."""
        argv = ["journalctl", "--user", "-u", self.unit, "-n", str(lines), "--no-pager"]
        if follow:
            stream_command([*argv, "-f"], echo)
            return
        output = run_tool(argv).stdout
        for line in output.splitlines():
            echo(line)

    def _systemctl(self, *args: str) -> None:
        run_tool(["systemctl", "--user", *args])

    def _show(self) -> dict[str, str]:
        """``systemctl --user show`` properties (an unknown unit gives LoadState=not-found)."""
        argv = ["systemctl", "--user", "show", self.unit, f"--property={SHOW_PROPERTIES}"]
        result = run_tool(argv)
        fields = {}
        for line in result.stdout.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                fields[key.strip()] = value.strip()
        return fields

    def _require_installed(self) -> None:
        if not self.definition_path.exists():
            raise ServiceError(_NOT_INSTALLED.format(unit=self.unit))
