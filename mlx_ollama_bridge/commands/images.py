"""Image files named in a prompt, as ``ollama run`` finds them for a vision model.

Ollama's CLI (``cmd/interactive.go``) looks for paths that start with ``/``, ``./``, ``\\`` or a
drive letter and end in ``.jpg``, ``.jpeg``, ``.png`` or ``.webp``; each one that exists and
really is a JPEG, PNG or WebP is read, taken out of the prompt and sent as an image
("Added image '…'" on stderr). Paths that do not exist stay in the prompt as text.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import click

__all__ = ["extract_images"]

_PATH = re.compile(r"(?:[a-zA-Z]:)?(?:\./|/|\\)[\S\\ ]+?\.(?i:jpg|jpeg|png|webp)\b")
_MAX_BYTES = 100 * 1024 * 1024  # Ollama's limit per file
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")  # JPEG, PNG; WebP: RIFF....WEBP


def extract_images(prompt: str) -> tuple[str, list[str]]:
    """``prompt`` without the image files it names, and those images as base64.
    ClickException for a named file that is not an image or is too large."""
    images: list[str] = []
    for found in _PATH.findall(prompt):
        path = Path(found.replace("\\ ", " ").replace("%20", " "))
        if not path.is_file():
            continue
        data = path.read_bytes()
        if not _is_image(data):
            raise click.ClickException(f"invalid file type: {path} is not a JPEG, PNG or WebP")
        if len(data) > _MAX_BYTES:
            raise click.ClickException("file size exceeds maximum limit (100MB)")
        click.echo(f"Added image '{path}'", err=True)
        prompt = prompt.replace(f"'{path}'", "").replace(f"'{found}'", "").replace(found, "")
        images.append(base64.b64encode(data).decode())
    return prompt.strip(), images


def _is_image(data: bytes) -> bool:
    webp = data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    return webp or data.startswith(_SIGNATURES)
