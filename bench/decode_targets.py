"""Issue 18's decode targets alone, interleaved: single-stream decode per round against raw
mlx-lm and ``mlx_lm.server``, and 4 and 8 concurrent streams against ``mlx_lm.server`` (each
repeat, and the repeats pooled).

``compare.py`` runs every scenario once and takes ~45 minutes; this takes a few, so the
per-round targets can be checked on a quiet box. Same servers, prompts and measurement as
``compare.py`` (the bridge with its defaults, ``mlx_lm.server`` on a dense float32 copy of
the same weights, raw ``mlx_lm.stream_generate`` in this process); each round runs the
contenders one after the other in a rotating order, the load average recorded per round.

    .venv/bin/python bench/decode_targets.py --rounds 5 --tokens 64 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import (  # noqa: E402
    QUESTION,
    bridge_chat,
    concurrent,
    load_average,
    openai_chat,
    rotated,
    start_mlx_lm_peer,
    streams_ratio,
)
from run import raw_chat  # noqa: E402
from server import start_bridge  # noqa: E402


def single_rounds(chats: dict[str, Any], rounds: int, tokens: int) -> list[dict[str, Any]]:
    """Decode tok/s of one greedy stream per contender per round, and the round's ratios."""
    out = []
    for round_ in range(rounds):
        row: dict[str, Any] = {"load": load_average()}
        for name in rotated(list(chats), round_):
            reply = chats[name]([{"role": "user", "content": QUESTION}], tokens)
            row[name] = reply.decode_tps
        row["bridge_over_raw"] = row["bridge"] / row["raw_mlx_lm"]
        row["bridge_over_mlx_lm_server"] = row["bridge"] / row["mlx_lm_server"]
        out.append(row)
    return out


def streams_runs(chats: dict[str, Any], streams: list[int], repeats: int, tokens: int) -> list:
    """Aggregate tok/s of ``n`` simultaneous streams, bridge vs ``mlx_lm.server``, each
    ``n`` ``repeats`` times, the order alternating."""
    out = []
    for i, n in enumerate([n for n in streams for _ in range(repeats)]):
        row: dict[str, Any] = {"streams": n, "load": load_average()}
        results = {}
        for name in rotated(["bridge", "mlx_lm_server"], i):
            results[name] = result = concurrent(chats[name], n, tokens)
            row[name] = result["aggregate_tps"]
            row[f"{name}_shortest"] = result["shortest"]
            row[f"{name}_mean_ttft_s"] = result["mean_ttft_s"]
        ratio = streams_ratio(results["bridge"], results["mlx_lm_server"])
        row["bridge_over_mlx_lm_server"] = ratio
        for name, result in results.items():
            row[f"{name}_tokens"], row[f"{name}_wall_s"] = result["tokens"], result["wall_s"]
        out.append(row)
    return out


def pooled(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per stream count, the bridge's aggregate over ``mlx_lm.server``'s with every repeat
    pooled: all tokens over all wall time (a run of 4 streams lasts ~3 s, so one repeat is
    at the mercy of a single slow first token); ``streams_ratio``'s rule for streams that
    got no tokens."""
    out: dict[str, float] = {}
    for n in sorted({row["streams"] for row in rows}):
        same = [row for row in rows if row["streams"] == n]

        def total(name: str, same: list[dict[str, Any]] = same) -> dict[str, float]:
            tokens = sum(r[f"{name}_tokens"] for r in same)
            return {
                "aggregate_tps": tokens / sum(r[f"{name}_wall_s"] for r in same),
                "shortest": min(r[f"{name}_shortest"] for r in same),
            }

        out[str(n)] = streams_ratio(total("bridge"), total("mlx_lm_server"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2:135m")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--streams", default="4,8")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--concurrency-tokens", type=int, default=32)
    parser.add_argument("--cache-dir", default=".cache/bench")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from mlx_ollama_bridge import cpu_blas
    from mlx_ollama_bridge.config import Settings
    from mlx_ollama_bridge.registry import Registry

    cpu_blas.maybe_reexec(Settings.from_env().cpu_blas)  # raw mlx-lm with the bridge's BLAS
    path = Registry(Settings.from_env()).resolve(args.model).path
    bridge = start_bridge(OLLAMA_KEEP_ALIVE="-1")
    peer = None
    try:
        peer = start_mlx_lm_peer(Path(args.cache_dir), path)
        chats = {
            "bridge": bridge_chat(bridge.url, args.model),
            "mlx_lm_server": openai_chat(peer.url, peer.model),
            "raw_mlx_lm": raw_chat(str(path)),
        }
        for chat in chats.values():
            chat([{"role": "user", "content": "hi"}], 4)  # warm-up: the model loads
        report: dict[str, Any] = {
            "load_at_start": load_average(),
            "single_rounds": single_rounds(chats, args.rounds, args.tokens),
            "streams": streams_runs(
                chats,
                [int(n) for n in args.streams.split(",")],
                args.repeats,
                args.concurrency_tokens,
            ),
            "load_at_end": load_average(),
        }
        report["pooled_bridge_over_mlx_lm_server"] = pooled(report["streams"])
    finally:
        bridge.stop()
        if peer is not None:
            peer.stop()
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
