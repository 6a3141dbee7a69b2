"""Importing an existing Ollama store (manifests + blobs) and local MLX directories."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from click.testing import CliRunner

from mlx_ollama_bridge.cli import main
from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.registry import Registry


def _blob(root: Path, data: bytes | None = None, *, link_to: Path | None = None) -> str:
    """Store a blob as Ollama does (named by its sha256) and return its digest string."""
    blobs = root / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    content = link_to.read_bytes() if link_to else data
    digest = hashlib.sha256(content).hexdigest()
    target = blobs / f"sha256-{digest}"
    if link_to:
        target.symlink_to(link_to)
    else:
        target.write_bytes(content)
    return f"sha256:{digest}"


def _manifest(root: Path, name: str, layers: list[tuple[str, str]]) -> None:
    model, tag = name.split(":")
    path = root / "manifests" / "registry.ollama.ai" / "library" / model / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "schemaVersion": 2,
        "config": {"digest": _blob(root, b"{}"), "size": 2},
        "layers": [
            {"mediaType": f"application/vnd.ollama.image.{kind}", "digest": d, "size": 1}
            for kind, d in layers
        ],
    }
    path.write_text(json.dumps(body))


def make_ollama_store(root: Path, gguf: Path) -> None:
    params = json.dumps({"stop": ["<|im_end|>"], "temperature": 0.3}).encode()
    _manifest(
        root,
        "smollm2:135m",
        [
            ("model", _blob(root, link_to=gguf)),
            ("template", _blob(root, b"{{ .Prompt }}")),
            ("params", _blob(root, params)),
            ("system", _blob(root, b"You are terse.")),
        ],
    )
    _manifest(root, "broken:latest", [("model", _blob(root, b"not a gguf file at all"))])
    _manifest(root, "cloudy:latest", [("params", _blob(root, b"{}"))])


def test_import_from_an_ollama_store(tmp_path, smollm2_gguf):
    store = tmp_path / "ollama-models"
    make_ollama_store(store, smollm2_gguf)
    result = CliRunner().invoke(
        main, ["import", "--from-ollama", str(store)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "smollm2:135m: imported (Q4_1)" in lines
    assert any(line.startswith("broken:latest: skipped (") and "GGUF" in line for line in lines)
    assert any(line.startswith("cloudy:latest: skipped (no GGUF or MLX weights") for line in lines)
    model = Registry(Settings.from_env()).resolve("smollm2:135m")
    assert model.system == "You are terse."
    assert model.parameters["temperature"] == 0.3
    assert model.details["family"] == "llama"
    # Ollama's own store is left as it was.
    assert sorted(p.name for p in (store / "manifests/registry.ollama.ai/library").iterdir()) == [
        "broken",
        "cloudy",
        "smollm2",
    ]
    again = CliRunner().invoke(
        main, ["import", "--from-ollama", str(store)], catch_exceptions=False
    )
    assert "smollm2:135m: already in the bridge's store (skipped)" in again.output


def test_ollama_models_env_is_the_default_store(tmp_path, smollm2_gguf, monkeypatch):
    store = tmp_path / "elsewhere"
    make_ollama_store(store, smollm2_gguf)
    monkeypatch.setenv("OLLAMA_MODELS", str(store))
    result = CliRunner().invoke(main, ["import", "--from-ollama"], catch_exceptions=False)
    assert "smollm2:135m: imported (Q4_1)" in result.output


def test_missing_ollama_store_is_one_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["import", "--from-ollama", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "no Ollama model store at" in result.output


def test_import_a_local_mlx_directory(tiny_model_dir):
    result = CliRunner().invoke(
        main, ["import", str(tiny_model_dir), "--name", "mine:v1"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    model = Registry(Settings.from_env()).resolve("mine:v1")
    assert model.details["format"] == "mlx"
    assert (model.path / "config.json").is_file()


def test_import_needs_a_path_and_name():
    result = CliRunner().invoke(main, ["import"])
    assert result.exit_code == 2
    assert "give PATH and --name, or --from-ollama" in result.output
