"""Model names -> local MLX model directories, and the listing of ``/api/tags``.

A name resolves through (first match wins; every part matches case-insensitively):

1. the store: ``<models_dir>/manifests/<host>/<namespace>/<model>/<tag>`` (see ``manifest``);
2. its alias, a user alias (``models.toml``) before a built-in one (``name_order``);
3. ``hf.co/<org>/<repo>[:<revision>]`` and ``<org>/<repo>`` names: that Hugging Face repo.

Aliases and Hugging Face names count as local only if the repo is already in the Hugging
Face cache (looked up with ``huggingface_hub``'s cache functions; the network is never
used) or, for a ``path`` alias, if the directory holds a ``config.json``. Nothing is
downloaded here: ``name_order`` tells a pull where to go.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .aliases import Alias
from .config import Settings
from .errors import InvalidModelName, ModelNotFound
from .manifest import Manifest, quick_files_map, read_manifest_file
from .model_details import ModelDescription, describe_model
from .name_order import NameOrder, hf_repo
from .names import ModelName
from .ollama_templates import TemplateForm, go_template_capabilities, with_go_template

log = logging.getLogger(__name__)


@dataclass
class LocalModel:
    """A model that can be served now, with everything ``/api/tags`` and ``/api/show`` need."""

    name: ModelName
    manifest: Manifest
    path: Path  # absolute, mlx-lm loadable directory
    modified_at: datetime  # manifest mtime (snapshot mtime for cache models), local time zone
    digest: str  # 64 hex chars, see Manifest.digest
    size: int  # bytes on disk
    details: dict[str, Any]  # the 6-key details object
    model_info: dict[str, Any]  # GGUF-style metadata for /api/show
    capabilities: list[str]  # "completion" or "embedding", then "tools", "thinking"
    chat_template: str | None  # Jinja: the manifest's override or the model's own
    context_length: int  # trained context in tokens; 0 = unknown
    system: str | None
    parameters: dict[str, Any]  # default options (Ollama PARAMETER names)
    messages: list[dict[str, Any]]
    draft: LocalModel | None = None  # the alias's draft model, when it is present locally
    form: TemplateForm | None = None  # Ollama Go-template form, tools prompt, FIM format


class Registry:
    """Resolves names to :class:`LocalModel`; reads the store (``store/`` writes it)."""

    def __init__(self, settings: Settings, *, hf_cache: Path | None = None) -> None:
        self.settings = settings
        self.models_dir = Path(settings.models_dir)
        self.manifests_root = self.models_dir / "manifests"
        self.weights_root = self.models_dir / "weights"
        self.names = NameOrder(settings)  # aliases, and where a pull goes
        self.hf_cache = hf_cache or hf_cache_dir()
        self._lock = threading.Lock()
        self._descriptions: dict[tuple, ModelDescription] = {}

    # -- public API --------------------------------------------------------------------------

    def list_models(self) -> list[LocalModel]:
        """Every model in the store, newest manifest first; unreadable ones are skipped."""
        if not self.manifests_root.is_dir():
            return []
        models = []
        for path in self.manifests_root.glob("*/*/*/*"):
            if path.name.startswith(".") or not path.is_file():
                continue  # an in-progress atomic write, or a stray directory
            try:
                name = ModelName.from_parts(*path.relative_to(self.manifests_root).parts)
            except InvalidModelName:
                log.warning("skipping manifest with an invalid name path=%s", path)
                continue
            if (model := self._load_manifest(name, path)) is not None:
                models.append(model)
        models.sort(key=lambda m: m.modified_at, reverse=True)
        return models

    def resolve(self, name: str) -> LocalModel:
        """The local model for ``name``; raises InvalidModelName or ModelNotFound(name).

        When an alias of ``name`` names a ``draft`` that is present locally, it is resolved
        too (``LocalModel.draft``), for speculative decoding.
        """
        model = self._resolve(name)
        alias = self.names.alias(ModelName.parse(name))
        if alias is not None and alias.draft:
            model.draft = self._draft(alias)
        return model

    def _draft(self, alias: Alias) -> LocalModel | None:
        """The alias's draft model, or None if it is not here (no download, no error)."""
        try:
            draft = self._resolve(alias.draft or "")
        except (InvalidModelName, ModelNotFound):
            log.debug("draft model not present model=%s draft=%s", alias.name, alias.draft)
            return None
        if "completion" not in draft.capabilities:
            return None
        return draft

    def _resolve(self, name: str) -> LocalModel:
        parsed = ModelName.parse(name)
        path, exists = self.store_path(parsed)
        if exists:
            stored_name = ModelName.from_parts(*path.relative_to(self.manifests_root).parts)
            if (model := self._load_manifest(stored_name, path)) is not None:
                return model
        model = None
        if (alias := self.names.alias(parsed)) is not None:
            model = self._from_alias(parsed, alias)
        elif (repo := hf_repo(parsed)) is not None:
            model = self._from_hf_cache(parsed, *repo)
        if model is None:
            raise ModelNotFound(name)
        return model

    def stored_manifest(self, name: str) -> Manifest | None:
        """The manifest stored under ``name`` (the store only, not aliases); None if there is
        none or it is unreadable."""
        path, exists = self.store_path(ModelName.parse(name))
        if not exists:
            return None
        try:
            return read_manifest_file(path)
        except (OSError, ValueError):
            return None

    # -- the store ---------------------------------------------------------------------------

    def store_path(self, name: ModelName) -> tuple[Path, bool]:
        """Manifest path for ``name`` using on-disk spellings where they exist; and whether
        the manifest file exists. New parts keep the spelling they were given."""
        current, found = self.manifests_root, True
        for part in name.parts:
            match = _match_entry(current, part) if found else None
            found = match is not None
            current = current / (match or part)
        return current, found and current.is_file()

    def stored_model(self, path: Path, manifest: Manifest) -> LocalModel:
        """The model of ``manifest``, stored at ``path`` (a file under ``manifests_root``)."""
        name = ModelName.from_parts(*path.relative_to(self.manifests_root).parts)
        model_dir = manifest.resolve_dir(self.models_dir)
        return self._build(name, manifest, model_dir, path.stat().st_mtime)

    def _load_manifest(self, name: ModelName, path: Path) -> LocalModel | None:
        try:
            manifest = read_manifest_file(path)
            mtime = path.stat().st_mtime
        except (OSError, ValueError) as exc:
            log.warning("skipping unreadable manifest path=%s error=%s", path, exc)
            return None
        model_dir = manifest.resolve_dir(self.models_dir)
        if not model_dir.is_dir():
            log.warning("skipping manifest whose model dir is gone path=%s dir=%s", path, model_dir)
            return None
        return self._build(name, manifest, model_dir, mtime)

    # -- path aliases and the Hugging Face cache ---------------------------------------------

    def _from_alias(self, name: ModelName, alias: Alias) -> LocalModel | None:
        if alias.path is not None:
            if not (alias.path / "config.json").is_file():
                log.warning("alias directory has no config.json model=%s path=%s", name, alias.path)
                return None
            return self._from_directory(name, alias.path, f"path:{alias.path}")
        return self._from_hf_cache(name, alias.repo or "", alias.revision or "main")

    def _from_hf_cache(self, name: ModelName, repo: str, revision: str) -> LocalModel | None:
        snapshot = find_cached_snapshot(self.hf_cache, repo, revision)
        if snapshot is None:
            return None
        return self._from_directory(name, snapshot, f"hf:{repo}@{snapshot.name}")

    def _from_directory(self, name: ModelName, path: Path, source: str) -> LocalModel:
        """A model outside the store (HF snapshot, path alias): an in-memory manifest."""
        mtime = path.stat().st_mtime
        manifest = Manifest(str(path), "mlx", source, quick_files_map(path), created_at=mtime)
        return self._build(name, manifest, path, mtime)

    # -- building LocalModel -----------------------------------------------------------------

    def _build(self, name: ModelName, manifest: Manifest, path: Path, mtime: float) -> LocalModel:
        description = self._describe(manifest, path)
        form, capabilities = description.form, list(description.capabilities)
        if manifest.go_template is not None and not manifest.template:  # Ollama's template
            form = with_go_template(form, manifest.go_template)
            if "embedding" not in capabilities:
                capabilities = ["completion", *go_template_capabilities(manifest.go_template)]
        return LocalModel(
            name=name,
            manifest=manifest,
            path=path.absolute(),
            modified_at=datetime.fromtimestamp(mtime).astimezone(),
            digest=manifest.listed_digest,
            size=manifest.size,
            details=dict(description.details),
            model_info=dict(description.model_info),
            capabilities=capabilities,
            chat_template=description.chat_template,
            context_length=description.context_length,
            system=manifest.system,
            parameters=dict(manifest.parameters),
            messages=list(manifest.messages),
            form=form,
        )

    def _describe(self, manifest: Manifest, path: Path) -> ModelDescription:
        """Derived details, cached in memory per digest (reading headers costs disk I/O)."""
        basename = _basename(manifest, path)
        key = (manifest.digest, str(path), manifest.format, manifest.parent_model)
        key += (manifest.template, basename)
        with self._lock:
            cached = self._descriptions.get(key)
        if cached is None:
            cached = describe_model(
                path,
                format=manifest.format,
                parent_model=manifest.parent_model,
                template=manifest.template,
                basename=basename,
            )
            with self._lock:
                self._descriptions[key] = cached
        return cached


