"""Pulls from Ollama's registry: the loopback fake (``fake_ollama_registry``), never the
internet. In-process for the store logic; then real gunicorn, the ``ollama`` client and the
CLI for the whole path, ending in a chat with the pulled model."""

from __future__ import annotations

import hashlib
import json
import shutil

import ollama
import pytest
import requests
from click.testing import CliRunner
from fake_ollama_registry import FakeOllamaRegistry
from helpers import in_parallel, isolated_env, start_server, stop_server
from ollama_library import (
    LICENSE,
    PREFIX,
    SMOLLM2_PARAMS,
    SMOLLM2_SYSTEM,
    SMOLLM2_TEMPLATE,
    publish_smollm2,
    publish_smollm2_mlx,
)

from mlx_ollama_bridge.cli import main
from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.engine.ollama_prompt import render_chat_template
from mlx_ollama_bridge.engine.prompts import fim_prompt
from mlx_ollama_bridge.registry import Registry
from mlx_ollama_bridge.store.gguf import convert_gguf
from mlx_ollama_bridge.store.ollama_store import import_ollama_store
from mlx_ollama_bridge.store.pull import pull_events

NAME = "smollm2:135m"


@pytest.fixture(scope="module")
def fake(smollm2_gguf, tmp_path_factory):
    running = FakeOllamaRegistry().start()
    publish_smollm2(running, smollm2_gguf)
    mlx_dir = tmp_path_factory.mktemp("smollm2-mlx") / "model"
    convert_gguf(smollm2_gguf, mlx_dir)
    publish_smollm2_mlx(running, mlx_dir)
    yield running
    running.stop()


