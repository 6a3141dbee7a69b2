"""``/api/pull``: fetch a model from Ollama's registry or Hugging Face, with Ollama's lines.

The order a pulled name is looked up in (``name_order.py``): a user alias
(its Hugging Face repo); then Ollama's registry (``MLX_BRIDGE_OLLAMA_REGISTRY``, for names
on its host: ``qwen3:0.6b``, ``me/model:tag``; ``store/ollama_pull.py``); then a built-in
alias or an ``org/repo`` name on Hugging Face. ``hf.co/org/repo[:rev]`` goes to Hugging
Face only. The rest of this module is the Hugging Face pull: a name resolves to a repo
and revision. Files go into the Hugging Face cache with
``huggingface_hub`` (shared with mlx-lm and every other HF tool), then a manifest names the
snapshot, so the model lists under the name asked for. Status lines follow Ollama's::

    pulling manifest
    pulling <12 hex>   (one per file: digest, total, completed)
    verifying sha256 digest
    writing manifest
    success

Weights (Git LFS files) download into ``blobs/<sha256>.incomplete`` and continue from
where they stopped when a pull is repeated after an interruption; each is checked against
its SHA-256 before it becomes a cache blob. The manifest is written last, so a failed pull
leaves no model listed. Errors name their cause and the fix (``errors.explain``).
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from ..errors import ErrorLine, InvalidModelName
from ..manifest import Manifest, file_sha256
from ..model_code import CustomCodeRefused, check_config_text, is_config_file
from ..names import ModelName
from ..registry import LocalModel, Registry
from .hub import (
    CorruptDownload,
    HubFile,
    blob_path,
    download_lfs,
    link_file,
    offline,
    repo_files,
)
from .lock import store_lock
from .manage import prune_weights
from .manifests import write_manifest
from .ollama_pull import NotPulledHere, pull_from_ollama
from .pull_errors import OFFLINE, PullError, explain

log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], None]
# What an MLX model needs; other files (READMEs, images, PyTorch/GGUF/ONNX copies) are skipped,
# and so is Python: the bridge never runs a model's code (model_code.py).
WANTED = ("*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja")
_SKIPPED = ("*.gguf", "*.bin", "*.pt", "*.pth", "*.onnx", "*.h5", "*.msgpack", "*.ot")
_PROGRESS_EVERY_S = 0.1  # Ollama sends a layer update roughly every 60-100 ms


@dataclass
class _Plan:
    repo: str
    revision: str
    commit: str
    files: list[HubFile]


def pull_events(registry: Registry, name: str) -> Iterator[dict[str, Any]]:
    """Pull ``name``, yielding Ollama status lines; the last is success or ``{"error": …}``.

    The download runs in a thread; closing this iterator early (client gone) stops it at
    the next chunk, leaving the partial file for the next pull to continue.
    """
    check_pull_name(name)
    events: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=256)
    cancel = threading.Event()

    def emit(event: dict[str, Any] | None) -> None:
        while not cancel.is_set():  # a reader that went away must not block the worker
            try:
                events.put(event, timeout=0.5)
                return
            except queue.Full:
                continue
        if event is not None and "error" not in event:
            raise PullError("pull canceled")

    def work() -> None:
        try:
            pull_model(registry, name, emit, cancel)
        except PullError as exc:
            if cancel.is_set():
                log.info("pull stopped, the client went away model=%s", name)
            emit(ErrorLine(exc.message, exc.status_code))
        except Exception as exc:  # never leave the stream without an ending
            log.exception("pull failed model=%s", name)
            emit(ErrorLine(f"pull failed: {type(exc).__name__}"))
        finally:
            emit(None)

    threading.Thread(target=work, name=f"pull-{name}", daemon=True).start()
    try:
        while (event := events.get()) is not None:
            yield event
    finally:
        cancel.set()


def check_pull_name(name: str) -> None:
    """400 ``invalid model name`` (Ollama's wording) before any line is streamed."""
    try:
        ModelName.parse(name)
    except InvalidModelName:
        raise InvalidModelName(name, "invalid model name") from None


def pull_model(registry: Registry, name: str, emit: Emit, cancel: threading.Event) -> LocalModel:
    """Do the pull, reporting through ``emit``; raises PullError with an explained cause."""
    emit({"status": "pulling manifest"})
    refused_by_ollama = None
    if registry.names.asks_ollama_registry(name):  # the order: see name_order.py
        if offline():
            raise PullError(OFFLINE)
        try:
            return pull_from_ollama(registry, name, emit, cancel)
        except NotPulledHere as exc:
            refused_by_ollama = str(exc)
            log.info("not pulled from Ollama's registry model=%s reason=%s", name, exc)
    target = registry.names.pull_target(name)
    if target is None and refused_by_ollama is not None:
        raise PullError(refused_by_ollama)
    if target is None:
        raise PullError(
            f"pull model manifest: no MLX model is known for {name!r}: pull a Hugging Face "
            "repo by name (e.g. hf.co/mlx-community/Qwen3-0.6B-4bit) or add an alias to "
            f"{registry.names.user_aliases_path}"
        )
    repo, revision = target
    if offline():
        raise PullError(OFFLINE)
    try:
        plan = _plan(repo, revision)
        _check_disk(registry.hf_cache, plan)
        files = _fetch(registry.hf_cache, plan, emit, cancel)
        emit({"status": "writing manifest"})
        snapshot = link_file(registry.hf_cache, plan.repo, plan.commit, plan.files[0]).parent
        model = _write_manifest(registry, name, plan, snapshot, files)
    except PullError:
        raise
    except CustomCodeRefused as exc:
        raise PullError(exc.message, status_code=400) from exc
    except Exception as exc:
        raise PullError(explain(exc, repo, revision, registry.hf_cache)) from exc
    emit({"status": "success"})
    log.info("pulled model=%s repo=%s commit=%s", model.name.display, repo, plan.commit[:12])
    return model


def _plan(repo: str, revision: str) -> _Plan:
    commit, files = repo_files(repo, revision)
    wanted = [f for f in files if _wanted(f.path)]
    names = {f.path for f in wanted}
    if "config.json" not in names or not any(n.endswith(".safetensors") for n in names):
        raise PullError(
            f"{repo} has no config.json with safetensors weights, so it is not an MLX model: "
            "pull an MLX conversion instead (mlx-community has most models)"
        )
    # config first (the snapshot is found through it), then small files, then the weights
    wanted.sort(key=lambda f: (f.path != "config.json", f.sha256 is not None, f.path))
    return _Plan(repo, revision, commit, wanted)


def _wanted(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    if name.startswith(".") or any(fnmatch(name, p) for p in _SKIPPED):
        return False
    return any(fnmatch(name, p) for p in WANTED)


def _check_disk(cache: Path, plan: _Plan) -> None:
    """Refuse up front when the missing weights cannot fit on the cache's disk."""
    missing = 0
    for file in plan.files:
        if file.sha256 and not blob_path(cache, plan.repo, file.sha256).is_file():
            partial = blob_path(cache, plan.repo, file.sha256, incomplete=True)
            missing += file.size - (partial.stat().st_size if partial.is_file() else 0)
    probe = cache
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if missing > free:
        raise PullError(
            f"not enough disk space: {plan.repo} needs {missing / 1e9:.1f} GB more, "
            f"{free / 1e9:.1f} GB is free in {cache}; free some space or point HF_HUB_CACHE "
            "at a bigger disk"
        )


def _fetch(cache: Path, plan: _Plan, emit: Emit, cancel: threading.Event) -> dict[str, dict]:
    """Download every file (small ones first, then weights), link them into the snapshot.

    Each weights file is checked against its SHA-256 as it completes (under its lock, so a
    concurrent pull never sees a half-checked blob). Returns the manifest's ``files`` map.
    """
    files: dict[str, dict] = {}
    for file in plan.files:
        if cancel.is_set():
            raise PullError("pull canceled")
        if file.sha256 is None:  # a small git file: fetch it now, its hash names the line
            local = link_file(cache, plan.repo, plan.commit, file)
            if is_config_file(file.path):  # before any weights are downloaded
                check_config_text(local.read_bytes(), model=plan.repo, file=file.path)
            digest = file_sha256(local)
            files[file.path] = {"size": file.size, "sha256": digest}
            emit(_line(digest, file.size, file.size))
            continue
        files[file.path] = {"size": file.size, "sha256": file.sha256}
        _download_weights(cache, plan, file, emit, cancel)
    emit({"status": "verifying sha256 digest"})
    for file in plan.files:
        if file.sha256 is not None:
            link_file(cache, plan.repo, plan.commit, file)  # the blob exists: only links
    return files


def _download_weights(
    cache: Path, plan: _Plan, file: HubFile, emit: Emit, cancel: threading.Event
) -> None:
    """Bring one LFS file into the cache as a checked blob, reporting progress."""
    assert file.sha256 is not None
    if blob_path(cache, plan.repo, file.sha256).is_file():
        emit(_line(file.sha256, file.size, file.size))
        return
    shown = {"at": time.monotonic(), "done": 0}
    emit(_line(file.sha256, file.size, 0))

    def progress(done: int) -> None:
        if cancel.is_set():
            raise PullError("pull canceled")
        now = time.monotonic()
        due = now - shown["at"] >= _PROGRESS_EVERY_S or done == file.size
        if due and done != shown["done"]:
            shown.update(at=now, done=done)
            emit(_line(file.sha256 or "", file.size, done))

    try:
        download_lfs(cache, plan.repo, plan.commit, file, progress)
    except CorruptDownload as exc:
        raise PullError(
            f"{file.path} of {plan.repo} failed its sha256 check ({exc}): the download was "
            "corrupted and has been discarded; pull again"
        ) from exc
    if shown["done"] != file.size:  # another pull finished this blob meanwhile
        emit(_line(file.sha256, file.size, file.size))


def _write_manifest(
    registry: Registry, name: str, plan: _Plan, snapshot: Path, files: dict[str, dict]
) -> LocalModel:
    manifest = Manifest(
        model_dir=str(snapshot.absolute()),
        format="mlx",
        source=f"hf:{plan.repo}@{plan.commit}",
        files=files,
        created_at=time.time(),
    )
    with store_lock(registry):
        replaced = registry.stored_manifest(name)
        model = write_manifest(registry, name, manifest)
        if replaced is not None:
            prune_weights(registry, [replaced.resolve_dir(registry.models_dir)])
    return model


def _line(digest: str, total: int, completed: int) -> dict[str, Any]:
    line: dict[str, Any] = {
        "status": f"pulling {digest[:12]}",
        "digest": f"sha256:{digest}",
        "total": total,
    }
    if completed:  # Ollama leaves "completed" out while it is 0
        line["completed"] = completed
    return line


__all__ = ["WANTED", "ErrorLine", "PullError", "check_pull_name", "pull_events", "pull_model"]
