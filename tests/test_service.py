"""``mlx-ollama-bridge service``: LaunchAgent and systemd user unit, driven through fake
``launchctl``/``systemctl``/``journalctl`` executables first on PATH that record their argv
and keep a little state (loaded/active), so both platforms are exercised on any machine."""

from __future__ import annotations

import json
import os
import plistlib
import re
import shlex
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mlx_ollama_bridge.service import launchd, logs, systemd
from mlx_ollama_bridge.service.cli import service_group
from mlx_ollama_bridge.service.common import make_spec

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "launchd" / "com.github.mlx-ollama-bridge.plist"
LABEL = launchd.DEFAULT_LABEL
UNIT = "mlx-ollama-bridge.service"
GUI = f"gui/{os.getuid()}"
TARGET = f"{GUI}/{LABEL}"
SERVE_ARGS = [sys.executable, "-m", "mlx_ollama_bridge", "serve"]

# What `launchctl print gui/<uid>/<label>` prints on macOS 14 (trimmed), running or exited.
PRINT_RUNNING = """\
gui/501/{label} = {{
\tactive count = 1
\tpath = {path}
\ttype = LaunchAgent
\tstate = running

\tprogram = /Users/me/.venv/bin/python
\targuments = {{
\t\t/Users/me/.venv/bin/python
\t\t-m
\t\tmlx_ollama_bridge
\t\tserve
\t}}

\tworking directory = /Users/me
\tenvironment = {{
\t\tOLLAMA_HOST => 127.0.0.1:11434
\t\tXPC_SERVICE_NAME => {label}
\t}}

\tdomain = gui/501 [100005]
\tminimum runtime = 15
\texit timeout = 5
\truns = 1
\tpid = 123
\timmediate reason = speculative
\tforks = 0
\texecs = 1
\tlast exit code = (never exited)

\tevent triggers = {{
\t\t{label}.268435470 => {{
\t\t\tkeepalive = 1
\t\t\tstate = waiting
\t\t}}
\t}}

\tspawn type = interactive (4)
\tproperties = keepalive | runatload | inferred program
}}
"""
PRINT_EXITED = (
    PRINT_RUNNING.replace("state = running", "state = not running")
    .replace("\tpid = 123\n", "")
    .replace("runs = 1", "runs = 3")
    .replace("last exit code = (never exited)", "last exit code = 1")
)

