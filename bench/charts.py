"""The benchmark chart: a PNG drawn from ``bench/run.py``'s JSON report, nothing else.

Left, concurrency: aggregate decode tok/s at 1, 2, 4, 8 streams against perfect scaling of
one stream. Middle, multi-turn chat: time to first token per turn with and without the
prompt cache. Right (when the report has peers): each peer's speed per scenario as a
fraction of the bridge's. An optional second report (``baseline``, e.g. a run with
``MLX_BRIDGE_CPU_BLAS=off``) is drawn beside it in grey. Re-draw from saved reports:
``python bench/charts.py docs/benchmarks.json docs/benchmarks.png [BASELINE.json LABEL]``
(needs ``.[bench]``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def write_chart(
    report: dict[str, Any],
    out: Path,
    baseline: dict[str, Any] | None = None,
    baseline_label: str = "baseline",
) -> Path:
    """Draw ``report``'s concurrency and multi-turn results into the PNG ``out``, with
    ``baseline``'s (same scenarios, another configuration) in grey if given."""
    import matplotlib

    matplotlib.use("Agg")  # no display: CI, servers
    import matplotlib.pyplot as plt

    peers = (report.get("peers") or {}).get("ratios") or {}
    if "concurrency" not in report:  # a peers-only report (bench/run.py --peers-only)
        fig, axis = plt.subplots(1, 1, figsize=(7, 4.6), dpi=110)
        draw_peers(axis, peers)
        return _save(fig, report, out)
    columns = 3 if peers else 2
    fig, axes = plt.subplots(1, columns, figsize=(5.5 * columns, 4.2), dpi=110)
    conc, turns = axes[0], axes[1]
    rows = report["concurrency"]
    streams = [row["streams"] for row in rows]
    tps = [row["aggregate_tps"] for row in rows]
    positions = range(len(streams))
    width = 0.4 if baseline else 0.8
    shift = width / 2 if baseline else 0.0
    if baseline:
        base = {row["streams"]: row["aggregate_tps"] for row in baseline["concurrency"]}
        base_tps = [base.get(n, 0) for n in streams]
        conc.bar([x - shift for x in positions], base_tps, width, color="#bab0ac",
                 label=baseline_label)  # fmt: skip
        for x, value in zip(positions, base_tps, strict=True):
            conc.annotate(f"{value:.1f}", (x - shift, value), ha="center", va="bottom",
                          fontsize=8, color="#79706e")  # fmt: skip
    conc.bar([x + shift for x in positions], tps, width, color="#4c78a8", label="this run")
    conc.plot(positions, [tps[0] * n / streams[0] for n in streams], "k--", lw=1,
              label="perfect scaling of 1 stream")  # fmt: skip
    for x, value in zip(positions, tps, strict=True):
        conc.annotate(f"{value:.1f}", (x + shift, value), ha="center", va="bottom", fontsize=8)
    conc.set_xticks(list(positions), [str(n) for n in streams])
    conc.set_xlabel("concurrent streams")
    conc.set_ylabel("aggregate decode tok/s")
    conc.set_title("Concurrency")
    conc.legend(fontsize=8, loc="upper left")

    cached, uncached = report["multi_turn"]["cached"], report["multi_turn"]["uncached"]
    turns.plot([r["turn"] for r in uncached], [r["ttft_s"] for r in uncached], "o-",
               color="#e45756", label="prompt cache off")  # fmt: skip
    turns.plot([r["turn"] for r in cached], [r["ttft_s"] for r in cached], "o-",
               color="#54a24b", label="prompt cache on")  # fmt: skip
    if baseline:
        for key, style, label in (("uncached", "s--", "off"), ("cached", "s:", "on")):
            rows_b = baseline["multi_turn"][key]
            turns.plot([r["turn"] for r in rows_b], [r["ttft_s"] for r in rows_b], style,
                       color="#bab0ac", label=f"{baseline_label}, cache {label}")  # fmt: skip
    turns.set_xlabel("turn (whole history resent)")
    turns.set_ylabel("time to first token (s)")
    turns.set_ylim(bottom=0)
    turns.set_xticks([r["turn"] for r in cached])
    turns.set_title("Multi-turn chat")
    turns.legend(fontsize=8, loc="upper left")

    if peers:
        draw_peers(axes[2], peers)

    return _save(fig, report, out)


def _save(fig: Any, report: dict[str, Any], out: Path) -> Path:
    import matplotlib.pyplot as plt

    load = report.get("load_average")
    load_text = f", load avg {load[0]:.1f}" if load else ""
    fig.suptitle(
        f"{report.get('model', '?')} on {report.get('machine', '?')}{load_text} "
        f"({report.get('date', '?')[:10]})",
        fontsize=10,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", metadata={"Software": None})  # no version stamp: stable
    plt.close(fig)
    return out


PEER_COLOURS = {"mlx_lm_server": "#f58518", "llama_cpp_server": "#72b7b2"}
PEER_LABELS = {"mlx_lm_server": "mlx_lm.server", "llama_cpp_server": "llama.cpp server"}


def draw_peers(axis: Any, ratios: dict[str, dict[str, float]]) -> None:
    """Each peer's speed as a fraction of the bridge's, per scenario (the bridge = 1)."""
    if not ratios:
        axis.set_title("Peers: none measured")
        return
    names = list(ratios)
    metrics = list(next(iter(ratios.values())))
    height = 0.8 / len(names)
    for i, name in enumerate(names):
        ys = [m + (i - (len(names) - 1) / 2) * height for m in range(len(metrics))]
        values = [ratios[name][k] for k in metrics]
        axis.barh(ys, values, height, color=PEER_COLOURS.get(name, "#999999"),
                  label=PEER_LABELS.get(name, name))  # fmt: skip
        for y, value in zip(ys, values, strict=True):
            if value != value:  # NaN: not measured validly (see the report)
                axis.annotate("n/a", (0, y), va="center", fontsize=7,
                              xytext=(2, 0), textcoords="offset points")  # fmt: skip
                continue
            axis.annotate(f"{value:.2f}", (value, y), va="center", fontsize=7,
                          xytext=(2, 0), textcoords="offset points")  # fmt: skip
    axis.axvline(1.0, color="k", lw=1, ls="--", label="bridge")
    axis.set_yticks(range(len(metrics)), [m.replace("_", " ") for m in metrics], fontsize=7)
    axis.invert_yaxis()
    axis.set_xlabel("speed relative to the bridge (tokens/s, or 1/TTFT)")
    axis.set_title("Peers, same model and prompts")
    axis.legend(fontsize=7, loc="lower right")


def main() -> None:
    if len(sys.argv) not in (3, 5):
        raise SystemExit("usage: python bench/charts.py REPORT.json OUT.png [BASELINE.json LABEL]")
    report = json.loads(Path(sys.argv[1]).read_text())
    baseline = json.loads(Path(sys.argv[3]).read_text()) if len(sys.argv) == 5 else None
    label = sys.argv[4] if len(sys.argv) == 5 else "baseline"
    print(write_chart(report, Path(sys.argv[2]), baseline, label))


if __name__ == "__main__":
    main()
