"""Where a name leads besides the store: its alias or Hugging Face repo, and the order a pull
asks its sources in.

A name's alias: a user alias (``<config_dir>/models.toml``, re-read when the file changes)
shadows a built-in one (``data/aliases.toml``: Ollama library names -> ``mlx-community``
repos). ``hf.co/<org>/<repo>[:<revision>]`` and ``<org>/<repo>`` names are that Hugging Face
repo, the tag its revision.

The pull order: a user alias (its Hugging Face repo) → Ollama's registry
(``MLX_BRIDGE_OLLAMA_REGISTRY`` not off, names on its host) → a built-in alias or an
``org/repo`` name on Hugging Face; ``hf.co/…`` goes to Hugging Face only. Nothing here reads
the network or the store: ``registry.py`` resolves names to local models, ``store/pull.py``
pulls in this order.

User aliases (``<config_dir>/models.toml``); keys are model names, the tag defaults to
``latest``, and a user alias shadows a built-in one::

    [aliases]
    "mymodel:latest" = "mlx-community/Some-Repo-4bit"                      # a HF repo
    "coder" = { repo = "mlx-community/Qwen2.5-Coder-7B-Instruct-8bit", revision = "main" }
    "mine:v2" = { path = "~/models/my-finetune" }      # an mlx-lm directory (relative
                                                       # paths: relative to config_dir)
    "fast:8b" = { repo = "mlx-community/Qwen3-8B-4bit", draft = "qwen3:0.6b" }
                                     # speculative decoding with a local draft model
"""

from __future__ import annotations

import threading
from pathlib import Path

from .aliases import Alias, builtin_alias, builtin_aliases, load_user_aliases
from .config import Settings
from .names import DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG, ModelName

USER_ALIASES_FILE = "models.toml"


class NameOrder:
    """A name's alias (user, then built-in) and where a pull of it goes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.user_aliases_path = Path(settings.config_dir) / USER_ALIASES_FILE
        self._lock = threading.Lock()
        self._user_aliases: tuple[tuple[int, int] | None, dict[tuple, Alias]] = (None, {})

    def alias(self, name: ModelName) -> Alias | None:
        """The alias of ``name``: the user's, else a built-in one; None if neither."""
        return self._user_alias_map().get(name.key) or builtin_alias(name)

    def aliases(self) -> dict[str, Alias]:
        """All aliases by display name, built-in ones first; user aliases win."""
        builtin, _ = builtin_aliases()
        merged = {alias.name.display: alias for alias in builtin.values()}
        merged.update({alias.name.display: alias for alias in self._user_alias_map().values()})
        return merged

    def alias_target(self, name: str) -> str | None:
        """The Hugging Face repo id a pull of ``name`` should fetch, or None."""
        parsed = ModelName.parse(name)
        if (alias := self.alias(parsed)) is not None:
            return alias.repo
        repo = hf_repo(parsed)
        return repo[0] if repo else None

    def pull_target(self, name: str) -> tuple[str, str] | None:
        """(Hugging Face repo id, revision) a pull of ``name`` fetches; None if nothing maps.

        Aliases first (a ``path`` alias is local, so None), then ``hf.co/<org>/<repo>`` and
        ``<org>/<repo>`` names, whose tag is the revision.
        """
        parsed = ModelName.parse(name)
        if (alias := self.alias(parsed)) is not None:
            return (alias.repo, alias.revision or "main") if alias.repo else None
        return hf_repo(parsed)

    def asks_ollama_registry(self, name: str) -> bool:
        """True if a pull of ``name`` asks Ollama's registry (the pull order above): it is
        on, the name is on its host, and no user alias names it."""
        if self.settings.ollama_registry is None:
            return False
        parsed = ModelName.parse(name)
        if parsed.key[0] != DEFAULT_HOST:
            return False
        return parsed.key not in self._user_alias_map()

    def _user_alias_map(self) -> dict[tuple, Alias]:
        """User aliases, re-read only when models.toml changes."""
        try:
            stat = self.user_aliases_path.stat()
            signature: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            signature = None
        with self._lock:
            if self._user_aliases[0] == signature:
                return self._user_aliases[1]
        aliases = load_user_aliases(self.user_aliases_path) if signature else {}
        with self._lock:
            self._user_aliases = (signature, aliases)
        return aliases


def hf_repo(name: ModelName) -> tuple[str, str] | None:
    """(repo id, revision) for ``hf.co/<org>/<repo>`` and ``<org>/<repo>`` names, else None.

    The tag is the revision; ``latest`` means ``main``.
    """
    host, namespace = name.key[:2]
    if not name.is_hf and (host != DEFAULT_HOST or namespace == DEFAULT_NAMESPACE):
        return None
    revision = "main" if name.tag.casefold() == DEFAULT_TAG else name.tag
    return f"{name.namespace}/{name.model}", revision


__all__ = ["USER_ALIASES_FILE", "NameOrder", "hf_repo"]
