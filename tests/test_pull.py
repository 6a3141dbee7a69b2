"""/api/pull against a fake Hugging Face Hub on loopback (HF_ENDPOINT); never the internet."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import ollama
import pytest
import requests
from fake_hub import FakeHub
from fake_models import write_safetensors
from helpers import free_port, isolated_env, start_server, stop_server

from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.manifest import file_sha256
from mlx_ollama_bridge.registry import Registry
from mlx_ollama_bridge.store.hub import repo_folder
from mlx_ollama_bridge.store.pull import pull_events

REPO = "test-org/tiny-mlx"
NAME = f"hf.co/{REPO}"


@pytest.fixture
def hub(tiny_model_dir):
    running = FakeHub().start()
    running.add_repo(REPO, tiny_model_dir)
    yield running
    running.stop()


@pytest.fixture
def online(monkeypatch, hub):
    """This process talks to the fake hub (the suite runs with HF_HUB_OFFLINE=1)."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    return hub


@pytest.fixture
def registry(isolated_home) -> Registry:
    return Registry(Settings.from_env())


def pull(registry: Registry, name: str = NAME) -> list[dict]:
    return list(pull_events(registry, name))


def weights_gets(hub: FakeHub) -> list[dict]:
    return [e for e in hub.log if e["method"] == "GET" and e["path"].endswith(".safetensors")]


# -- in-process: the store logic ----------------------------------------------------------


def test_pull_streams_ollamas_statuses_then_lists_the_model(online, registry, tiny_model_dir):
    lines = pull(registry)
    statuses = [line["status"] for line in lines]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    weights_sha = file_sha256(tiny_model_dir / "model.safetensors")
    layer = [line for line in lines if line.get("digest") == f"sha256:{weights_sha}"]
    assert layer[0]["status"] == f"pulling {weights_sha[:12]}" and "completed" not in layer[0]
    assert (
        layer[-1]["completed"]
        == layer[-1]["total"]
        == (tiny_model_dir / "model.safetensors").stat().st_size
    )
    model = registry.resolve(NAME)
    assert [m.name.display for m in registry.list_models()] == ["hf.co/test-org/tiny-mlx:latest"]
    assert model.path.is_relative_to(registry.hf_cache)  # shared HF cache, not a copy
    assert model.manifest.files["model.safetensors"]["sha256"] == weights_sha
    assert model.details["family"] == "llama"
    before = len(weights_gets(online))
    assert pull(registry)[-1] == {"status": "success"}  # complete: re-checked, not re-fetched
    assert len(weights_gets(online)) == before


def test_an_interrupted_download_resumes_with_a_range_request(online, registry, tiny_model_dir):
    data = (tiny_model_dir / "model.safetensors").read_bytes()
    sha = file_sha256(tiny_model_dir / "model.safetensors")
    partial = repo_folder(registry.hf_cache, REPO) / "blobs" / f"{sha}.incomplete"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(data[:30000])
    lines = pull(registry)
    assert lines[-1] == {"status": "success"}
    assert online.ranges(REPO)[-1] == "bytes=30000-"
    progress = [line for line in lines if line.get("digest") == f"sha256:{sha}"]
    assert progress[1]["completed"] >= 30000  # counted from where it stopped
    assert file_sha256(registry.resolve(NAME).path / "model.safetensors") == sha
    assert not partial.exists()


@pytest.mark.parametrize(
    "knobs,name,expected",
    [
        ({"corrupt": True}, NAME, "failed its sha256 check"),
        ({"announced_size": 10**16}, NAME, "not enough disk space"),
        ({"gated": True}, NAME, "is gated: accept its terms"),
        ({"drop_connections": True}, NAME, "cannot reach"),
        ({}, "hf.co/test-org/missing", "pull model manifest: test-org/missing not found"),
        ({}, f"{NAME}:v9", "pull model manifest: revision 'v9' not found"),
        ({}, "llama9:70b", "no MLX model is known for 'llama9:70b'"),
    ],
)
def test_failed_pulls_explain_the_fix_and_list_nothing(online, registry, knobs, name, expected):
    for key, value in knobs.items():
        setattr(online.repos[REPO], key, value)
    lines = pull(registry, name)
    assert lines[0] == {"status": "pulling manifest"}
    assert expected in lines[-1]["error"]
    assert registry.list_models() == []
    blobs = repo_folder(registry.hf_cache, REPO) / "blobs"
    assert not any(blobs.glob("*.incomplete")) if blobs.exists() else True


def test_gated_repo_pulls_with_a_token(online, registry, monkeypatch):
    online.repos[REPO].gated = True
    assert "HF_TOKEN" in pull(registry)[-1]["error"]
    monkeypatch.setenv("HF_TOKEN", online.token)
    assert pull(registry)[-1] == {"status": "success"}
    assert any(e["auth"] == f"Bearer {online.token}" for e in weights_gets(online))


