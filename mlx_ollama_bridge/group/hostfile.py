"""mlx.launch's hostfile: the machines of a distributed group, read and checked.

The format is MLX's own (``mlx.distributed_config`` writes it): a JSON list of hosts, each
``{"ssh": "name", "ips": ["addr", ...]}`` (``rdma`` too for JACCL), or an object with
``hosts`` and optionally ``backend`` and ``envs``. Rank ``i`` runs on host ``i``; rank 0
serves HTTP. ``127.0.0.1`` is started locally; any other ``ssh`` name over SSH.

No MLX here: the CLI (``doctor``) and the supervisor read it before any rank starts.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path

LOCAL = "127.0.0.1"  # the one ssh name mlx.launch starts without SSH


@dataclass(frozen=True)
class GroupHost:
    """One machine of the group."""

    ssh: str
    ips: tuple[str, ...] = ()
    rdma: tuple[str | None, ...] = ()

    @property
    def local(self) -> bool:
        """True if mlx.launch starts this rank on this machine without SSH."""
        return self.ssh == LOCAL


@dataclass(frozen=True)
class Hostfile:
    """A parsed hostfile."""

    path: Path
    hosts: tuple[GroupHost, ...]
    backend: str = ""  # the file's own choice, if any
    envs: tuple[str, ...] = field(default_factory=tuple)

    @property
    def size(self) -> int:
        """Number of ranks."""
        return len(self.hosts)


class HostfileError(ValueError):
    """A hostfile that mlx.launch would refuse, or that cannot make a group."""


def read_hostfile(path: Path) -> Hostfile:
    """Parse and check ``path``; HostfileError names what is wrong."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise HostfileError(f"cannot read hostfile {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise HostfileError(f"hostfile {path} is not JSON: {exc}") from exc
    backend, envs, hosts = "", [], data
    if isinstance(data, dict):
        backend = str(data.get("backend", ""))
        envs = data.get("envs", [])
        hosts = data.get("hosts")
    if not isinstance(hosts, list) or not all(isinstance(h, dict) for h in hosts):
        raise HostfileError(
            f"hostfile {path}: expected a list of hosts like "
            '[{"ssh": "mac1", "ips": ["10.0.0.1"]}, ...]'
        )
    if len(hosts) < 2:
        raise HostfileError(
            f"hostfile {path}: a group needs at least 2 hosts, it names {len(hosts)}"
        )
    parsed = []
    for index, host in enumerate(hosts):
        ssh = host.get("ssh")
        if not isinstance(ssh, str) or not ssh:
            raise HostfileError(f'hostfile {path}: host {index} has no "ssh" name')
        ips = host.get("ips", [])
        if not isinstance(ips, list) or not all(isinstance(ip, str) for ip in ips):
            raise HostfileError(f'hostfile {path}: host {index} "ips" must be a list')
        for ip in ips:
            try:
                ipaddress.ip_address(ip)
            except ValueError as exc:
                raise HostfileError(
                    f"hostfile {path}: host {index}: {ip!r} is not an IP address"
                ) from exc
        rdma = host.get("rdma", [])
        parsed.append(GroupHost(ssh, tuple(ips), tuple(rdma if isinstance(rdma, list) else [])))
    if not isinstance(envs, list) or not all(isinstance(e, str) for e in envs):
        raise HostfileError(f'hostfile {path}: "envs" must be a list of KEY=value')
    return Hostfile(Path(path), tuple(parsed), backend, tuple(envs))


def check_for_backend(hostfile: Hostfile, backend: str) -> list[str]:
    """What stops ``backend`` from starting on ``hostfile`` (empty if nothing)."""
    problems = []
    if backend == "ring":
        problems += [
            f'host {i} ({h.ssh}) has no "ips": the ring backend connects to IP addresses'
            for i, h in enumerate(hostfile.hosts)
            if not h.ips
        ]
    if backend == "jaccl":
        problems += [
            f'host {i} ({h.ssh}) has no "rdma" devices: JACCL needs Thunderbolt 5 '
            "RDMA (mlx.distributed_config --backend jaccl writes them)"
            for i, h in enumerate(hostfile.hosts)
            if not h.rdma
        ]
    return problems


__all__ = ["LOCAL", "GroupHost", "Hostfile", "HostfileError", "check_for_backend", "read_hostfile"]
