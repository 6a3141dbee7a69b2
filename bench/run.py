"""Bridge vs raw mlx-lm on the same model and prompt, in one run.

Prints a JSON document and a readable table: decode tokens/s (and the bridge/raw ratio),
time to first token, and the server's idle RSS before and after loading the model.
Usage: ``python bench/run.py [--model smollm2:135m] [--tokens 32] [--runs 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time

import psutil
import requests

QUESTION = "Write one sentence about the sea."


def raw_mlx(path: str, tokens: int, runs: int) -> dict[str, float]:
    """Decode speed and TTFT of ``mlx_lm.stream_generate`` with greedy sampling."""
    from mlx_lm import load, stream_generate

    model, tokenizer = load(path)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, tokenize=False
    )
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    tps, ttft = [], []
    for _ in range(runs + 1):  # the first run warms up
        start = time.perf_counter()
        first = None
        for response in stream_generate(model, tokenizer, ids, max_tokens=tokens):
            first = first or time.perf_counter() - start
            decode_tps = response.generation_tps
        tps.append(decode_tps)
        ttft.append(first)
    return {"decode_tps": statistics.median(tps[1:]), "ttft_s": statistics.median(ttft[1:])}


def bridge(url: str, model: str, tokens: int, runs: int) -> dict[str, float]:
    """Decode speed (eval_count/eval_duration) and client-side TTFT through /api/chat."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": QUESTION}],
        # Same work as raw greedy decoding: no sampling filters, no penalties.
        "options": {"temperature": 0, "num_predict": tokens, "repeat_penalty": 1.0},
    }
    tps, ttft = [], []
    for _ in range(runs + 1):
        start = time.perf_counter()
        first = None
        with requests.post(f"{url}/api/chat", json=body, stream=True, timeout=600) as reply:
            for line in reply.iter_lines():
                first = first or time.perf_counter() - start
                final = json.loads(line)
        tps.append(final["eval_count"] / final["eval_duration"] * 1e9)
        ttft.append(first)
    return {"decode_tps": statistics.median(tps[1:]), "ttft_s": statistics.median(ttft[1:])}


def start_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "mlx_ollama_bridge", "serve", "--host", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            requests.get(url, timeout=5)
            return proc, url
        except requests.RequestException:  # not listening yet, or the worker still booting
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("bridge did not start")


def server_rss(proc: subprocess.Popen) -> int:
    """RSS of the gunicorn worker (the process that holds the model)."""
    children = psutil.Process(proc.pid).children(recursive=True)
    return max((c.memory_info().rss for c in children), default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2:135m")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    from mlx_ollama_bridge.config import Settings
    from mlx_ollama_bridge.registry import Registry

    path = str(Registry(Settings.from_env()).resolve(args.model).path)
    proc, url = start_server()
    try:
        rss_idle = server_rss(proc)
        load_start = time.perf_counter()
        requests.post(f"{url}/api/generate", json={"model": args.model}, timeout=600)
        cold_load_s = time.perf_counter() - load_start
        rss_loaded = server_rss(proc)
        via_bridge = bridge(url, args.model, args.tokens, args.runs)
    finally:
        proc.terminate()
        proc.wait(30)
    raw = raw_mlx(path, args.tokens, args.runs)
    report = {
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
        "model": args.model,
        "tokens": args.tokens,
        "raw_mlx_lm": raw,
        "bridge": via_bridge,
        "decode_ratio_bridge_over_raw": via_bridge["decode_tps"] / raw["decode_tps"],
        "ttft_difference_s": via_bridge["ttft_s"] - raw["ttft_s"],
        "cold_load_s": cold_load_s,
        "server_rss_mb": {"idle": rss_idle / 2**20, "one_model_loaded": rss_loaded / 2**20},
    }
    print(json.dumps(report, indent=2))
    print(f"\n{'':24}{'raw mlx-lm':>12}{'bridge':>12}")
    print(f"{'decode tok/s':24}{raw['decode_tps']:12.2f}{via_bridge['decode_tps']:12.2f}")
    print(f"{'time to first token s':24}{raw['ttft_s']:12.2f}{via_bridge['ttft_s']:12.2f}")
    print(f"ratio bridge/raw decode: {report['decode_ratio_bridge_over_raw']:.2f}")


if __name__ == "__main__":
    main()
