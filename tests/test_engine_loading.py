"""Loading: OLLAMA_LOAD_TIMEOUT, models that fail to load are marked bad until fixed."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.engine import Engine, GenerationRequest, merge_options
from mlx_ollama_bridge.engine.backend import MLXBackend
from mlx_ollama_bridge.engine.loader import Loader
from mlx_ollama_bridge.errors import ModelLoadError
from mlx_ollama_bridge.registry import Registry
from mlx_ollama_bridge.store.importer import import_model_dir


def fake_model(path: Path) -> SimpleNamespace:
    return SimpleNamespace(path=path, name=SimpleNamespace(display="broken:latest"))


def test_a_failed_load_is_not_retried_until_the_files_change(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    calls: list[Path] = []

    def load(path: Path):
        calls.append(path)
        raise ValueError("unsupported architecture")

    loader = Loader(load, timeout_s=10)
    model = fake_model(tmp_path)
    with pytest.raises(ModelLoadError, match="failed to load broken:latest: unsupported"):
        loader.load(model)
    with pytest.raises(ModelLoadError, match="not retried until the model's files change"):
        loader.load(model)
    assert len(calls) == 1  # no retry storm
    (tmp_path / "config.json").write_text('{"fixed": true}')
    with pytest.raises(ModelLoadError, match="unsupported"):
        loader.load(model)
    assert len(calls) == 2  # changed files: tried again


def test_a_slow_load_times_out_and_is_not_started_twice(tmp_path):
    release = threading.Event()
    calls: list[Path] = []
    loading: list[threading.Thread] = []

    def load(path: Path):
        calls.append(path)
        loading.append(threading.current_thread())
        release.wait(10)
        return "handle"

    loader = Loader(load, timeout_s=0.2)
    with pytest.raises(ModelLoadError, match=r"timed out .* after 0.2s \(OLLAMA_LOAD_TIMEOUT\)"):
        loader.load(fake_model(tmp_path))  # without the timeout: "handle", 10 s later
    with pytest.raises(ModelLoadError, match="still loading after an earlier timeout"):
        loader.load(fake_model(tmp_path))
    release.set()
    loading[0].join(10)  # the stray load ends
    assert loader.load(fake_model(tmp_path)) == "handle"  # a timeout does not mark it bad
    assert len(calls) == 2


class SlowBackend(MLXBackend):
    """Loads only once released; ``done`` is set when the (stray) load is over."""

    def __init__(self) -> None:
        super().__init__()
        self.release, self.done = threading.Event(), threading.Event()

    def load(self, path: Path):
        self.release.wait(10)
        try:
            return super().load(path)
        finally:
            self.done.set()


def test_a_request_for_a_slow_model_gets_a_clear_error_not_a_hang(isolated_home, tiny_model_dir):
    registry = Registry(Settings.from_env())
    source = isolated_home / "src"
    shutil.copytree(tiny_model_dir, source)
    model = import_model_dir(registry, source, "slow", source="test")
    settings = Settings.from_env().with_overrides(load_timeout_s=0.3)
    backend = SlowBackend()
    engine = Engine(settings, backend=backend)
    engine.start()
    try:
        options = merge_options({}, {"num_predict": 2}, default_num_ctx=256)
        request = GenerationRequest(model=model, options=options, prompt="hi")
        with pytest.raises(ModelLoadError, match="OLLAMA_LOAD_TIMEOUT"):
            engine.submit(request)  # never released: only the timeout ends the wait
    finally:
        backend.release.set()
        backend.done.wait(10)  # never leave MLX work running at interpreter exit
        engine.stop()


def test_a_corrupt_model_fails_fast_with_a_clear_error(isolated_home, tiny_model_dir):
    registry = Registry(Settings.from_env())
    source = isolated_home / "src"
    shutil.copytree(tiny_model_dir, source)
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "model_type": "no_such_arch"}))
    model = import_model_dir(registry, source, "corrupt", source="test")
    engine = Engine(Settings.from_env())
    engine.start()
    try:
        options = merge_options({}, {"num_predict": 2}, default_num_ctx=256)
        for _attempt in range(2):
            request = GenerationRequest(model=model, options=options, prompt="hi")
            with pytest.raises(ModelLoadError) as caught:
                engine.submit(request)
            assert "no_such_arch" in caught.value.message
        assert "not retried" in caught.value.message
    finally:
        engine.stop()


class GatedBackend(MLXBackend):
    """Loads the model at ``gated`` only once released; others load at once."""

    def __init__(self) -> None:
        super().__init__()
        self.gated: Path | None = None
        self.release, self.loading = threading.Event(), threading.Event()

    def load(self, path: Path):
        if path == self.gated:
            self.loading.set()
            self.release.wait(30)
        return super().load(path)


def test_loading_one_model_does_not_stall_another_models_stream(isolated_home, tiny_model_dir):
    registry = Registry(Settings.from_env())
    models = {}
    for name in ("ready", "gated"):
        source = isolated_home / name
        shutil.copytree(tiny_model_dir, source)
        config = json.loads((source / "config.json").read_text())  # distinct files, own dir
        (source / "config.json").write_text(json.dumps({**config, "bridge_test": name}))
        models[name] = import_model_dir(registry, source, name, source="test")
    assert models["ready"].path != models["gated"].path
    backend = GatedBackend()
    backend.gated = models["gated"].path
    engine = Engine(Settings.from_env().with_overrides(max_loaded_models=2), backend=backend)
    engine.start()
    try:
        options = merge_options({}, {"num_predict": 400, "temperature": 0}, default_num_ctx=1024)
        stream, _ready = engine.submit(
            GenerationRequest(model=models["ready"], options=options, prompt="go")
        )
        waiting: dict[str, object] = {}

        def submit_gated() -> None:
            short = merge_options({}, {"num_predict": 2}, default_num_ctx=256)
            job, ready = engine.submit(
                GenerationRequest(model=models["gated"], options=short, prompt="hi")
            )
            waiting["ready"] = ready

        thread = threading.Thread(target=submit_gated)
        thread.start()
        assert backend.loading.wait(10)
        # While "gated" is loading, "ready" keeps streaming.
        got = [stream.replies.get(timeout=10) for _ in range(20)]
        assert len(got) == 20
        assert "ready" not in waiting
        backend.release.set()
        thread.join(30)
        load_ns = waiting["ready"].load_duration_ns  # type: ignore[attr-defined]
        assert load_ns > 0  # it waited for the load and says so
        assert {m.name for m in engine.running()} == {"ready:latest", "gated:latest"}
    finally:
        backend.release.set()
        engine.stop()
