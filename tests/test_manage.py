"""/api/copy, /api/delete and /api/create: the store logic in-process, then over real HTTP."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path

import ollama
import pytest
import requests
from helpers import isolated_env, start_server, stop_server

from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.errors import BadRequest, InvalidModelName, ModelNotFound
from mlx_ollama_bridge.manifest import Manifest, hash_model_dir
from mlx_ollama_bridge.registry import Registry
from mlx_ollama_bridge.store.create import CreateSpec, create_model
from mlx_ollama_bridge.store.importer import import_model_dir
from mlx_ollama_bridge.store.manage import copy_model, delete_model
from mlx_ollama_bridge.store.manifests import write_manifest
from mlx_ollama_bridge.store.modelfile import parse_modelfile

# -- the store, in-process ---------------------------------------------------------------------


@pytest.fixture
def registry(isolated_home: Path) -> Registry:
    return Registry(Settings.from_env())


def test_copies_share_weights_until_the_last_name_is_deleted(registry, tiny_model_dir):
    model = import_model_dir(registry, tiny_model_dir, "tiny", source="test")
    weights = model.path
    assert weights.parent == registry.weights_root
    copy_model(registry, "tiny", "alias:v1")
    assert registry.resolve("alias:v1").path == weights
    assert delete_model(registry, "tiny") == []  # alias:v1 still uses the weights
    assert weights.is_dir()
    assert delete_model(registry, "ALIAS:v1") == [weights.resolve()]  # names match any case
    assert not weights.exists()
    assert registry.list_models() == []
    assert not (registry.manifests_root / "registry.ollama.ai").exists()  # empty dirs pruned


def test_delete_never_removes_weights_outside_the_store(registry, tiny_model_dir):
    manifest = Manifest(str(tiny_model_dir), "mlx", "test", hash_model_dir(tiny_model_dir), 0.0)
    write_manifest(registry, "outside", manifest)
    assert delete_model(registry, "outside") == []
    assert (tiny_model_dir / "config.json").is_file()


def test_names_never_escape_the_store_and_missing_ones_are_404(registry, tiny_model_dir):
    import_model_dir(registry, tiny_model_dir, "tiny", source="test")
    for bad in ("../evil", "/etc/passwd", "a/../../b", "x\\y", ".hidden"):
        with pytest.raises(InvalidModelName, match=re.escape(f'destination "{bad}" is invalid')):
            copy_model(registry, "tiny", bad)
        with pytest.raises(InvalidModelName, match=re.escape(f'name "{bad}" is invalid')):
            delete_model(registry, bad)
    with pytest.raises(ModelNotFound, match='model "nope" not found'):
        copy_model(registry, "nope", "other")
    with pytest.raises(ModelNotFound, match="model 'nope' not found"):
        delete_model(registry, "nope")
    assert [m.name.display for m in registry.list_models()] == ["tiny:latest"]


def test_create_merges_parameters_and_replaces_the_rest(registry, tiny_model_dir):
    import_model_dir(registry, tiny_model_dir, "tiny", source="test")
    base = create_model(registry, CreateSpec("base", "tiny", system="one", parameters={"top_k": 5}))
    model, statuses = create_model(
        registry,
        CreateSpec(
            "derived",
            "base",
            parameters={"temperature": 0.0},
            messages=[{"role": "user", "content": "hi"}],
        ),
    )
    assert model.system == "one"  # inherited
    assert model.parameters == {"top_k": 5, "temperature": 0.0}
    assert model.messages == [{"role": "user", "content": "hi"}]
    assert model.details["parent_model"] == "base:latest"
    assert model.path == base[0].path  # weights shared, never copied
    assert statuses[0] == f"using existing layer sha256:{base[0].digest}"
    assert statuses[-2:] == ["writing manifest", "success"]
    assert sum(s.startswith("creating new layer") for s in statuses) == 2


def test_modelfile_text_is_parsed_like_ollamas():
    parsed = parse_modelfile(
        "# a comment\n"
        "from tiny\n"
        "PARAMETER temperature 0\n"
        'PARAMETER stop "<|im_end|>"\n'
        'PARAMETER stop """User:"""\n'
        'SYSTEM """You are\na pirate."""\n'
        'MESSAGE user """Hi\nthere"""\n'
        "MESSAGE assistant Ahoy\n"
    )
    assert parsed.base == "tiny"
    assert parsed.system == "You are\na pirate."
    assert parsed.parameters == {"temperature": ["0"], "stop": ["<|im_end|>", "User:"]}
    assert parsed.messages == [
        {"role": "user", "content": "Hi\nthere"},
        {"role": "assistant", "content": "Ahoy"},
    ]
    for bad, message in [
        ("PARAMETER temperature 0", "no FROM"),
        ("FROM x\nBOGUS 1", "unknown instruction"),
        ('FROM x\nSYSTEM """never closed', "unterminated"),
        ("FROM x\nMESSAGE robot hi", "message role"),
    ]:
        with pytest.raises(BadRequest, match=message):
            parse_modelfile(bad)