FAKE_TOOL = r'''#!@PYTHON@
"""Fake launchctl/systemctl/journalctl: record argv, keep state in files, print canned text."""
import json, os, plistlib, sys
from pathlib import Path

tool, args = Path(sys.argv[0]).name, sys.argv[1:]
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps([tool, *args]) + "\n")
state = Path(os.environ["FAKE_STATE"])
state.mkdir(exist_ok=True)


def fail(message, code):
    sys.stderr.write(message + "\n")
    sys.exit(code)


if os.environ.get("FAKE_FAIL") and " ".join([tool, *args]).startswith(os.environ["FAKE_FAIL"]):
    if tool == "launchctl":
        fail("Bootstrap failed: 5: Input/output error\n"
             "Try re-running the command as root for richer errors.", 5)
    fail(f"Failed to {args[1]} {args[-1]}: Unit {args[-1]} has a bad unit file setting.\n"
         f"See user logs and 'systemctl --user status {args[-1]}' for details.", 1)

if tool == "launchctl":
    verb = args[0]
    if verb == "bootstrap":
        label = plistlib.loads(Path(args[2]).read_bytes())["Label"]
        marker = state / f"launchd-{label}"
        if marker.exists():
            fail("Bootstrap failed: 5: Input/output error", 5)
        marker.write_text(args[2])
        sys.exit(0)
    label = args[-1].rsplit("/", 1)[-1]
    marker = state / f"launchd-{label}"
    if verb == "enable":
        sys.exit(0)
    if not marker.exists():
        if verb == "bootout":
            fail("Boot-out failed: 3: No such process", 3)
        fail(f'Could not find service "{label}" in domain for user gui: {os.getuid()}', 113)
    if verb == "bootout":
        marker.unlink()
    elif verb == "print":
        text = os.environ["FAKE_PRINT_" + os.environ.get("FAKE_JOB", "running").upper()]
        print(text.format(label=label, path=marker.read_text()), end="")
elif tool == "systemctl":
    assert args[0] == "--user", args
    verb, unit = args[1], next((a for a in args[2:] if a.endswith(".service")), "")
    active, enabled = state / "systemd-active", state / "systemd-enabled"
    unit_file = Path(os.environ["MLX_BRIDGE_SYSTEMD_USER_DIR"]) / unit
    if verb == "enable":
        enabled.touch()
    elif verb == "disable":
        enabled.unlink(missing_ok=True)
        if "--now" in args:
            active.unlink(missing_ok=True)
    elif verb in ("start", "restart"):
        if not unit_file.exists():
            fail(f"Failed to {verb} {unit}: Unit {unit} not found.", 5)
        active.touch()
    elif verb == "stop":
        active.unlink(missing_ok=True)
    elif verb == "show":
        up = active.exists()
        print(f"MainPID={4242 if up else 0}")
        print(f"ExecMainStatus={0 if up else 1}")
        print(f"LoadState={'loaded' if unit_file.exists() else 'not-found'}")
        print(f"ActiveState={'active' if up else 'inactive'}")
        print(f"SubState={'running' if up else 'dead'}")
        print(f"UnitFileState={'enabled' if enabled.exists() else 'disabled'}")
elif tool == "journalctl":
    count = int(args[args.index("-n") + 1])
    lines = [f"Nov 23 14:00:0{i} mac python[4242]: journal line {i}" for i in range(1, 6)]
    for line in lines[len(lines) - count:] if count else []:
        print(line)
    if "-f" in args:
        print("Nov 23 14:01:00 mac python[4242]: followed line", flush=True)
'''


@dataclass
class Fakes:
    """The fake tools' folder, where they record calls, and the service paths under test."""

    root: Path
    bin: Path
    agents: Path
    units: Path
    log_dir: Path
    home: Path

    @property
    def plist_path(self) -> Path:
        return self.agents / f"{LABEL}.plist"

    @property
    def unit_path(self) -> Path:
        return self.units / UNIT

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{LABEL}.log"

    def calls(self) -> list[list[str]]:
        """Every recorded argv since the last ``clear``, as [tool, *args]."""
        path = self.root / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def clear(self) -> None:
        (self.root / "calls.jsonl").unlink(missing_ok=True)

    def invoke(self, *args: str, platform: str = "macos", **kwargs) -> Result:
        """Run ``mlx-ollama-bridge service --platform <platform> <args>``."""
        runner = CliRunner(catch_exceptions=False)
        return runner.invoke(service_group, ["--platform", platform, *args], **kwargs)


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fakes:
    """Fake tools alone on PATH; every service path, HOME included, under tmp_path."""
    root = tmp_path / "service"
    found = Fakes(
        root,
        root / "bin",
        root / "LaunchAgents",
        root / "systemd",
        root / "logs",
        root / "home",
    )
    found.bin.mkdir(parents=True)
    found.home.mkdir()
    for tool in ("launchctl", "systemctl", "journalctl"):
        script = found.bin / tool
        script.write_text(FAKE_TOOL.replace("@PYTHON@", sys.executable))
        script.chmod(0o755)
    monkeypatch.setenv("PATH", str(found.bin))
    monkeypatch.setenv("HOME", str(found.home))
    monkeypatch.setenv("MLX_BRIDGE_LAUNCH_AGENTS_DIR", str(found.agents))
    monkeypatch.setenv("MLX_BRIDGE_SYSTEMD_USER_DIR", str(found.units))
    monkeypatch.setenv("MLX_BRIDGE_LOG_DIR", str(found.log_dir))
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{_free_port()}")
    monkeypatch.setenv("FAKE_CALLS", str(root / "calls.jsonl"))
    monkeypatch.setenv("FAKE_STATE", str(root / "state"))
    monkeypatch.setenv("FAKE_PRINT_RUNNING", PRINT_RUNNING)
    monkeypatch.setenv("FAKE_PRINT_EXITED", PRINT_EXITED)
    return found


