"""A vision model behind the same scheduler as text models: batched with other requests
(answers unchanged), several images in one message placed as Ollama places them, /api/ps
and keep_alive, a stream cancelled by its client, and images that cannot fit num_ctx."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import requests
from helpers import wait_until
from tiny_vision_model import IMAGE_TOKENS_PER_IMAGE, b64, picture

GREEDY = {"temperature": 0, "num_predict": 12}
RED, BLUE = picture((220, 20, 20)), picture((20, 20, 220))


def chat(url: str, model: str, message: dict, **extra) -> requests.Response:
    body = {"model": model, "messages": [message], "stream": False, "options": GREEDY}
    return requests.post(url + "/api/chat", json={**body, **extra}, timeout=120)


def first_logprobs(url: str, message: dict) -> list[float]:
    """The five most likely first tokens' log-probabilities (rounded) for ``message``."""
    body = {"logprobs": True, "top_logprobs": 5, "options": {**GREEDY, "num_predict": 1}}
    reply = chat(url, "tiny-vision", message, **body).json()
    return [round(t["logprob"], 3) for t in reply["logprobs"][0]["top_logprobs"]]


def stats(url: str) -> dict[str, int]:
    return requests.get(url + "/health", timeout=30).json()["engine_stats"]


def test_vision_requests_batch_with_each_other_and_text(vision_server):
    url = vision_server.url
    asks = [
        ("tiny-vision", {"role": "user", "content": "what is it?", "images": [b64(RED)]}),
        ("tiny-vision", {"role": "user", "content": "what is it?", "images": [b64(BLUE)]}),
        ("tiny-vision", {"role": "user", "content": "and this?", "images": [b64(RED)]}),
        ("tiny", {"role": "user", "content": "hello there"}),
        ("tiny-gemma3", {"role": "user", "content": "what is it?", "images": [b64(BLUE)]}),
        ("tiny-gemma3", {"role": "user", "content": "what is it?", "images": [b64(RED)]}),
        # M-RoPE: each batch row keeps its own 3-D positions, answers unchanged
        ("tiny-qwen25vl", {"role": "user", "content": "what is it?", "images": [b64(RED)]}),
        ("tiny-qwen25vl", {"role": "user", "content": "and this?", "images": [b64(BLUE)]}),
    ]
    alone = [chat(url, model, message).json()["message"]["content"] for model, message in asks]
    before = stats(url)
    with ThreadPoolExecutor(len(asks) * 2) as pool:
        together = list(pool.map(lambda a: chat(url, *a), asks * 2))
    after = stats(url)
    for reply, expected in zip(together, alone * 2, strict=True):
        assert reply.status_code == 200, reply.text
        assert reply.json()["message"]["content"] == expected  # batching changes nothing
    assert after["batch_peak"] >= 2
    assert after["batched_tokens"] > before["batched_tokens"]


def test_several_images_and_img_markers(vision_server):
    url = vision_server.url
    plain = chat(url, "tiny-vision", {"role": "user", "content": "compare"}).json()
    two = {"role": "user", "content": "compare", "images": [b64(RED), b64(BLUE)]}
    both = chat(url, "tiny-vision", two).json()
    extra = both["prompt_eval_count"] - plain["prompt_eval_count"]
    assert extra == 2 * (IMAGE_TOKENS_PER_IMAGE + 1)  # each image's tokens and its newline
    # order matters: the first token's log-probabilities differ (a random model's greedy
    # text may not, so the distribution is compared)
    swapped = {**two, "images": [b64(BLUE), b64(RED)]}
    assert first_logprobs(url, two) != first_logprobs(url, swapped)
    assert first_logprobs(url, two) == first_logprobs(url, two)
    marked = {"role": "user", "content": "first [img] then [img]", "images": two["images"]}
    reply = chat(url, "tiny-vision", marked, _debug_render_only=True).json()
    rendered = reply["_debug_info"]["rendered_template"]
    assert "first <image>\n then <image>\n" in rendered or "first <image> then <image>" in rendered


def test_ps_keep_alive_and_unload(vision_server):
    url = vision_server.url
    assert (
        chat(
            url,
            "tiny-vision",
            {"role": "user", "content": "x", "images": [b64(RED)]},
            keep_alive="10m",
        ).status_code
        == 200
    )
    running = {m["name"]: m for m in requests.get(url + "/api/ps", timeout=30).json()["models"]}
    model = running["tiny-vision:latest"]
    assert model["size"] > 0 and model["expires_at"]
    assert model["details"]["family"] == "llava"
    gone = {"model": "tiny-vision", "messages": [], "keep_alive": 0}
    assert requests.post(url + "/api/chat", json=gone, timeout=60).json()["done_reason"] == "unload"
    names = [m["name"] for m in requests.get(url + "/api/ps", timeout=30).json()["models"]]
    assert "tiny-vision:latest" not in names
    # loads again on the next image, and still answers
    assert chat(url, "tiny-vision", {"role": "user", "content": "x", "images": [b64(RED)]}).ok


def test_a_cancelled_vision_stream(vision_server):
    url = vision_server.url
    before = stats(url)
    body = {
        "model": "tiny-vision",
        "messages": [{"role": "user", "content": "go on", "images": [b64(BLUE)]}],
        "options": {"num_predict": 100000},
    }
    with requests.post(url + "/api/chat", json=body, stream=True, timeout=60) as reply:
        first = json.loads(next(reply.iter_lines()))
        assert first["done"] is False
    after_cancel = chat(url, "tiny-vision", {"role": "user", "content": "x", "images": [b64(RED)]})
    assert after_cancel.status_code == 200
    # the next request can be answered beside the abandoned one before the hang-up is seen
    assert wait_until(lambda: stats(url)["canceled"] == before["canceled"] + 1, 30)


def test_images_that_do_not_fit_num_ctx(vision_server):
    message = {"role": "user", "content": "x", "images": [b64(RED)]}
    reply = chat(vision_server.url, "tiny-vision", message, options={"num_ctx": 12})
    assert reply.status_code == 400
    assert reply.json()["error"] == (
        f"the images take {IMAGE_TOKENS_PER_IMAGE} tokens, more than the context length "
        "allows (num_ctx 12)"
    )


def test_images_with_format(vision_server):
    """An image and a JSON schema together: the grammar shapes the answer."""
    message = {"role": "user", "content": "describe", "images": [b64(RED)]}
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}}
    body = {"format": schema, "options": {"temperature": 0, "num_predict": 40}}
    reply = chat(vision_server.url, "tiny-vision", message, **body)
    assert reply.status_code == 200, reply.text
    assert reply.json()["message"]["content"].startswith("{")
