"""``serve --hostfile``: run the group with ``mlx.launch`` and start it again when it ends.

``mlx.launch`` starts one rank per host of the hostfile (locally for ``127.0.0.1``, over SSH
otherwise) and stops them all as soon as one fails. The supervisor runs it in a loop: when a
launch ends without being asked to (a rank died, or rank 0 stopped the group because a rank
hung), the next one starts after a short pause, and its ranks are told which rank failed
last (``MLX_BRIDGE_GROUP_LAST_FAULT``) so ``/health`` and ``status`` can say it. SIGTERM or
SIGINT stop rank 0 first (it drains its streams as a single server does), then the rest.

No MLX here: this process only runs ``mlx.launch``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Settings
from .hostfile import Hostfile, read_hostfile

log = logging.getLogger(__name__)

# the bridge's settings and the Hub's; not PATH or HOME (another machine has its own)
_FORWARDED = ("OLLAMA_", "MLX_BRIDGE_", "HF_")
_RANK_LINE = re.compile(r"Node with rank (\d+) (was killed|exited with code (-?\d+))")
_SIGNALS = {int(s) for s in signal.Signals}


@dataclass
class LaunchState:
    """What the supervisor knows across launches."""

    launches: int = 0
    last_fault: str = ""
    stopping: bool = False
    process: subprocess.Popen[bytes] | None = None
    faults: list[str] = field(default_factory=list)
    fault_file: Path | None = None  # where rank 0 writes why it stopped the group


def launcher() -> str:
    """The ``mlx.launch`` beside this Python (a venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "mlx.launch"
    return str(beside) if beside.exists() else "mlx.launch"


def free_port_block(count: int) -> int:
    """A first port of ``count`` consecutive ports free on this machine."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count < 65000 and all(port_is_free(base + i) for i in range(count)):
            return base
    raise RuntimeError("no block of free ports for the ring backend")


def port_is_free(port: int) -> bool:
    """Whether ``port`` can be bound on loopback right now (a probe bind, closed at once)."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def launch_command(settings: Settings, hostfile: Hostfile, port: int) -> list[str]:
    """The ``mlx.launch`` command line of one launch."""
    backend = hostfile.backend or settings.group_backend
    command = [launcher(), "--hostfile", str(hostfile.path), "--backend", backend]
    command += ["--starting-port", str(port), "--python", sys.executable]
    return command + ["-m", "mlx_ollama_bridge.group.rank"]


def rank_environment(
    settings: Settings, hostfile: Hostfile, state: LaunchState, doorbell: str = ""
) -> list[str]:
    """``KEY=value`` pairs every rank gets (``--env``: SSH does not pass the environment)."""
    pairs = {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED)}
    pairs |= {
        "OLLAMA_HOST": f"{settings.host.host}:{settings.host.port}",
        "MLX_BRIDGE_HOSTFILE": str(hostfile.path),
        "MLX_BRIDGE_GROUP_BACKEND": hostfile.backend or settings.group_backend,
        "MLX_BRIDGE_GROUP_HOSTS": json.dumps([h.ssh for h in hostfile.hosts]),
        "MLX_BRIDGE_GROUP_LAUNCH": str(state.launches),
        "MLX_BRIDGE_GROUP_LAST_FAULT": state.last_fault,
        "MLX_BRIDGE_GROUP_DOORBELL": doorbell,
        "MLX_BRIDGE_GROUP_FAULT_FILE": str(state.fault_file) if state.fault_file else "",
    }
    return [f"{k}={v}" for k, v in sorted(pairs.items())]


def fault_of(line: str, hostfile: Hostfile) -> str | None:
    """The fault an ``mlx.launch`` warning line reports (rank, host, how), if any; a rank
    stopped by the launcher itself (SIGTERM, -15) is not the one that failed."""
    match = _RANK_LINE.search(line)
    if match is None or match.group(3) == "-15":
        return None
    rank = int(match.group(1))
    host = hostfile.hosts[rank].ssh if rank < hostfile.size else "?"
    code = int(match.group(3)) if match.group(3) else 0
    if match.group(2) == "was killed":
        how = "was stopped by mlx.launch"
    elif code < 0:
        how = f"was killed by {signal.Signals(-code).name}" if -code in _SIGNALS else "was killed"
    else:
        how = f"exited with code {code}"
    return f"rank {rank} ({host}) {how} at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"


