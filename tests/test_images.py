"""Images sent to text-only models: Ollama's errors, base64 checked as Go decodes it."""

from __future__ import annotations

import pytest
import requests

from mlx_ollama_bridge.errors import BadRequest
from mlx_ollama_bridge.server.images import decode_base64

PNG = "iVBORw0KGgo="  # the PNG signature, base64
VISION_ERROR = "registry.ollama.ai/library/tiny:latest does not support vision"


@pytest.mark.parametrize(
    "text, offset",
    [("aGVsbG8", 4), ("aGVs!G8=", 4), ("aG=sbG8=", 2), ("aGVsbA=x", 6), ("aGVsbA==x", 8)],
)
def test_bad_base64_names_the_byte_as_go_does(text, offset):
    with pytest.raises(BadRequest, match=f"^illegal base64 data at input byte {offset}$"):
        decode_base64(text)


@pytest.mark.parametrize(
    "text, data", [("aGVsbG8=", b"hello"), ("aGVs\nbG8=", b"hello"), ("", b"")]
)
def test_good_base64_decodes(text, data):
    assert decode_base64(text) == data


def post(server, path: str, body: dict) -> requests.Response:
    return requests.post(server.url + path, json=body, timeout=60)


def test_generate_with_images_to_a_text_model(server):
    reply = post(server, "/api/generate", {"model": "tiny", "prompt": "?", "images": [PNG]})
    assert (reply.status_code, reply.json()["error"]) == (400, VISION_ERROR)
    bad = post(server, "/api/generate", {"model": "tiny", "prompt": "?", "images": ["ab!d"]})
    assert (bad.status_code, bad.json()["error"]) == (400, "illegal base64 data at input byte 2")


def test_chat_with_images_to_a_text_model(server):
    message = {"role": "user", "content": "?", "images": [PNG]}
    reply = post(server, "/api/chat", {"model": "tiny", "messages": [message]})
    assert (reply.status_code, reply.json()["error"]) == (400, VISION_ERROR)


def test_openai_image_parts_to_a_text_model(server):
    part = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    content = [{"type": "text", "text": "what is this?"}, part]
    body = {"model": "tiny", "messages": [{"role": "user", "content": content}]}
    reply = post(server, "/v1/chat/completions", body)
    assert reply.status_code == 400
    assert reply.json()["error"]["message"] == VISION_ERROR
