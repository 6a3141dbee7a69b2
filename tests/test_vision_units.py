"""Vision pieces without a server: where images go in a prompt (Ollama's ``[img]`` rules),
splicing image spans into tokens, and mlx-vlm staying unimported for text-only use."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mlx_ollama_bridge.engine.vision_prompt import parts_messages, splice, text_messages
from mlx_ollama_bridge.errors import BadRequest


def test_images_go_before_the_text_as_in_ollama():
    message = {"role": "user", "content": "what?", "images": ["a", "b"]}
    assert parts_messages([message]) == [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "what?"}],
        }
    ]
    assert text_messages([message], "<image>") == [
        {"role": "user", "content": "<image><image>what?"}
    ]


def test_img_markers_place_images():
    message = {"role": "user", "content": "left [img] right [img] end", "images": ["a", "b"]}
    assert text_messages([message], "<I>") == [
        {"role": "user", "content": "left <I> right <I> end"}
    ]
    # more images than markers: the unplaced ones go first
    three = {**message, "images": ["a", "b", "c"]}
    assert text_messages([three], "<I>")[0]["content"] == "<I>left <I> right <I> end"


def test_messages_without_images_pass_through():
    plain = [{"role": "system", "content": "hi"}, {"role": "user", "content": "x", "images": []}]
    assert parts_messages(plain) == [
        {"role": "system", "content": "hi"},
        {"role": "user", "content": "x"},
    ]


def test_splice_puts_each_span_at_its_placeholder():
    encode = lambda text: [ord(c) for c in text]  # noqa: E731
    tokens = splice("a<I>b<I>", "<I>", [[1 << 30, (1 << 30) + 1], [7]], encode)
    assert tokens == [ord("a"), 1 << 30, (1 << 30) + 1, ord("b"), 7]
    with pytest.raises(BadRequest, match="1 image places for 2 images"):
        splice("a<I>b", "<I>", [[1], [2]], encode)


def test_text_users_never_import_mlx_vlm():
    """Loading the engine and the server imports no mlx-vlm (nor its transformers models,
    audio and video stacks); only a vision model's load does. (Pillow comes with
    transformers, which mlx-lm's tokenizers import anyway.)"""
    code = (
        "import sys; import mlx_ollama_bridge.engine, mlx_ollama_bridge.server;"
        "import mlx_ollama_bridge.engine.backend;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mlx_vlm'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
