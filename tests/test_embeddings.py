"""Embeddings: the MLX BERT encoder against a NumPy reference, and /api/embed over real HTTP."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import ollama
import pytest
import requests

from mlx_ollama_bridge.engine.backend import MLXBackend
from mlx_ollama_bridge.engine.embeddings import Pooling, read_pooling
from mlx_ollama_bridge.errors import BadRequest

MINILM = "all-minilm"
# The sentence-transformers README's example for all-MiniLM-L6-v2, with its printed scores.
README_SENTENCES = [
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium.",
]
README_SCORES = {(0, 1): 0.6660, (0, 2): 0.1046, (1, 2): 0.1411}


# -- a NumPy BERT, written from the paper's equations, as an independent reference ---------------


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header, data = json.loads(raw[8 : 8 + length]), raw[8 + length :]
    kinds = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    out = {}
    for name, spec in header.items():
        if name != "__metadata__":
            start, end = spec["data_offsets"]
            array = np.frombuffer(data[start:end], dtype=kinds[spec["dtype"]])
            out[name] = array.reshape(spec["shape"]).astype(np.float64)
    return out


def numpy_bert(w: dict[str, np.ndarray], ids: list[int], heads: int, layers: int) -> np.ndarray:
    """Last hidden states (length, hidden) in float64."""
    erf = np.vectorize(math.erf)

    def norm(x, p):
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-12) * w[p + ".weight"] + w[p + ".bias"]

    def dense(x, p):
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    length = len(ids)
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:length]
    )
    x = norm(x + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    for i in range(layers):
        p = f"encoder.layer.{i}."
        q, k, v = (
            dense(x, p + "attention.self." + n).reshape(length, heads, -1).transpose(1, 0, 2)
            for n in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attended = (scores / scores.sum(-1, keepdims=True)) @ v
        attended = attended.transpose(1, 0, 2).reshape(length, -1)
        x = norm(
            dense(attended, p + "attention.output.dense") + x, p + "attention.output.LayerNorm"
        )
        h = dense(x, p + "intermediate.dense")
        h = 0.5 * h * (1 + erf(h / math.sqrt(2)))
        x = norm(dense(h, p + "output.dense") + x, p + "output.LayerNorm")
    return x


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def minilm(minilm_dir: Path):
    backend = MLXBackend()
    loaded = backend.load(minilm_dir)
    yield backend, loaded
    backend.unload(loaded)


def test_mlx_encoder_matches_numpy_reference_in_a_padded_batch(minilm, minilm_dir):
    backend, loaded = minilm
    weights = read_safetensors(minilm_dir / "model.safetensors")
    texts = ["cat", "A man is eating a piece of bread.", "Embeddings on MLX, checked by NumPy."]
    batch = [backend.embedding_tokens(loaded, t, 512, truncate=True) for t in texts]
    assert batch[0] == [101, 4937, 102]  # [CLS] cat [SEP] in bert-base-uncased's vocabulary
    vectors = backend.embed(loaded, batch)  # one padded batch: exercises the attention mask
    for ids, vector in zip(batch, vectors, strict=True):
        expected = unit(numpy_bert(weights, ids, heads=12, layers=6).mean(axis=0))
        assert len(vector) == 384
        assert np.abs(np.asarray(vector) - expected).max() < 1e-4
        assert abs(np.linalg.norm(vector) - 1) < 1e-5  # the model's Normalize module


def test_scores_match_the_sentence_transformers_readme(minilm):
    backend, loaded = minilm
    batch = [backend.embedding_tokens(loaded, t, 512, truncate=True) for t in README_SENTENCES]
    vectors = [unit(v) for v in backend.embed(loaded, batch)]
    for (i, j), score in README_SCORES.items():
        assert float(vectors[i] @ vectors[j]) == pytest.approx(score, abs=5e-4)


def test_truncation_keeps_the_closing_token_or_refuses(minilm):
    backend, loaded = minilm
    text = "word " * 400
    ids = backend.embedding_tokens(loaded, text, 4096, truncate=True)
    assert len(ids) == 256  # sentence_bert_config.json max_seq_length, not the 512 positions
    assert ids[0] == 101 and ids[-1] == 102
    assert len(backend.embedding_tokens(loaded, text, 16, truncate=True)) == 16  # num_ctx
    with pytest.raises(BadRequest, match="the input length exceeds the context length"):
        backend.embedding_tokens(loaded, text, 4096, truncate=False)


def test_pooling_is_read_from_sentence_transformers_modules(tmp_path):
    assert read_pooling(tmp_path) == Pooling("mean", False)
    (tmp_path / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
            ]
        )
    )
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    assert read_pooling(tmp_path) == Pooling("cls", True)
    (tmp_path / "1_Pooling" / "config.json").write_text('{"pooling_mode_lasttoken": true}')
    assert read_pooling(tmp_path) == Pooling("last", True)


# -- over HTTP, against the real server -------------------------------------------------------


def post(server, path: str, body) -> requests.Response:
    return requests.post(server.url + path, data=json.dumps(body), timeout=120)


def test_official_client_embeds_and_ranks_similar_words_closer(server):
    client = ollama.Client(host=server.url)
    reply = client.embed(model=MINILM, input=["cat", "kitten", "carburettor"])
    cat, kitten, carburettor = (np.asarray(v) for v in reply["embeddings"])
    for v in (cat, kitten, carburettor):
        assert v.shape == (384,)
        assert abs(np.linalg.norm(v) - 1) < 1e-5
    assert cat @ kitten > cat @ carburettor + 0.3
    assert reply["prompt_eval_count"] == 3 + 3 + 6  # [CLS] … [SEP] per input
    assert reply["total_duration"] >= reply.get("load_duration", 0)


def test_embed_reply_shape_dimensions_and_single_string(server):
    full = post(server, "/api/embed", {"model": MINILM, "input": "hello world"}).json()
    assert full["model"] == MINILM and len(full["embeddings"]) == 1
    short = post(server, "/api/embed", {"model": MINILM, "input": "hello world", "dimensions": 64})
    cut = np.asarray(short.json()["embeddings"][0])
    assert cut.shape == (64,)
    assert np.allclose(cut, unit(full["embeddings"][0][:64]), atol=1e-6)


def test_legacy_embeddings_is_the_models_vector(server):
    legacy = post(server, "/api/embeddings", {"model": MINILM, "prompt": "hello world"}).json()
    current = post(server, "/api/embed", {"model": MINILM, "input": "hello world"}).json()
    assert list(legacy) == ["embedding"]
    assert np.allclose(legacy["embedding"], current["embeddings"][0], atol=1e-6)
    empty = post(server, "/api/embeddings", {"model": MINILM, "prompt": ""})
    assert empty.status_code == 200 and empty.json() == {"embedding": []}


@pytest.mark.parametrize(
    "path,body,status,error",
    [
        ("/api/embed", {"model": MINILM, "input": [1, 2]}, 400, "invalid input type"),
        ("/api/embed", {"model": MINILM, "input": {"a": 1}}, 400, "invalid input type"),
        (
            "/api/embed",
            {"model": "nope:1b", "input": "x"},
            404,
            'model "nope:1b" not found, try pulling it first',
        ),
        (
            "/api/embed",
            {"model": MINILM, "input": "word " * 300, "truncate": False},
            400,
            "the input length exceeds the context length",
        ),
        ("/api/embeddings", {"prompt": "x"}, 400, "model is required"),
        (
            "/api/embeddings",
            {"model": "nope", "prompt": "x"},
            404,
            'model "nope" not found, try pulling it first',
        ),
        (
            "/api/generate",
            {"model": MINILM, "prompt": "hi"},
            400,
            '"all-minilm" does not support generate',
        ),
        (
            "/api/chat",
            {"model": MINILM, "messages": [{"role": "user", "content": "hi"}]},
            400,
            '"all-minilm" does not support chat',
        ),
    ],
)
def test_embedding_errors_use_ollamas_status_and_wording(server, path, body, status, error):
    response = post(server, path, body)
    assert response.status_code == status
    assert response.json() == {"error": error}


def test_empty_input_loads_and_keep_alive_zero_unloads(server):
    loaded = post(server, "/api/embed", {"model": MINILM, "input": [], "keep_alive": "1m"})
    assert loaded.json() == {"model": MINILM, "embeddings": []}
    names = [m["name"] for m in requests.get(server.url + "/api/ps").json()["models"]]
    assert "all-minilm:latest" in names
    post(server, "/api/embed", {"model": MINILM, "input": "bye", "keep_alive": 0})
    names = [m["name"] for m in requests.get(server.url + "/api/ps").json()["models"]]
    assert "all-minilm:latest" not in names


def test_show_reports_an_embedding_model(server):
    body = post(server, "/api/show", {"model": MINILM}).json()
    assert body["capabilities"] == ["embedding"]
    assert body["details"]["family"] == "bert"
    assert body["model_info"]["bert.embedding_length"] == 384
    assert body["model_info"]["bert.pooling_type"] == 1


def test_chat_models_embed_by_mean_pooling_hidden_states(server):
    reply = post(server, "/api/embed", {"model": "tiny", "input": ["one two", "three"]}).json()
    vectors = np.asarray(reply["embeddings"])
    assert vectors.shape[0] == 2 and vectors.shape[1] > 0
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])
