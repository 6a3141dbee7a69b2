"""Bad images get a clear 400 in the called API's own error envelope, before any model work:
bytes that are not an image, a format the bridge does not take, a decompression bomb, an
image far larger than any model's input, a truncated file, too many images, and images sent
to a text-only model (Ollama's wording)."""

from __future__ import annotations

import struct
import zlib

import pytest
import requests
from tiny_vision_model import b64, picture

RED = picture((200, 0, 0))


def png_header(width: int, height: int) -> bytes:
    """A valid PNG of ``width`` x ``height`` 1-bit pixels whose data is one empty row: a
    few dozen bytes that claim billions of pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + (chunk(b"IEND", b""))
    )


CASES = {
    "not an image": ([b"this is plain text, not a picture at all"], "not an image"),
    "unsupported format": ([picture((0, 0, 200), fmt="BMP")], "unsupported image format BMP"),
    "tiff": ([picture((0, 0, 200), fmt="TIFF")], "unsupported image format TIFF"),
    "decompression bomb": ([png_header(200_000, 200_000)], "too large: more than 64 megapixels"),
    "bomb under Pillow's guard": ([png_header(12_000, 12_000)], "too large: 12000x12000 pixels"),
    "far too large": ([picture((9, 9, 9), size=(16_400, 4))], "too large: 16400x4 pixels"),
    "truncated": ([RED[: len(RED) // 2]], "invalid image input"),
    "too many images": ([RED] * 17, "too many images: 17 (this model takes at most 16)"),
}


def _native(server, images: list[bytes]) -> tuple[int, str]:
    message = {"role": "user", "content": "what is this?", "images": [b64(i) for i in images]}
    body = {"model": "tiny-vision", "messages": [message], "stream": False}
    reply = requests.post(server.url + "/api/chat", json=body, timeout=60)
    return reply.status_code, reply.json()["error"]


def _openai(server, images: list[bytes]) -> tuple[int, str]:
    parts = [{"type": "text", "text": "what is this?"}] + [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(i)}"}}
        for i in images
    ]
    body = {"model": "tiny-vision", "messages": [{"role": "user", "content": parts}]}
    reply = requests.post(server.url + "/v1/chat/completions", json=body, timeout=60)
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    return reply.status_code, error["message"]


def _anthropic(server, images: list[bytes]) -> tuple[int, str]:
    source = {"type": "base64", "media_type": "image/png"}
    blocks = [{"type": "image", "source": {**source, "data": b64(i)}} for i in images]
    content = blocks + [{"type": "text", "text": "what is this?"}]
    body = {
        "model": "tiny-vision",
        "max_tokens": 8,
        "messages": [{"role": "user", "content": content}],
    }
    reply = requests.post(server.url + "/v1/messages", json=body, timeout=60)
    body = reply.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    return reply.status_code, body["error"]["message"]


def _responses(server, images: list[bytes]) -> tuple[int, str]:
    parts = [{"type": "input_text", "text": "what is this?"}] + [
        {"type": "input_image", "image_url": f"data:image/png;base64,{b64(i)}"} for i in images
    ]
    body = {"model": "tiny-vision", "input": [{"role": "user", "content": parts}]}
    reply = requests.post(server.url + "/v1/responses", json=body, timeout=60)
    return reply.status_code, reply.json()["error"]["message"]


APIS = {"native": _native, "openai": _openai, "anthropic": _anthropic, "responses": _responses}


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("case", CASES)
def test_bad_images_are_a_400(vision_server, api, case):
    images, expected = CASES[case]
    status, message = APIS[api](vision_server, images)
    assert status == 400, message
    assert expected in message


def test_generate_checks_images_too(vision_server):
    body = {"model": "tiny-vision", "prompt": "?", "images": [b64(b"GIF89a-but-not-really")]}
    reply = requests.post(vision_server.url + "/api/generate", json=body, timeout=60)
    assert (reply.status_code, reply.json()["error"]) == (
        400,
        "invalid image input (image): not an image",
    )


@pytest.mark.parametrize("api", APIS)
def test_images_to_a_text_only_model(vision_server, api):
    """Ollama's wording: ``<model> does not support vision``, in each API's envelope."""
    call = APIS[api]
    original = requests.post

    def to_tiny(url, json, **kwargs):  # the same request, naming the text-only model
        return original(url, json={**json, "model": "tiny"}, **kwargs)

    requests.post = to_tiny
    try:
        status, message = call(vision_server, [RED])
    finally:
        requests.post = original
    assert (status, message) == (
        400,
        "registry.ollama.ai/library/tiny:latest does not support vision",
    )


def test_a_good_image_after_bad_ones_still_works(vision_server):
    message = {"role": "user", "content": "what is this?", "images": [b64(RED)]}
    body = {"model": "tiny-vision", "messages": [message], "stream": False}
    body["options"] = {"num_predict": 2}
    reply = requests.post(vision_server.url + "/api/chat", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