# -- over HTTP ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manage_server(tmp_path_factory, tiny_model_dir):
    """A server over its own store (these tests add and remove models)."""
    root = tmp_path_factory.mktemp("manage")
    env = isolated_env(root)
    registry = Registry(Settings.from_env(env))
    import_model_dir(registry, tiny_model_dir, "tiny", source="test")
    running = start_server(env, root / "server.log")
    yield running
    stop_server(running)


def call(server, method: str, path: str, body) -> requests.Response:
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return requests.request(method, server.url + path, data=data, timeout=120)


def tags(server) -> list[str]:
    return [m["name"] for m in requests.get(server.url + "/api/tags").json()["models"]]


def test_copy_and_delete_answer_200_with_an_empty_body(manage_server):
    response = call(manage_server, "POST", "/api/copy", {"source": "tiny", "destination": "t2"})
    assert (response.status_code, response.content) == (200, b"")
    assert "t2:latest" in tags(manage_server)
    response = call(manage_server, "DELETE", "/api/delete", {"model": "t2"})
    assert (response.status_code, response.content) == (200, b"")
    assert "t2:latest" not in tags(manage_server)
    assert "tiny:latest" in tags(manage_server)


COPY, CREATE = ("POST", "/api/copy"), ("POST", "/api/create")


@pytest.mark.parametrize(
    "method,path,body,status,error",
    [
        ("DELETE", "/api/delete", {"model": "t2"}, 404, "model 't2' not found"),
        ("DELETE", "/api/delete", {"model": "../x"}, 400, 'name "../x" is invalid'),
        ("DELETE", "/api/delete", "", 400, "missing request body"),
        (*COPY, {"source": "nope", "destination": "x"}, 404, 'model "nope" not found'),
        (*COPY, {"source": "tiny", "destination": "a//b"}, 400, 'destination "a//b" is invalid'),
        ("POST", "/api/copy", {"source": "", "destination": "x"}, 400, 'source "" is invalid'),
        ("POST", "/api/create", {"model": "x"}, 400, "neither 'from' or 'files' was specified"),
        ("POST", "/api/create", {"model": "bad name", "from": "tiny"}, 400, "invalid model name"),
        (
            "POST",
            "/api/create",
            {"model": "x", "from": "nope"},
            404,
            'model "nope" not found, try pulling it first',
        ),
        (
            "POST",
            "/api/create",
            {"model": "x", "modelfile": "FROM tiny\nPARAMETER wobble 3"},
            400,
            "unknown parameter 'wobble'",
        ),
        (
            "POST",
            "/api/create",
            {"model": "x", "from": "tiny", "parameters": {"temperature": "hot"}},
            400,
            'option "temperature" must be of type float32',
        ),
    ],
)
def test_management_errors(manage_server, method, path, body, status, error):
    response = call(manage_server, method, path, body)
    assert response.status_code == status
    assert response.json() == {"error": error}


def test_go_templates_are_refused_clearly(manage_server):
    body = {"model": "x", "from": "tiny", "template": "{{ .System }} {{ .Prompt }}"}
    response = call(manage_server, "POST", "/api/create", body)
    assert response.status_code == 400
    assert response.json()["error"].startswith("template error: this is a Go template")


def generate(server, model: str, prompt: str = "Hello there", **options) -> dict:
    body = {"model": model, "prompt": prompt, "stream": False, "options": options}
    response = call(server, "POST", "/api/generate", body)
    assert response.status_code == 200, response.text
    return response.json()


def test_created_model_lists_shows_and_changes_behaviour(manage_server):
    body = {
        "model": "pirate",
        "from": "tiny",
        "system": "You are a pirate. Answer in pirate speak, always.",
        "parameters": {"temperature": 0, "num_predict": 3},
    }
    response = call(manage_server, "POST", "/api/create", body)
    lines = [json.loads(line) for line in response.iter_lines() if line]
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    assert lines[-1] == {"status": "success"}
    assert lines[0]["status"].startswith("using existing layer sha256:")
    assert "pirate:latest" in tags(manage_server)
    show = call(manage_server, "POST", "/api/show", {"model": "pirate"}).json()
    assert show["system"] == body["system"]
    assert "num_predict                    3" in show["parameters"]
    assert show["details"]["parent_model"] == "tiny:latest"
    first, second = generate(manage_server, "pirate"), generate(manage_server, "pirate")
    assert first["eval_count"] == 3 and first["done_reason"] == "length"  # num_predict applies
    assert first["response"] == second["response"]  # temperature 0: greedy
    base = generate(manage_server, "tiny", num_predict=3)
    assert first["prompt_eval_count"] > base["prompt_eval_count"] + 5  # the system prompt