@pytest.fixture
def ollama_like_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A loopback server answering ``GET /`` like Ollama; OLLAMA_HOST points at it."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"Ollama is running")

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host = f"127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("OLLAMA_HOST", host)
    yield f"http://{host}"
    server.shutdown()
    server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _plist(path: Path) -> dict:
    with path.open("rb") as handle:
        return plistlib.load(handle)


def _assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


# -- macOS: launchd ------------------------------------------------------------------------


def test_install_writes_the_launch_agent_and_bootstraps_it(fakes: Fakes, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:11500")
    monkeypatch.setenv("OLLAMA_KEEP_ALIVE", "1h")
    monkeypatch.setenv("MLX_BRIDGE_API_KEY", "secret")
    monkeypatch.setenv("UNRELATED", "not carried")

    result = fakes.invoke("install", "--env", "OLLAMA_ORIGINS=https://app.example.com")

    assert result.exit_code == 0, result.output
    assert f"wrote {fakes.plist_path}" in result.output
    plist = _plist(fakes.plist_path)
    assert plist["Label"] == LABEL
    assert plist["ProgramArguments"] == SERVE_ARGS
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["ThrottleInterval"] == 15
    assert plist["ProcessType"] == "Interactive"
    assert plist["WorkingDirectory"] == str(fakes.home)
    stderr_file = fakes.log_dir / f"{LABEL}.stderr.log"
    assert plist["StandardOutPath"] == plist["StandardErrorPath"] == str(stderr_file)
    assert plist["EnvironmentVariables"]["MLX_BRIDGE_LOG_FILE"] == str(fakes.log_file)
    env = plist["EnvironmentVariables"]
    assert env["OLLAMA_HOST"] == "127.0.0.1:11500"
    assert env["OLLAMA_KEEP_ALIVE"] == "1h"
    assert env["OLLAMA_ORIGINS"] == "https://app.example.com"
    assert env["MLX_BRIDGE_MODELS"] == os.environ["MLX_BRIDGE_MODELS"]
    assert env["MLX_BRIDGE_CONFIG_DIR"] == os.environ["MLX_BRIDGE_CONFIG_DIR"]
    assert env["MLX_BRIDGE_API_KEY"] == "secret"
    assert env["HF_HOME"] == os.environ["HF_HOME"]
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert "/usr/bin" in env["PATH"].split(":")
    # Installer-only settings and everything else stay out of the service.
    assert not {"UNRELATED", "MLX_BRIDGE_LAUNCH_AGENTS_DIR", "FAKE_CALLS"} & set(env)
    # It may hold the API key: readable by the user only.
    assert stat.S_IMODE(fakes.plist_path.stat().st_mode) == 0o600
    assert fakes.log_dir.is_dir()  # launchd would not create it
    assert fakes.calls() == [
        ["launchctl", "print", TARGET],
        ["launchctl", "enable", TARGET],
        ["launchctl", "bootstrap", GUI, str(fakes.plist_path)],
    ]


def test_installing_twice_reloads_the_new_definition(fakes: Fakes, monkeypatch):
    assert fakes.invoke("install").exit_code == 0
    fakes.clear()
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:11600")

    result = fakes.invoke("install")

    assert result.exit_code == 0, result.output
    assert "was loaded: unloaded it to load the new definition" in result.output
    assert fakes.calls() == [
        ["launchctl", "print", TARGET],
        ["launchctl", "bootout", TARGET],
        ["launchctl", "print", TARGET],  # waits until launchd has let go of the job
        ["launchctl", "enable", TARGET],
        ["launchctl", "bootstrap", GUI, str(fakes.plist_path)],
    ]
    assert _plist(fakes.plist_path)["EnvironmentVariables"]["OLLAMA_HOST"] == "127.0.0.1:11600"
    assert sorted(p.name for p in fakes.agents.iterdir()) == [f"{LABEL}.plist"]  # no temp files


def test_uninstall_removes_the_agent_but_not_models_config_or_logs(
    fakes: Fakes, isolated_home: Path
):
    store = Path(os.environ["MLX_BRIDGE_MODELS"])
    config = Path(os.environ["MLX_BRIDGE_CONFIG_DIR"])
    for path in (store / "manifests" / "tiny", config / "config.toml", fakes.log_file):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("keep me")
    assert fakes.invoke("install").exit_code == 0
    fakes.clear()

    result = fakes.invoke("uninstall")

    assert result.exit_code == 0, result.output
    assert not fakes.plist_path.exists()
    assert fakes.calls() == [["launchctl", "print", TARGET], ["launchctl", "bootout", TARGET]]
    for path in (store / "manifests" / "tiny", config / "config.toml", fakes.log_file):
        assert path.read_text() == "keep me"
    assert "left in place" in result.output

    fakes.clear()
    again = fakes.invoke("uninstall")
    assert again.exit_code == 0
    assert "not installed: nothing to do" in again.output
    assert fakes.calls() == [["launchctl", "print", TARGET]]


def test_status_of_a_running_agent(fakes: Fakes, ollama_like_server: str):
    assert fakes.invoke("install").exit_code == 0
    fakes.clear()

    result = fakes.invoke("status")

    assert result.exit_code == 0, result.output
    assert fakes.calls() == [["launchctl", "print", TARGET]]
    out = result.output
    assert re.search(rf"service:\s+{re.escape(LABEL)} \(launchd {GUI}\)", out)
    assert re.search(r"state:\s+running\n", out)  # not the nested "state = waiting"
    assert re.search(r"pid:\s+123\n", out)
    assert re.search(r"last exit:\s+\(never exited\)", out)
    assert re.search(rf"logs:\s+{re.escape(str(fakes.log_file))}", out)
    assert f"server:      responding at {ollama_like_server}" in out


def test_status_of_an_exited_agent_exits_3(fakes: Fakes, monkeypatch):
    assert fakes.invoke("install").exit_code == 0
    monkeypatch.setenv("FAKE_JOB", "exited")

    result = fakes.invoke("status")

    assert result.exit_code == 3
    assert re.search(r"state:\s+not running\n", result.output)
    assert re.search(r"last exit:\s+1\n", result.output)
    assert "pid:" not in result.output
    assert re.search(r"server:\s+not responding", result.output)


def test_status_when_not_installed(fakes: Fakes):
    result = fakes.invoke("status")
    assert result.exit_code == 3
    assert "not installed: run `mlx-ollama-bridge service install`" in result.output
    assert re.search(r"state:\s+not loaded", result.output)


def test_start_stop_restart_say_what_they_did(fakes: Fakes, monkeypatch):
    assert fakes.invoke("install").exit_code == 0
    bootstrap = ["bootstrap", GUI, str(fakes.plist_path)]
    steps = [
        ("start", "is already running (pid 123)", [["print", TARGET]]),
        ("restart", "restarted", [["print", TARGET], ["kickstart", "-k", TARGET]]),
        ("stop", "starts again at next login", [["print", TARGET], ["bootout", TARGET]]),
        ("stop", "is not running", [["print", TARGET]]),
        ("start", "loaded and started", [["print", TARGET], bootstrap]),
        ("stop", "stopped", [["print", TARGET], ["bootout", TARGET]]),
        ("restart", "was not loaded", [["print", TARGET], bootstrap]),
    ]
    for command, said, calls in steps:
        fakes.clear()
        result = fakes.invoke(command)
        assert result.exit_code == 0, (command, result.output)
        assert said in result.output, command
        assert fakes.calls() == [["launchctl", *call] for call in calls], command

    monkeypatch.setenv("FAKE_JOB", "exited")  # loaded, but the process is gone
    fakes.clear()
    assert "started" in fakes.invoke("start").output
    assert fakes.calls() == [["launchctl", "print", TARGET], ["launchctl", "kickstart", TARGET]]


@pytest.mark.parametrize("command", ["start", "restart"])
def test_start_before_install_is_a_one_line_error(fakes: Fakes, command: str):
    result = fakes.invoke(command)
    _assert_one_line_error(result, "not installed", "mlx-ollama-bridge service install")
    assert fakes.calls() == []


def test_a_failing_launchctl_is_one_readable_line(fakes: Fakes, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "launchctl bootstrap")
    result = fakes.invoke("install")
    _assert_one_line_error(
        result,
        f"`launchctl bootstrap {GUI} {fakes.plist_path}` failed (exit 5)",
        "Bootstrap failed: 5: Input/output error; Try re-running",
    )


def test_missing_launchctl_is_one_readable_line(fakes: Fakes):
    (fakes.bin / "launchctl").unlink()
    _assert_one_line_error(fakes.invoke("install"), "launchctl not found on PATH")
    _assert_one_line_error(fakes.invoke("status"), "launchctl not found on PATH")


def test_custom_label_and_platform_from_the_environment(fakes: Fakes, monkeypatch):
    monkeypatch.setenv("MLX_BRIDGE_SERVICE_PLATFORM", "macos")
    monkeypatch.setenv("MLX_BRIDGE_SERVICE_LABEL", "com.example.bridge")
    result = CliRunner(catch_exceptions=False).invoke(service_group, ["install"])
    assert result.exit_code == 0, result.output
    plist = _plist(fakes.agents / "com.example.bridge.plist")
    assert plist["Label"] == "com.example.bridge"
    assert plist["StandardOutPath"] == str(fakes.log_dir / "com.example.bridge.stderr.log")
    log_file = plist["EnvironmentVariables"]["MLX_BRIDGE_LOG_FILE"]
    assert log_file == str(fakes.log_dir / "com.example.bridge.log")
    assert "MLX_BRIDGE_SERVICE_LABEL" not in plist["EnvironmentVariables"]
    target = f"{GUI}/com.example.bridge"
    assert fakes.calls()[-2:] == [
        ["launchctl", "enable", target],
        ["launchctl", "bootstrap", GUI, str(fakes.agents / "com.example.bridge.plist")],
    ]

    bad = fakes.invoke("--label", "../evil", "install")
    _assert_one_line_error(bad, "invalid service label")


def test_unwritable_agents_dir_is_one_readable_line(fakes: Fakes):
    fakes.agents.write_text("a file where the folder should be")
    _assert_one_line_error(fakes.invoke("install"), f"cannot write {fakes.plist_path}")
    assert fakes.calls() == []


def test_bad_env_option_is_one_readable_line(fakes: Fakes):
    _assert_one_line_error(fakes.invoke("install", "--env", "NOEQUALS"), "--env expects NAME=VALUE")
    assert not fakes.plist_path.exists()


def test_logs_prints_the_tail_of_the_log_file(fakes: Fakes):
    assert fakes.invoke("install").exit_code == 0
    fakes.log_file.write_text("".join(f"line {i}\n" for i in range(1, 2001)))

    result = fakes.invoke("logs", "--lines", "3")

    assert result.exit_code == 0
    assert result.output == "line 1998\nline 1999\nline 2000\n"
    assert fakes.invoke("logs").output.splitlines() == [f"line {i}" for i in range(1951, 2001)]


def test_logs_without_a_log_file_is_one_readable_line(fakes: Fakes):
    _assert_one_line_error(fakes.invoke("logs"), f"no log file at {fakes.log_file}")


def test_logs_follow_prints_new_lines_and_survives_rotation(fakes: Fakes, monkeypatch):
    fakes.log_dir.mkdir(parents=True)
    fakes.log_file.write_text("old 1\nold 2\n")
    writes = iter(
        [
            lambda: fakes.log_file.open("a").write("new 1\npartial"),
            lambda: fakes.log_file.open("a").write(" line\n"),
            lambda: fakes.log_file.write_text("rotated 1\n"),  # truncated: read from start
            lambda: _replace_file(fakes.log_file, "renamed 1\n"),  # a new file: read it all
        ]
    )

    def fake_sleep(seconds: float) -> None:
        try:
            next(writes)()
        except StopIteration:
            raise KeyboardInterrupt from None  # the user's Ctrl-C

    monkeypatch.setattr(logs, "_sleep", fake_sleep)
    result = fakes.invoke("logs", "-n", "1", "--follow")

    assert result.exit_code == 0
    assert result.output == "old 2\nnew 1\npartial line\nrotated 1\nrenamed 1\n"


def _replace_file(path: Path, text: str) -> None:
    fresh = path.with_name("fresh.log")
    fresh.write_text(text)
    os.replace(fresh, path)


# -- Linux: systemd --user -----------------------------------------------------------------


def _unit_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_linux_install_writes_the_unit_and_enables_it(fakes: Fakes, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0:11500")
    monkeypatch.setenv("OLLAMA_ORIGINS", 'https://a.example.com, 100% "quoted"')

    result = fakes.invoke("install", platform="linux")

    assert result.exit_code == 0, result.output
    assert f"wrote {fakes.unit_path}" in result.output
    lines = _unit_lines(fakes.unit_path.read_text())
    assert lines[:4] == ["[Unit]", lines[1], "[Service]", "Type=simple"]
    assert f"ExecStart={shlex.join(SERVE_ARGS)}" in lines
    assert f"WorkingDirectory={fakes.home}" in lines
    assert 'Environment="OLLAMA_HOST=0.0.0.0:11500"' in lines
    assert 'Environment="OLLAMA_ORIGINS=https://a.example.com, 100%% \\"quoted\\""' in lines
    assert f'Environment="MLX_BRIDGE_MODELS={os.environ["MLX_BRIDGE_MODELS"]}"' in lines
    assert "Restart=on-failure" in lines
    assert lines[-2:] == ["[Install]", "WantedBy=default.target"]
    written = systemd.unit_environment(fakes.unit_path.read_text())
    assert written["OLLAMA_ORIGINS"] == os.environ["OLLAMA_ORIGINS"]
    assert fakes.calls() == [
        ["systemctl", "--user", "show", UNIT, f"--property={systemd.SHOW_PROPERTIES}"],
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", UNIT],
        ["systemctl", "--user", "restart", UNIT],
    ]
    assert "started mlx-ollama-bridge.service" in result.output


def test_linux_install_twice_is_idempotent(fakes: Fakes):
    assert fakes.invoke("install", platform="linux").exit_code == 0
    first = fakes.unit_path.read_text()
    fakes.clear()

    result = fakes.invoke("install", platform="linux")

    assert result.exit_code == 0
    assert "restarted mlx-ollama-bridge.service" in result.output
    assert fakes.unit_path.read_text() == first
    assert [call[2] for call in fakes.calls()] == ["show", "daemon-reload", "enable", "restart"]


def test_linux_uninstall_and_status(fakes: Fakes, ollama_like_server: str):
    assert fakes.invoke("install", platform="linux").exit_code == 0
    fakes.clear()

    status = fakes.invoke("status", platform="linux")
    assert status.exit_code == 0, status.output
    assert re.search(r"state:\s+active \(running\)", status.output)
    assert re.search(r"pid:\s+4242", status.output)
    assert re.search(r"at login:\s+enabled", status.output)
    assert f"responding at {ollama_like_server}" in status.output
    assert re.search(rf"logs:\s+journalctl --user -u {UNIT}", status.output)

    fakes.clear()
    result = fakes.invoke("uninstall", platform="linux")
    assert result.exit_code == 0
    assert not fakes.unit_path.exists()
    assert fakes.calls() == [
        ["systemctl", "--user", "disable", "--now", UNIT],
        ["systemctl", "--user", "daemon-reload"],
    ]
    assert Path(os.environ["MLX_BRIDGE_MODELS"]).parent.exists()

    fakes.clear()
    assert "not installed" in fakes.invoke("uninstall", platform="linux").output
    assert fakes.calls() == []
    after = fakes.invoke("status", platform="linux")
    assert after.exit_code == 3
    assert re.search(r"state:\s+inactive \(dead\)", after.output)


def test_linux_start_stop_restart(fakes: Fakes):
    show = ["show", UNIT, f"--property={systemd.SHOW_PROPERTIES}"]
    assert fakes.invoke("install", platform="linux").exit_code == 0
    steps = [
        ("start", "already running (pid 4242)", [show]),
        ("stop", "stopped", [show, ["stop", UNIT]]),
        ("stop", "is not running", [show]),
        ("start", "started", [show, ["start", UNIT]]),
        ("restart", "restarted", [["restart", UNIT]]),
    ]
    for command, said, calls in steps:
        fakes.clear()
        result = fakes.invoke(command, platform="linux")
        assert result.exit_code == 0, (command, result.output)
        assert said in result.output
        assert fakes.calls() == [["systemctl", "--user", *call] for call in calls], command


def test_linux_failure_is_one_readable_line(fakes: Fakes, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "systemctl --user restart")
    result = fakes.invoke("install", platform="linux")
    _assert_one_line_error(
        result,
        f"`systemctl --user restart {UNIT}` failed (exit 1)",
        "has a bad unit file setting.; See user logs",
    )


def test_linux_logs_read_the_journal(fakes: Fakes):
    result = fakes.invoke("logs", "-n", "2", platform="linux")
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        "Nov 23 14:00:04 mac python[4242]: journal line 4",
        "Nov 23 14:00:05 mac python[4242]: journal line 5",
    ]
    assert fakes.calls() == [["journalctl", "--user", "-u", UNIT, "-n", "2", "--no-pager"]]

    fakes.clear()
    follow = fakes.invoke("logs", "--lines", "1", "--follow", platform="linux")
    assert follow.exit_code == 0
    assert follow.output.splitlines()[-1].endswith("followed line")
    assert fakes.calls() == [["journalctl", "--user", "-u", UNIT, "-n", "1", "--no-pager", "-f"]]


def test_systemd_quoting_round_trips():
    for value in ["plain", "with space", 'q"uote', "back\\slash", "100%", "$HOME", ""]:
        word = systemd.quote(f"K={value}")
        assert systemd.unit_environment(f"Environment={word}") == {"K": value}
    assert systemd.quote("$HOME/x", exec_arg=True) == "$$HOME/x"
    assert systemd.quote("/a b/python", exec_arg=True) == '"/a b/python"'


# -- the shipped template, the parser, the docs ---------------------------------------------

# What launchd accepts for each key the installer writes (plutil -lint checks types).
LAUNCHD_KEY_TYPES = {
    "Label": str,
    "ProgramArguments": list,
    "EnvironmentVariables": dict,
    "WorkingDirectory": str,
    "RunAtLoad": bool,
    "KeepAlive": (bool, dict),
    "ThrottleInterval": int,
    "ProcessType": str,
    "StandardOutPath": str,
    "StandardErrorPath": str,
}


def _check_launchd_types(plist: dict) -> None:
    assert set(plist) == set(LAUNCHD_KEY_TYPES)
    for key, kind in LAUNCHD_KEY_TYPES.items():
        assert isinstance(plist[key], kind), key
    assert all(isinstance(arg, str) for arg in plist["ProgramArguments"])
    assert all(isinstance(v, str) for v in plist["EnvironmentVariables"].values())
    assert plist["ProcessType"] in ("Background", "Standard", "Adaptive", "Interactive")
    assert plist["KeepAlive"] == {"SuccessfulExit": False}


def test_shipped_template_is_what_the_installer_writes():
    template = _plist(TEMPLATE)
    spec = make_spec(
        LABEL,
        python="@PREFIX@/bin/python3",
        home=Path("@HOME@"),
        carried={"OLLAMA_HOST": "127.0.0.1:11434"},
    )
    log_file = Path(f"@HOME@/Library/Logs/mlx-ollama-bridge/{LABEL}.log")
    assert template == launchd.build_plist(spec, log_file)
    _check_launchd_types(template)


def test_installed_plist_has_valid_keys_and_types(fakes: Fakes):
    assert fakes.invoke("install").exit_code == 0
    _check_launchd_types(_plist(fakes.plist_path))
    if sys.platform == "darwin":  # the real linter where there is one
        subprocess.run(["/usr/bin/plutil", "-lint", str(fakes.plist_path)], check=True)


def test_template_readme_commands_work(fakes: Fakes, monkeypatch):
    """Run the README's shell blocks (install by hand, then remove) against the fakes."""
    readme = (REPO / "launchd" / "README.md").read_text()
    install, remove = re.findall(r"```sh\n(.*?)```", readme, re.S)
    python = fakes.bin / "python"  # a wrapper, not a symlink: a venv is found from the path
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fakes.bin}:/usr/bin:/bin")
    installed = fakes.home / "Library" / "LaunchAgents" / f"{LABEL}.plist"

    run = subprocess.run(["sh", "-ec", install], cwd=REPO / "launchd", capture_output=True)
    assert run.returncode == 0, run.stderr
    plist = _plist(installed)
    assert plist["ProgramArguments"][0] == f"{sys.prefix}/bin/python3"
    assert "@" not in json.dumps(plist)
    assert [call[:2] for call in fakes.calls()] == [
        ["launchctl", "bootstrap"],
        ["launchctl", "print"],
    ]
    assert "state = running" in run.stdout.decode()

    run = subprocess.run(["sh", "-ec", remove], capture_output=True)
    assert run.returncode == 0, run.stderr
    assert not installed.exists()
    assert fakes.calls()[-1] == ["launchctl", "bootout", TARGET]


