"""Helpers the test modules share (test modules never import each other or conftest).

Real servers (a ``mlx-ollama-bridge serve`` process on a free port, over a store of its
own), the isolated environment every test runs in, waiting on a condition instead of a fixed
sleep, and reading the package's imports for the layering tests.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "mlx_ollama_bridge"
# The timing and count fields Ollama puts on a finished generation.
METRICS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)

# A function tool as OpenAI and Ollama clients send it.
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def message_events(texts: int) -> list[str]:
    """The Responses API stream events of one output message with ``texts`` text deltas."""
    return [
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * texts,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]


# -- the environment -------------------------------------------------------------------------


def isolated_env(base: Path) -> dict[str, str]:
    """Store, config and Hugging Face cache under ``base``; the hub offline."""
    return {
        "MLX_BRIDGE_MODELS": str(base / "models"),
        "MLX_BRIDGE_CONFIG_DIR": str(base / "config"),
        "HF_HOME": str(base / "hf"),
        "HF_HUB_CACHE": str(base / "hf" / "hub"),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "MLX_BRIDGE_OLLAMA_REGISTRY": "off",  # tests that pull from it start a fake one
        "OLLAMA_MODELS": str(base / "ollama-store"),  # never the developer's Ollama store
    }


def clean_environ() -> dict[str, str]:
    """This process's environment without the bridge's, Ollama's and Hugging Face's variables."""
    prefixes = ("OLLAMA_", "MLX_BRIDGE_", "HF_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def wait_until(condition: Callable[[], object], timeout: float = 10.0, poll: float = 0.05):
    """Poll ``condition`` until it returns something true (returned) or ``timeout`` seconds
    pass (then its last, false, value is returned): a wait on a condition, not a sleep."""
    deadline = time.monotonic() + timeout
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(poll)
    return value


def in_parallel(calls: list[Callable[[], Any]], timeout: float = 300) -> list[Any]:
    """Run every call at once, each from its own thread, as concurrent clients do; their
    results in order. A call that raised (or did not finish) fails the test."""
    results: list[Any] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def worker(index: int) -> None:
        start.wait()
        try:
            results[index] = calls[index]()
        except Exception as exc:  # surfaced by the assertion below
            results[index] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(isinstance(r, Exception) or r is None for r in results), results
    return results


# -- stores and servers ----------------------------------------------------------------------

# Run in a subprocess (as a user would, and so that no MLX state lives in the test process).
_WRITE_STORE = """
import json, sys, time
from pathlib import Path
from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.registry import Registry
from mlx_ollama_bridge.manifest import Manifest, hash_model_dir
from mlx_ollama_bridge.store.manifests import write_manifest
from mlx_ollama_bridge.store import embedded
registry = Registry(Settings.from_env())
for kind, name, path in json.loads(sys.argv[1]):  # in order: listings are newest first
    if kind == "smollm2":
        embedded.import_smollm2(registry, Path(path))
    elif kind == "minilm":
        embedded.import_minilm(registry, Path(path))
    else:
        write_manifest(registry, name, Manifest(model_dir=path, format="mlx", source="test",
            files=hash_model_dir(Path(path)), created_at=time.time()))
"""


def make_store(
    root: Path,
    models: dict[str, Path],
    *,
    smollm2: Path | None = None,
    minilm: Path | None = None,
    then: dict[str, Path] | None = None,
) -> dict[str, str]:
    """A fresh store under ``root`` naming ``models`` (name -> model dir), then the real
    smollm2 (converted from its GGUF) and all-minilm if given, then ``then``; returns its
    environment."""
    env = isolated_env(root)
    plan = [("manifest", name, str(path)) for name, path in models.items()]
    plan += [("smollm2", "", str(smollm2))] if smollm2 else []
    plan += [("minilm", "", str(minilm))] if minilm else []
    plan += [("manifest", name, str(path)) for name, path in (then or {}).items()]
    subprocess.run(
        [sys.executable, "-c", _WRITE_STORE, json.dumps(plan)],
        env={**clean_environ(), **env},
        check=True,
    )
    return env


@dataclass
class Store:
    """A model store populated once per session (tiny model, real smollm2 and all-minilm)."""

    root: Path
    env: dict[str, str]


@dataclass
class RunningServer:
    """A real ``mlx-ollama-bridge serve`` process (gunicorn) on a free loopback port."""

    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        """What the server printed so far."""
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    """A TCP port that is free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    env: dict[str, str],
    log_path: Path,
    *extra_args: str,
    prefix: tuple[str, ...] = (),
    preexec: Callable[[], None] | None = None,
) -> RunningServer:
    """Start the bridge under gunicorn and wait until it answers ``GET /``.

    ``prefix`` runs it under another command (``unshare …``); ``preexec`` runs in the child
    before the server starts (``setrlimit``)."""
    port = free_port()
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [*prefix, sys.executable, "-m", "mlx_ollama_bridge", "serve"]
        + ["--host", f"127.0.0.1:{port}", *extra_args],
        env={**clean_environ(), **env},
        stdout=log_file,
        stderr=subprocess.STDOUT,
        preexec_fn=preexec,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log_path.read_text()}")
        try:
            return requests.get(url, timeout=5).status_code == 200
        except requests.RequestException:  # not listening yet, or the worker still booting
            return False

    if wait_until(answers, timeout=60, poll=0.05):  # a refused connect costs nothing
        return RunningServer(url, process, log_path)
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


