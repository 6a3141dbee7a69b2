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


def test_image_store_keeps_the_newest_and_every_pending_image(vision_model_dir):
    """The tiny LLaVA loaded for real: each distinct image registered once (same bytes, same
    span), features computed on first use only, and the least recently used encoded images
    forgotten past the limit while images not encoded yet stay."""
    from tiny_vision_model import IMAGE_TOKENS_PER_IMAGE, picture

    from mlx_ollama_bridge.engine.vision import IMAGE_TOKEN_BASE, load_vision_model

    _model, _tokenizer, parts = load_vision_model(vision_model_dir)
    store = parts.images
    store.kept = 2
    images = [picture((i * 60, 0, 0)) for i in range(4)]
    spans = [store.span(data) for data in images]
    assert store.span(images[0]) == spans[0]  # the same bytes: the same image tokens
    handles = []
    for span in spans:
        ids = [t for t in span if t >= IMAGE_TOKEN_BASE]
        assert len(ids) == IMAGE_TOKENS_PER_IMAGE
        handles.append((ids[0] - IMAGE_TOKEN_BASE) // (1 << 14))
    assert len(set(handles)) == 4
    assert store.encodes == 0  # nothing encoded until a prompt needs it
    for handle in handles:  # four pending images outlive the limit of two
        store.features(handle)
        store.features(handle)  # the image in use stays: a prompt reads it chunk by chunk
    assert store.encodes == 4
    store.features(handles[3])
    assert store.encodes == 4  # kept: not encoded again
    # encoded images past the limit are forgotten, oldest first
    with pytest.raises(BadRequest, match="no longer held"):
        store.features(handles[0])
    assert store.span(images[3]) == spans[3]


def test_an_image_token_alone_in_a_chunk_still_reads_its_features(vision_model_dir):
    """A batch lane's prefill can end on a one-token chunk; if that token is an image
    token, the model must still read the image's features there: feeding a prompt in two
    chunks (the last image token alone) gives the logits of feeding it whole."""
    import mlx.core as mx
    from tiny_vision_model import picture

    from mlx_ollama_bridge.engine.vision import load_vision_model

    model, tokenizer, parts = load_vision_model(vision_model_dir)
    span = parts.images.span(picture((0, 90, 200)))
    tokens = tokenizer.encode("look:", add_special_tokens=False) + span
    whole = model(mx.array([tokens]), cache=model.make_cache())[0, -1]
    cache = model.make_cache()
    model(mx.array([tokens[:-1]]), cache=cache)
    split = model(mx.array([tokens[-1:]]), cache=cache)[0, -1]
    assert mx.allclose(whole, split, atol=1e-4).item()