def test_print_parser_reads_only_the_jobs_own_fields():
    fields = launchd.parse_print(PRINT_RUNNING.format(label=LABEL, path="/p.plist"))
    assert fields["state"] == "running"
    assert fields["pid"] == "123"
    assert fields["last exit code"] == "(never exited)"
    assert fields["path"] == "/p.plist"
    assert "OLLAMA_HOST => 127.0.0.1:11434" not in fields
    exited = launchd.parse_print(PRINT_EXITED.format(label=LABEL, path="/p.plist"))
    assert exited["state"] == "not running" and "pid" not in exited


def _doc_commands() -> list[tuple[dict[str, str], list[str]]]:
    """``[ENV=VALUE ...] mlx-ollama-bridge service ...`` lines of docs/service.md."""
    text = (REPO / "docs" / "service.md").read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            env = {}
            while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
                name, _, value = words.pop(0).partition("=")
                env[name] = value
            if words:
                assert words[:2] == ["mlx-ollama-bridge", "service"], line
                commands.append((env, words[2:]))
    return commands


@pytest.mark.parametrize("platform", ["macos", "linux"])
def test_every_command_in_the_docs_runs(fakes: Fakes, platform: str, monkeypatch):
    commands = _doc_commands()
    assert {args[0] for _, args in commands} >= {"install", "status", "logs", "uninstall"}
    fakes.log_dir.mkdir(parents=True)
    fakes.log_file.write_text("server started\n")  # what launchd would have written
    monkeypatch.setattr(logs, "_sleep", lambda _: (_ for _ in ()).throw(KeyboardInterrupt))
    for env, args in commands:
        result = fakes.invoke(*args, platform=platform, env=env)
        assert result.exit_code == 0, (args, result.output)


def test_every_command_has_help():
    runner = CliRunner(catch_exceptions=False)
    assert runner.invoke(service_group, ["--help"]).exit_code == 0
    for name in ("install", "uninstall", "start", "stop", "restart", "status", "logs"):
        result = runner.invoke(service_group, [name, "--help"])
        assert result.exit_code == 0, name
        assert "Usage:" in result.output


def test_service_package_stays_free_of_the_engine_and_mlx():
    from helpers import package_files as files
    from helpers import uses

    for path in files("service"):
        assert not uses(path, "mlx", "mlx_lm", "flask", "mlx_ollama_bridge.engine"), path
        assert not uses(path, "mlx_ollama_bridge.server", "mlx_ollama_bridge.store"), path
