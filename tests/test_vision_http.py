"""Vision end to end: a tiny LLaVA (mlx-vlm's classes, random weights, real CLIP
preprocessing, real image tokens) served by a real gunicorn server, asked about images
through every API and client shape that carries them."""

from __future__ import annotations

import requests
from helpers import RunningServer
from tiny_vision_model import GEMMA3_IMAGE_SPAN, IMAGE_TOKENS_PER_IMAGE, b64, picture

OPTIONS = {"temperature": 0, "num_predict": 8, "seed": 1}


RED, BLUE = picture((220, 20, 20)), picture((20, 20, 220))


def chat(server: RunningServer, messages: list[dict], **extra) -> requests.Response:
    body = {"model": "tiny-vision", "messages": messages, "stream": False, "options": OPTIONS}
    return requests.post(server.url + "/api/chat", json={**body, **extra}, timeout=120)


def ask(server: RunningServer, image: bytes, text: str = "What colour is this?") -> dict:
    reply = chat(server, [{"role": "user", "content": text, "images": [b64(image)]}])
    assert reply.status_code == 200, reply.text
    return reply.json()


def first_logprobs(server: RunningServer, image: bytes) -> list[float]:
    """The five most likely first tokens' log-probabilities (rounded) about ``image``."""
    message = {"role": "user", "content": "What colour is this?", "images": [b64(image)]}
    extra = {"logprobs": True, "top_logprobs": 5, "options": {"num_predict": 1}}
    reply = chat(server, [message], **extra).json()
    return [round(t["logprob"], 3) for t in reply["logprobs"][0]["top_logprobs"]]


def test_show_lists_vision(vision_server):
    shown = requests.post(vision_server.url + "/api/show", json={"model": "tiny-vision"}).json()
    assert "vision" in shown["capabilities"]
    info = shown["model_info"]
    assert info["llava.vision.block_count"] == 2
    assert info["llava.vision.image_size"] == 32
    assert info["llava.vision.patch_size"] == 8
    text = requests.post(vision_server.url + "/api/show", json={"model": "tiny"}).json()
    assert "vision" not in text["capabilities"]
    listed = requests.get(vision_server.url + "/api/tags").json()["models"]
    capabilities = {m["name"]: m["capabilities"] for m in listed}
    assert capabilities["tiny-vision:latest"][:2] == ["completion", "vision"]
    assert "vision" not in capabilities["tiny:latest"]


def test_chat_answers_about_an_image(vision_server):
    red = ask(vision_server, RED)
    assert red["message"]["content"]
    assert red["eval_count"] == OPTIONS["num_predict"]
    # the image is in the prompt as its 16 image tokens
    plain = chat(vision_server, [{"role": "user", "content": "What colour is this?"}]).json()
    assert red["prompt_eval_count"] == plain["prompt_eval_count"] + IMAGE_TOKENS_PER_IMAGE + 1
    # the answer depends on the picture (the first token's distribution differs: a random
    # model's greedy text might not), and the same picture gives the same answer
    assert first_logprobs(vision_server, RED) != first_logprobs(vision_server, BLUE)
    assert ask(vision_server, RED)["message"]["content"] == red["message"]["content"]
    # Ollama's timings are all there
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert red[key] > 0


