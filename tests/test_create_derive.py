"""``/api/create`` with ``quantize`` and ``adapters``, over HTTP on the real server (gunicorn).

The base is the tiny llama in float16 (Ollama quantizes only F16/BF16/F32 models), uploaded
as blobs as ``ollama create`` does; each created model is then run with ``/api/chat``. The
adapter is made here with mlx-lm's own LoRA classes; the created model must answer
differently from the base and as mlx-lm's own adapter loading does.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import gguf
import mlx.core as mx
import numpy as np
import ollama
import pytest
import requests
from gguf_layouts import LAYOUTS, tiny_source, write_gguf
from helpers import upload_blobs
from lora_helpers import make_adapter
from mlx_lm import load
from tiny_model import build_tiny_model

from mlx_ollama_bridge.store.derive import load_derived

PROMPT = "The quick brown fox"
GREEDY = {"temperature": 0, "num_predict": 8, "seed": 1, "repeat_penalty": 1.0}


@pytest.fixture(scope="module")
def f16_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("f16") / "tiny-f16", seed=3, quantized=False)


@pytest.fixture(scope="module")
def f16_base(server, f16_dir: Path) -> str:
    """``tiny-f16``: the float16 tiny model created from uploaded files."""
    body = {"model": "tiny-f16", "files": upload_blobs(server.url, f16_dir), "stream": False}
    answer = requests.post(f"{server.url}/api/create", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    yield "tiny-f16"
    requests.delete(f"{server.url}/api/delete", json={"model": "tiny-f16"}, timeout=30)


@pytest.fixture(scope="module")
def f32_dir(f16_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model in float32: fused and unfused LoRA then agree to rounding, so greedy
    decoding picks the same tokens."""
    out = tmp_path_factory.mktemp("f32") / "tiny-f32"
    shutil.copytree(f16_dir, out)
    weights = mx.load(str(out / "model.safetensors"))
    f32 = {k: v.astype(mx.float32) for k, v in weights.items()}
    mx.save_safetensors(str(out / "model.safetensors"), f32, {"format": "mlx"})
    return out


