"""Images in generate/chat requests: base64 checked as Ollama's JSON decoding checks it.

No model here takes images yet; a vision backend (mlx-vlm) would receive the decoded bytes.
"""

from __future__ import annotations

import base64
from typing import Any

from ..errors import BadRequest

__all__ = ["decode_base64", "request_images"]

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
