"""In-process engine helpers for tests: a model imported into the test's store, a running
scheduler, and one chat turn run to the end."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.engine import Engine, GenerationRequest, merge_options
from mlx_ollama_bridge.engine.requests import Failed, Finished, TextChunk
from mlx_ollama_bridge.registry import LocalModel, Registry
from mlx_ollama_bridge.store.importer import import_model_dir


def import_copy(home: Path, model_dir: Path, name: str) -> LocalModel:
    """A copy of ``model_dir`` imported as ``name`` into the store the environment names."""
    source = home / f"src-{name}"
    shutil.copytree(model_dir, source)
    return import_model_dir(Registry(Settings.from_env()), source, name, source="test")


def running_engine(**overrides: Any) -> Iterator[Engine]:
    """A started scheduler with these settings overridden; stopped afterwards."""
    engine = Engine(Settings.from_env().with_overrides(**overrides))
    engine.start()
    yield engine
    engine.stop()


def chat_turn(
    engine: Engine,
    model: LocalModel,
    messages: list[dict[str, Any]],
    options: dict[str, Any],
    timeout: float = 120,
) -> tuple[str, Finished]:
    """Run one chat turn to the end: (text, Finished); a failure is raised."""
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
