"""The model registry: store manifests, digests, aliases and the Hugging Face cache.

Models here are fake directories (see fake_models): nothing is loaded, and any attempt to
use the network fails the test.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from pathlib import Path

import pytest
from fake_models import THINKING, TOOLS, make_model, manifest_for

from mlx_ollama_bridge import model_details
from mlx_ollama_bridge.aliases import builtin_aliases
from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.errors import InvalidModelName, ModelNotFound
from mlx_ollama_bridge.manifest import Manifest, hash_model_dir, read_manifest_file
from mlx_ollama_bridge.name_order import hf_repo
from mlx_ollama_bridge.names import ModelName
from mlx_ollama_bridge.registry import Registry
from mlx_ollama_bridge.store.manifests import delete_manifest, write_manifest


@pytest.fixture
def registry(isolated_home: Path) -> Registry:
    """A registry over an empty store in tmp_path (conftest points every dir there)."""
    return Registry(Settings.from_env())


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the registry must not use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def add(registry: Registry, name: str, path: Path, **extra) -> None:
    write_manifest(registry, name, manifest_for(path, **extra))


# -- the store ------------------------------------------------------------------------------


def test_empty_store_lists_nothing(registry):
    assert registry.list_models() == []


def test_listing_is_newest_first_with_display_names(registry, tmp_path):
    model = make_model(tmp_path / "m")
    for name in ("alpha", "me/beta:7b", "hf.co/org/gamma:Q4"):
        add(registry, name, model)
    for age, name in enumerate(["hf.co/org/gamma/Q4", "registry.ollama.ai/library/alpha/latest"]):
        stamp = time.time() - 100 * (age + 1)
        os.utime(registry.manifests_root / name, (stamp, stamp))
    names = [m.name.display for m in registry.list_models()]
    assert names == ["me/beta:7b", "hf.co/org/gamma:Q4", "alpha:latest"]


def test_resolve_is_case_insensitive_and_keeps_the_stored_spelling(registry, tmp_path):
    add(registry, "Llama3.2", make_model(tmp_path / "m"))
    for asked in ("llama3.2", "LLAMA3.2:LATEST", "registry.ollama.ai/LIBRARY/llama3.2"):
        assert registry.resolve(asked).name.display == "Llama3.2:latest"
    # writing another spelling reuses the stored one instead of adding a second model
    add(registry, "llama3.2:latest", make_model(tmp_path / "m"))
    assert [m.name.display for m in registry.list_models()] == ["Llama3.2:latest"]


def test_unknown_model_is_404_with_the_name_as_sent(registry):
    with pytest.raises(ModelNotFound) as caught:
        registry.resolve("Nope:1b")
    assert caught.value.status_code == 404
    assert caught.value.message == "model 'Nope:1b' not found"


@pytest.mark.parametrize("name", ["../x", "../../etc/passwd", "/abs", "a\\b", "x/../../y", ".."])
def test_path_like_names_are_rejected_everywhere(registry, tmp_path, name):
    model = make_model(tmp_path / "m")
    for call in (
        lambda: registry.resolve(name),
        lambda: write_manifest(registry, name, manifest_for(model)),
        lambda: delete_manifest(registry, name),
        lambda: registry.names.alias_target(name),
    ):
        with pytest.raises(InvalidModelName):
            call()
    assert not registry.manifests_root.exists()


def test_write_returns_the_model_and_relative_dirs_resolve_under_the_store(registry):
    weights = make_model(registry.weights_root / "slug")
    manifest = manifest_for(weights)
    manifest.model_dir = "weights/slug"
    model = write_manifest(registry, "mine:v1", manifest)
    assert model.path == weights.absolute()
    assert registry.resolve("mine:v1").path == weights.absolute()
    stored = read_manifest_file(registry.manifests_root / "registry.ollama.ai/library/mine/v1")
    assert stored.model_dir == "weights/slug"
    leftovers = [p for p in registry.manifests_root.rglob("*") if p.name.startswith(".")]
    assert leftovers == []  # the atomic write cleaned up after itself


def test_write_refuses_a_missing_model_dir(registry, tmp_path):
    with pytest.raises(FileNotFoundError):
        write_manifest(registry, "y", Manifest(str(tmp_path / "none"), "mlx", "t", {}, 0.0))
    assert registry.list_models() == []


def test_delete_removes_the_manifest_and_empty_dirs(registry, tmp_path):
    model = make_model(tmp_path / "m")
    add(registry, "me/one", model)
    add(registry, "me/two", model)
    delete_manifest(registry, "ME/ONE")
    assert [m.name.display for m in registry.list_models()] == ["me/two:latest"]
    assert not (registry.manifests_root / "registry.ollama.ai/me/one").exists()
    delete_manifest(registry, "me/two")
    assert not (registry.manifests_root / "registry.ollama.ai").exists()
    assert model.is_dir()  # weights are never deleted with a name
    with pytest.raises(ModelNotFound) as caught:
        delete_manifest(registry, "me/two")
    assert caught.value.message == "model 'me/two' not found"


def test_unreadable_manifests_are_skipped_with_a_log_line(registry, tmp_path, caplog):
    add(registry, "good", make_model(tmp_path / "m"))
    broken = registry.manifests_root / "registry.ollama.ai/library/broken/latest"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")
    add(registry, "orphan", make_model(tmp_path / "gone"))
    for item in (tmp_path / "gone").iterdir():
        item.unlink()
    (tmp_path / "gone").rmdir()
    invalid = registry.manifests_root / "registry.ollama.ai/library/bad name/latest"
    invalid.parent.mkdir(parents=True)
    invalid.write_text("{}")
    with caplog.at_level(logging.WARNING):
        assert [m.name.display for m in registry.list_models()] == ["good:latest"]
    assert "broken" in caplog.text and "gone" in caplog.text and "bad name" in caplog.text
    with pytest.raises(ModelNotFound):
        registry.resolve("broken")


# -- manifests and digests ------------------------------------------------------------------


def test_digest_is_stable_and_follows_the_files(registry, tmp_path):
    model = make_model(tmp_path / "m")
    first = manifest_for(model)
    assert manifest_for(model).digest == first.digest
    canonical = json.dumps(first.files, sort_keys=True, separators=(",", ":")).encode()
    assert first.digest == hashlib.sha256(canonical).hexdigest()
    assert first.size == sum(p.stat().st_size for p in model.iterdir())
    assert write_manifest(registry, "m", first).digest == first.digest
    (model / "config.json").write_text((model / "config.json").read_text() + " ")
    assert manifest_for(model).digest != first.digest


def test_manifest_round_trip(tmp_path):
    manifest = manifest_for(
        make_model(tmp_path / "m"),
        system="Be brief.",
        template="{{ messages }}",
        parameters={"stop": ["<|im_end|>"], "temperature": 0.2},
        messages=[{"role": "user", "content": "hi"}],
        parent_model="base:latest",
    )
    assert Manifest.from_json(manifest.to_json()) == manifest
    data = json.loads(manifest.to_json())
    data["future_field"] = 1
    assert Manifest.from_json(json.dumps(data)) == manifest
    for bad in ("[]", '{"model_dir": 1}', json.dumps({**data, "files": {"a": {"size": "1"}}})):
        with pytest.raises(ValueError):
            Manifest.from_json(bad)


def test_hash_model_dir_walks_subdirectories_and_skips_hidden_files(tmp_path):
    model = make_model(tmp_path / "m")
    (model / "1_Pooling").mkdir()
    (model / "1_Pooling" / "config.json").write_text("{}")
    (model / ".gitattributes").write_text("x")
    files = hash_model_dir(model)
    assert "1_Pooling/config.json" in files and ".gitattributes" not in files
    expected = hashlib.sha256((model / "config.json").read_bytes()).hexdigest()
    assert files["config.json"] == {
        "size": (model / "config.json").stat().st_size,
        "sha256": expected,
    }


def test_descriptions_are_cached_per_digest(registry, tmp_path, monkeypatch):
    calls = []
    real = model_details.describe_model
    monkeypatch.setattr(
        "mlx_ollama_bridge.registry.describe_model",
        lambda *a, **k: calls.append(1) or real(*a, **k),
    )
    model = make_model(tmp_path / "m")
    add(registry, "m", model)
    registry.resolve("m")
    registry.list_models()
    assert len(calls) == 1
    (model / "config.json").write_text(json.dumps({"model_type": "phi3"}))
    add(registry, "m", model)
    assert registry.resolve("m").details["family"] == "phi3"
    assert len(calls) == 2


def test_local_model_carries_the_manifest_extras(registry, tmp_path):
    add(
        registry,
        "m",
        make_model(tmp_path / "m"),
        system="Be brief.",
        parameters={"temperature": 0.1},
        messages=[{"role": "user", "content": "hi"}],
    )
    model = registry.resolve("m")
    assert (model.system, model.parameters) == ("Be brief.", {"temperature": 0.1})
    assert model.messages == [{"role": "user", "content": "hi"}]
    assert model.modified_at.tzinfo is not None
    assert len(model.digest) == 64 and model.size > 0


# -- the Hugging Face cache -----------------------------------------------------------------


def cache_repo(cache: Path, repo: str, *, commit: str = "a" * 40, weights: bool = True) -> Path:
    """A repo in the HF cache layout: refs/main, blobs named by SHA-256, symlinked snapshot."""
    source = make_model(cache.parent / "src" / repo.replace("/", "_"), bits=4, template=TOOLS)
    if not weights:
        (source / "model.safetensors").unlink()
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    (root / "blobs").mkdir()
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in source.iterdir():
        blob = hashlib.sha256(file.read_bytes()).hexdigest()
        (root / "blobs" / blob).write_bytes(file.read_bytes())
        (snapshot / file.name).symlink_to(Path("../../blobs") / blob)
    return snapshot


@pytest.fixture
def hf_cache(isolated_home: Path) -> Path:
    return Path(os.environ["HF_HUB_CACHE"])


def test_builtin_alias_resolves_from_the_hf_cache(registry, hf_cache):
    snapshot = cache_repo(hf_cache, "mlx-community/Qwen3-8B-4bit")
    for asked in ("qwen3", "qwen3:8b", "Qwen3:latest", "registry.ollama.ai/library/qwen3:8b"):
        model = registry.resolve(asked)
        assert model.path == snapshot.absolute()
        assert model.manifest.format == "mlx"
        assert model.manifest.source == f"hf:mlx-community/Qwen3-8B-4bit@{'a' * 40}"
    assert model.name.display == "qwen3:8b"
    assert model.details["quantization_level"] == "4bit"
    assert model.capabilities == ["completion", "tools"]
    assert model.model_info["general.basename"] == "Qwen3-8B-4bit"
    # files map from the blob names: no hashing of the (possibly huge) weights
    blob = os.readlink(snapshot / "model.safetensors").rsplit("/", 1)[-1]
    assert model.manifest.files["model.safetensors"]["sha256"] == blob
    assert registry.list_models() == []  # the store itself is still empty


def test_hf_names_resolve_from_the_cache_case_insensitively(registry, hf_cache):
    snapshot = cache_repo(hf_cache, "Org/Some-Model")
    for asked in ("hf.co/Org/Some-Model", "huggingface.co/org/some-model:latest", "org/SOME-model"):
        assert registry.resolve(asked).path == snapshot.absolute()
    assert registry.resolve("org/some-model").name.display == "org/some-model:latest"


def test_hf_tag_is_a_revision(registry, hf_cache):
    commit = "b" * 40
    snapshot = cache_repo(hf_cache, "org/model", commit=commit)
    assert registry.resolve(f"org/model:{commit}").path == snapshot.absolute()
    with pytest.raises(ModelNotFound):
        registry.resolve("org/model:other-branch")


def test_incomplete_or_missing_cache_entries_are_not_found(registry, hf_cache):
    cache_repo(hf_cache, "mlx-community/Qwen3-4B-4bit", weights=False)
    for name in ("qwen3:4b", "qwen3:14b", "hf.co/nobody/nothing", "someone/something"):
        with pytest.raises(ModelNotFound) as caught:
            registry.resolve(name)
        assert caught.value.message == f"model '{name}' not found"


def test_store_wins_over_aliases(registry, hf_cache, tmp_path):
    cache_repo(hf_cache, "mlx-community/Qwen3-8B-4bit")
    add(registry, "qwen3:8b", make_model(tmp_path / "mine"))
    assert registry.resolve("qwen3:8b").path == (tmp_path / "mine").absolute()


# -- aliases --------------------------------------------------------------------------------


def write_user_aliases(registry: Registry, text: str) -> None:
    registry.names.user_aliases_path.parent.mkdir(parents=True, exist_ok=True)
    registry.names.user_aliases_path.write_text(text)


def test_user_aliases(registry, hf_cache, tmp_path, caplog):
    snapshot = cache_repo(hf_cache, "mlx-community/Some-Repo-4bit")
    local = make_model(tmp_path / "finetune", template=THINKING)
    write_user_aliases(
        registry,
        "[aliases]\n"
        '"mymodel:latest" = "mlx-community/Some-Repo-4bit"\n'
        f'"mine:v2" = {{ path = "{local}" }}\n'
        '"rel" = { path = "../finetune" }\n'
        '"qwen3:8b" = "mlx-community/Some-Repo-4bit"\n'
        '"bad/../name" = "x/y"\n'
        '"both" = { repo = "a/b", path = "/tmp" }\n'
        '"norepo" = "not-a-repo"\n',
    )
    with caplog.at_level(logging.WARNING):
        assert registry.resolve("MyModel").path == snapshot.absolute()
    assert registry.resolve("mine:v2").path == local.absolute()
    assert registry.resolve("mine:v2").capabilities == ["completion", "tools", "thinking"]
    assert registry.resolve("rel").path.resolve() == local.resolve()
    assert registry.resolve("qwen3:8b").path == snapshot.absolute()  # shadows the built-in
    assert registry.names.alias_target("qwen3:8b") == "mlx-community/Some-Repo-4bit"
    assert registry.names.alias_target("mine:v2") is None
    for skipped in ("bad/../name", "both", "norepo"):
        assert skipped in caplog.text
    aliases = registry.names.aliases()
    assert aliases["mymodel:latest"].origin == "user"
    assert aliases["qwen3:8b"].repo == "mlx-community/Some-Repo-4bit"
    assert aliases["llama3.2:3b"].origin == "builtin"


def test_user_aliases_are_reread_when_the_file_changes(registry, hf_cache):
    cache_repo(hf_cache, "org/one")
    cache_repo(hf_cache, "org/two", commit="c" * 40)
    write_user_aliases(registry, '[aliases]\nx = "org/one"\n')
    assert registry.resolve("x").manifest.source.startswith("hf:org/one@")
    write_user_aliases(registry, '[aliases]\nx = "org/two"\n# longer file\n')
    assert registry.resolve("x").manifest.source.startswith("hf:org/two@")


def test_path_alias_without_config_is_not_found(registry, tmp_path):
    write_user_aliases(registry, f'[aliases]\nx = {{ path = "{tmp_path / "empty"}" }}\n')
    with pytest.raises(ModelNotFound):
        registry.resolve("x")


def test_unreadable_alias_file_is_ignored(registry, caplog):
    write_user_aliases(registry, "[aliases\n")
    with caplog.at_level(logging.WARNING), pytest.raises(ModelNotFound):
        registry.resolve("anything")
    assert "alias file" in caplog.text


@pytest.mark.parametrize(
    ("name", "repo"),
    [
        ("qwen3", "mlx-community/Qwen3-8B-4bit"),
        ("qwen3:30b-a3b", "mlx-community/Qwen3-30B-A3B-4bit"),
        ("llama3.2", "mlx-community/Llama-3.2-3B-Instruct-4bit"),
        ("llama3.2:1b", "mlx-community/Llama-3.2-1B-Instruct-4bit"),
        ("smollm2", "mlx-community/SmolLM2-1.7B-Instruct-4bit"),
        ("gemma3", "mlx-community/gemma-3-4b-it-4bit"),
        ("phi4", "mlx-community/phi-4-4bit"),
        ("qwen2.5-coder", "mlx-community/Qwen2.5-Coder-7B-Instruct-4bit"),
        ("DeepSeek-R1:8B", "mlx-community/DeepSeek-R1-0528-Qwen3-8B-4bit"),
        ("all-minilm", "mlx-community/all-MiniLM-L6-v2-bf16"),
        ("hf.co/mlx-community/Foo-4bit:latest", "mlx-community/Foo-4bit"),
        ("org/repo", "org/repo"),
        ("unknown-model", None),
        ("qwen3:999b", None),
        ("other.host/ns/model", None),
    ],
)
def test_alias_target(registry, name, repo):
    assert registry.names.alias_target(name) == repo


def test_builtin_alias_table_is_consistent():
    aliases, latest = builtin_aliases()
    required = [
        "qwen2.5-coder:7b", "qwen2.5-coder:32b", "qwen3:0.6b", "qwen3:1.7b", "qwen3:4b",
        "qwen3:8b", "qwen3:14b", "qwen3:30b", "qwen3:30b-a3b", "qwen3:32b", "deepseek-r1:8b",
        "phi4:14b", "mistral:7b", "dolphin-llama3:8b", "llama3.2:1b", "llama3.2:3b",
        "gemma3:1b", "gemma3:4b", "gemma3:12b", "gemma3:27b", "smollm2:135m", "smollm2:360m",
        "smollm2:1.7b", "all-minilm:22m",
    ]  # fmt: skip
    keys = {alias.name.display for alias in aliases.values()}
    assert set(required) <= keys
    for alias in aliases.values():
        assert alias.name.is_library
        assert alias.repo and alias.repo.startswith("mlx-community/")
        assert alias.draft is None or ModelName.parse(alias.draft).key in aliases
    for model, tag in latest.items():
        assert ModelName.parse(f"{model}:{tag}").key in aliases
    assert latest["qwen3"] == "8b" and latest["llama3.2"] == "3b" and latest["smollm2"] == "1.7b"


def test_hf_repo_mapping():
    assert hf_repo(ModelName.parse("hf.co/org/repo")) == ("org/repo", "main")
    assert hf_repo(ModelName.parse("org/repo:dev")) == ("org/repo", "dev")
    assert hf_repo(ModelName.parse("qwen3")) is None
    assert hf_repo(ModelName.parse("example.com/org/repo")) is None
