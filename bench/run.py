"""Bridge vs raw mlx-lm, concurrency, multi-turn prompt cache, cold load and RSS, in one run.

Prints a JSON document and readable tables:
(1) decode tokens/s and time to first token, bridge vs ``mlx_lm.stream_generate``;
(2) aggregate decode tokens/s at 1, 2, 4 and 8 concurrent streams;
(3) a 6-turn chat: TTFT per turn with and without prompt-cache reuse;
(4) cold load time; (5) the server's RSS with no model and with one loaded.
Usage: ``python bench/run.py [--model smollm2:135m] [--tokens 32] [--runs 5]
[--streams 1,2,4,8] [--turns 6] [--json out.json] [--chart out.png]``; ``make bench`` writes
``docs/benchmarks.json`` and its chart ``docs/benchmarks.png`` (``bench/charts.py``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import run_peers  # noqa: E402
from scenarios import concurrency, multi_turn  # noqa: E402
from server import start_bridge, stream_chat  # noqa: E402

QUESTION = "Write one sentence about the sea."


Run = Callable[[], tuple[float, float]]  # one measured run: (decode tok/s, TTFT s)


def raw_mlx(path: str, tokens: int) -> Run:
    """One greedy ``mlx_lm.stream_generate`` run per call, on the weights the bridge serves."""
    import mlx.core as mx
    from mlx_lm import load, stream_generate

    from mlx_ollama_bridge.engine.cpu_dense import maybe_densify

    model, tokenizer = load(path)
    # the same weights the bridge serves: dense float32 in Linux CPU mode with OpenBLAS
    model = maybe_densify(model, on_gpu=mx.default_device().type == mx.DeviceType.gpu)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, tokenize=False
    )
    ids = tokenizer.encode(prompt, add_special_tokens=False)

    def run() -> tuple[float, float]:
        start = time.perf_counter()
        first, decode_tps = 0.0, 0.0
        for response in stream_generate(model, tokenizer, ids, max_tokens=tokens):
            first = first or time.perf_counter() - start
            decode_tps = response.generation_tps
        return decode_tps, first

    return run


def raw_chat(path: str) -> Callable[[list[dict[str, Any]], int], Any]:
    """Raw ``mlx_lm.stream_generate`` as a chat for ``compare`` (greedy, same weights as the
    bridge), measured as the servers are: TTFT, and decode from the first to the last token."""
    import mlx.core as mx
    from mlx_lm import load, stream_generate
    from peers import Reply

    from mlx_ollama_bridge.engine.cpu_dense import maybe_densify

    model, tokenizer = load(path)
    model = maybe_densify(model, on_gpu=mx.default_device().type == mx.DeviceType.gpu)

    def chat(messages: list[dict[str, Any]], tokens: int) -> Reply:
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tokenizer.encode(prompt, add_special_tokens=False)
        start = time.perf_counter()
        first = last = 0.0
        pieces, count = [], 0
        for response in stream_generate(model, tokenizer, ids, max_tokens=tokens):
            now = time.perf_counter()
            first, last = first or now, now
            pieces.append(response.text)
            count += 1
        return Reply.measured(start, first, last, pieces, count)

    return chat


def bridge_decode(url: str, model: str, tokens: int) -> Run:
    """One run through ``/api/chat`` per call: (eval_count/eval_duration, client-side TTFT).

    The prompt differs from raw mlx-lm's in nothing, and each run says the same thing, so
    from the second run on the prompt cache would serve it: it is disabled on this server
    (``MLX_BRIDGE_PROMPT_CACHE=0``) to compare equal work.
    """
    body = {
        "model": model,
        "messages": [{"role": "user", "content": QUESTION}],
        # Same work as raw greedy decoding: no sampling filters, no penalties.
        "options": {"temperature": 0, "num_predict": tokens, "repeat_penalty": 1.0},
    }

    def run() -> tuple[float, float]:
        first, _text, final = stream_chat(url, body)
        return final["eval_count"] / final["eval_duration"] * 1e9, first

    return run


def paired(raw: Run, bridge: Run, runs: int) -> tuple[dict[str, float], dict[str, float]]:
    """Raw and bridge runs alternated (after one warm-up each), so that a change in the
    machine's load hits both alike; medians of each."""
    raw(), bridge()
    raw_runs, bridge_runs = [], []
    for _ in range(runs):
        raw_runs.append(raw())
        bridge_runs.append(bridge())

    def medians(results: list[tuple[float, float]]) -> dict[str, float]:
        return {
            "decode_tps": statistics.median(r[0] for r in results),
            "ttft_s": statistics.median(r[1] for r in results),
        }

    return medians(raw_runs), medians(bridge_runs)


