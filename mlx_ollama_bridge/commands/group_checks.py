"""``doctor``'s checks of a distributed group (``serve --hostfile``) before it is launched:
the hostfile, SSH to every host that is not this machine, MLX's distributed backend; and
``status``'s view of a running group (``/health``'s ``group``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..group.hostfile import HostfileError, check_for_backend, read_hostfile
from .format import table


@dataclass(frozen=True)
class Finding:
    """One line of ``doctor``: ``ok`` True, False or None (information), and the fix."""

    ok: bool | None
    text: str
    fix: str = ""


Check = Finding  # doctor turns each into its own Check

_SSH_TIMEOUT_S = 5
_BACKEND_PROBE = "import sys, mlx.core as mx; print(mx.distributed.is_available(sys.argv[1]))"


def group_checks(hostfile: Path | None, backend: str) -> list[Finding]:
    """The hostfile, each host's SSH reachability and the MLX backend; [] without one."""
    if hostfile is None:
        return []
    try:
        parsed = read_hostfile(hostfile)
    except HostfileError as exc:
        return [Check(False, str(exc), "fix the hostfile (docs/distributed.md)")]
    backend = parsed.backend or backend
    checks = [Check(True, f"hostfile {hostfile}: {parsed.size} ranks, backend {backend}")]
    checks += [
        Check(False, problem, "mlx.distributed_config writes a complete hostfile")
        for problem in check_for_backend(parsed, backend)
    ]
    seen: set[str] = set()
    for rank, host in enumerate(parsed.hosts):
        if host.ssh in seen:
            continue
        seen.add(host.ssh)
        checks.append(check_ssh(rank, host.ssh, host.local))
    checks.append(check_backend(backend))
    return checks


def check_ssh(rank: int, host: str, local: bool) -> Check:
    """Whether ``mlx.launch`` can start a rank on ``host`` (SSH without a prompt)."""
    if local:
        return Check(True, f"rank {rank} host {host}: this machine (started without SSH)")
    ssh = shutil.which("ssh")
    if ssh is None:
        return Check(False, f"rank {rank} host {host}: no ssh command", "install OpenSSH")
    command = [ssh, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={_SSH_TIMEOUT_S}", host, "true"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_SSH_TIMEOUT_S + 5)
    except subprocess.TimeoutExpired:
        done = None
    if done is not None and done.returncode == 0:
        return Check(True, f"rank {rank} host {host}: reachable over SSH")
    why = (done.stderr.strip().splitlines() or ["no answer"])[-1] if done else "timed out"
    return Check(
        False,
        f"rank {rank} host {host}: not reachable over SSH ({why})",
        f"ssh-copy-id {host}, and accept its host key once (ssh {host} true)",
    )


def check_backend(backend: str, python: str = sys.executable) -> Check:
    """Whether this machine's MLX has the distributed backend (asked in a child process)."""
    try:
        done = subprocess.run(
            [python, "-c", _BACKEND_PROBE, backend], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check(False, f"MLX distributed backend {backend}: not checked ({exc})")
    if done.returncode == 0 and done.stdout.strip() == "True":
        return Check(True, f"MLX distributed backend {backend}: available")
    fix = "ring works with any MLX; jaccl needs macOS 26.2+ with RDMA enabled (rdma_ctl enable)"
    return Check(False, f"MLX distributed backend {backend}: not available", fix)


def group_table(group: dict[str, Any]) -> str:
    """``status``'s lines for a running group: its state and one row per rank."""
    state = "healthy" if group.get("healthy") else f"broken: {group.get('fault')}"
    lines = [f"distributed group: {group.get('size')} ranks, {state}"]
    if group.get("last_fault"):
        lines.append(f"last fault: {group['last_fault']} (launch {group.get('launch')})")
    rows = [
        [
            str(r.get("rank")),
            str(r.get("host")),
            _gb(r.get("rss_bytes")),
            _gb(r.get("available_bytes")),
            _gb(r.get("total_bytes")),
        ]
        for r in group.get("ranks", [])
    ]
    lines.append(table(["RANK", "HOST", "RSS", "AVAILABLE", "RAM"], rows))
    return "\n".join(lines)


def _gb(value: Any) -> str:
    return f"{value / 1e9:.1f} GB" if isinstance(value, int) else "-"


__all__ = ["Finding", "check_backend", "check_ssh", "group_checks", "group_table"]
