"""Qwen2.5-VL and Qwen3-VL through a real server: the greedy answer to a prompt with two
images equals mlx-vlm's own greedy generation (its forward pass, its M-RoPE positions and,
for Qwen3-VL, its DeepStack features), alone, again from the prompt cache, and with other
requests in flight, and through ollama's Python client."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import mlx.core as mx
import numpy as np
import ollama
import pytest
import requests
from mlx_lm.models.cache import KVCache
from tiny_vision_model import b64, picture

WIDE = picture((220, 20, 20), size=(112, 56))
SMALL = picture((20, 20, 220))
STEPS = 8


def generate(url: str, model: str, prompt: str) -> dict:
    body = {
        "model": model,
        "prompt": prompt,
        "images": [b64(WIDE), b64(SMALL)],
        "stream": False,
        "options": {"temperature": 0, "repeat_penalty": 1, "num_predict": STEPS},
    }
    reply = requests.post(url + "/api/generate", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    return reply.json()


def mlx_vlm_greedy(path, prompt_ids: list[int], steps: int) -> list[int]:
    """mlx-vlm's greedy tokens: the whole prompt with pixels and grids in one call, then its
    language model one token at a time on its cache (its rope deltas)."""
    from mlx_vlm.utils import load
    from PIL import Image

    vlm, processor = load(str(path))
    pixels, grids = [], []
    for data in (WIDE, SMALL):
        with Image.open(io.BytesIO(data)) as opened:
            out = processor(text=["<|image_pad|>"], images=[opened.convert("RGB")])
        pixels.append(mx.array(np.asarray(out["pixel_values"])))
        grids.append(mx.array(np.asarray(out["image_grid_thw"])))
    cache = [KVCache() for _ in vlm.language_model.layers]
    logits = vlm(
        mx.array([prompt_ids]),
        mx.concatenate(pixels),
        cache=cache,
        image_grid_thw=mx.concatenate(grids),
    ).logits[0, -1]
    tokens = []
    for _ in range(steps):
        tokens.append(int(mx.argmax(logits).item()))
        logits = vlm.language_model(mx.array([[tokens[-1]]]), cache=cache).logits[0, -1]
    return tokens


@pytest.mark.parametrize("model", ["tiny-qwen25vl", "tiny-qwen3vl"])
def test_answer_equals_mlx_vlm(vision_server, model):
    url = vision_server.url
    prompt = "look: [img] and [img] which one is red?"
    first = generate(url, model, prompt)
    context, count = first["context"], first["eval_count"]
    assert count == STEPS
    image_id = _image_token_id(vision_server.model_dirs[model])
    prompt_ids = [image_id if t >= 1 << 30 else t for t in context[:-count]]
    expected = mlx_vlm_greedy(vision_server.model_dirs[model], prompt_ids, STEPS)
    assert context[-count:] == expected
    # the same through a real client (ollama's Python library, images as bytes)
    client = ollama.Client(host=url)
    options = {"temperature": 0, "repeat_penalty": 1, "num_predict": STEPS}
    reply = client.generate(model=model, prompt=prompt, images=[WIDE, SMALL], options=options)
    assert list(reply.context)[-count:] == expected
    # again (the image's features and the prompt from the caches), beside other requests
    encodes = _encodes(url)
    other = {"model": "tiny", "prompt": "hi", "stream": False, "options": {"num_predict": 4}}
    with ThreadPoolExecutor(4) as pool:
        busy = [pool.submit(requests.post, url + "/api/generate", json=other, timeout=120)]
        again = [pool.submit(generate, url, model, prompt) for _ in range(2)]
        for reply in again:
            result = reply.result()
            assert result["context"][-count:] == expected
        assert busy[0].result().status_code == 200
    assert _encodes(url) == encodes  # the vision tower did not run again for this model


def _encodes(url: str) -> int:
    return requests.get(url + "/health", timeout=30).json()["engine_stats"]["image_encodes"]


def _image_token_id(path) -> int:
    import json

    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    return config["image_token_id"]
