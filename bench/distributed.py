"""One process vs a two-rank group on loopback (``serve --hostfile``): decode throughput, TTFT
and memory per rank, through the real server (HTTP, streaming ``/api/chat``, greedy).

Each setup is started, the model loaded by a warm-up request, then ``--runs`` requests are
timed one at a time and ``--streams`` at once. TTFT is the time to the first streamed token
on the client; decode tok/s is the server's ``eval_count / eval_duration``; memory is each
rank's RSS after the runs (rank 0: its server's worker). Uses the store the environment names
(``MLX_BRIDGE_MODELS``), like ``serve``.
Usage: ``python bench/distributed.py [--model smollm2:135m] [--tokens 64] [--runs 3]
[--streams 2] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import requests

PROMPT = "Write a short story about a lighthouse keeper and a storm."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(hostfile: Path | None, log: Path) -> tuple[subprocess.Popen, str]:
    """``serve`` (with ``--hostfile`` for the group) on a free port, once it answers."""
    port = free_port()
    command = [sys.executable, "-m", "mlx_ollama_bridge", "serve", "--port", str(port)]
    command += ["--hostfile", str(hostfile)] if hostfile else []
    process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(log.read_text(errors="replace")[-3000:])
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return process, url
        except requests.RequestException:
            time.sleep(0.5)
    raise RuntimeError("server did not come up")


def stop(process: subprocess.Popen) -> None:
    children = psutil.Process(process.pid).children(recursive=True)
    process.terminate()
    try:
        process.wait(timeout=90)
    except subprocess.TimeoutExpired:
        process.kill()
    for child in children:
        if child.is_running():
            child.kill()


def chat(url: str, model: str, tokens: int, tag: str) -> dict[str, float]:
    """One streamed greedy chat: TTFT on the client, decode tok/s from the server."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"{PROMPT} ({tag})"}],
        "options": {"temperature": 0, "num_predict": tokens},
    }
    began = time.perf_counter()
    ttft = None
    last: dict[str, Any] = {}
    with requests.post(f"{url}/api/chat", json=body, stream=True, timeout=1800) as response:
        for line in response.iter_lines():
            if not line:
                continue
            last = json.loads(line)
            if ttft is None and last.get("message", {}).get("content"):
                ttft = time.perf_counter() - began
    if "error" in last:
        raise RuntimeError(last["error"])
    wall = time.perf_counter() - began
    return {
        "ttft_s": ttft or wall,
        "decode_tok_s": last["eval_count"] / (last["eval_duration"] / 1e9),
        "eval_count": last["eval_count"],
        "wall_s": wall,
    }


def concurrent(url: str, model: str, tokens: int, streams: int) -> float:
    """Aggregate generated tokens per second of ``streams`` chats at once."""
    results: list[dict[str, float]] = []
    threads = [
        threading.Thread(target=lambda n=n: results.append(chat(url, model, tokens, f"c{n}")))
        for n in range(streams)
    ]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(r["eval_count"] for r in results) / (time.perf_counter() - began)


def rank_memory(process: subprocess.Popen, grouped: bool) -> list[int]:
    """RSS of each rank (rank 0: its server worker), or of the one server's worker."""
    children = psutil.Process(process.pid).children(recursive=True)
    if not grouped:
        return [max(c.memory_info().rss for c in children)]
    by_rank: dict[int, int] = {}
    for child in children:
        try:
            rank = child.environ().get("MLX_RANK")
            if rank is not None:
                by_rank[int(rank)] = max(by_rank.get(int(rank), 0), child.memory_info().rss)
        except psutil.Error:
            continue
    return [by_rank[r] for r in sorted(by_rank)]


def measure(name: str, hostfile: Path | None, args: argparse.Namespace, logs: Path) -> dict:
    process, url = start(hostfile, logs / f"{name}.log")
    try:
        load_began = time.perf_counter()
        chat(url, args.model, 2, "warm-up")
        load_s = time.perf_counter() - load_began
        runs = [chat(url, args.model, args.tokens, f"r{n}") for n in range(args.runs)]
        aggregate = concurrent(url, args.model, args.tokens, args.streams)
        shares = requests.get(f"{url}/api/ps", timeout=30).json()["models"][0]
        return {
            "setup": name,
            "first_request_s": round(load_s, 2),
            "ttft_s": round(statistics.median(r["ttft_s"] for r in runs), 3),
            "decode_tok_s": round(statistics.median(r["decode_tok_s"] for r in runs), 2),
            f"aggregate_tok_s_{args.streams}_streams": round(aggregate, 2),
            "rss_bytes_per_rank": rank_memory(process, hostfile is not None),
            "weights_bytes_per_rank": [
                r["size"] for r in shares.get("distributed", {}).get("ranks", [])
            ]
            or [shares["size"]],
            "sharding": shares.get("distributed", {}).get("sharding", "-"),
        }
    finally:
        stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2:135m")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    hostfile = logs / "hosts.json"
    hostfile.write_text(json.dumps([{"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}] * 2))
    results = [
        measure("one process", None, args, logs),
        measure("two ranks (loopback ring)", hostfile, args, logs),
    ]
    for row in results:
        print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps({"cpus": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
