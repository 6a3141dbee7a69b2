"""Ollama model names: ``[scheme://][host/][namespace/]model[:tag]``.

The grammar, character classes and defaults are those of Ollama's ``types/model/name.go``:

=========  ======================  ====================================  ======
part       default                 characters (first, then the rest)     length
=========  ======================  ====================================  ======
host       ``registry.ollama.ai``  ``[A-Za-z0-9_]`` then ``[A-Za-z0-9_.:-]``  1-350
namespace  ``library``             ``[A-Za-z0-9_]`` then ``[A-Za-z0-9_-]``    1-80
model      (required)              ``[A-Za-z0-9_]`` then ``[A-Za-z0-9_.-]``   1-80
tag        ``latest``              ``[A-Za-z0-9_]`` then ``[A-Za-z0-9_.-]``   1-80
=========  ======================  ====================================  ======

A separator with nothing on one side (``foo:``, ``/foo``, ``a//b``) makes a name invalid.
Because no part may contain ``/`` or ``\\`` or start with ``.``, the four parts are always
safe as directory names under the store's ``manifests/`` folder: a name can never reach
outside it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidModelName

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
HF_HOSTS = ("hf.co", "huggingface.co")

_PART_PATTERNS = {
    "host": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}"),
    "namespace": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}"),
    "model": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"),
    "tag": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"),
}


@dataclass(frozen=True)
class ModelName:
    """A fully qualified, validated model name. Build it with :meth:`parse`."""

    host: str
    namespace: str
    model: str
    tag: str

    def __post_init__(self) -> None:
        for pattern, value in zip(_PART_PATTERNS.values(), self.parts, strict=True):
            if not isinstance(value, str) or not pattern.fullmatch(value):
                raise InvalidModelName(self._joined())

    @classmethod
    def parse(cls, text: str) -> ModelName:
        """Parse a name as a client sends it, filling in Ollama's defaults.

        Raises :class:`InvalidModelName` (400) for anything Ollama would reject, and for
        anything that could act as a path (``..``, absolute paths, backslashes, NUL).
        """
        if not isinstance(text, str) or not text or "\x00" in text or "\\" in text:
            raise InvalidModelName(str(text))
        rest, tag = text, DEFAULT_TAG
        if rest.rfind(":") > rest.rfind("/"):
            rest, _, tag = rest.rpartition(":")
        parts = rest.split("/")
        if len(parts) > 3:  # Ollama folds the extra prefix into the host, which then fails
            parts = ["/".join(parts[:-2]), *parts[-2:]]
        host, namespace = DEFAULT_HOST, DEFAULT_NAMESPACE
        if len(parts) == 3:
            host = parts[0].split("://", 1)[-1]  # drop an optional scheme
        if len(parts) >= 2:
            namespace = parts[-2]
        try:
            return cls(host, namespace, parts[-1], tag)
        except InvalidModelName:
            raise InvalidModelName(text) from None

    @classmethod
    def from_parts(cls, host: str, namespace: str, model: str, tag: str) -> ModelName:
        """A name from its four parts (e.g. a store path); raises InvalidModelName."""
        return cls(host, namespace, model, tag)

    @property
    def parts(self) -> tuple[str, str, str, str]:
        """(host, namespace, model, tag)."""
        return (self.host, self.namespace, self.model, self.tag)

    @property
    def display(self) -> str:
        """Ollama's shortest form, tag always included: ``llama3.2:latest``, ``me/foo:7b``."""
        if self.host.casefold() != DEFAULT_HOST:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace.casefold() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    @property
    def fully_qualified(self) -> str:
        """``registry.ollama.ai/library/llama3.2:latest`` (used in some Ollama errors)."""
        return self._joined()

    @property
    def key(self) -> tuple[str, ...]:
        """The parts case-folded: names match case-insensitively, as in Ollama."""
        return tuple(part.casefold() for part in self.parts)

    @property
    def is_hf(self) -> bool:
        """True for Hugging Face names (``hf.co/<org>/<repo>``, ``huggingface.co/...``)."""
        return self.host.casefold() in HF_HOSTS

    @property
    def is_library(self) -> bool:
        """True for names in Ollama's own library (``registry.ollama.ai/library/...``)."""
        return self.key[:2] == (DEFAULT_HOST, DEFAULT_NAMESPACE)

    def filepath(self, root: Path) -> Path:
        """``root/<host>/<namespace>/<model>/<tag>``; always inside ``root``."""
        return root.joinpath(*self.parts)

    def with_tag(self, tag: str) -> ModelName:
        """The same name with another tag (validated)."""
        return ModelName(self.host, self.namespace, self.model, tag)

    def _joined(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    def __str__(self) -> str:
        return self._joined()


__all__ = ["DEFAULT_HOST", "DEFAULT_NAMESPACE", "DEFAULT_TAG", "HF_HOSTS", "ModelName"]