def test_unreachable_hub_and_non_mlx_repos(online, registry, monkeypatch, tmp_path):
    (tmp_path / "pt").mkdir()
    (tmp_path / "pt" / "config.json").write_text("{}")
    (tmp_path / "pt" / "pytorch_model.bin").write_bytes(b"x" * 10)
    online.add_repo("test-org/pytorch-only", tmp_path / "pt")
    assert "not an MLX model" in pull(registry, "test-org/pytorch-only")[-1]["error"]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    error = pull(registry)[-1]["error"]
    assert error.startswith("cannot reach http://127.0.0.1:") and "check the network" in error


def test_user_aliases_pull_under_their_own_name(online, registry):
    registry.names.user_aliases_path.parent.mkdir(parents=True, exist_ok=True)
    registry.names.user_aliases_path.write_text(f'[aliases]\n"mytiny:v1" = "{REPO}"\n')
    assert pull(registry, "mytiny:v1")[-1] == {"status": "success"}
    assert [m.name.display for m in registry.list_models()] == ["mytiny:v1"]


# -- over HTTP, against a real server --------------------------------------------------------


SLOW_WEIGHTS = 48 << 20  # > huggingface_hub's 10 MiB read chunk: several progress updates


@pytest.fixture(scope="module")
def module_hub(tiny_model_dir, tmp_path_factory):
    running = FakeHub().start()
    running.add_repo(REPO, tiny_model_dir)
    slow = tmp_path_factory.mktemp("slow") / "repo"
    shutil.copytree(tiny_model_dir, slow)
    write_safetensors(slow / "padding.safetensors", {"pad": ("F32", [SLOW_WEIGHTS // 4])})
    running.add_repo("test-org/slow", slow, throttle_s=0.04, chunk=1 << 20)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def pull_server(tmp_path_factory, module_hub):
    root = tmp_path_factory.mktemp("pull")
    env = {k: v for k, v in isolated_env(root).items() if k != "HF_HUB_OFFLINE"}
    env["HF_ENDPOINT"] = module_hub.url
    running = start_server(env, root / "server.log")
    yield running
    stop_server(running)


def test_official_client_pulls_then_lists_and_chats(pull_server):
    client = ollama.Client(host=pull_server.url)
    progress = list(client.pull(NAME, stream=True))
    assert progress[0]["status"] == "pulling manifest"
    assert progress[-1]["status"] == "success"
    assert any(p.get("completed") == p.get("total") and p.get("total") for p in progress)
    assert "hf.co/test-org/tiny-mlx:latest" in [m.model for m in client.list().models]
    reply = client.chat(
        model=NAME, messages=[{"role": "user", "content": "hi"}], options={"num_predict": 3}
    )
    assert reply.done and reply.eval_count == 3
    assert NAME + ":latest" in [m.model for m in client.ps().models]


def test_pull_errors_over_http(pull_server):
    url = pull_server.url + "/api/pull"
    response = requests.post(url, json={"model": "hf.co/test-org/missing"}, timeout=60)
    lines = [json.loads(line) for line in response.iter_lines() if line]
    assert response.status_code == 200 and "not found" in lines[-1]["error"]
    response = requests.post(url, json={"model": "hf.co/test-org/missing", "stream": False})
    assert response.status_code == 500 and "not found" in response.json()["error"]
    response = requests.post(url, json={"model": "bad//name"}, timeout=60)
    assert (response.status_code, response.json()) == (400, {"error": "invalid model name"})
    assert requests.post(url, json={"model": NAME, "stream": False}).json() == {"status": "success"}


def test_pull_interrupted_by_the_client_resumes_next_time(pull_server, module_hub):
    url = pull_server.url + "/api/pull"
    with requests.post(url, json={"model": "test-org/slow"}, stream=True, timeout=60) as response:
        for raw in response.iter_lines():
            line = json.loads(raw) if raw else {}
            if line.get("total", 0) > SLOW_WEIGHTS and line.get("completed", 0) > 0:
                break  # hang up in the middle of the weights
    # the server stops at its next chunk; a new pull waits for that (per-blob lock)
    names = [m["name"] for m in requests.get(pull_server.url + "/api/tags").json()["models"]]
    assert "test-org/slow:latest" not in names  # no half-written model listed
    response = requests.post(url, json={"model": "test-org/slow"}, timeout=60)
    lines = [json.loads(x) for x in response.iter_lines() if x]
    assert lines[-1] == {"status": "success"}
    resumed = [r for r in module_hub.ranges("test-org/slow") if r]
    assert resumed and int(resumed[-1].removeprefix("bytes=").rstrip("-")) >= 10 << 20


def test_offline_server_says_how_to_pull(server):
    response = requests.post(server.url + "/api/pull", json={"model": NAME}, timeout=60)
    lines = [json.loads(line) for line in response.iter_lines() if line]
    assert "HF_HUB_OFFLINE is set" in lines[-1]["error"]


def test_pulled_model_lives_in_the_hf_cache(pull_server):
    registry = Registry(Settings.from_env(isolated_env(Path(pull_server.log_path).parent)))
    model = registry.resolve(NAME)
    assert "models--test-org--tiny-mlx" in str(model.path)
