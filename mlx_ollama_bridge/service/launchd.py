"""macOS: the bridge as a LaunchAgent in the user's GUI domain (``gui/<uid>``).

The plist is written with plistlib to ``~/Library/LaunchAgents/<label>.plist`` and driven with
the modern ``launchctl`` verbs: ``bootstrap``/``bootout`` load and unload it, ``kickstart -k``
restarts it, and ``print`` tells whether it is loaded, its state, pid and last exit code.
"""

from __future__ import annotations

import logging
import os
import plistlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .common import (
    LAUNCH_AGENTS_DIR_ENV,
    ServiceError,
    ServiceSpec,
    ServiceStatus,
    home_dir,
    run_tool,
    server_url,
    write_atomically,
)
from .logs import follow_file, tail_file

log = logging.getLogger(__name__)

DEFAULT_LABEL = "com.github.mlx-ollama-bridge"
LOG_FILE_ENV = "MLX_BRIDGE_LOG_FILE"
# Restart after a crash, an out-of-memory kill or a non-zero exit, but not after a clean
# exit: a deliberate shutdown stays down instead of being fought by launchd.
KEEP_ALIVE: dict[str, Any] = {"SuccessfulExit": False}
# Seconds launchd waits between respawns; keeps a failing start (port taken) from spinning.
THROTTLE_INTERVAL_S = 15
# Interactive: no App Nap/background throttling of CPU and GPU while serving.
PROCESS_TYPE = "Interactive"
UNLOAD_WAIT_S = 10.0
_NOT_INSTALLED = "{label} is not installed: run `mlx-ollama-bridge service install` first"


def launch_agents_dir(env: Mapping[str, str] | None = None) -> Path:
    """``~/Library/LaunchAgents`` (or ``$MLX_BRIDGE_LAUNCH_AGENTS_DIR``)."""
    env = os.environ if env is None else env
    if env.get(LAUNCH_AGENTS_DIR_ENV):
        return Path(env[LAUNCH_AGENTS_DIR_ENV]).expanduser()
    return home_dir(env) / "Library" / "LaunchAgents"


def build_plist(spec: ServiceSpec, log_file: Path) -> dict[str, Any]:
    """The LaunchAgent property list for ``spec``.

    The server writes its log to ``log_file`` itself (``MLX_BRIDGE_LOG_FILE``), rotating it by
    size; launchd's stdout/stderr capture, which nothing rotates, only gets what escapes
    logging (a crash in native code), in a ``.stderr.log`` beside it.
    """
    stderr_file = stderr_log_path(log_file)
    return {
        "Label": spec.label,
        "ProgramArguments": list(spec.program_args),
        "EnvironmentVariables": {**spec.environment, LOG_FILE_ENV: str(log_file)},
        "WorkingDirectory": str(spec.working_dir),
        "RunAtLoad": True,
        "KeepAlive": dict(KEEP_ALIVE),
        "ThrottleInterval": THROTTLE_INTERVAL_S,
        "ProcessType": PROCESS_TYPE,
        "StandardOutPath": str(stderr_file),
        "StandardErrorPath": str(stderr_file),
    }


def stderr_log_path(log_file: Path) -> Path:
    """Where launchd captures the raw output: ``<label>.stderr.log`` beside the log."""
    return log_file.with_name(log_file.stem + ".stderr.log")


def _log_path(plist: dict[str, Any], default: Path) -> Path:
    """The server's own log file as installed (older plists only had StandardOutPath)."""
    env = plist.get("EnvironmentVariables") or {}
    return Path(env.get(LOG_FILE_ENV) or plist.get("StandardOutPath") or default)


def parse_print(text: str) -> dict[str, str]:
    """The top-level ``key = value`` fields of ``launchctl print gui/<uid>/<label>``.

    Nested blocks (``environment = { ... }``, ``endpoints``, event triggers with their own
    ``state = active``) are skipped, so ``state`` is the job's own.
    """
    fields: dict[str, str] = {}
    depth = 0
    for raw in text.splitlines():
        line = raw.strip()
        if line.endswith("{"):
            depth += 1
        elif line == "}":
            depth -= 1
        elif depth == 1 and " = " in line:
            key, _, value = line.partition(" = ")
            fields.setdefault(key.strip(), value.strip())
    return fields