def single_server(args: argparse.Namespace, streams: list[int], raw: Run) -> dict[str, Any]:
    """RSS, cold load, decode (alternating with raw mlx-lm) and concurrency on one server
    without a prompt cache."""
    # OLLAMA_NUM_PARALLEL left unset: the default (chosen from memory) is what is measured
    bridge = start_bridge(MLX_BRIDGE_PROMPT_CACHE="0", OLLAMA_KEEP_ALIVE="-1")
    try:
        time.sleep(1.0)
        rss_idle = bridge.rss_bytes()
        load_start = time.perf_counter()
        requests.post(f"{bridge.url}/api/generate", json={"model": args.model}, timeout=600)
        cold_load_s = time.perf_counter() - load_start
        rss_loaded = bridge.rss_bytes()
        raw_figures, decode = paired(
            raw, bridge_decode(bridge.url, args.model, args.tokens), args.runs
        )
        rows = [concurrency(bridge.url, args.model, n, args.concurrency_tokens) for n in streams]
    finally:
        bridge.stop()
    return {
        "raw_mlx_lm": raw_figures,
        "bridge": decode,
        "concurrency": rows,
        "cold_load_s": cold_load_s,
        "server_rss_mb": {"idle": rss_idle / 2**20, "one_model_loaded": rss_loaded / 2**20},
    }


def chat_turns(args: argparse.Namespace, cache_entries: int) -> list[dict[str, float]]:
    """The multi-turn chat on a fresh server with the given prompt cache size."""
    bridge = start_bridge(MLX_BRIDGE_PROMPT_CACHE=str(cache_entries), OLLAMA_KEEP_ALIVE="-1")
    try:
        requests.post(f"{bridge.url}/api/generate", json={"model": args.model}, timeout=600)
        return multi_turn(bridge.url, args.model, args.turns, args.turn_tokens)
    finally:
        bridge.stop()


def print_tables(report: dict[str, Any]) -> None:
    """The report as readable tables."""
    raw, via = report["raw_mlx_lm"], report["bridge"]
    print(f"\n{'':24}{'raw mlx-lm':>12}{'bridge':>12}")
    print(f"{'decode tok/s':24}{raw['decode_tps']:12.2f}{via['decode_tps']:12.2f}")
    print(f"{'time to first token s':24}{raw['ttft_s']:12.3f}{via['ttft_s']:12.3f}")
    print(f"ratio bridge/raw decode: {report['decode_ratio_bridge_over_raw']:.3f}")
    print(f"\n{'streams':>8}{'aggregate tok/s':>18}{'x single':>10}{'mean TTFT s':>14}")
    base = report["concurrency"][0]["aggregate_tps"]
    for row in report["concurrency"]:
        speedup = row["aggregate_tps"] / base
        print(
            f"{row['streams']:8d}{row['aggregate_tps']:18.2f}{speedup:10.2f}"
            f"{row['mean_ttft_s']:14.2f}"
        )
    print(
        f"\n{'turn':>5}{'prompt tok':>12}{'reused':>8}{'TTFT cached s':>15}{'TTFT uncached s':>17}"
    )
    for hit, miss in zip(
        report["multi_turn"]["cached"], report["multi_turn"]["uncached"], strict=True
    ):
        print(
            f"{hit['turn']:5d}{hit['prompt_eval_count']:12d}{hit['reused_tokens']:8d}"
            f"{hit['ttft_s']:15.2f}{miss['ttft_s']:17.2f}"
        )
    rss = report["server_rss_mb"]
    print(
        f"\ncold load: {report['cold_load_s']:.2f} s; RSS idle {rss['idle']:.0f} MB, "
        f"one model loaded {rss['one_model_loaded']:.0f} MB"
    )
    if report.get("peers"):
        print_peers(report["peers"])


