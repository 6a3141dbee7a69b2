"""Images in generate/chat requests: base64 checked as Ollama's JSON decoding checks it, then
each image checked before any model sees it (``check_images``): an image Pillow can read in a
format the bridge takes, of a sane size, and no more images than the model takes. The engine
(``engine/vision.py``) decodes them again for the model's processor.

Pillow is imported only when a request carries images.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from ..errors import BadRequest
from ..model_details import MAX_IMAGES

__all__ = ["FORMATS", "MAX_PIXELS", "MAX_SIDE", "check_images", "decode_base64"]
__all__ += ["request_images"]

# What Ollama's image decoders read (Go's image/png, image/jpeg, x/image/webp; GIF's first
# frame). Pillow reads more (BMP, TIFF, ICO, PSD ...); those are refused, as Ollama does.
FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP", "GIF": "GIF"}
MAX_SIDE = 16384  # pixels a side: a larger image is a decompression bomb, not a photo
MAX_PIXELS = 64 * 1024 * 1024  # decoded pixels (a 12 MP phone photo is far below)
# Ollama's wording for models that take one image (mllama, server/prompt.go)
ONE_IMAGE = "this model only supports one image while more than one image requested"

_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_NEWLINES = frozenset(b"\r\n")  # Go's decoder skips these anywhere


def request_images(body: dict[str, Any], *, chat: bool) -> list[bytes]:
    """Every image of a native request, decoded; BadRequest for malformed base64."""
    if chat:
        lists = [m.get("images") for m in body.get("messages") or [] if isinstance(m, dict)]
    else:
        lists = [body.get("images")]
    images: list[bytes] = []
    for entries in lists:
        if entries is None:
            continue
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise BadRequest("images must be an array of base64 strings")
        images.extend(decode_base64(e) for e in entries)
    return images


def decode_base64(text: str) -> bytes:
    """Standard padded base64, failing like Go's ``encoding/base64``:
    ``illegal base64 data at input byte N``."""
    data = text.encode("latin-1", errors="replace")
    index = _first_error(data)
    if index is not None:
        raise BadRequest(f"illegal base64 data at input byte {index}")
    return base64.b64decode(bytes(b for b in data if b not in _NEWLINES))


def _first_error(data: bytes) -> int | None:
    """The offset Go reports for ``data``, or None if it decodes."""
    quantum: list[int] = []  # offsets of the characters of the current 4-character group
    pos = 0
    while pos < len(data):
        byte = data[pos]
        pos += 1
        if byte in _NEWLINES:
            continue
        if byte == ord("="):
            return _padding_error(data, pos, len(quantum))
        if byte not in _ALPHABET:
            return pos - 1
        quantum.append(pos - 1)
        if len(quantum) == 4:
            quantum = []
    return quantum[0] if quantum else None


def _padding_error(data: bytes, pos: int, filled: int) -> int | None:
    """Go's rules once ``=`` is seen at ``pos - 1`` with ``filled`` characters in the group."""
    if filled < 2:
        return pos - 1
    if filled == 2:  # a second '=' must follow
        while pos < len(data) and data[pos] in _NEWLINES:
            pos += 1
        if pos == len(data):
            return len(data)
        if data[pos] != ord("="):
            return pos - 1
        pos += 1
    while pos < len(data) and data[pos] in _NEWLINES:
        pos += 1
    return pos if pos < len(data) else None


def check_images(images: list[bytes], *, limit: int = MAX_IMAGES) -> None:
    """BadRequest unless every image is a readable PNG, JPEG, WebP or GIF of at most
    ``MAX_SIDE`` pixels a side and ``MAX_PIXELS`` in all, and there are at most ``limit``."""
    if len(images) > limit:
        if limit == 1:
            raise BadRequest(ONE_IMAGE)
        raise BadRequest(f"too many images: {len(images)} (this model takes at most {limit})")
    if not images:
        return
    from PIL import Image, UnidentifiedImageError

    for number, data in enumerate(images, 1):
        where = f"image {number}" if len(images) > 1 else "image"
        try:
            with Image.open(io.BytesIO(data)) as image:
                kind = image.format or ""
                if kind not in FORMATS:
                    raise BadRequest(
                        f"unsupported image format {kind or 'unknown'} ({where}): "
                        "send PNG, JPEG, WebP or GIF"
                    )
                width, height = image.size  # from the header: nothing decoded yet
                if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
                    raise BadRequest(
                        f"{where} is too large: {width}x{height} pixels (at most "
                        f"{MAX_SIDE} a side and {MAX_PIXELS // (1024 * 1024)} megapixels)"
                    )
                image.load()  # a truncated or corrupt body fails here, not in the model
        except UnidentifiedImageError as exc:
            raise BadRequest(f"invalid image input ({where}): not an image") from exc
        except Image.DecompressionBombError as exc:  # Pillow's own guard, past 2x its limit
            raise BadRequest(
                f"{where} is too large: more than {MAX_PIXELS // (1024 * 1024)} megapixels "
                "(a decompression bomb)"
            ) from exc
        except (OSError, ValueError, SyntaxError) as exc:  # Pillow's decoders' errors
            raise BadRequest(f"invalid image input ({where}): {exc}") from exc