def _match_entry(directory: Path, part: str) -> str | None:
    """The entry of ``directory`` named ``part``: exact spelling first, else any case."""
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return None
    if part in entries:
        return part
    folded = part.casefold()
    return next((entry for entry in entries if entry.casefold() == folded), None)


def _basename(manifest: Manifest, path: Path) -> str:
    """``general.basename`` for a model without GGUF metadata: its repo or directory name."""
    if manifest.source.startswith("hf:"):
        return manifest.source[3:].split("@", 1)[0].rsplit("/", 1)[-1]
    return path.name


def hf_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """The Hugging Face hub cache, resolved from the environment as huggingface_hub does.

    Read at call time (not at import), so tests and services can point it elsewhere.
    """
    env = os.environ if env is None else env
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(key):
            return Path(env[key]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    cache = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return cache / "huggingface" / "hub"


def find_cached_snapshot(cache: Path, repo: str, revision: str = "main") -> Path | None:
    """The snapshot directory of ``repo`` at ``revision`` if it is fully in the HF cache.

    Offline by construction: only ``huggingface_hub.try_to_load_from_cache`` is used. The
    repo id matches the cache case-insensitively; a snapshot counts only if it has a
    ``config.json`` and all of its safetensors weights.
    """
    folder = "models--" + repo.replace("/", "--")
    actual = _match_entry(cache, folder)
    if actual is None or "/" not in repo:
        return None
    org_length = len(repo.split("/", 1)[0])
    repo_id = f"{actual[8 : 8 + org_length]}/{actual[10 + org_length :]}"
    from huggingface_hub import try_to_load_from_cache  # here: importing it costs ~0.1 s

    try:
        found = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache, revision=revision)
    except (ValueError, OSError) as exc:  # HFValidationError is a ValueError
        log.debug("hf cache lookup failed repo=%s error=%s", repo_id, exc)
        return None
    if not isinstance(found, str):
        return None
    snapshot = Path(found).parent
    return snapshot if _weights_complete(snapshot) else None


def _weights_complete(snapshot: Path) -> bool:
    index = snapshot / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False
        return bool(shards) and all((snapshot / shard).is_file() for shard in shards)
    return any(snapshot.glob("*.safetensors"))


__all__ = [
    "Alias",
    "LocalModel",
    "Registry",
    "find_cached_snapshot",
    "hf_cache_dir",
]
