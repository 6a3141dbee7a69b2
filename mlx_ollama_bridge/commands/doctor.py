"""``doctor``: check what the bridge needs and say how to fix what is missing.

MLX is checked in a child Python process: the CLI is a client and never imports MLX itself
(importing it initialises Metal, which is slow and pointless for a client).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import psutil

from .. import cpu_blas
from ..client import Client, ClientError
from ..config import parse_ollama_host
from .common import CliState, state
from .format import human_bytes
from .group_checks import group_checks

MIN_PYTHON = (3, 10)
MLX_TIMEOUT_S = 120.0  # the first Metal initialisation can take a while on a cold machine
LOW_MEMORY_BYTES = 2 * 1000**3
_MLX_PROBE = """
import json, mlx.core as mx
device = mx.default_device()
info = {"mlx": getattr(mx, "__version__", "?"), "device": getattr(device.type, "name", str(device))}
try:
    info["metal"] = bool(mx.metal.is_available())
except Exception:
    info["metal"] = False
try:
    import mlx_lm
    info["mlx_lm"] = getattr(mlx_lm, "__version__", "?")
except Exception as exc:
    info["mlx_lm_error"] = repr(exc)
print(json.dumps(info))
"""


@dataclass
class Check:
    """One line of the report: ``ok`` True (✓), False (✗) or None (- for information)."""

    ok: bool | None
    text: str
    fix: str = ""

    def render(self) -> str:
        mark = {True: "✓", False: "✗", None: "-"}[self.ok]
        line = f"{mark} {self.text}"
        return f"{line}\n    fix: {self.fix}" if self.fix and not self.ok else line


def check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] >= MIN_PYTHON:
        return Check(True, f"Python {version} ({sys.executable})")
    return Check(False, f"Python {version} is too old", "install Python 3.10 or newer")


def check_mlx(python: str = sys.executable) -> Check:
    """Import MLX (and mlx-lm) in a child process and report the device."""
    package = "mlx" if sys.platform == "darwin" else "mlx[cpu]"
    fix = f"{python} -m pip install '{package}' mlx-lm"
    try:
        done = subprocess.run(
            [python, "-c", _MLX_PROBE], capture_output=True, text=True, timeout=MLX_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check(False, f"MLX could not be checked: {exc}", fix)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["import failed"])[-1]
        return Check(False, f"MLX is not importable: {last}", fix)
    info = json.loads(done.stdout.strip().splitlines()[-1])
    if "mlx_lm_error" in info:
        return Check(False, f"mlx-lm is not importable: {info['mlx_lm_error']}", fix)
    where = "Metal GPU" if info["metal"] else "CPU only, no Metal: slow"
    text = f"MLX {info['mlx']}, mlx-lm {info['mlx_lm']}, device {info['device']} ({where})"
    if not info["metal"] and sys.platform == "darwin":
        return Check(False, text, "use a native arm64 Python on Apple silicon (not Rosetta)")
    return Check(True, text)


def check_cpu_blas(setting: str = "auto", server_port: int | None = None) -> Check | None:
    """Linux CPU mode: the OpenBLAS ``serve`` preloads, or why MLX's slow reference BLAS
    is used; with ``server_port``, also what a local running server has mapped. None where
    MLX does not compute with a CPU BLAS (macOS, CUDA)."""
    if not cpu_blas.mlx_runs_on_cpu():
        return None
    choice = cpu_blas.decide(setting)
    running = _server_blas(server_port) if server_port else None
    if choice.library is not None:
        text = f"CPU BLAS: OpenBLAS {choice.library} (serve preloads it)"
        if running is not None and not running:
            # information, not a failure: --dev servers and in-process ones never preload
            return Check(
                None,
                f"{text}; the running server does not use it: restart it to get the speed-up",
            )
        return Check(True, text + (", the running server uses it" if running else ""))
    hint = f"Debian/Ubuntu: apt-get install {cpu_blas.DEBIAN_PACKAGE}; ~10x faster prefill"
    if setting.strip().lower() in cpu_blas.OFF_VALUES:
        hint = "MLX_BRIDGE_CPU_BLAS=auto to use OpenBLAS when installed"
    return Check(None, f"CPU BLAS: MLX's bundled reference BLAS, slow ({choice.reason}; {hint})")


def _server_blas(port: int) -> list[str] | None:
    """BLAS libraries the local bridge listening on ``port`` preloaded (master and worker),
    or None if no such process is visible (not local, not ours, no /proc)."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.pid and conn.status == psutil.CONN_LISTEN and conn.laddr.port == port:
                procs = [psutil.Process(conn.pid)]
                procs += procs[0].children(recursive=True)
                return [lib for proc in procs for lib in cpu_blas.preloaded_blas(proc.pid)]
    except (psutil.Error, OSError):
        pass
    return None


