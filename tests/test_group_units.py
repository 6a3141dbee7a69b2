"""The distributed group's parts that need no second rank: the hostfile, the supervisor's
reading of mlx.launch, the group's memory budget, doctor's checks (SSH through a fake ``ssh``:
no second machine here) and status's table."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlx_ollama_bridge.cli import main
from mlx_ollama_bridge.commands.group_checks import check_ssh, group_checks, group_table
from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.engine.group import GroupBudget
from mlx_ollama_bridge.errors import ModelLoadError
from mlx_ollama_bridge.group.hostfile import HostfileError, check_for_backend, read_hostfile
from mlx_ollama_bridge.group.supervisor import LaunchState, fault_of, rank_environment

LOOPBACK = [{"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}] * 2


def write(path: Path, data) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_hostfile_forms_and_mistakes(tmp_path):
    listed = read_hostfile(write(tmp_path / "a.json", LOOPBACK))
    assert listed.size == 2 and listed.hosts[0].local and listed.backend == ""
    wrapped = read_hostfile(
        write(tmp_path / "b.json", {"backend": "jaccl", "envs": ["A=1"], "hosts": LOOPBACK})
    )
    assert wrapped.backend == "jaccl" and wrapped.envs == ("A=1",)
    assert check_for_backend(wrapped, "jaccl")  # no rdma devices named
    assert check_for_backend(listed, "ring") == []
    for bad, says in [
        ("{", "not JSON"),
        ([{"ssh": "a", "ips": ["1.2.3.4"]}], "at least 2 hosts"),
        ([{"ips": ["1.2.3.4"]}, {"ssh": "b"}], 'no "ssh"'),
        ([{"ssh": "a", "ips": ["mac.local"]}, {"ssh": "b"}], "not an IP"),
    ]:
        with pytest.raises(HostfileError, match=says):
            read_hostfile(write(tmp_path / "bad.json", bad))
    with pytest.raises(HostfileError, match="cannot read"):
        read_hostfile(tmp_path / "missing.json")


def test_supervisor_names_the_failed_rank(tmp_path):
    hostfile = read_hostfile(write(tmp_path / "h.json", LOOPBACK))
    killed = fault_of("\x1b[33m[WARN] Node with rank 1 exited with code -9 \x1b[0m", hostfile)
    assert killed is not None and killed.startswith("rank 1 (127.0.0.1) was killed by SIGKILL")
    assert fault_of("[WARN] Node with rank 0 exited with code -15", hostfile) is None
    assert "exited with code 1" in fault_of("Node with rank 0 exited with code 1", hostfile)
    assert fault_of("rank 1 of 2: following rank 0", hostfile) is None


def test_ranks_get_the_settings_and_the_last_fault(tmp_path, monkeypatch):
    monkeypatch.setenv("MLX_BRIDGE_PROMPT_CACHE", "2")
    hostfile = read_hostfile(write(tmp_path / "h.json", LOOPBACK))
    state = LaunchState(launches=3, last_fault="rank 1 (x) was killed by SIGKILL")
    env = dict(p.split("=", 1) for p in rank_environment(Settings.from_env(), hostfile, state))
    assert env["MLX_BRIDGE_PROMPT_CACHE"] == "2"
    assert env["MLX_BRIDGE_GROUP_LAUNCH"] == "3"
    assert env["MLX_BRIDGE_GROUP_LAST_FAULT"].startswith("rank 1")
    assert json.loads(env["MLX_BRIDGE_GROUP_HOSTS"]) == ["127.0.0.1", "127.0.0.1"]


def test_restart_pauses_and_kill_delay_are_settings(tmp_path):
    home = {"MLX_BRIDGE_CONFIG_DIR": str(tmp_path)}  # no config.toml
    defaults = Settings.from_env(home)
    assert defaults.group_restart_pauses_s == (1.0, 2.0, 5.0, 10.0, 30.0)
    assert (defaults.group_healthy_run_s, defaults.group_kill_after_s) == (60.0, 15.0)
    quick = Settings.from_env(
        {**home, "MLX_BRIDGE_GROUP_RESTART_PAUSES": "0, 0.5", "MLX_BRIDGE_GROUP_KILL_AFTER_S": "4"}
    )
    assert quick.group_restart_pauses_s == (0.0, 0.5) and quick.group_kill_after_s == 4.0
    for bad in ("", "-1", "1,x", "inf"):  # a bad list falls back to the default
        env = {**home, "MLX_BRIDGE_GROUP_RESTART_PAUSES": bad}
        assert Settings.from_env(env).group_restart_pauses_s == defaults.group_restart_pauses_s


def test_group_budget_counts_every_rank_and_refuses_clearly():
    settings = Settings.from_env()
    memory = [{"total_bytes": 16 * 10**9}, {"total_bytes": 32 * 10**9}]
    budget = GroupBudget.of(settings, memory)
    assert budget.limit_bytes == int(2 * 16 * 10**9 * settings.memory_fraction)
    budget.check_alone("big", 20 * 10**9)  # more than one machine's budget, fits the group
    with pytest.raises(ModelLoadError, match="than the distributed group has.*2 ranks"):
        budget.check_alone("huge", 30 * 10**9)


def fake_ssh(bin_dir: Path, reachable: set[str]) -> None:
    """An ``ssh`` that answers for ``reachable`` hosts only (no second machine here)."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "ssh"
    hosts = " ".join(reachable)
    script.write_text(
        "#!/bin/sh\nfor a; do host=$prev; prev=$a; done\n"  # the host is the next-to-last arg
        f'for h in {hosts}; do [ "$host" = "$h" ] && exit 0; done\n'
        'echo "ssh: connect to host $host port 22: Connection refused" >&2; exit 255\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_doctor_checks_hostfile_ssh_and_backend(tmp_path, monkeypatch):
    fake_ssh(tmp_path / "bin", {"mac-2.local"})
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    hosts = [
        {"ssh": "127.0.0.1", "ips": ["10.0.0.1"]},
        {"ssh": "mac-2.local", "ips": ["10.0.0.2"]},
        {"ssh": "mac-3.local", "ips": ["10.0.0.3"]},
    ]
    found = group_checks(write(tmp_path / "h.json", hosts), "ring")
    texts = [(f.ok, f.text) for f in found]
    assert (True, "rank 1 host mac-2.local: reachable over SSH") in texts
    bad = [f for f in found if f.ok is False]
    assert len(bad) == 1 and "mac-3.local: not reachable" in bad[0].text
    assert "Connection refused" in bad[0].text and "ssh-copy-id mac-3.local" in bad[0].fix
    assert found[-1].ok and found[-1].text == "MLX distributed backend ring: available"
    assert check_ssh(0, "127.0.0.1", local=True).ok
    assert group_checks(None, "ring") == []
    # doctor prints them when a hostfile is set
    monkeypatch.setenv("MLX_BRIDGE_HOSTFILE", str(tmp_path / "h.json"))
    result = CliRunner().invoke(main, ["doctor"])
    assert "✗ rank 2 host mac-3.local: not reachable over SSH" in result.output


def test_status_table_names_ranks_hosts_and_fault():
    group = {
        "size": 2,
        "healthy": False,
        "fault": "rank 1 (mac-2.local): a rank of the distributed group was lost",
        "last_fault": "rank 1 (mac-2.local) was killed by SIGKILL at 2026-12-03T13:00:00Z",
        "launch": 2,
        "ranks": [
            {"rank": 0, "host": "mac-1.local", "rss_bytes": 2 * 10**9, "total_bytes": 64 * 10**9},
            {"rank": 1, "host": "mac-2.local"},
        ],
    }
    text = group_table(group)
    assert "2 ranks, broken: rank 1 (mac-2.local)" in text
    assert "launch 2" in text and "mac-2.local" in text and "64.0 GB" in text