@pytest.fixture
def online(monkeypatch, fake):
    """This process pulls from the fake registry (the suite runs offline, registry off)."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("MLX_BRIDGE_OLLAMA_REGISTRY", fake.url)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # Hugging Face: nobody there
    fake.log.clear()
    return fake


def pull(name: str = NAME) -> list[dict]:
    return list(pull_events(Registry(Settings.from_env()), name))


def test_pull_streams_ollamas_lines_and_keeps_the_library_layers(online):
    lines = pull()
    assert lines[0] == {"status": "pulling manifest"}
    assert [x["status"] for x in lines[-3:]] == [
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    layers = [x for x in lines if "digest" in x]
    assert all(x["status"] == f"pulling {x['digest'][7:19]}" for x in layers)
    assert layers[0].keys() == {"status", "digest", "total"}  # completed 0 is left out, as Go
    finished = {x["digest"] for x in layers if x.get("completed") == x["total"]}
    assert len(finished) == 6  # model, template, system, params, license, config
    model = Registry(Settings.from_env()).resolve(NAME)
    assert model.manifest.go_template == SMOLLM2_TEMPLATE
    assert model.form is not None and model.form.go_template == SMOLLM2_TEMPLATE
    assert model.parameters == SMOLLM2_PARAMS and model.system == SMOLLM2_SYSTEM
    assert model.manifest.license == [LICENSE]
    assert model.capabilities == ["completion", "tools"]
    assert model.details["format"] == "gguf" and model.details["family"] == "llama"
    # the digest Ollama lists for a pulled model: its manifest's SHA-256
    raw = online.manifests[("library", "smollm2", "135m")]
    assert model.digest == hashlib.sha256(raw).hexdigest()


def test_the_auth_challenge_is_answered_and_the_token_stays_home(online):
    pull()
    first, token, again = online.log[:3]
    assert first["path"] == "/v2/library/smollm2/manifests/135m"
    assert "Authorization" not in first["headers"]
    assert token["path"] == "/v2/token" and "Authorization" not in token["headers"]
    assert again["headers"]["Authorization"] == "Bearer fake-registry-token"
    assert all(e["headers"].get("Accept-Encoding") == "identity" for e in online.log)


def test_a_second_pull_downloads_nothing(online):
    pull()
    online.log.clear()
    lines = pull()
    assert lines[-1] == {"status": "success"}
    assert [e["path"] for e in online.log if "/blobs/" in e["path"]] == []


def test_an_interrupted_blob_resumes_with_a_range_request(online, isolated_home):
    online.knobs.throttle_s, online.knobs.chunk = 0.002, 1 << 20
    try:
        stream = pull_events(Registry(Settings.from_env()), NAME)
        for line in stream:
            if line.get("completed", 0) > 20 << 20:
                break
        stream.close()  # the client went away: the worker stops at its next chunk
        partials = list((isolated_home / "models" / "blobs").glob("*-partial"))
        assert Registry(Settings.from_env()).stored_manifest(NAME) is None
    finally:
        online.knobs.throttle_s = 0.0
    assert partials
    lines = pull()
    assert lines[-1] == {"status": "success"}
    ranges = [e["headers"].get("Range") for e in online.log if e["path"].startswith("/cdn/")]
    assert any(r and int(r.removeprefix("bytes=").rstrip("-")) > 0 for r in ranges)
    assert not list((isolated_home / "models" / "blobs").glob("sha256-*"))  # imported, removed


def test_mlx_tensor_layers_import_natively(online):
    lines = pull("smollm2:135m-mlx")
    progress = [x for x in lines if "digest" in x]
    assert {x["status"] for x in progress} == {"pulling model"}  # Ollama's MLX pull line
    assert {x["digest"] for x in progress} == {"sha256:model"}
    assert progress[-1]["completed"] == progress[-1]["total"]
    assert [x["status"] for x in lines[-2:]] == ["writing manifest", "success"]
    model = Registry(Settings.from_env()).resolve("smollm2:135m-mlx")
    config = json.loads((model.path / "config.json").read_text())
    assert config["quantization"] == {"group_size": 32, "bits": 4}
    assert model.details["format"] == "mlx" and model.parameters == SMOLLM2_PARAMS
    assert model.capabilities == ["completion", "tools"]


def test_a_local_ollama_store_blob_is_reused(online, isolated_home, smollm2_gguf):
    blobs = isolated_home / "ollama-store" / "blobs"
    blobs.mkdir(parents=True)
    digest = hashlib.sha256(smollm2_gguf.read_bytes()).hexdigest()
    shutil.copy(smollm2_gguf, blobs / f"sha256-{digest}")
    assert pull()[-1] == {"status": "success"}
    fetched = [e["path"] for e in online.log if e["path"].startswith("/cdn/")]
    assert fetched and not any(digest in path for path in fetched)
    assert (blobs / f"sha256-{digest}").is_file()  # Ollama's store is only read


def test_the_documented_name_order(online, isolated_home, monkeypatch):
    # a user alias wins: the registry is not asked
    config = isolated_home / "config"
    config.mkdir(exist_ok=True)
    (config / "models.toml").write_text('[aliases]\n"smollm2:135m" = "test-org/nothing"\n')
    assert "cannot reach" in pull()[-1]["error"]
    assert online.requests("/v2/") == []
    (config / "models.toml").unlink()
    # hf.co names never ask Ollama's registry
    pull("hf.co/test-org/nothing")
    assert online.requests("/v2/") == []
    # not in the registry, no built-in alias: Ollama's own error
    assert pull("no-such-model:1b")[-1] == {"error": "pull model manifest: file does not exist"}
    # offline is offline: nothing is asked
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    online.log.clear()
    assert "HF_HUB_OFFLINE" in pull()[-1]["error"] and online.log == []


def test_not_in_the_registry_falls_back_to_the_built_in_alias(online):
    # qwen3:0.6b has a built-in alias; the fake registry does not have it, so the pull goes
    # on to Hugging Face (nobody listens there in this test: it fails there, after asking)
    lines = pull("qwen3:0.6b")
    assert online.requests("/v2/library/qwen3/manifests/0.6b")
    assert "cannot reach http://127.0.0.1:9" in lines[-1]["error"]


def test_a_model_created_from_a_pulled_one_keeps_its_template_until_given_one(online):
    from mlx_ollama_bridge.store.create import CreateSpec, create_model

    pull()
    registry = Registry(Settings.from_env())
    create_model(registry, CreateSpec(name="terse", base=NAME, system="Be terse."))
    terse = Registry(Settings.from_env()).resolve("terse")
    assert terse.manifest.go_template == SMOLLM2_TEMPLATE and terse.system == "Be terse."
    assert terse.capabilities == ["completion", "tools"]
    assert terse.digest != Registry(Settings.from_env()).resolve(NAME).digest
    jinja = "{% for m in messages %}{{ m.content }}{% endfor %}"
    create_model(registry, CreateSpec(name="jinja", base=NAME, template=jinja))
    model = Registry(Settings.from_env()).resolve("jinja")
    assert model.form is None or model.form.go_template != SMOLLM2_TEMPLATE


def test_two_pulls_of_one_name_at_once_download_once(online):
    results = in_parallel([pull, pull])
    assert [r[-1] for r in results] == [{"status": "success"}] * 2
    weights = json.loads(online.manifests[("library", "smollm2", "135m")])["layers"][0]
    fetched = [e for e in online.log if e["path"] == "/cdn/" + weights["digest"][7:]]
    assert len(fetched) == 1


def test_a_new_version_of_a_name_replaces_its_old_weights(online, smollm2_gguf):
    key = ("library", "smollm2", "135m-mlx")
    pull("smollm2:135m-mlx")
    old = Registry(Settings.from_env()).resolve("smollm2:135m-mlx").path
    original = online.manifests[key]
    try:
        publish_smollm2(online, smollm2_gguf, name="smollm2:135m-mlx")  # a new version
        lines = pull("smollm2:135m-mlx")
        assert [x["status"] for x in lines[-3:]] == [
            "writing manifest",
            "removing unused layers",
            "success",
        ]
    finally:
        online.manifests[key] = original
    new = Registry(Settings.from_env()).resolve("smollm2:135m-mlx")
    assert new.details["format"] == "gguf" and new.path != old and not old.exists()


def write_ollama_store(fake: FakeOllamaRegistry, root, name: str) -> None:
    """An Ollama install that pulled ``name`` from the fake: its manifest and blobs."""
    model, _, tag = name.partition(":")
    raw = fake.manifests[("library", model, tag)]
    path = root / "manifests" / "registry.ollama.ai" / "library" / model / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    data = json.loads(raw)
    (root / "blobs").mkdir(exist_ok=True)
    for layer in [data["config"], *data["layers"]]:
        blob = root / "blobs" / layer["digest"].replace(":", "-")
        blob.write_bytes(fake.blobs[layer["digest"]])


def test_unreachable_registry_pulls_from_a_local_ollama_store(online, isolated_home, monkeypatch):
    write_ollama_store(online, isolated_home / "ollama-store", "smollm2:135m-mlx")
    monkeypatch.setenv("MLX_BRIDGE_OLLAMA_REGISTRY", "http://127.0.0.1:9")  # nobody there
    assert pull("smollm2:135m-mlx")[-1] == {"status": "success"}
    model = Registry(Settings.from_env()).resolve("smollm2:135m-mlx")
    assert model.manifest.go_template == SMOLLM2_TEMPLATE and model.details["format"] == "mlx"


def test_import_from_an_ollama_store_keeps_mlx_models_and_their_layers(online, isolated_home):
    root = isolated_home / "ollama-store"
    write_ollama_store(online, root, "smollm2:135m-mlx")
    lines = list(import_ollama_store(Registry(Settings.from_env()), root))
    assert lines == ["smollm2:135m-mlx: imported (4bit)"]
    model = Registry(Settings.from_env()).resolve("smollm2:135m-mlx")
    assert model.manifest.go_template == SMOLLM2_TEMPLATE and model.manifest.license == [LICENSE]
    assert model.parameters == SMOLLM2_PARAMS and model.system == SMOLLM2_SYSTEM


def test_a_registry_model_the_bridge_cannot_convert_falls_back_to_the_alias(online, isolated_home):
    online.add_model("qwen3:0.6b", [(PREFIX + "model", b"GGUF" + bytes(64), "")], {})
    try:
        lines = pull("qwen3:0.6b")
    finally:
        del online.manifests[("library", "qwen3", "0.6b")]
    assert online.requests("/cdn/")  # downloaded from the registry, then not convertible:
    assert "cannot reach http://127.0.0.1:9" in lines[-1]["error"]  # Hugging Face was asked
    assert not list((isolated_home / "models" / "blobs").glob("sha256-*"))


# -- the whole path: gunicorn, the ollama client, the CLI -----------------------------------


@pytest.fixture(scope="module")
def registry_server(tmp_path_factory, fake):
    root = tmp_path_factory.mktemp("registry-pull")
    env = {k: v for k, v in isolated_env(root).items() if k != "HF_HUB_OFFLINE"}
    env["MLX_BRIDGE_OLLAMA_REGISTRY"] = fake.url
    running = start_server(env, root / "server.log")
    yield running
    stop_server(running)


def test_ollama_client_pulls_with_progress_then_chats_as_the_library_model(registry_server):
    client = ollama.Client(host=registry_server.url)
    progress = list(client.pull(NAME, stream=True))
    assert progress[0].status == "pulling manifest" and progress[-1].status == "success"
    assert any(p.digest and p.completed == p.total for p in progress)
    assert "smollm2:135m" in [m.model for m in client.list().models]
    shown = client.show(NAME)
    raw = requests.post(registry_server.url + "/api/show", json={"model": NAME}).json()
    assert shown.template == SMOLLM2_TEMPLATE and raw["system"] == SMOLLM2_SYSTEM
    assert shown.license == LICENSE and f'LICENSE """{LICENSE}"""' in shown.modelfile
    assert "stop" in (shown.parameters or "") and '"<|im_end|>"' in shown.parameters
    assert list(shown.capabilities or []) == ["completion", "tools"]
    reply = client.chat(
        model=NAME,
        messages=[{"role": "user", "content": "Say hello."}],
        options={"num_predict": 8, "temperature": 0},
    )
    assert reply.done and reply.message.role == "assistant" and reply.eval_count
    assert "<|im_end|>" not in reply.message.content


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city"}},
            "required": ["city"],
        },
    },
}


def test_the_pulled_template_renders_the_prompt_as_ollama_does(registry_server):
    ollama.Client(host=registry_server.url).pull(NAME)
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    body = {"model": NAME, "messages": messages, "tools": [WEATHER], "_debug_render_only": True}
    reply = requests.post(registry_server.url + "/api/chat", json=body, timeout=120).json()
    rendered = reply["_debug_info"]["rendered_template"]
    # the system layer first, then the template's tools branch with Go's JSON of the tools
    expected = render_chat_template(
        SMOLLM2_TEMPLATE, [{"role": "system", "content": SMOLLM2_SYSTEM}, *messages], [WEATHER]
    )
    assert rendered == expected
    assert '<tools>[{"type":"function","function":{"name":"get_weather"' in rendered
    assert rendered.endswith(
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_the_pulled_model_calls_tools_through_its_template(registry_server):
    client = ollama.Client(host=registry_server.url)
    client.pull(NAME)
    history = [
        {"role": "user", "content": "What is the weather in London?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "London"}}}],
        },
    ]
    ask = {"role": "user", "content": "What is the weather in Paris?"}
    reply = client.chat(
        model=NAME,
        messages=[*history, ask],
        tools=[WEATHER],
        options={"temperature": 0, "num_predict": 40},
    )
    calls = reply.message.tool_calls
    assert calls, reply.message.content
    assert calls[0].function.name == "get_weather"
    assert dict(calls[0].function.arguments) == {"city": "Paris"}


def test_a_template_reading_suffix_makes_the_fim_prompt(online):
    template = "{{ if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>"
    template += "{{ else }}{{ .Prompt }}{{ end }}"
    layers = [
        (PREFIX + "model", online.blobs[_gguf_digest(online)], ""),
        (PREFIX + "template", template.encode(), ""),
    ]
    online.add_model("coder:1b", layers, {})
    assert pull("coder:1b")[-1] == {"status": "success"}
    model = Registry(Settings.from_env()).resolve("coder:1b")
    assert model.capabilities == ["completion", "insert"]
    assert fim_prompt(model, "def f(", "return 1") == "<PRE> def f( <SUF>return 1 <MID>"


def _gguf_digest(fake: FakeOllamaRegistry) -> str:
    return json.loads(fake.manifests[("library", "smollm2", "135m")])["layers"][0]["digest"]


def test_cli_pull_draws_progress_from_the_registry(registry_server, monkeypatch):
    result = CliRunner().invoke(
        main, ["--host", registry_server.url, "pull", "smollm2:135m-mlx"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "pulling manifest" and lines[-1] == "success"
    assert any(line.startswith("pulling model: 100%") for line in lines)
    reply = requests.post(
        registry_server.url + "/api/generate",
        json={
            "model": "smollm2:135m-mlx",
            "prompt": "Hi",
            "stream": False,
            "options": {"num_predict": 4},
        },
        timeout=120,
    ).json()
    assert reply["done"] and reply["eval_count"] > 0


def test_pull_over_http_refuses_a_bad_name_before_streaming(registry_server):
    response = requests.post(registry_server.url + "/api/pull", json={"model": "bad//name"})
    assert (response.status_code, response.json()) == (400, {"error": "invalid model name"})
    missing = requests.post(
        registry_server.url + "/api/pull", json={"model": "missing:1b", "stream": False}
    )
    assert missing.status_code == 500 and "file does not exist" in missing.json()["error"]