@pytest.fixture(scope="module")
def f32_base(server, f32_dir: Path) -> str:
    body = {"model": "tiny-f32", "files": upload_blobs(server.url, f32_dir), "stream": False}
    answer = requests.post(f"{server.url}/api/create", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    yield "tiny-f32"
    requests.delete(f"{server.url}/api/delete", json={"model": "tiny-f32"}, timeout=30)


def create(url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """A streamed create's lines."""
    answer = requests.post(f"{url}/api/create", json=body, stream=True, timeout=300)
    assert answer.status_code == 200, answer.text
    return [json.loads(line) for line in answer.iter_lines() if line]


def generate(url: str, model: str) -> str:
    body = {"model": model, "prompt": PROMPT, "raw": True, "stream": False, "options": GREEDY}
    answer = requests.post(f"{url}/api/generate", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    return answer.json()["response"]


def tags(url: str) -> set[str]:
    return {m["name"] for m in requests.get(f"{url}/api/tags", timeout=30).json()["models"]}


@pytest.mark.parametrize(
    ("quantize", "status", "label", "config"),
    [
        ("q4_K_M", "quantizing F16 model to Q4_K_M", "Q4_K_M", (32, 4, "affine")),
        ("q4_0", "quantizing F16 model to Q4_0", "Q4_0", (32, 4, "affine")),
        ("q8_0", "quantizing F16 model to Q8_0", "Q8_0", (32, 8, "affine")),
        ("int4", "importing tiny-int4 (quantizing to int4)", "4bit", (64, 4, "affine")),
        ("int8", "importing tiny-int8 (quantizing to int8)", "8bit", (64, 8, "affine")),
        ("mxfp4", "importing tiny-mxfp4 (quantizing to mxfp4)", "MXFP4", (32, 4, "mxfp4")),
        ("nvfp4", "importing tiny-nvfp4 (quantizing to nvfp4)", "NVFP4", (16, 4, "nvfp4")),
        ("mxfp8", "importing tiny-mxfp8 (quantizing to mxfp8)", "MXFP8", (32, 8, "mxfp8")),
    ],
)
def test_create_with_quantize_makes_a_model_that_runs(
    server, shared_store, f16_base, quantize, status, label, config
):
    name = f"tiny-{quantize.lower()}"
    lines = create(server.url, {"model": name, "from": f16_base, "quantize": quantize})
    statuses = [line["status"] for line in lines]
    assert statuses[0].startswith("using existing layer sha256:")
    assert status in statuses and statuses[-2:] == ["writing manifest", "success"]
    progress = [line for line in lines if line["status"] == status]
    assert progress[-1]["completed"] == progress[-1]["total"] > 0
    assert progress[-1]["digest"] == "0" * 19  # as Ollama's quantize progress
    show = requests.post(f"{server.url}/api/show", json={"model": name}, timeout=30).json()
    if quantize.startswith("q"):  # GGUF names are MLX affine with GGUF's group size
        assert show["details"]["quantization_level"] in (label, f"{config[1]}bit")
    else:
        assert show["details"]["quantization_level"] == label
    assert generate(server.url, name)  # it runs
    quant = stored_config(shared_store, name)["quantization"]
    assert (quant["group_size"], quant["bits"], quant.get("mode", "affine")) == config
    requests.delete(f"{server.url}/api/delete", json={"model": name}, timeout=30)


def stored_config(store, name: str) -> dict[str, Any]:
    """The created model's config.json, found through its manifest in the store."""
    models = Path(store.env["MLX_BRIDGE_MODELS"])
    (manifest,) = (models / "manifests").glob(f"*/*/{name}/latest")
    model_dir = models / json.loads(manifest.read_text())["model_dir"]
    return json.loads((model_dir / "config.json").read_text())


def test_adapter_changes_the_answer_and_matches_mlx_lm(
    server, f32_base, f32_dir: Path, tmp_path: Path
):
    adapter = make_adapter(f32_dir, tmp_path / "adapter")
    client = ollama.Client(host=server.url)
    digests = {path.name: client.create_blob(path) for path in sorted(adapter.iterdir())}
    lines = list(client.create(model="tiny-lora", from_=f32_base, adapters=digests, stream=True))
    statuses = [line.status for line in lines]
    assert "converting adapter" in statuses and statuses[-1] == "success"
    with_adapter, base = generate(server.url, "tiny-lora"), generate(server.url, f32_base)
    assert with_adapter != base
    # mlx-lm's own adapter loading on the same base gives the same greedy text and logits
    model, tokenizer = load(str(f32_dir), adapter_path=str(adapter))
    ids = mx.array([tokenizer.encode(PROMPT)])
    fused, _ = load_derived(f32_dir, quant=None, adapter_dir=adapter)
    np.testing.assert_allclose(np.array(fused(ids)), np.array(model(ids)), atol=1e-4, rtol=1e-4)
    from mlx_lm import generate as mlx_generate
    from mlx_lm.sample_utils import make_sampler

    text = mlx_generate(model, tokenizer, PROMPT, max_tokens=8, sampler=make_sampler(0.0))
    assert with_adapter == text
    requests.delete(f"{server.url}/api/delete", json={"model": "tiny-lora"}, timeout=30)


def test_peft_adapter_gives_the_same_model_as_mlx_layout(server, f16_base, f16_dir, tmp_path):
    mlx_files = upload_blobs(server.url, make_adapter(f16_dir, tmp_path / "mlx"))
    peft_files = upload_blobs(server.url, make_adapter(f16_dir, tmp_path / "peft", peft=True))
    for name, files in (("lora-mlx", mlx_files), ("lora-peft", peft_files)):
        body = {"model": name, "from": f16_base, "adapters": files, "stream": False}
        answer = requests.post(f"{server.url}/api/create", json=body, timeout=120)
        assert answer.status_code == 200, answer.text
    assert generate(server.url, "lora-mlx") == generate(server.url, "lora-peft")
    for name in ("lora-mlx", "lora-peft"):
        requests.delete(f"{server.url}/api/delete", json={"model": name}, timeout=30)


def test_adapter_with_quantize_runs(server, f16_base, f16_dir, tmp_path):
    files = upload_blobs(server.url, make_adapter(f16_dir, tmp_path / "adapter", seed=5))
    body = {"model": "lora-q8", "from": f16_base, "adapters": files, "quantize": "q8_0"}
    statuses = [line["status"] for line in create(server.url, body)]
    assert "converting adapter" in statuses and "quantizing F16 model to Q8_0" in statuses
    assert generate(server.url, "lora-q8") != generate(server.url, f16_base)
    requests.delete(f"{server.url}/api/delete", json={"model": "lora-q8"}, timeout=30)


# -- bad input: a 400 in Ollama's shape, nothing listed -------------------------------------------


def refused(url: str, body: dict[str, Any]) -> str:
    answer = requests.post(f"{url}/api/create", json=body, timeout=120)
    assert answer.status_code == 400, answer.text
    assert body["model"] not in tags(url) and f"{body['model']}:latest" not in tags(url)
    return answer.json()["error"]


def test_unknown_quantize_type_is_a_400(server, f16_base):
    error = refused(server.url, {"model": "bad-q", "from": f16_base, "quantize": "q3_x"})
    assert error.startswith("unsupported quantization type q3_x - supported types are")
    assert "Q4_K_M" in error and "mxfp4" in error


def test_quantizing_a_quantized_model_is_a_400(server):
    error = refused(server.url, {"model": "bad-qq", "from": "tiny", "quantize": "q8_0"})
    assert error == "quantization is only supported for F16, BF16 and F32 models"


def test_quantizing_a_model_mlx_lm_cannot_run_is_a_400(server):
    error = refused(server.url, {"model": "bad-bert", "from": "all-minilm", "quantize": "int8"})
    assert error.startswith("this model cannot be quantized or given an adapter here")


def test_adapter_for_a_different_base_is_a_400(server, f16_base, tmp_path):
    other = build_tiny_model(tmp_path / "other", quantized=False)
    config = json.loads((other / "config.json").read_text())
    config["hidden_size"], config["intermediate_size"] = 32, 64
    (other / "config.json").write_text(json.dumps(config))
    from lora_helpers import LORA  # an adapter for a model of another width

    wrong = tmp_path / "wrong"
    wrong.mkdir()
    mx.save_safetensors(
        str(wrong / "adapters.safetensors"),
        {
            "model.layers.0.self_attn.q_proj.lora_a": mx.zeros((32, 4)),
            "model.layers.0.self_attn.q_proj.lora_b": mx.zeros((4, 32)),
        },
    )
    lora = {"fine_tune_type": "lora", "num_layers": 2, "lora_parameters": LORA}
    (wrong / "adapter_config.json").write_text(json.dumps(lora))
    body = {"model": "bad-lora", "from": f16_base, "adapters": upload_blobs(server.url, wrong)}
    error = refused(server.url, body)
    assert error.startswith("the adapter does not fit the base model:")
    assert "does not match" in error


def test_malformed_adapter_files_are_a_400(server, f16_base, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapters.safetensors").write_bytes(b"\xff" * 64)
    (bad / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8}))
    body = {"model": "bad-st", "from": f16_base, "adapters": upload_blobs(server.url, bad)}
    assert refused(server.url, body).startswith("malformed adapter safetensors")
    (bad / "adapter_config.json").write_text("{not json")
    body = {"model": "bad-cfg", "from": f16_base, "adapters": upload_blobs(server.url, bad)}
    assert refused(server.url, body).startswith("adapter_config.json is not valid JSON")


def test_modelfile_adapter_path_is_a_400(server, f16_base):
    body = {"model": "bad-mf", "modelfile": f"FROM {f16_base}\nADAPTER ./lora.safetensors"}
    assert "upload the adapter's files" in refused(server.url, body)


def test_ollama_create_from_an_f32_gguf_with_quantize(server, shared_store, tmp_path):
    """``ollama create -q q4_K_M`` with ``FROM ./model.gguf``: the client uploads the GGUF,
    the bridge converts it (here a Qwen3 in llama.cpp's layout), quantizes and names it; the
    converted-but-unquantized weights are not kept."""
    path = write_gguf(tmp_path / "tiny-qwen3.gguf", tiny_source("qwen3"))
    client = ollama.Client(host=server.url)
    digest = client.create_blob(path)
    files = {"tiny-qwen3.gguf": digest}
    lines = list(client.create(model="qwen3-q4", files=files, quantize="q4_K_M", stream=True))
    statuses = [line.status for line in lines]
    assert statuses[0] == "parsing GGUF" and statuses[-1] == "success"
    assert "quantizing F32 model to Q4_K_M" in statuses
    assert client.show("qwen3-q4").details.quantization_level == "Q4_K_M"
    reply = client.chat(
        model="qwen3-q4", messages=[{"role": "user", "content": "the"}], options=GREEDY
    )
    assert reply.done
    weights = Path(shared_store.env["MLX_BRIDGE_MODELS"]) / "weights"
    model_dir = weights.parent / stored_manifest(shared_store, "qwen3-q4")["model_dir"]
    assert model_dir.name.startswith("derived-")
    converted = weights / f"gguf-{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"
    assert not converted.exists()  # the unquantized conversion was an intermediate step
    client.delete("qwen3-q4")


def stored_manifest(store, name: str) -> dict[str, Any]:
    models = Path(store.env["MLX_BRIDGE_MODELS"])
    (manifest,) = (models / "manifests").glob(f"*/*/{name}/latest")
    return json.loads(manifest.read_text())


def test_misfit_adapter_on_a_gguf_leaves_no_converted_weights(server, shared_store, tmp_path):
    """From files, the adapter is checked once the GGUF is converted: the 400 comes as the
    last line, and the conversion is not kept."""
    path = write_gguf(tmp_path / "tiny-qwen2.gguf", tiny_source("qwen2"))
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    mx.save_safetensors(
        str(wrong / "adapters.safetensors"),
        {"model.layers.0.self_attn.nope.lora_a": mx.zeros((64, 4))},
    )
    lora = {"fine_tune_type": "lora", "num_layers": 2, "lora_parameters": {"rank": 4, "scale": 1.0}}
    (wrong / "adapter_config.json").write_text(json.dumps(lora))
    body = {
        "model": "bad-gguf-adapter",
        "files": upload_blobs(server.url, _only(path, tmp_path)),
        "adapters": upload_blobs(server.url, wrong),
        "stream": False,
    }
    answer = requests.post(f"{server.url}/api/create", json=body, timeout=120)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"].startswith("the adapter does not fit the base model:")
    assert "bad-gguf-adapter:latest" not in tags(server.url)
    weights = Path(shared_store.env["MLX_BRIDGE_MODELS"]) / "weights"
    converted = weights / f"gguf-{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"
    assert not converted.exists()


def _only(path: Path, tmp_path: Path) -> Path:
    """A directory holding only ``path`` (``upload`` sends a directory's files)."""
    directory = tmp_path / f"only-{path.stem}"
    directory.mkdir()
    shutil.copy(path, directory / path.name)
    return directory


def test_gguf_adapter_is_a_400(server, f16_base, tmp_path):
    adapter = tmp_path / "lora"
    adapter.mkdir()
    (adapter / "lora.gguf").write_bytes(b"GGUF" + bytes(60))
    adapters = upload_blobs(server.url, adapter)
    body = {"model": "bad-gguf-lora", "from": f16_base, "adapters": adapters}
    assert refused(server.url, body).startswith("GGUF adapters are not supported")


@pytest.mark.parametrize(
    "model_type", ["mistral", "gemma2", "gemma3_text", "phi3", "qwen3_moe", "granite", "olmo2"]
)
def test_each_gguf_family_runs_over_http(server, tmp_path, model_type):
    """``ollama create`` FROM a GGUF of each family (llama.cpp's layout), then generate."""
    path = write_gguf(tmp_path / f"{model_type}.gguf", tiny_source(model_type))
    client = ollama.Client(host=server.url)
    name = f"gguf-{model_type.replace('_', '-')}"
    client.create(model=name, files={path.name: client.create_blob(path)})
    try:
        reply = client.generate(model=name, prompt="the he", raw=True, options=GREEDY)
        assert reply.done and reply.eval_count
        info = client.show(name).modelinfo
        assert info["general.architecture"] == gguf.MODEL_ARCH_NAMES[LAYOUTS[model_type][0]]
    finally:
        client.delete(name)