def test_create_from_modelfile_text_without_streaming(manage_server):
    body = {
        "model": "mf:v1",
        "modelfile": 'FROM tiny\nPARAMETER num_predict 2\nSYSTEM """Be brief."""',
        "stream": False,
    }
    response = call(manage_server, "POST", "/api/create", body)
    assert response.status_code == 200
    assert response.json() == {"status": "success"}
    assert generate(manage_server, "mf:v1")["eval_count"] == 2


def test_official_client_create_copy_delete(manage_server):
    client = ollama.Client(host=manage_server.url)
    progress = list(client.create(model="viaclient", from_="tiny", system="x", stream=True))
    assert progress[-1]["status"] == "success"
    assert client.copy("viaclient", "viaclient2")["status"] == "success"
    assert {"viaclient:latest", "viaclient2:latest"} <= set(tags(manage_server))
    assert client.delete("viaclient")["status"] == "success"
    assert client.delete("viaclient2")["status"] == "success"
    with pytest.raises(ollama.ResponseError) as caught:
        client.delete("viaclient")
    assert caught.value.status_code == 404


def test_deleted_models_weights_go_but_shared_ones_stay(manage_server, tiny_model_dir, tmp_path):
    own = tmp_path / "own"
    shutil.copytree(tiny_model_dir, own)
    (own / "marker.txt").write_text(str(time.time()))  # different files: its own weights dir
    registry = Registry(Settings.from_env(isolated_env(Path(manage_server.log_path).parent)))
    model = import_model_dir(registry, own, "solo", source="test")
    call(manage_server, "POST", "/api/copy", {"source": "solo", "destination": "solo2"})
    call(manage_server, "DELETE", "/api/delete", {"model": "solo"})
    assert model.path.is_dir()
    call(manage_server, "DELETE", "/api/delete", {"model": "solo2"})
    assert not model.path.exists()
    assert generate(manage_server, "tiny", num_predict=2)["done"]  # shared weights still serve


# -- blobs and create from files ---------------------------------------------------------------


def test_blob_upload_checks_the_digest(manage_server):
    data = b"hello blob"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    url = f"{manage_server.url}/api/blobs/{digest}"
    assert requests.head(url).status_code == 404
    wrong = requests.post(url, data=b"other bytes")
    assert wrong.status_code == 400
    assert wrong.json()["error"].startswith(f'digest mismatch, expected "{digest}", got "sha256:')
    assert requests.post(url, data=data).status_code == 201
    assert requests.post(url, data=data).status_code == 200  # already there
    assert requests.head(url).status_code == 200
    bad = requests.post(f"{manage_server.url}/api/blobs/sha256:xyz", data=data)
    assert (bad.status_code, bad.json()) == (400, {"error": "invalid digest format"})


def test_create_from_an_uploaded_safetensors_directory(manage_server, tiny_model_dir):
    client = ollama.Client(host=manage_server.url)
    files = {p.name: client.create_blob(p) for p in sorted(tiny_model_dir.iterdir()) if p.is_file()}
    progress = list(client.create(model="fromfiles", files=files, system="hi", stream=True))
    assert progress[-1]["status"] == "success"
    show = call(manage_server, "POST", "/api/show", {"model": "fromfiles"}).json()
    assert show["system"] == "hi" and show["details"]["family"] == "llama"
    assert generate(manage_server, "fromfiles", num_predict=2)["eval_count"] == 2
    bad = {"model": "x", "files": {"../config.json": next(iter(files.values()))}}
    response = call(manage_server, "POST", "/api/create", bad)
    assert (response.status_code, response.json()) == (400, {"error": "file path must be relative"})


@pytest.mark.real_model
def test_ollama_create_from_a_gguf_file(manage_server, smollm2_gguf):
    """What `ollama create -f Modelfile` with `FROM ./model.gguf` sends: a blob, then files."""
    client = ollama.Client(host=manage_server.url)
    digest = client.create_blob(smollm2_gguf)  # ~100 MB: above the JSON body limit
    done = client.create(
        model="smol-upload", files={"smol.gguf": digest}, parameters={"num_predict": 4}
    )
    assert done["status"] == "success"
    show = call(manage_server, "POST", "/api/show", {"model": "smol-upload"}).json()
    assert show["details"]["format"] == "gguf" and show["details"]["quantization_level"] == "Q4_1"
    reply = generate(manage_server, "smol-upload")
    assert reply["eval_count"] <= 4 and reply["response"]