def own_server(root: Path, models: dict[str, Path], **settings: str) -> RunningServer:
    """A real server over a fresh store; ``settings`` are extra environment variables.

    The session ``server`` fixture is shared; tests that delete models, send signals or
    change settings (body cap, rate limit) start their own.
    """
    env = {**make_store(root, models), **settings}
    return start_server(env, root / "server.log")


# -- the package's imports (layering tests) --------------------------------------------------


def package_files(sub: str = "") -> list[Path]:
    """The package's Python files (under ``sub``)."""
    return sorted((PACKAGE / sub).rglob("*.py"))


def imports_of(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports resolved)."""
    module_parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if module_parts[-1] == "__init__":
        module_parts.pop()
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module_parts[: len(module_parts) - node.level + (path.name == "__init__.py")]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
    return found


def uses(path: Path, *roots: str) -> bool:
    """Whether ``path`` imports any of the modules ``roots`` or their submodules."""
    return any(name == r or name.startswith(r + ".") for name in imports_of(path) for r in roots)


# -- in process: an engine, an app over a stub engine ----------------------------------------
# (imports inside the functions: the server tests never load MLX into the test process)

GREEDY = {"temperature": 0, "num_predict": 12, "repeat_penalty": 1.0}


def import_copy(home: Path, model_dir: Path, name: str) -> Any:
    """A copy of ``model_dir`` imported as ``name`` into the store the environment names."""
    from mlx_ollama_bridge.config import Settings
    from mlx_ollama_bridge.registry import Registry
    from mlx_ollama_bridge.store.importer import import_model_dir

    source = home / f"src-{name}"
    shutil.copytree(model_dir, source)
    return import_model_dir(Registry(Settings.from_env()), source, name, source="test")


def running_engine(**overrides: Any) -> Iterator[Any]:
    """A started engine with these settings overridden; stopped afterwards."""
    from mlx_ollama_bridge.config import Settings
    from mlx_ollama_bridge.engine import Engine

    engine = Engine(Settings.from_env().with_overrides(**overrides))
    engine.start()
    yield engine
    engine.stop()


def engine_fixture(**overrides: Any) -> Any:
    """A pytest fixture (assign it to a name in a test module): a started engine with these
    settings overridden, stopped after the test."""
    import pytest

    @pytest.fixture
    def engine() -> Iterator[Any]:
        yield from running_engine(**overrides)

    return engine


def chat_turn(
    engine: Any,
    model: Any,
    messages: list[dict[str, Any]],
    options: dict[str, Any],
    timeout: float = 120,
) -> tuple[str, Any]:
    """Run one chat turn to the end: (text, Finished); a failure is raised."""
    from mlx_ollama_bridge.engine import GenerationRequest, merge_options
    from mlx_ollama_bridge.engine.requests import Failed, Finished, TextChunk

    opts = merge_options(model.parameters, options, default_num_ctx=4096)
    job, _ready = engine.submit(GenerationRequest(model=model, options=opts, messages=messages))
    text = []
    while True:
        event = job.replies.get(timeout=timeout)
        if isinstance(event, TextChunk):
            text.append(event.text)
        elif isinstance(event, Failed):
            raise event.error
        elif isinstance(event, Finished):
            return "".join(text), event


def chat(engine: Any, model: Any, messages: list[dict[str, Any]], **options: Any):
    """One greedy chat turn (``GREEDY`` with ``options`` over it) to the end: (text, Finished)."""
    return chat_turn(engine, model, messages, {**GREEDY, **options}, timeout=60)


class StubEngine:
    """The engine's read-only side (``engine.Engine``) for middleware tests: nothing here
    generates."""

    def __init__(self, alive: bool = True, running: list | None = None) -> None:
        from mlx_ollama_bridge.engine.arrivals import Arrivals

        self.alive = alive
        self.models = running or []
        self.arrivals = Arrivals()  # generation requests announced (``Engine.arrival``)
        self.announced = 0

    def is_alive(self) -> bool:
        return self.alive

    def running(self) -> list:
        return list(self.models)

    def start(self) -> None:
        self.alive = True

    def queue_depth(self) -> int:
        return 0

    def stats(self) -> dict[str, int]:
        return {}

    def ping(self, timeout: float) -> float | None:
        return 0.001 if self.alive else None

    def arrival(self) -> Any:
        self.announced += 1
        return self.arrivals.begin()

    def group_status(self) -> dict | None:
        return None  # one machine, as ``Engine.group_status`` there


def make_app(monkeypatch: Any, engine: StubEngine | None = None, **env: str) -> Any:
    """The real app (security, observability, ops routes: all of ``create_app``) over a stub
    engine, with ``env`` set as environment variables first."""
    from mlx_ollama_bridge.config import Settings
    from mlx_ollama_bridge.server import create_app

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return create_app(Settings.from_env(), engine=engine or StubEngine())


def upload_blobs(url: str, directory: Path) -> dict[str, str]:
    """POST each file of ``directory`` to /api/blobs; the ``files``/``adapters`` mapping."""
    files = {}
    for path in sorted(directory.iterdir()):
        data = path.read_bytes()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        answer = requests.post(f"{url}/api/blobs/{digest}", data=data, timeout=60)
        assert answer.status_code in (200, 201), answer.text
        files[path.name] = digest
    return files