def print_peers(peers: dict[str, Any]) -> None:
    """The peer comparison as tables: figures, then each peer as a ratio to the bridge."""
    names = [n for n in ("bridge", "mlx_lm_server", "llama_cpp_server") if peers.get(n)]
    print(f"\n{'':32}" + "".join(f"{n:>18}" for n in names))
    rows = {
        "single decode tok/s": lambda r: r["single"]["decode_tps"],
        "single TTFT s": lambda r: r["single"]["ttft_s"],
        **{
            f"{c['streams']} streams tok/s": (lambda r, i=i: r["concurrency"][i]["aggregate_tps"])
            for i, c in enumerate(peers["bridge"]["concurrency"])
        },
        "chat turn 6 TTFT s": lambda r: r["multi_turn_ttft_s"][-1],
        "agent turn 1 TTFT s": lambda r: r["agent"]["ttft_s"][0],
        "agent turn 10 TTFT s": lambda r: r["agent"]["ttft_s"][-1],
        "agent 2nd session TTFT s": lambda r: r["agent"]["second_session_ttft_s"],
        "edit decode tok/s": lambda r: r["edit"]["decode_tps"],
        "RSS MB": lambda r: r["rss_mb"],
    }
    for label, get in rows.items():
        print(f"{label:32}" + "".join(f"{get(peers[n]):18.3f}" for n in names))
    bridge = peers["bridge"]
    agent = bridge["agent"]
    print(
        f"agent system prompt {peers['agent_system_tokens']} tokens; bridge uncached turn 1 "
        f"{agent['uncached_turn1_ttft_s']:.2f} s, last turn "
        f"{agent['uncached_last_turn_ttft_s']:.2f} s; edit without lookup "
        f"{bridge['edit_without_lookup']['decode_tps']:.2f} tok/s, same text: "
        f"{bridge['edit']['same_text_as_without_lookup']}"
    )
    memory = bridge["restart_and_memory"]
    print(
        f"after restart, 2nd session TTFT {memory['second_session_after_restart_ttft_s']:.2f} s; "
        f"RSS over sessions: {[round(r['rss_mb']) for r in memory['rss_over_sessions']]} MB "
        f"(budget {memory['memory_budget_mb']:.0f} MB)"
    )
    for name, row in peers["ratios"].items():
        print(f"{name} / bridge: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()))
    print("targets: " + json.dumps(peers.get("targets"), default=str))


def peers_only(args: argparse.Namespace, path: Path, started: float) -> None:
    """Only the peer comparison: its own JSON and chart (one panel)."""
    from mlx_ollama_bridge import cpu_blas

    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
        "model": args.model,
        "cpu_blas": cpu_blas.describe() if cpu_blas.mlx_runs_on_cpu() else None,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "peers": run_peers(args, path, raw_chat(str(path))),
        "bench_seconds": time.perf_counter() - started,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    print_peers(report["peers"])
    if args.chart:
        from charts import write_chart

        print(f"chart: {write_chart(report, args.chart)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2:135m")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--streams", default="1,2,4,8")
    parser.add_argument("--concurrency-tokens", type=int, default=32)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--turn-tokens", type=int, default=16)
    parser.add_argument("--agent-turns", type=int, default=10)
    parser.add_argument("--agent-tokens", type=int, default=32)
    parser.add_argument("--agent-prompt-tokens", type=int, default=6000)
    parser.add_argument("--edit-tokens", type=int, default=256)
    parser.add_argument("--sessions", type=int, default=100, help="agent sessions for memory")
    parser.add_argument("--no-peers", action="store_true", help="skip bench/compare.py")
    parser.add_argument("--peers-only", action="store_true", help="only bench/compare.py")
    parser.add_argument("--cache-dir", default=".cache/bench", help="dense copy, GGUF, logs")
    parser.add_argument("--wheels", default=".cache/wheels")
    parser.add_argument("--json", type=Path, help="also write the JSON report here")
    parser.add_argument("--chart", type=Path, help="also draw the PNG chart here (matplotlib)")
    parser.add_argument(
        "--baseline", type=Path, help="a saved JSON report to draw in grey on the chart"
    )
    parser.add_argument("--baseline-label", default="baseline")
    args = parser.parse_args()
    streams = [int(n) for n in args.streams.split(",")]
    args.stream_list = streams

    from mlx_ollama_bridge import cpu_blas
    from mlx_ollama_bridge.config import Settings
    from mlx_ollama_bridge.registry import Registry

    # Linux CPU mode: run raw mlx-lm with the BLAS the bridge's `serve` uses (re-exec once)
    cpu_blas.maybe_reexec(Settings.from_env().cpu_blas)
    path = str(Registry(Settings.from_env()).resolve(args.model).path)
    started = time.perf_counter()
    if args.peers_only:
        return peers_only(args, Path(path), started)
    served = single_server(args, streams, raw_mlx(path, args.tokens))
    cached, uncached = chat_turns(args, 4), chat_turns(args, 0)
    peers = None if args.no_peers else run_peers(args, Path(path), raw_chat(path))
    raw = served["raw_mlx_lm"]
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
        "model": args.model,
        "tokens": args.tokens,
        "cpu_blas": cpu_blas.describe() if cpu_blas.mlx_runs_on_cpu() else None,
        **served,
        "decode_ratio_bridge_over_raw": served["bridge"]["decode_tps"] / raw["decode_tps"],
        "ttft_difference_s": served["bridge"]["ttft_s"] - raw["ttft_s"],
        "multi_turn": {"cached": cached, "uncached": uncached},
        "peers": peers,
        "bench_seconds": time.perf_counter() - started,
        "load_average": [round(x, 2) for x in os.getloadavg()],  # the box may be shared
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    print_tables(report)
    if args.chart:
        from charts import write_chart

        baseline = json.loads(args.baseline.read_text()) if args.baseline else None
        chart = write_chart(report, args.chart, baseline, args.baseline_label)
        print(f"chart: {chart}")


if __name__ == "__main__":
    main()
