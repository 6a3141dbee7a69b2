"""Refusing model files that would run code (mlx-lm CVE-2026-5843 and its Transformers kin).

A model is data: weights, a config and a tokenizer. Some Hugging Face configs instead name
Python to import when the model is built: ``model_file`` (mlx-lm before 0.32 imported it
unconditionally: CVE-2026-5843), ``auto_map`` (Transformers' custom classes, run only with
``trust_remote_code``), or ask for ``trust_remote_code`` outright. The bridge never passes
``trust_remote_code``; on top of that it refuses such a model wherever one can enter the
store (``/api/create``, ``import``, ``/api/pull``, GGUF conversion) and again before loading
one (a model put in the store by hand, a ``path`` alias, a Hugging Face cache snapshot).

One exception keeps common MLX conversions usable: a ``config.json`` whose ``auto_map``
only repeats an architecture mlx-lm implements itself (``model_type`` ``phi3``,
``deepseek_v3`` …: their conversions keep the original repo's ``auto_map``) does not need
that code, and mlx-lm never reads ``auto_map``; such a model is accepted. ``model_file``,
``trust_remote_code`` and an ``auto_map`` anywhere else are always refused.
"""

from __future__ import annotations

import ast
import importlib.util
import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from .errors import ModelLoadError

# The JSON files Transformers and mlx-lm read while building a model or its tokenizer.
CONFIG_FILES = (
    "config.json",
    "tokenizer_config.json",
    "generation_config.json",
    "processor_config.json",
    "preprocessor_config.json",
    "feature_extractor_config.json",
    "image_processor_config.json",
)
# Keys that name code to import (any truthy value is refused, at any depth).
CODE_KEYS = ("model_file", "auto_map", "trust_remote_code", "custom_pipelines")
_MAX_DEPTH = 8
_MAX_CONFIG_BYTES = 64 << 20  # a config this big is not a config (tokenizer.json is not read)


class CustomCodeRefused(ModelLoadError):
    """A model whose configuration names code to run (400): never imported or loaded."""

    status_code = 400


def code_references(config: Any, *, file: str = "config.json") -> list[str]:
    """``key: value`` texts for every custom-code key with a truthy value in ``config``
    (a top-level ``auto_map`` of a ``config.json`` whose architecture mlx-lm implements is
    not one: see the module's docstring)."""
    native = file == "config.json" and isinstance(config, dict) and mlx_lm_implements(config)
    return [
        f"{key}: {_short(value)}"
        for key, value, depth in _walk(config, 0)
        if value and not (native and key == "auto_map" and depth == 0)
    ]


def mlx_lm_implements(config: dict[str, Any]) -> bool:
    """True if mlx-lm has its own module for ``config``'s ``model_type`` (found on disk,
    without importing mlx)."""
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type.replace("_", "").isalnum():
        return False
    models, remapping = _mlx_lm_models()
    return (models / f"{remapping.get(model_type, model_type)}.py").is_file()


def check_config_text(text: str | bytes, *, model: str, file: str = "config.json") -> None:
    """Raise :class:`CustomCodeRefused` if the JSON ``text`` of ``file`` names custom code.

    Text that is not JSON is left to the loader to reject (it is not code either way).
    """
    try:
        config = json.loads(text)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return
    found = code_references(config, file=file)
    if found:
        raise CustomCodeRefused(
            f"model {model!r} is refused: its {file} names custom code ({'; '.join(found)}). "
            "The bridge never runs code from model files (mlx-lm CVE-2026-5843); use a "
            "model whose architecture mlx-lm implements itself (e.g. an mlx-community repo)"
        )


def check_model_dir(path: Path, *, model: str) -> None:
    """Refuse the model directory at ``path`` if any of its config files names custom code."""
    for name in CONFIG_FILES:
        file = Path(path) / name
        try:
            if not file.is_file() or file.stat().st_size > _MAX_CONFIG_BYTES:
                continue
            text = file.read_bytes()
        except OSError:
            continue  # unreadable: the loader reports it
        check_config_text(text, model=model, file=name)


def is_config_file(relative: str) -> bool:
    """True for a repo path whose file is one of :data:`CONFIG_FILES` at the top level."""
    return relative in CONFIG_FILES


@cache
def _mlx_lm_models() -> tuple[Path, dict[str, str]]:
    """mlx-lm's ``models`` folder and its ``MODEL_REMAPPING`` (read from the source)."""
    spec = importlib.util.find_spec("mlx_lm")
    if spec is None or not spec.submodule_search_locations:
        return Path("/nonexistent"), {}
    root = Path(next(iter(spec.submodule_search_locations)))
    remapping: dict[str, str] = {}
    try:
        tree = ast.parse((root / "utils.py").read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        tree = ast.Module(body=[], type_ignores=[])
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else None
        if isinstance(target, ast.Name) and target.id == "MODEL_REMAPPING":
            value = ast.literal_eval(node.value)
            remapping = {str(k): str(v) for k, v in value.items()}
    return root / "models", remapping


def _walk(value: Any, depth: int) -> Iterator[tuple[str, Any, int]]:
    if depth > _MAX_DEPTH:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if key in CODE_KEYS:
                yield key, item, depth
            yield from _walk(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, depth + 1)


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= 80 else text[:77] + "..."


__all__ = [
    "CODE_KEYS",
    "CONFIG_FILES",
    "CustomCodeRefused",
    "check_config_text",
    "check_model_dir",
    "code_references",
    "is_config_file",
    "mlx_lm_implements",
]
