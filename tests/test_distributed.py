"""A distributed group on loopback: ``serve --hostfile`` with two ranks of MLX's ring backend.

Real ``mlx.launch``, real ranks (rank 0 under gunicorn), real smollm2 split across them, the
official ``ollama`` client. The greedy answer must equal one process's; a killed rank ends
the running stream with an error line, ``/health`` names it and the group comes back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import ollama
import psutil
import pytest
import requests
from click.testing import CliRunner
from helpers import RunningServer, clean_environ, free_port, wait_until

from mlx_ollama_bridge.cli import main
from mlx_ollama_bridge.engine.preflight import DEFAULT_MEMORY_FRACTION
from mlx_ollama_bridge.group.supervisor import port_is_free

SMOL = "smollm2:135m"
GREEDY = {"temperature": 0, "num_predict": 16}
QUESTION = [{"role": "user", "content": "Write one sentence about the sea."}]
BOOT_S = 240  # two ranks loading on a shared 2-core machine


def write_hostfile(path: Path, ranks: int = 2) -> Path:
    """mlx.launch's hostfile with ``ranks`` loopback hosts."""
    path.write_text(json.dumps([{"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}] * ranks))
    return path


def start_group(env: dict[str, str], root: Path, **settings: str) -> RunningServer:
    """``serve --hostfile`` (two loopback ranks) and wait until rank 0 answers."""
    port = free_port()
    hostfile = write_hostfile(root / "hosts.json")
    log_path = root / "group.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "mlx_ollama_bridge", "serve", "--host", f"127.0.0.1:{port}"]
        + ["--hostfile", str(hostfile)],
        env={**clean_environ(), **env, **settings},
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    server = RunningServer(f"http://127.0.0.1:{port}", process, log_path)
    if not wait_until(lambda: _answers(server), timeout=BOOT_S, poll=0.5):
        stop_group(server)
        raise RuntimeError(f"group did not come up:\n{log_path.read_text(errors='replace')}")
    return server


def stop_group(server: RunningServer) -> None:
    """SIGTERM to the supervisor (it stops rank 0, then the rest); SIGKILL what remains."""
    children = psutil.Process(server.process.pid).children(recursive=True)
    server.process.terminate()
    try:
        server.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.process.kill()
    for child in children:
        if child.is_running():
            child.kill()


def _answers(server: RunningServer) -> bool:
    if server.process.poll() is not None:
        raise RuntimeError(f"supervisor exited:\n{server.log()}")
    try:
        return requests.get(server.url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def ranks(server: RunningServer) -> dict[int, psutil.Process]:
    """The rank processes (rank 0: its server's master), by rank."""
    found: dict[int, psutil.Process] = {}
    for child in psutil.Process(server.process.pid).children(recursive=True):
        try:
            rank = child.environ().get("MLX_RANK")
        except psutil.Error:
            continue
        if rank is not None and int(rank) not in found:
            found[int(rank)] = child
    return found


@pytest.fixture(scope="module")
def group(shared_store, tmp_path_factory) -> Iterator[RunningServer]:
    """One two-rank group over the shared store (smollm2 split in pipeline)."""
    # a step longer than 10 s means a hung rank (test_hung_rank...): steps here take < 2 s;
    # the group starts again at once after a fault, and a rank 0 stuck on the hung rank is
    # killed 3 s after it, 1 s after its SIGTERM (the error lines went out before; the
    # defaults wait longer, for real networks and machines)
    root = tmp_path_factory.mktemp("group")
    quick = {"MLX_BRIDGE_GROUP_RESTART_PAUSES": "0.1", "MLX_BRIDGE_GROUP_KILL_AFTER_S": "3"}
    server = start_group(shared_store.env, root, MLX_BRIDGE_GROUP_TIMEOUT_S="10", **quick)
    yield server
    stop_group(server)


@pytest.mark.real_model
def test_two_ranks_answer_as_one_process(group, server):
    single = ollama.Client(host=server.url).chat(model=SMOL, messages=QUESTION, options=GREEDY)
    client = ollama.Client(host=group.url)
    split = client.chat(model=SMOL, messages=QUESTION, options=GREEDY)
    assert split.message.content == single.message.content
    assert split.eval_count == single.eval_count
    # streamed, and from the prompt cache the first call left on every rank
    streamed = list(client.chat(model=SMOL, messages=QUESTION, options=GREEDY, stream=True))
    assert "".join(c.message.content for c in streamed) == single.message.content
    stats = requests.get(f"{group.url}/health", timeout=30).json()["engine_stats"]
    assert stats["prompt_tokens_reused"] > 0


@pytest.mark.real_model
def test_group_is_visible(group):
    # an empty generate loads the model (it may be loaded already)
    requests.post(f"{group.url}/api/generate", json={"model": SMOL}, timeout=300).raise_for_status()
    health = requests.get(f"{group.url}/health", timeout=30).json()
    assert health["group"]["size"] == 2 and health["group"]["healthy"]
    ps = requests.get(f"{group.url}/api/ps", timeout=30).json()
    assert any(m["name"] == SMOL for m in ps["models"])
    diagnostics = requests.get(f"{group.url}/diagnostics", timeout=30).json()
    hosts = [r["host"] for r in diagnostics["group"]["ranks"]]
    assert hosts == ["127.0.0.1", "127.0.0.1"]
    assert all(r["total_bytes"] > 0 and r["rss_bytes"] > 0 for r in diagnostics["group"]["ranks"])
    shares = next(m for m in ps["models"] if m["name"] == SMOL)["distributed"]
    assert shares["sharding"] == "pipeline" and len(shares["ranks"]) == 2
    status = CliRunner().invoke(main, ["--host", group.url, "status"])
    assert "distributed group: 2 ranks, healthy" in status.output, status.output
    assert status.output.count("127.0.0.1 ") >= 2  # one row per rank


def test_tiny_model_split_both_ways_decodes_as_one_process(tiny_model_dir, tmp_path):
    # mlx.launch runs tests/group_tensor_rank.py on two loopback ranks: tensor parallel (the
    # tiny model's 4 heads divide by 2; SmolLM2's 9 do not) and pipeline, each against the
    # unsplit model's greedy tokens
    hostfile = write_hostfile(tmp_path / "hosts.json")
    launch = Path(sys.executable).parent / "mlx.launch"
    command = [str(launch), "--hostfile", str(hostfile), "--backend", "ring"]
    command += ["--starting-port", str(free_port_pair()), "--python", sys.executable]
    command += [str(Path(__file__).parent / "group_tensor_rank.py"), str(tiny_model_dir)]
    env = {**clean_environ(), "MLX_BRIDGE_CONFIG_DIR": str(tmp_path / "config")}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert rows and "budget" in rows[0], done.stderr[-3000:]
    budget, rows = rows[0], rows[1:]
    # admission counts both ranks: twice this machine's budget (both ranks run here)
    totals = [m["total_bytes"] for m in budget["memory"]]
    assert len(totals) == 2 and budget["budget"] == int(2 * min(totals) * DEFAULT_MEMORY_FRACTION)
    assert [r["sharding"] for r in rows] == ["tensor", "pipeline"], done.stderr[-3000:]
    for row in rows:
        assert row["got"] == row["expected"]
        assert len(row["rank_bytes"]) == 2 and all(b > 0 for b in row["rank_bytes"])


def free_port_pair() -> int:
    """A port whose next one is free too (the ring backend takes one per rank)."""
    while True:
        port = free_port()
        if port < 65000 and port_is_free(port + 1):
            return port


def _health(server: RunningServer) -> dict | None:
    try:
        return requests.get(f"{server.url}/health", timeout=10).json()
    except (requests.RequestException, ValueError):
        return None  # between launches nothing listens


def _stream_then(group: RunningServer, act) -> list[dict]:
    """Start a long greedy stream, call ``act`` after its first line, return the rest."""
    body = {"model": SMOL, "messages": QUESTION, "options": {"temperature": 0, "num_predict": 400}}
    with requests.post(f"{group.url}/api/chat", json=body, stream=True, timeout=300) as response:
        lines = response.iter_lines()
        first = json.loads(next(lines))
        assert "message" in first and not first["done"]
        act()
        return [json.loads(line) for line in lines if line]


def _comes_back(group: RunningServer, after_launch: int) -> dict:
    """Wait for the supervisor's next launch to answer; its /health."""
    came_back = wait_until(
        lambda: (
            (h := _health(group)) is not None and h.get("group", {}).get("launch", 1) > after_launch
        ),
        timeout=BOOT_S,
        poll=0.2,
    )
    assert came_back, group.log()[-3000:]
    return _health(group)


@pytest.mark.real_model
def test_hung_rank_ends_the_stream_with_an_error_and_the_group_comes_back(group):
    launch = _health(group)["group"]["launch"]
    rest = _stream_then(group, lambda: os.kill(ranks(group)[1].pid, signal.SIGSTOP))
    assert "rank 1 (127.0.0.1) of the distributed group stopped answering" in rest[-1]["error"]
    health = _comes_back(group, launch)  # rank 0 stopped the launch: the stopped rank too
    assert health["group"]["last_fault"].startswith("rank 1 (127.0.0.1) of the distributed")


@pytest.mark.real_model
def test_killed_rank_ends_the_stream_with_an_error_and_the_group_comes_back(group):
    # last in this module: it breaks the module's group (and checks that it comes back)
    launch = _health(group)["group"]["launch"]
    rest = _stream_then(group, lambda: os.kill(ranks(group)[1].pid, signal.SIGKILL))
    assert rest and "error" in rest[-1], rest[-3:]
    assert "rank 1 (127.0.0.1) of the distributed group" in rest[-1]["error"]
    # the supervisor starts a new group; its /health names the rank that failed
    health = _comes_back(group, launch)
    assert health["status"] == "ok"
    assert health["group"]["last_fault"].startswith("rank 1 (127.0.0.1) was killed by SIGKILL")
    again = ollama.Client(host=group.url).chat(model=SMOL, messages=QUESTION, options=GREEDY)
    assert again.message.content
