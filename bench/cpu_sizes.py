"""CPU mode at larger sizes: Q4 vs dense float32 prefill and decode of a random llama with the
shapes of a real model (no download, no tokenizer; the speed depends on shapes only).

Run it with the BLAS to measure preloaded, e.g.
``LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3
python bench/cpu_sizes.py qwen2.5-0.5b``. Prints one JSON line per variant.
Needs about 5 bytes of RAM per parameter (the float32 copy plus the quantized one).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

SHAPES: dict[str, dict[str, int]] = {
    "smollm2-360m": {
        "hidden_size": 960,
        "intermediate_size": 2560,
        "num_hidden_layers": 32,
        "num_attention_heads": 15,
        "num_key_value_heads": 5,
        "vocab_size": 49152,
    },
    "qwen2.5-0.5b": {
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
    },
    "qwen2.5-1.5b": {
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
    },
}


def measure(model: Any, prompt: Any, tokens: int) -> dict[str, float]:
    """Prefill tok/s (prompt to first token) and decode tok/s of ``generate_step``."""
    from mlx_lm.generate import generate_step

    list(generate_step(prompt[:8], model, max_tokens=2))  # warm-up
    start, first, count = time.perf_counter(), None, 0
    for _token, _logprobs in generate_step(prompt, model, max_tokens=tokens + 1):
        first = first or time.perf_counter()
        count += 1
    end = time.perf_counter()
    return {
        "prefill_tps": round(prompt.size / (first - start), 1),
        "decode_tps": round((count - 1) / (end - first), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("shape", choices=sorted(SHAPES))
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=16)
    args = parser.parse_args()

    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    from mlx_ollama_bridge import cpu_blas
    from mlx_ollama_bridge.engine.cpu_dense import densify, parameter_count

    config = llama.ModelArgs(
        model_type="llama",
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        **SHAPES[args.shape],
    )
    model = llama.Model(config)
    model.set_dtype(mx.float32)
    nn.quantize(model, group_size=32, bits=4)
    mx.eval(model.parameters())
    vocab = config.vocab_size
    prompt = mx.array([(i * 7919) % vocab for i in range(args.prompt_tokens)])
    params = parameter_count(model)
    for variant in ("q4", "dense-f32"):
        if variant == "dense-f32":
            model = densify(model)
        size = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
        row = {"shape": args.shape, "parameters": params, "variant": variant}
        row |= {"weight_mb": round(size / 2**20), **measure(model, prompt, args.tokens)}
        row["cblas_sgemm"] = cpu_blas.cblas_provider()
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