def run_group(settings: Settings) -> int:
    """Run the group until SIGTERM/SIGINT (blocks); the exit status of ``serve``."""
    assert settings.hostfile is not None
    hostfile = read_hostfile(settings.hostfile)
    state = LaunchState()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: _stop(state, settings))
    # between launches that keep failing fast (MLX_BRIDGE_GROUP_RESTART_PAUSES); a launch
    # that ran MLX_BRIDGE_GROUP_HEALTHY_RUN_S starts the pauses over
    pauses = settings.group_restart_pauses_s
    pause = 0
    while not state.stopping:
        state.launches += 1
        began = time.monotonic()
        _launch_once(settings, hostfile, state)
        if state.stopping:
            break
        healthy = time.monotonic() - began > settings.group_healthy_run_s
        pause = 0 if healthy else min(pause + 1, len(pauses) - 1)
        log.warning(
            "distributed group ended (%s); starting it again in %.1f s",
            state.last_fault or "no rank reported a failure",
            pauses[pause],
        )
        _sleep_unless_stopped(state, pauses[pause])
    if state.fault_file is not None:
        state.fault_file.unlink(missing_ok=True)
    return 0


def _launch_once(settings: Settings, hostfile: Hostfile, state: LaunchState) -> None:
    if state.fault_file is None:
        handle, name = tempfile.mkstemp(prefix="mlx-bridge-group-fault-")
        os.close(handle)
        state.fault_file = Path(name)
    state.fault_file.write_text("")
    count = sum(max(len(h.ips), 1) for h in hostfile.hosts)  # the ring's ports
    port = settings.group_port or free_port_block(count + 1)
    first = hostfile.hosts[0]
    doorbell = f"{first.ips[0] if first.ips else first.ssh}:{port + count}"  # rank 0's
    command = launch_command(settings, hostfile, port)
    for pair in rank_environment(settings, hostfile, state, doorbell):
        command[1:1] = ["--env", pair]
    log.info(
        "starting distributed group launch=%d ranks=%d port=%d", state.launches, hostfile.size, port
    )
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,  # mlx.launch forwards stdin to every rank (see _quiet_stdin)
        stderr=subprocess.PIPE,
        start_new_session=True,  # its ranks can be stopped as one process group
    )
    state.process = process
    if all(host.local for host in hostfile.hosts):
        _quiet_stdin(process)
    assert process.stderr is not None
    found = ""
    for raw in process.stderr:
        line = raw.decode(errors="replace")
        sys.stderr.write(line)
        sys.stderr.flush()
        fault = fault_of(line, hostfile)
        if fault and not found and not state.stopping:
            found = fault
    process.wait()
    state.process = None
    if not found and not state.stopping:  # no rank exited: rank 0 says why it stopped
        with contextlib.suppress(OSError):
            found = state.fault_file.read_text().strip()
    if found:
        state.last_fault = found
        state.faults.append(found)


_FILL_BYTES = 256 * 1024  # more than a pipe holds (64 KiB on Linux) for each rank


def _quiet_stdin(process: subprocess.Popen[bytes]) -> None:
    """Stop ``mlx.launch`` from spinning: its I/O thread for each rank polls the rank's stdin
    for writing, which an empty pipe always is, so it never sleeps (a quarter of a core
    measured on loopback). Newlines the ranks never read fill their stdin pipes; a full pipe
    is not writable, and the thread then sleeps in ``select``. Only for local ranks: a rank
    over SSH has a terminal for stdin."""

    def fill() -> None:
        assert process.stdin is not None
        with contextlib.suppress(OSError):  # the launch ended
            process.stdin.write(b"\n" * _FILL_BYTES)
            process.stdin.flush()

    threading.Thread(target=fill, name="quiet-stdin", daemon=True).start()


def _stop(state: LaunchState, settings: Settings) -> None:
    """Stop rank 0 first (it drains its streams), then every rank."""
    if state.stopping:
        return
    state.stopping = True
    process = state.process
    if process is None:
        return

    def stop() -> None:
        _signal_rank0(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=settings.graceful_timeout_s + 10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)

    threading.Thread(target=stop, daemon=True).start()


def _signal_rank0(launcher_pid: int, signum: int) -> None:
    """Send ``signum`` to this machine's rank 0 (a child of ``mlx.launch`` with MLX_RANK=0)."""
    import psutil

    try:
        children = psutil.Process(launcher_pid).children(recursive=True)
    except psutil.Error:
        return
    ranks0 = {}
    for child in children:
        try:
            if child.environ().get("MLX_RANK") == "0":
                ranks0[child.pid] = child
        except psutil.Error:
            continue
    # the server's master, not its worker: the one whose parent is not rank 0 too
    for child in ranks0.values():
        if child.ppid() not in ranks0:
            child.send_signal(signum)
            return
    with contextlib.suppress(ProcessLookupError):  # rank 0 not found: stop the whole launch
        os.killpg(launcher_pid, signum)


def _sleep_unless_stopped(state: LaunchState, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not state.stopping and time.monotonic() < deadline:
        time.sleep(0.1)


__all__ = ["LaunchState", "fault_of", "launch_command", "rank_environment", "run_group"]
