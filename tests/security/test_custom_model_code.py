"""mlx-lm CVE-2026-5843 and Transformers' remote code: a model whose config names Python to
import is refused at create, import, pull and load, with a 400, and its code never runs.

Each hostile directory is the tiny model plus a config naming ``evil.py``, which would write
a marker file if it were ever imported.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from fake_hub import FakeHub
from helpers import StubEngine

from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.errors import ModelNotFound
from mlx_ollama_bridge.model_code import CustomCodeRefused, code_references
from mlx_ollama_bridge.registry import Registry
from mlx_ollama_bridge.server import create_app
from mlx_ollama_bridge.store.importer import import_model_dir
from mlx_ollama_bridge.store.manifests import write_manifest
from mlx_ollama_bridge.store.pull import pull_events

EVIL = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\n"

# (file, patch): every way a config can ask for code.
HOSTILE = [
    ("config.json", {"model_file": "evil.py"}),
    ("config.json", {"model_type": "evil_arch", "auto_map": {"AutoModel": "evil.EvilModel"}}),
    ("config.json", {"trust_remote_code": True}),
    ("tokenizer_config.json", {"auto_map": {"AutoTokenizer": ["evil.EvilTokenizer", None]}}),
    ("config.json", {"text_config": {"auto_map": {"AutoConfig": "evil.EvilConfig"}}}),
]
IDS = ["model_file", "auto_map", "trust_remote_code", "tokenizer-auto_map", "nested-auto_map"]


def hostile_dir(base: Path, tiny: Path, file: str, patch: dict) -> tuple[Path, Path]:
    """A copy of the tiny model whose ``file`` gets ``patch``; (directory, marker path)."""
    target = base / "hostile"
    shutil.copytree(tiny, target)
    marker = base / "evil-ran"
    (target / "evil.py").write_text(EVIL.format(marker=str(marker)))
    config = json.loads((target / file).read_text())
    config.update(patch)
    (target / file).write_text(json.dumps(config))
    return target, marker


@pytest.fixture
def registry(isolated_home: Path) -> Registry:
    return Registry(Settings.from_env())


def store_is_empty(registry: Registry) -> bool:
    weights = registry.weights_root
    listed = [m.name.display for m in registry.list_models()]
    return not listed and (not weights.exists() or not any(weights.iterdir()))


def test_code_references_finds_truthy_keys_only():
    assert code_references({"model_file": None, "trust_remote_code": False}) == []
    assert code_references({"a": [{"model_file": "x.py"}]}) == ['model_file: "x.py"']


@pytest.mark.parametrize(("file", "patch"), HOSTILE, ids=IDS)
def test_import_of_a_local_dir_is_refused(registry, tiny_model_dir, tmp_path, file, patch):
    source, marker = hostile_dir(tmp_path, tiny_model_dir, file, patch)
    with pytest.raises(CustomCodeRefused) as refused:
        import_model_dir(registry, source, "evil:latest", source="test")
    assert refused.value.status_code == 400
    assert any(key in refused.value.message for key in ("model_file", "auto_map", "trust"))
    assert "CVE-2026-5843" in refused.value.message
    assert store_is_empty(registry)
    assert not marker.exists()


def test_an_auto_map_repeating_an_architecture_mlx_lm_implements_is_accepted(
    registry, tiny_model_dir, tmp_path
):
    """MLX conversions of Phi-3 or DeepSeek-V3 keep the original repo's auto_map; mlx-lm
    builds them from its own code and never reads it, so they import and load."""
    from mlx_ollama_bridge.engine.backend import MLXBackend

    patch = {"auto_map": {"AutoModelForCausalLM": "evil.EvilModel"}}  # model_type: llama
    source, marker = hostile_dir(tmp_path, tiny_model_dir, "config.json", patch)
    model = import_model_dir(registry, source, "native:latest", source="test")
    loaded = MLXBackend.from_settings(Settings.from_env()).load(model.path)
    assert loaded.size_bytes > 0
    assert not marker.exists()


def test_create_from_uploaded_files_is_a_400(registry, tiny_model_dir, tmp_path):
    source, marker = hostile_dir(tmp_path, tiny_model_dir, *HOSTILE[0])
    client = create_app(Settings.from_env(), engine=StubEngine()).test_client()
    files = {}
    for path in sorted(p for p in source.iterdir() if p.is_file()):
        data = path.read_bytes()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        assert client.post(f"/api/blobs/{digest}", data=data).status_code == 201
        files[path.name] = digest
    reply = client.post("/api/create", json={"model": "evil", "files": files, "stream": False})
    assert reply.status_code == 400
    message = reply.get_json()["error"]
    assert "model_file" in message and "evil.py" in message
    assert str(tmp_path) not in reply.get_data(as_text=True)
    assert store_is_empty(registry)
    assert not marker.exists()


def test_create_from_a_hand_placed_base_is_a_400(registry, tiny_model_dir, tmp_path):
    """A model put into the store before the check existed cannot be built upon."""
    source, _ = hostile_dir(tmp_path, tiny_model_dir, *HOSTILE[1])
    from fake_models import manifest_for

    write_manifest(registry, "old-evil:latest", manifest_for(source))
    client = create_app(Settings.from_env(), engine=StubEngine()).test_client()
    body = {"model": "derived", "from": "old-evil", "system": "hi", "stream": False}
    reply = client.post("/api/create", json=body)
    assert reply.status_code == 400
    assert "auto_map" in reply.get_json()["error"]
    with pytest.raises(ModelNotFound):
        registry.resolve("derived")


def test_loading_a_hand_placed_model_is_refused_before_mlx_lm_sees_it(tiny_model_dir, tmp_path):
    from mlx_ollama_bridge.engine.backend import MLXBackend

    source, marker = hostile_dir(tmp_path, tiny_model_dir, *HOSTILE[0])
    backend = MLXBackend.from_settings(Settings.from_env())
    with pytest.raises(CustomCodeRefused):
        backend.load(source)
    assert not marker.exists()


def test_mlx_lm_itself_refuses_model_file(tiny_model_dir, tmp_path):
    """The pinned mlx-lm (>= 0.32.2) refuses on its own: the second line of defence."""
    from mlx_lm.utils import load_model

    source, marker = hostile_dir(tmp_path, tiny_model_dir, *HOSTILE[0])
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_model(source)
    assert not marker.exists()


def test_pull_is_refused_before_weights_and_code_are_downloaded(
    registry, tiny_model_dir, tmp_path, monkeypatch
):
    from huggingface_hub import constants

    source, marker = hostile_dir(tmp_path, tiny_model_dir, *HOSTILE[0])
    hub = FakeHub().start()
    try:
        hub.add_repo("evil-org/evil", source)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        events = list(pull_events(registry, "hf.co/evil-org/evil"))
    finally:
        hub.stop()
    last = events[-1]
    assert "model_file" in last["error"] and getattr(last, "status", None) == 400
    fetched = [e["path"] for e in hub.log if e["method"] == "GET"]
    assert not any(p.endswith((".safetensors", ".py")) for p in fetched)
    assert not [m for m in registry.list_models()]
    assert not marker.exists()


def test_cli_import_of_a_local_dir_is_refused(isolated_home, tiny_model_dir, tmp_path):
    from click.testing import CliRunner

    from mlx_ollama_bridge.cli import main

    source, marker = hostile_dir(tmp_path, tiny_model_dir, *HOSTILE[0])
    result = CliRunner().invoke(main, ["import", str(source), "--name", "evil"])
    assert result.exit_code == 1
    assert "model_file" in result.output and "CVE-2026-5843" in result.output
    assert store_is_empty(Registry(Settings.from_env()))
    assert not marker.exists()
