"""The image cache over HTTP: what the second turn of a chat about the same image costs.

Clients resend every image every turn. The bridge keeps the image in the prompt cache (its
image tokens name it) and its features in memory, so the second turn neither runs the vision
tower nor prefills the image again. This builds a LLaVA with random weights and real shapes
(a CLIP ViT-B/16 vision tower at 224 pixels, 196 image tokens; a 12-layer, 768-wide llama),
serves it, and measures three requests' ``prompt_eval_duration`` and the engine's counters:

1. turn 1 on a fresh server (the image is new: vision tower + full prefill);
2. turn 2 on the same server (the image resent with the history);
3. the same turn 2 on a fresh server with the prompt cache off: what every turn would cost
   without the cache (vision tower + full prefill again).

Run: ``.venv/bin/python bench/vision_cache.py`` (about a minute on two CPU cores). Prints
one JSON line per request and a summary line.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from server import Bridge, engine_stats, start_bridge  # noqa: E402
from tiny_vision_model import b64, build_tiny_vision_model  # noqa: E402

VISION = {  # CLIP ViT-B/16 at 224 pixels: 14 x 14 patches
    "num_hidden_layers": 12,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "image_size": 224,
    "patch_size": 16,
    "projection_dim": 512,
}
TEXT = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_key_value_heads": 4,
    "intermediate_size": 2048,
}
OPTIONS = {"temperature": 0, "num_predict": 16}


def photo() -> bytes:
    """A 640x480 JPEG of noise (the processor resizes it to 224x224)."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def store(base: Path, model: Path) -> dict[str, str]:
    """An isolated store holding ``model`` as ``llava-bench``; its environment."""
    env = {
        "MLX_BRIDGE_MODELS": str(base / "models"),
        "MLX_BRIDGE_CONFIG_DIR": str(base / "config"),
        "HF_HOME": str(base / "hf"),
        "HF_HUB_OFFLINE": "1",
    }
    cmd = [sys.executable, "-m", "mlx_ollama_bridge", "import", str(model)]
    subprocess.run(
        cmd + ["--name", "llava-bench"], env={**os.environ, **env}, check=True, capture_output=True
    )
    return env


def chat(bridge: Bridge, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """One greedy /api/chat; the reply with the engine counters' change."""
    before = engine_stats(bridge.url)
    body = {"model": "llava-bench", "messages": messages, "stream": False, "options": OPTIONS}
    started = time.perf_counter()
    reply = requests.post(bridge.url + "/api/chat", json=body, timeout=1800).json()
    wall = time.perf_counter() - started
    after = engine_stats(bridge.url)
    return {
        "prompt_eval_count": reply["prompt_eval_count"],
        "prompt_eval_ms": round(reply["prompt_eval_duration"] / 1e6, 1),
        "eval_count": reply["eval_count"],
        "wall_ms": round(wall * 1000, 1),
        "reused_tokens": after["prompt_tokens_reused"] - before["prompt_tokens_reused"],
        "image_encodes": after["image_encodes"] - before["image_encodes"],
        "content": reply["message"]["content"],
    }


def main() -> None:
    """Build, serve, measure; print JSON lines."""
    image = b64(photo())
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        model = build_tiny_vision_model(base / "llava-bench", text=TEXT, vision=VISION)
        env = store(base, model)
        turn1 = [{"role": "user", "content": "Describe this photo.", "images": [image]}]
        warm = start_bridge(**env)
        try:
            chat(warm, [{"role": "user", "content": "hello"}])  # load the model first
            first = chat(warm, turn1)
            turn2 = turn1 + [
                {"role": "assistant", "content": first["content"]},
                {"role": "user", "content": "And what colours are in it?"},
            ]
            second = chat(warm, turn2)
        finally:
            warm.stop()
        cold = start_bridge(**env, MLX_BRIDGE_PROMPT_CACHE="0")
        try:
            chat(cold, [{"role": "user", "content": "hello"}])
            uncached = chat(cold, turn2)
        finally:
            cold.stop()
    rows = {"turn1": first, "turn2_cached": second, "turn2_uncached": uncached}
    for name, row in rows.items():
        print(json.dumps({"request": name, **{k: v for k, v in row.items() if k != "content"}}))
    speedup = uncached["prompt_eval_ms"] / max(second["prompt_eval_ms"], 0.1)
    print(
        json.dumps({"summary": "turn 2 prompt eval, uncached / cached", "ratio": round(speedup, 1)})
    )


if __name__ == "__main__":
    main()