class LaunchdManager:
    """``service`` commands for a LaunchAgent."""

    def __init__(self, label: str, *, agents_dir: Path, log_dir: Path, uid: int | None = None):
        self.label = label
        self.definition_path = agents_dir / f"{label}.plist"
        self.log_file = log_dir / f"{label}.log"
        self.domain = f"gui/{os.getuid() if uid is None else uid}"
        self.target = f"{self.domain}/{label}"

    def install(self, spec: ServiceSpec) -> list[str]:
        """Write the plist and (re)load it: installing twice reloads the new definition."""
        # launchd opens the log paths but does not create their folder.
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        data = plistlib.dumps(build_plist(spec, self.log_file), fmt=plistlib.FMT_XML)
        write_atomically(self.definition_path, data)
        lines = [f"wrote {self.definition_path}"]
        if self._print() is not None:
            self._launchctl("bootout", self.target)
            self._wait_unloaded()
            lines.append(f"{self.label} was loaded: unloaded it to load the new definition")
        # A past `launchctl disable` is remembered by launchd and makes bootstrap fail.
        self._launchctl("enable", self.target)
        self._launchctl("bootstrap", self.domain, str(self.definition_path))
        lines.append(f"loaded {self.label} into {self.domain}: running now and at every login")
        lines.append(f"logs: {self.log_file}")
        log.info("launchd installed label=%s plist=%s", self.label, self.definition_path)
        return lines

    def uninstall(self) -> list[str]:
        """Unload and delete the plist; models, settings and logs stay."""
        lines = []
        if self._print() is not None:
            self._launchctl("bootout", self.target)
            lines.append(f"stopped and unloaded {self.label}")
        if self.definition_path.exists():
            self.definition_path.unlink()
            lines.append(f"removed {self.definition_path}")
        if not lines:
            return [f"{self.label} is not installed: nothing to do"]
        lines.append("models, settings and logs are left in place")
        return lines

    def start(self) -> list[str]:
        """Load (if needed) and start; a running service is left alone."""
        self._require_installed()
        info = self._print()
        if info is None:
            self._launchctl("bootstrap", self.domain, str(self.definition_path))
            return [f"loaded and started {self.label}"]
        if info.get("state") == "running":
            return [f"{self.label} is already running (pid {info.get('pid', '?')})"]
        self._launchctl("kickstart", self.target)
        return [f"started {self.label}"]

    def stop(self) -> list[str]:
        """Unload: stops the server and its KeepAlive until the next login or ``start``."""
        if self._print() is None:
            return [f"{self.label} is not running"]
        self._launchctl("bootout", self.target)
        return [f"stopped {self.label}; it starts again at next login (uninstall removes it)"]

    def restart(self) -> list[str]:
        """Kill and start again (``kickstart -k``), or load it if it was not loaded."""
        self._require_installed()
        if self._print() is None:
            self._launchctl("bootstrap", self.domain, str(self.definition_path))
            return [f"{self.label} was not loaded: loaded and started it"]
        self._launchctl("kickstart", "-k", self.target)
        return [f"restarted {self.label}"]

    def status(self) -> ServiceStatus:
        """Installed? loaded? state, pid and last exit code from ``launchctl print``."""
        installed = self.definition_path.exists()
        plist = self._installed_plist() if installed else {}
        result = ServiceStatus(
            manager=f"launchd {self.domain}",
            label=self.label,
            definition=self.definition_path,
            installed=installed,
            logs=str(_log_path(plist, self.log_file)),
            server_url=server_url(plist.get("EnvironmentVariables") or {}),
        )
        info = self._print()
        if info is not None:
            result.loaded = True
            result.state = info.get("state", "unknown")
            result.running = result.state == "running"
            pid = info.get("pid", "")
            result.pid = int(pid) if pid.isdigit() else None
            result.last_exit = info.get("last exit code")
            if signal := info.get("last terminating signal"):
                result.details["last signal"] = signal
        return result

    def logs(self, lines: int, follow: bool, echo: Callable[[str], None]) -> None:
        """The tail of the agent's log file, then new lines with ``follow``."""
        plist = self._installed_plist() if self.definition_path.exists() else {}
        path = _log_path(plist, self.log_file)
        if follow:
            follow_file(path, lines, echo)
        else:
            tail_file(path, lines, echo)

    def _launchctl(self, *args: str) -> None:
        run_tool(["launchctl", *args])

    def _print(self) -> dict[str, str] | None:
        """``launchctl print`` fields, or None when the job is not loaded."""
        result = run_tool(["launchctl", "print", self.target], check=False)
        return parse_print(result.stdout) if result.returncode == 0 else None

    def _wait_unloaded(self) -> None:
        """bootout can return before launchd forgets the job; bootstrap would then fail."""
        deadline = time.monotonic() + UNLOAD_WAIT_S
        while self._print() is not None:
            if time.monotonic() > deadline:
                waited = f"{UNLOAD_WAIT_S:g} s"
                raise ServiceError(f"{self.label} is still loaded {waited} after bootout")
            time.sleep(0.2)

    def _require_installed(self) -> None:
        if not self.definition_path.exists():
            raise ServiceError(_NOT_INSTALLED.format(label=self.label))

    def _installed_plist(self) -> dict[str, Any]:
        try:
            with self.definition_path.open("rb") as handle:
                data = plistlib.load(handle)
        except (OSError, plistlib.InvalidFileException, ValueError) as exc:
            log.warning("unreadable plist path=%s error=%s", self.definition_path, exc)
            return {}
        return data if isinstance(data, dict) else {}