def check_memory() -> Check:
    memory = psutil.virtual_memory()
    text = f"memory: {human_bytes(memory.total)} total, {human_bytes(memory.available)} available"
    if memory.available < LOW_MEMORY_BYTES:
        return Check(False, text, "close other apps or use a smaller (4-bit) model")
    return Check(True, text)


def check_store(models_dir: Path) -> Check:
    """The store must be writable (or creatable) for pull/import/cp."""
    existing = models_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if os.access(existing, os.W_OK):
        how = "writable" if existing == models_dir else "will be created"
        return Check(True, f"model store {models_dir} ({how})")
    return Check(
        False,
        f"model store {models_dir} is not writable",
        "set MLX_BRIDGE_MODELS to a folder you can write",
    )


def check_bridge(cli: CliState) -> Check:
    """Something answering at the bridge's address, or at least a free port for it."""
    url = cli.bridge_url
    try:
        version = _client(url).version()
        return Check(True, f"server answering at {url} (Ollama API {version})")
    except ClientError as exc:
        reason = exc.message
    address = parse_ollama_host(cli.host) if cli.host else cli.settings.host
    serve = "mlx-ollama-bridge serve (or mlx-ollama-bridge service install)"
    if _port_in_use(address.host or "127.0.0.1", address.port):
        return Check(
            False,
            f"port {address.port} is in use{port_owner(address.port)} but does not answer "
            f"the Ollama API ({reason})",
            "stop that program, or run the bridge on another port: "
            "mlx-ollama-bridge serve --port 11436",
        )
    return Check(False, f"no bridge running at {url} (port {address.port} is free)", serve)


def check_upstream(cli: CliState) -> Check:
    url = cli.upstream_url
    if not url:
        return Check(None, "upstream Ollama: off (MLX_BRIDGE_UPSTREAM=off)")
    try:
        version = _client(url).version()
    except ClientError:
        return Check(
            None,
            f"no upstream Ollama at {url} (optional: models the bridge lacks cannot go there)",
        )
    return Check(True, f"upstream Ollama {version} at {url}")


def check_service() -> Check:
    try:
        from ..service import ServiceError, make_manager
    except ImportError:
        return Check(None, "service: not available in this version")
    try:
        manager = make_manager()
    except ServiceError as exc:
        return Check(None, f"service: {exc}")
    if Path(manager.definition_path).exists():
        return Check(True, f"service installed ({manager.definition_path})")
    return Check(None, "service not installed (start at login: mlx-ollama-bridge service install)")


def port_owner(port: int) -> str:
    """`` by <name> (pid N)`` for the process listening on ``port``, or "" if unknown."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            listening = conn.status == psutil.CONN_LISTEN
            if conn.pid and listening and conn.laddr and conn.laddr.port == port:
                return f" by {psutil.Process(conn.pid).name()} (pid {conn.pid})"
    except (psutil.Error, OSError):
        pass  # listing other users' sockets needs privileges on macOS
    return ""


def _local_port(cli: CliState) -> int | None:
    """The bridge's port if it is on this machine (its processes can be inspected)."""
    address = parse_ollama_host(cli.host) if cli.host else cli.settings.host
    local = address.host in ("", "0.0.0.0", "::", "localhost") or address.is_loopback
    return address.port if local else None


def _client(url: str) -> Client:
    return Client(url, connect_timeout_s=2.0, read_timeout_s=5.0)


def _port_in_use(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


@click.command()
def doctor() -> None:
    """Check Python, MLX, the CPU BLAS (Linux), memory, the model store, the port, upstream
    Ollama, the service and, with a hostfile, the distributed group's hosts."""
    cli = state()
    checks = [
        check_python(),
        check_mlx(),
        check_cpu_blas(cli.settings.cpu_blas, _local_port(cli)),
        check_memory(),
        check_store(Path(cli.settings.models_dir)),
        check_bridge(cli),
        check_upstream(cli),
        check_service(),
    ]
    # serve --hostfile: the hostfile, SSH to each host, MLX's distributed backend
    settings = cli.settings
    for found in group_checks(settings.hostfile, settings.group_backend):
        checks.append(Check(found.ok, found.text, found.fix))
    checks = [check for check in checks if check is not None]
    for check in checks:
        click.echo(check.render())
    failed = sum(check.ok is False for check in checks)
    click.echo(f"\n{failed} problem(s) found." if failed else "\nAll checks passed.")
    if failed:
        click.get_current_context().exit(1)


COMMANDS = (doctor,)
