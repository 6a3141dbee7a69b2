"""A private store and server for tests that change the store or kill the process.

The session ``server`` fixture is shared; tests that delete models, send signals or change
settings (body cap, rate limit) start their own with :func:`own_server`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import RunningServer, _clean_environ, _isolated_env, start_server

_WRITE_MANIFESTS = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from mlx_ollama_bridge.config import Settings\n"
    "from mlx_ollama_bridge.registry import Registry\n"
    "from mlx_ollama_bridge.manifest import Manifest, hash_model_dir\n"
    "from mlx_ollama_bridge.store.manifests import write_manifest\n"
    "registry = Registry(Settings.from_env())\n"
    "for pair in sys.argv[1:]:\n"
    "    name, _, path = pair.partition('=')\n"
    "    write_manifest(registry, name, Manifest(model_dir=path, format='mlx',\n"
    "        source='test', files=hash_model_dir(Path(path)), created_at=time.time()))\n"
)


def make_store(root: Path, models: dict[str, Path]) -> dict[str, str]:
    """A fresh store under ``root`` naming ``models`` (name -> model dir); returns its env."""
    env = _isolated_env(root)
    pairs = [f"{name}={path}" for name, path in models.items()]
    subprocess.run(
        [sys.executable, "-c", _WRITE_MANIFESTS, *pairs],
        env={**_clean_environ(), **env},
        check=True,
    )
    return env


def own_server(root: Path, models: dict[str, Path], **settings: str) -> RunningServer:
    """A real server over a fresh store; ``settings`` are extra environment variables."""
    env = {**make_store(root, models), **settings}
    return start_server(env, root / "server.log")
