"""Aliases: model names that stand for a Hugging Face repo or a local model directory.

Built-in aliases (``data/aliases.toml``) map Ollama library names to ``mlx-community``
repos; ``[latest]`` in that file says which tag a bare name means, as on ollama.com.
User aliases live in ``<config_dir>/models.toml`` (format in ``registry``'s docstring).
"""

from __future__ import annotations

import functools
import logging
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import InvalidModelName
from .names import DEFAULT_TAG, ModelName

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alias:
    """A model name that stands for a Hugging Face repo or a local directory."""

    name: ModelName
    repo: str | None = None  # Hugging Face repo id
    revision: str | None = None  # branch, tag or commit; None = main
    path: Path | None = None  # a local mlx-lm directory instead of a repo
    quantization: str | None = None
    draft: str | None = None  # smaller model with the same tokenizer (speculative decoding)
    notes: str = ""
    origin: str = "builtin"  # "builtin" or "user"


def builtin_alias(name: ModelName) -> Alias | None:
    """The built-in alias for a library name; a bare name uses the ``[latest]`` tag."""
    if not name.is_library:
        return None
    aliases, latest = builtin_aliases()
    key = name.key
    if key not in aliases and name.tag.casefold() == DEFAULT_TAG:
        key = (*key[:3], latest.get(name.model.casefold(), DEFAULT_TAG))
    return aliases.get(key)


@functools.cache
def builtin_aliases() -> tuple[dict[tuple, Alias], dict[str, str]]:
    """The packaged alias map: (name key -> Alias, model -> tag that ``latest`` means)."""
    text = resources.files(__package__).joinpath("data", "aliases.toml").read_text("utf-8")
    data = tomllib.loads(text)
    aliases = {}
    for key, entry in data.get("models", {}).items():
        name = ModelName.parse(key)
        aliases[name.key] = Alias(
            name,
            repo=entry["repo"],
            quantization=entry.get("quantization"),
            draft=entry.get("draft"),
            notes=entry.get("notes", ""),
        )
    latest = {model.casefold(): tag.casefold() for model, tag in data.get("latest", {}).items()}
    return aliases, latest


def load_user_aliases(path: Path) -> dict[tuple, Alias]:
    """Parse a user ``models.toml``; bad entries are skipped with a warning."""
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8")).get("aliases", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        log.warning("ignoring unreadable alias file path=%s error=%s", path, exc)
        return {}
    aliases = {}
    for key, value in table.items() if isinstance(table, dict) else ():
        entry = {"repo": value} if isinstance(value, str) else value
        try:
            alias = _user_alias(key, entry, path.parent)
        except (InvalidModelName, TypeError, ValueError) as exc:
            log.warning("skipping alias path=%s name=%r error=%s", path, key, exc)
            continue
        aliases[alias.name.key] = alias
    return aliases


def _user_alias(key: str, entry: Any, base: Path) -> Alias:
    if not isinstance(entry, dict):
        raise TypeError("expected a repo id or a table with repo or path")
    repo, path = entry.get("repo"), entry.get("path")
    if (repo is None) == (path is None):
        raise ValueError("give exactly one of repo and path")
    if repo is not None and (not isinstance(repo, str) or repo.count("/") != 1):
        raise ValueError(f"repo must look like org/name, got {repo!r}")
    directory = None if path is None else base / Path(str(path)).expanduser()
    return Alias(
        ModelName.parse(key),
        repo=repo,
        revision=entry.get("revision"),
        path=directory,
        quantization=entry.get("quantization"),
        draft=entry.get("draft"),
        notes=str(entry.get("notes", "")),
        origin="user",
    )


__all__ = ["Alias", "builtin_alias", "builtin_aliases", "load_user_aliases"]
