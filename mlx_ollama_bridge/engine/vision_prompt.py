"""Prompts with images: where each image goes in the chat template, and the prompt's tokens.

As Ollama (``server/prompt.go``): a message's images come before its text, in order, unless
the text marks a place with ``[img]`` (one marker per image). A Hugging Face chat template
is given the images as ``{"type": "image"}`` content parts, the form VLM templates read; a
template that does not render them (it expects plain strings) gets the model's placeholder
written into the text instead. The rendered text is then cut at each placeholder and each
image's token span (``vision.ImageStore.span``) goes in its place.

Nothing here imports MLX.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from ..errors import BadRequest

# Image tokens' ids start here (``vision``): far above any vocabulary, inside int32, MLX's
# token dtype. Defined here, where nothing imports MLX.
IMAGE_TOKEN_BASE = 1 << 30

__all__ = [
    "check_image_room",
    "image_token_id_of",
    "images_of",
    "parts_messages",
    "placeholder_of",
    "raw_tokens",
    "render_tokens",
    "splice",
    "text_messages",
]

_MARKER = "[img]"


def images_of(messages: list[dict[str, Any]]) -> list[bytes]:
    """Every image of ``messages``, decoded, in prompt order."""
    out: list[bytes] = []
    for message in messages:
        for image in message.get("images") or []:
            out.append(image if isinstance(image, bytes) else base64.b64decode(image))
    return out


def parts_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages with images as content parts (``{"type": "image"}`` then text pieces)."""

    def parts(pieces: list[tuple[str, bool]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for piece, image in pieces:
            if image:
                out.append({"type": "image"})
            elif piece:
                out.append({"type": "text", "text": piece})
        return out

    return _with_content(messages, parts)


def text_messages(messages: list[dict[str, Any]], placeholder: str) -> list[dict[str, Any]]:
    """Messages with each image written as ``placeholder`` into the text."""
    return _with_content(
        messages,
        lambda pieces: "".join(placeholder if image else piece for piece, image in pieces),
    )


def _with_content(
    messages: list[dict[str, Any]], content: Callable[[list[tuple[str, bool]]], Any]
) -> list[dict[str, Any]]:
    """``messages`` without their images; one with images gets ``content`` of its pieces."""
    out = []
    for message in messages:
        images = message.get("images") or []
        if not images:
            out.append(_without_images(message))
            continue
        pieces = _pieces(str(message.get("content") or ""), len(images))
        out.append({**_without_images(message), "content": content(pieces)})
    return out


def splice(
    text: str,
    placeholder: str,
    spans: list[list[int]],
    encode: Callable[[str], list[int]],
) -> list[int]:
    """The tokens of ``text`` with the ``i``-th ``placeholder`` replaced by ``spans[i]``.
    BadRequest if the text does not hold one placeholder per image."""
    pieces = text.split(placeholder)
    if len(pieces) - 1 != len(spans):
        raise BadRequest(f"the prompt has {len(pieces) - 1} image places for {len(spans)} images")
    tokens = encode(pieces[0]) if pieces[0] else []
    for span, piece in zip(spans, pieces[1:], strict=True):
        tokens += span
        if piece:
            tokens += encode(piece)
    return tokens


def render_tokens(
    backend: Any, loaded: Any, messages: list[dict[str, Any]], **render: Any
) -> tuple[str, list[int]]:
    """Render ``messages`` and tokenize them; images (a vision model's) as image tokens."""
    images = images_of(messages)
    if not images:
        text = backend.render_chat(loaded, messages, **render)
        return text, backend.encode(loaded, text, add_special_tokens=False)
    placeholder = _vision(loaded).images.placeholder
    try:
        text = backend.render_chat(loaded, parts_messages(messages), **render)
    except BadRequest:  # a template that only takes string contents
        text = ""
    if text.count(placeholder) != len(images):  # a template that does not read image parts
        text = backend.render_chat(loaded, text_messages(messages, placeholder), **render)
    return text, _image_tokens(backend, loaded, text, images)


def raw_tokens(backend: Any, loaded: Any, text: str, images: list[bytes]) -> list[int]:
    """A raw prompt's tokens; images not placed by the text go before it."""
    if not images:
        return backend.encode_raw(loaded, text)
    placeholder = _vision(loaded).images.placeholder
    missing = max(len(images) - text.count(placeholder), 0)
    return _image_tokens(backend, loaded, placeholder * missing + text, images)


def _image_tokens(backend: Any, loaded: Any, text: str, images: list[bytes]) -> list[int]:
    store = _vision(loaded).images
    spans = [store.span(image) for image in images]
    encode = lambda piece: backend.encode(loaded, piece, add_special_tokens=False)  # noqa: E731
    return splice(text, store.placeholder, spans, encode)


def _vision(loaded: Any) -> Any:
    if loaded.vision is None:
        raise BadRequest(f"{loaded.path.name} does not support vision")
    return loaded.vision


def check_image_room(tokens: list[int], context_length: int) -> None:
    """BadRequest if the prompt's image tokens alone leave no room in ``context_length``
    (cutting into an image would show the model part of it)."""
    images = sum(1 for t in tokens if t >= IMAGE_TOKEN_BASE)
    if images and images >= context_length:
        raise BadRequest(
            f"the images take {images} tokens, more than the context length allows "
            f"(num_ctx {context_length})"
        )


def _pieces(content: str, count: int) -> list[tuple[str, bool]]:
    """``content`` as (text, False) and (image, True) pieces: images first, or at ``[img]``."""
    if _MARKER not in content:
        return [("", True)] * count + [(content, False)]
    pieces: list[tuple[str, bool]] = []
    rest, placed = content, 0
    while placed < count and _MARKER in rest:
        before, rest = rest.split(_MARKER, 1)
        pieces += [(before, False), ("", True)]
        placed += 1
    # more images than markers: the rest go first, as Ollama prefixes unmarked images
    return [("", True)] * (count - placed) + pieces + [(rest, False)]


def _without_images(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != "images"}


def image_token_id_of(config: dict[str, Any], processor: Any) -> int | None:
    """The id of a VLM's image token: its config's, else its processor's."""
    for key in ("image_token_index", "image_token_id"):
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    value = getattr(processor, "image_token_id", None)
    return value if isinstance(value, int) else None


def placeholder_of(processor: Any, tokenizer: Any, image_token_id: int) -> str:
    """The text a chat template writes for an image (Gemma 3 its begin-of-image token)."""
    for name in ("boi_token", "image_token"):
        value = getattr(processor, name, None) or getattr(tokenizer, name, None)
        if isinstance(value, str) and value:
            return value
    return str(tokenizer.convert_ids_to_tokens(image_token_id))
