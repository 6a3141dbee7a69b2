"""CPU mode on Linux: prefill and decode tok/s of Q4 vs dense weights, with MLX's bundled
reference BLAS and with OpenBLAS preloaded (raw mlx-lm, no server).

Each BLAS runs in its own child process (``LD_PRELOAD`` only takes effect at exec); in each,
the model is measured as loaded (Q4) and dequantized (``mlx_lm.utils.dequantize_model``)
then cast to bfloat16, float16 and float32 (float32 is what the bridge's CPU mode uses,
``engine/cpu_dense.py``). Optionally (``--streams``) the aggregate decode tok/s of
mlx-lm's ``BatchGenerator`` at several concurrent streams.
Usage: ``python bench/cpu_mode.py [--model smollm2:135m] [--prompt-tokens 128]
[--tokens 32] [--runs 2] [--streams 1,2,4,8] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mlx_ollama_bridge import cpu_blas  # noqa: E402

TEXT = (
    "The sea was calm that morning, and the fishing boats left the harbour one after "
    "another while the gulls circled above the nets. "
)
# dense-<dtype>: dequantized, then cast. dequantize_model keeps the scales' dtype: float32
# for GGUF conversions, float16/bfloat16 for most mlx-community models.
VARIANTS = ("q4", "dense-bf16", "dense-f16", "dense-f32")
_DTYPES = {"dense-bf16": "bfloat16", "dense-f16": "float16", "dense-f32": "float32"}


def _model(path: str, variant: str) -> tuple[Any, Any, str, int]:
    """(model, tokenizer, weight dtype, weight bytes) for one variant."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm import load
    from mlx_lm.utils import dequantize_model

    model, tokenizer = load(path)
    if variant != "q4":
        model = dequantize_model(model)
        model.set_dtype(getattr(mx, _DTYPES[variant]))
    mx.eval(model.parameters())
    params = tree_flatten(model.parameters())
    dtypes = sorted({str(v.dtype).removeprefix("mlx.core.") for _, v in params})
    return model, tokenizer, ",".join(dtypes), sum(v.nbytes for _, v in params)


def _single(model: Any, tokenizer: Any, prompt_tokens: int, tokens: int, runs: int) -> dict:
    """Median prefill and decode tok/s of ``stream_generate`` (greedy), after a warm-up."""
    from mlx_lm import stream_generate

    ids = tokenizer.encode(TEXT * (prompt_tokens // 20 + 1))[:prompt_tokens]
    list(stream_generate(model, tokenizer, ids[:16], max_tokens=4))  # warm-up: kernel setup
    prefill, decode = [], []
    for _ in range(runs):
        response = list(stream_generate(model, tokenizer, ids, max_tokens=tokens))[-1]
        prefill.append(response.prompt_tps)
        decode.append(response.generation_tps)
    return {"prefill_tps": statistics.median(prefill), "decode_tps": statistics.median(decode)}


def _batched(model: Any, tokenizer: Any, streams: list[int], tokens: int) -> list[dict]:
    """Aggregate decode tok/s of mlx-lm's BatchGenerator (time from the first token on)."""
    from mlx_lm.generate import BatchGenerator

    prompt = tokenizer.encode("Write a story about a cat.")
    rows = []
    for n in streams:
        gen = BatchGenerator(model, max_tokens=tokens, completion_batch_size=n,
                             prefill_batch_size=n)  # fmt: skip
        gen.insert([prompt] * n, max_tokens=[tokens] * n)
        start, count = None, 0
        while responses := gen.next_generated():
            if start is None:  # the first batch of tokens ends the prefill
                start = time.perf_counter()
                continue
            count += len(responses)
        rows.append({"streams": n, "aggregate_tps": count / (time.perf_counter() - start)})
        gen.close()
    return rows


def child(args: argparse.Namespace) -> None:
    """Measure every variant in this process; print one JSON line."""
    out: dict[str, Any] = {"variants": {}}
    for variant in VARIANTS:
        model, tokenizer, dtype, nbytes = _model(args.path, variant)
        row = {"dtype": dtype, "weight_mb": nbytes / 2**20}
        row.update(_single(model, tokenizer, args.prompt_tokens, args.tokens, args.runs))
        if args.streams and variant in ("q4", "dense-f32"):
            streams = [int(n) for n in args.streams.split(",")]
            row["batched"] = _batched(model, tokenizer, streams, args.batch_tokens)
        out["variants"][variant] = row
        print(f"# {variant}: {row}", file=sys.stderr, flush=True)
    # after MLX is loaded: the library MLX's cblas_sgemm binds to (None: the bundled one)
    out["blas"] = {"cblas_sgemm": cpu_blas.cblas_provider(), "mapped": cpu_blas.mapped_blas()}
    print(json.dumps(out))


def run_child(args: argparse.Namespace, preload: Path | None) -> dict[str, Any]:
    """Run :func:`child` in a fresh interpreter, with ``preload`` in LD_PRELOAD or not."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    if preload is not None:
        env["LD_PRELOAD"] = str(preload)
    cmd = [sys.executable, __file__, "--child", "--path", args.path]
    cmd += ["--prompt-tokens", str(args.prompt_tokens), "--tokens", str(args.tokens)]
    cmd += ["--runs", str(args.runs), "--streams", args.streams]
    cmd += ["--batch-tokens", str(args.batch_tokens)]
    done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_table(report: dict[str, Any]) -> None:
    """The report as a readable table."""
    print(f"\n{'weights':12}{'BLAS':12}{'dtype':10}{'MB':>7}{'prefill tok/s':>15}{'decode':>9}")
    for blas, result in report["results"].items():
        for variant, row in result["variants"].items():
            print(
                f"{variant:12}{blas:12}{row['dtype']:10}{row['weight_mb']:7.0f}"
                f"{row['prefill_tps']:15.1f}{row['decode_tps']:9.1f}"
            )
            for b in row.get("batched", []):
                print(f"{'':34}{b['streams']} streams: {b['aggregate_tps']:.1f} tok/s aggregate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2:135m")
    parser.add_argument("--path", help="model directory (default: --model from the store)")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--streams", default="", help="e.g. 1,2,4,8 (BatchGenerator)")
    parser.add_argument("--batch-tokens", type=int, default=24)
    parser.add_argument("--json", type=Path, help="also write the JSON report here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.path:
        from mlx_ollama_bridge.config import Settings
        from mlx_ollama_bridge.registry import Registry

        args.path = str(Registry(Settings.from_env()).resolve(args.model).path)
    if args.child:
        child(args)
        return
    openblas = cpu_blas.find_openblas()
    results = {"reference": run_child(args, None)}
    if openblas is None:
        print(f"no OpenBLAS found: install {cpu_blas.DEBIAN_PACKAGE}", file=sys.stderr)
    else:
        results["openblas"] = run_child(args, openblas)
    load = os.getloadavg()
    report = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{os.uname().sysname} {os.uname().machine}, {os.cpu_count()} cores",
        "load_average_after": [round(x, 2) for x in load],
        "model": args.model,
        "prompt_tokens": args.prompt_tokens,
        "tokens": args.tokens,
        "results": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    print_table(report)


if __name__ == "__main__":
    main()