def test_generate_with_images(vision_server):
    body = {
        "model": "tiny-vision",
        "prompt": "Describe the picture.",
        "images": [b64(RED)],
        "stream": False,
        "options": OPTIONS,
    }
    reply = requests.post(vision_server.url + "/api/generate", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    red = reply.json()
    body = {**body, "images": [b64(BLUE)], "logprobs": True, "options": {"num_predict": 1}}
    blue = requests.post(vision_server.url + "/api/generate", json=body, timeout=120).json()
    body["images"] = [b64(RED)]
    again = requests.post(vision_server.url + "/api/generate", json=body, timeout=120).json()
    assert red["response"] and blue["logprobs"] != again["logprobs"]


def test_second_turn_reuses_the_image(vision_server):
    """A client resends the image every turn: the next turn takes the image from the prompt
    cache (its tokens are reused) and the vision tower does not run again."""
    image = picture((10, 200, 30))
    first_turn = [{"role": "user", "content": "What is this?", "images": [b64(image)]}]
    before = _stats(vision_server)
    first = chat(vision_server, first_turn).json()
    after_first = _stats(vision_server)
    assert after_first["image_encodes"] == before["image_encodes"] + 1
    second_turn = first_turn + [
        {"role": "assistant", "content": first["message"]["content"]},
        {"role": "user", "content": "And the colour?"},
    ]
    second = chat(vision_server, second_turn).json()
    after_second = _stats(vision_server)
    assert after_second["image_encodes"] == after_first["image_encodes"]  # not re-encoded
    reused = after_second["prompt_tokens_reused"] - after_first["prompt_tokens_reused"]
    assert reused >= first["prompt_eval_count"]  # the image's tokens among them
    assert second["prompt_eval_count"] > first["prompt_eval_count"]


def _stats(server: RunningServer) -> dict[str, int]:
    return requests.get(server.url + "/health", timeout=30).json()["engine_stats"]


def test_gemma3_architecture(vision_server):
    """A second architecture: Gemma 3 (SigLIP tower, pooled soft tokens between begin/end of
    image, sliding-window layers, its own processor): shown, asked, batched, cached."""
    url = vision_server.url
    shown = requests.post(url + "/api/show", json={"model": "tiny-gemma3"}).json()
    assert "vision" in shown["capabilities"]
    assert shown["model_info"]["gemma3.vision.block_count"] == 2
    assert shown["model_info"]["gemma3.mm.tokens_per_image"] == 4
    body = {"model": "tiny-gemma3", "stream": False, "options": OPTIONS}
    ask = {"role": "user", "content": "What colour is this?", "images": [b64(RED)]}
    plain = {"role": "user", "content": "What colour is this?"}
    with_image = requests.post(url + "/api/chat", json={**body, "messages": [ask]}, timeout=120)
    assert with_image.status_code == 200, with_image.text
    without = requests.post(url + "/api/chat", json={**body, "messages": [plain]}, timeout=120)
    extra = with_image.json()["prompt_eval_count"] - without.json()["prompt_eval_count"]
    assert extra == GEMMA3_IMAGE_SPAN  # "\n\n", begin, 4 soft tokens, end, "\n\n"
    before = _stats(vision_server)
    second = [ask, with_image.json()["message"], {"role": "user", "content": "Sure?"}]
    again = requests.post(url + "/api/chat", json={**body, "messages": second}, timeout=120)
    assert again.status_code == 200, again.text
    after = _stats(vision_server)
    assert after["image_encodes"] == before["image_encodes"]
    assert after["prompt_tokens_reused"] > before["prompt_tokens_reused"]


def test_raw_generate_and_render_with_images(vision_server):
    """``raw`` prompts take images too (before the text unless it holds the placeholder), and
    ``_debug_render_only`` counts them."""
    url = vision_server.url
    raw = {"model": "tiny-vision", "raw": True, "stream": False, "options": OPTIONS}
    text = requests.post(url + "/api/generate", json={**raw, "prompt": "Colour:"}, timeout=120)
    body = {**raw, "prompt": "Colour:", "images": [b64(RED)]}
    image = requests.post(url + "/api/generate", json=body, timeout=120)
    assert image.status_code == 200, image.text
    extra = image.json()["prompt_eval_count"] - text.json()["prompt_eval_count"]
    assert extra == IMAGE_TOKENS_PER_IMAGE
    message = {"role": "user", "content": "x", "images": [b64(RED), b64(BLUE)]}
    render = {"model": "tiny-vision", "messages": [message], "_debug_render_only": True}
    info = requests.post(url + "/api/chat", json=render, timeout=120).json()["_debug_info"]
    assert info["image_count"] == 2 and info["rendered_template"].count("<image>") == 2


def test_qwen25vl_architecture(vision_server):
    """A third architecture: Qwen2.5-VL (windowed ViT, 2x2 patch merging, its real
    Qwen2VLImageProcessor): shown, asked about one image and two, the image reused."""
    url = vision_server.url
    shown = requests.post(url + "/api/show", json={"model": "tiny-qwen25vl"}).json()
    assert "vision" in shown["capabilities"]
    assert shown["model_info"]["qwen2_5_vl.vision.block_count"] == 2
    body = {"model": "tiny-qwen25vl", "stream": False, "options": OPTIONS}
    plain = {"role": "user", "content": "What colour is this?"}
    one = {**plain, "images": [b64(RED)]}
    two = {**plain, "images": [b64(RED), b64(BLUE)]}
    counts = []
    for message in (plain, one, two):
        reply = requests.post(url + "/api/chat", json={**body, "messages": [message]}, timeout=120)
        assert reply.status_code == 200, reply.text
        assert reply.json()["message"]["content"]
        counts.append(reply.json()["prompt_eval_count"])
    image = counts[1] - counts[0]  # begin, 4 merged patches (64x48 -> 56x56), end
    assert image == 6 and counts[2] - counts[0] == 2 * image
    before = _stats(vision_server)
    again = requests.post(url + "/api/chat", json={**body, "messages": [one]}, timeout=120)
    assert again.status_code == 200
    assert _stats(vision_server)["image_encodes"] == before["image_encodes"]
