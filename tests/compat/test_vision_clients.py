"""Real clients ask the tiny vision model about an image: the ollama Python client (``images=``
with a file path and with bytes), the ollama JS client under Node, the openai SDK (an
``image_url`` data URL on chat completions, ``input_image`` on the Responses API), the
anthropic SDK (an ``image`` block), and an Open WebUI-style request (it checks the model's
capabilities, then streams ``/api/chat`` with bare base64 images). Every client must get the
same greedy answer for the same picture as the native API gives."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import anthropic
import ollama
import openai
import pytest
import requests
from tiny_vision_model import b64, picture

GREEDY = {"temperature": 0, "num_predict": 6}
QUESTION = "What colour is this?"
RED = picture((220, 20, 20))
JS_DIR = Path(__file__).resolve().parent / "js"


@pytest.fixture(scope="module")
def red_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images") / "red.png"
    path.write_bytes(RED)
    return path


def native(server, messages: list[dict]) -> str:
    """The greedy answer to ``messages`` over the native API."""
    body = {"model": "tiny-vision", "messages": messages, "stream": False, "options": GREEDY}
    reply = requests.post(server.url + "/api/chat", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    return reply.json()["message"]["content"]


@pytest.fixture(scope="module")
def native_answer(vision_server) -> str:
    """The answer to QUESTION about RED over the native API: what every client must get."""
    answer = native(vision_server, [{"role": "user", "content": QUESTION, "images": [b64(RED)]}])
    assert answer  # that the picture matters is test_vision_http's (log-probabilities)
    return answer


def test_ollama_python_client(vision_server, red_path, native_answer):
    client = ollama.Client(host=vision_server.url)
    for image in (red_path, str(red_path), RED):  # Path, path string, bytes
        message = {"role": "user", "content": QUESTION, "images": [image]}
        reply = client.chat(model="tiny-vision", messages=[message], options=GREEDY)
        assert reply.message.content == native_answer
    generated = client.generate(model="tiny-vision", prompt=QUESTION, images=[RED], options=GREEDY)
    assert generated.response
    assert "vision" in client.show("tiny-vision").capabilities


def test_ollama_js_client(vision_server, red_path, native_answer):
    if shutil.which("node") is None:
        pytest.fail("node is not installed: the ollama-js client needs Node 18+")
    if not (JS_DIR / "node_modules" / "ollama").is_dir():
        pytest.fail(f"ollama-js is not installed in {JS_DIR}: run `make js-deps`")
    env = {
        **os.environ,
        "OLLAMA_HOST": vision_server.url,
        "IMAGE_PATH": str(red_path),
        "VISION_MODEL": "tiny-vision",
    }
    done = subprocess.run(
        ["node", "vision.mjs"], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["by_path"] == out["by_bytes"] == native_answer
    assert out["generated"] and "vision" in out["capabilities"]


def test_openai_sdk_image_url(vision_server):
    """As Ollama's ``openai`` package: each content part becomes a message of its own (the
    text, then the image), so the answer is the native one for those two messages."""
    split = [
        {"role": "user", "content": QUESTION},
        {"role": "user", "content": "", "images": [b64(RED)]},
    ]
    expected = native(vision_server, split)
    client = openai.OpenAI(base_url=vision_server.url + "/v1", api_key="x", max_retries=0)
    for mime in ("image/png", ""):  # data:;base64, as Ollama also takes
        url = f"data:{mime};base64,{b64(RED)}"
        parts = [
            {"type": "text", "text": QUESTION},
            {"type": "image_url", "image_url": {"url": url}},
        ]
        reply = client.chat.completions.create(
            model="tiny-vision",
            messages=[{"role": "user", "content": parts}],
            temperature=0,
            max_tokens=GREEDY["num_predict"],
        )
        assert reply.choices[0].message.content == expected
    with pytest.raises(openai.BadRequestError, match="image URLs are not currently supported"):
        client.chat.completions.create(
            model="tiny-vision",
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
                }
            ],
        )


def test_openai_sdk_responses_input_image(vision_server, native_answer):
    client = openai.OpenAI(base_url=vision_server.url + "/v1", api_key="x", max_retries=0)
    reply = client.responses.create(
        model="tiny-vision",
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": QUESTION},
                    {"type": "input_image", "image_url": f"data:image/png;base64,{b64(RED)}"},
                ],
            }
        ],
        temperature=0,
        max_output_tokens=GREEDY["num_predict"],
    )
    assert reply.output_text == native_answer


def test_anthropic_sdk_image_block(vision_server, native_answer):
    client = anthropic.Anthropic(base_url=vision_server.url, api_key="x", max_retries=0)
    source = {"type": "base64", "media_type": "image/png", "data": b64(RED)}
    reply = client.messages.create(
        model="tiny-vision",
        max_tokens=GREEDY["num_predict"],
        extra_body={"temperature": 0},  # the SDK has no sampling arguments
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": source},
                    {"type": "text", "text": QUESTION},
                ],
            }
        ],
    )
    assert reply.content[0].text == native_answer


def test_open_webui_style_request(vision_server, native_answer):
    """What Open WebUI does: read the model's capabilities (it enables image upload on
    ``vision``), then stream ``/api/chat`` with the pasted image as bare base64."""
    shown = requests.post(vision_server.url + "/api/show", json={"name": "tiny-vision"}).json()
    assert "vision" in shown["capabilities"]
    body = {
        "model": "tiny-vision",
        "messages": [
            {"role": "user", "content": QUESTION, "images": [b64(RED)]},
        ],
        "stream": True,
        "options": GREEDY,
        "keep_alive": "5m",
    }
    headers = {"Content-Type": "application/json", "Accept": "application/x-ndjson"}
    reply = requests.post(
        vision_server.url + "/api/chat", json=body, headers=headers, stream=True, timeout=120
    )
    assert reply.status_code == 200
    lines = [json.loads(line) for line in reply.iter_lines() if line]
    assert lines[-1]["done"] is True
    text = "".join(line["message"]["content"] for line in lines)
    assert text == native_answer
