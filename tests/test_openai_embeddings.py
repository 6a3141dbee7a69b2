"""``POST /v1/embeddings`` with the official openai SDK and raw HTTP (spec §14.4)."""

from __future__ import annotations

import base64

import numpy as np
import openai
import pytest
import requests

TEXTS = ["The sky is blue.", "Paris is in France."]


@pytest.fixture()
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="anything", max_retries=0)


def post(server, body: dict) -> requests.Response:
    return requests.post(server.url + "/v1/embeddings", json=body, timeout=120)


def native(server, texts: list[str]) -> list[list[float]]:
    body = {"model": "all-minilm", "input": texts}
    return requests.post(server.url + "/api/embed", json=body, timeout=120).json()["embeddings"]


def test_sdk_embeddings_match_the_native_route(server, client):
    reply = client.embeddings.create(model="all-minilm", input=TEXTS)  # SDK asks for base64
    assert [d.index for d in reply.data] == [0, 1]
    assert reply.model == "all-minilm" and reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens
    got = np.array([d.embedding for d in reply.data], dtype=np.float32)
    np.testing.assert_allclose(got, np.array(native(server, TEXTS)), atol=1e-6)


def test_float_and_base64_encodings_agree(server):
    floats = post(server, {"model": "all-minilm", "input": "hello", "encoding_format": "float"})
    packed = post(server, {"model": "all-minilm", "input": "hello", "encoding_format": "base64"})
    vector = floats.json()["data"][0]["embedding"]
    raw = base64.b64decode(packed.json()["data"][0]["embedding"])
    assert np.frombuffer(raw, dtype="<f4").tolist() == pytest.approx(vector, abs=1e-7)
    body = floats.json()
    assert body["object"] == "list" and body["data"][0]["object"] == "embedding"
    assert len(vector) == 384


def test_dimensions_shorten_and_renormalise(client):
    reply = client.embeddings.create(model="all-minilm", input="hi", dimensions=8)
    vector = np.array(reply.data[0].embedding)
    assert len(vector) == 8 and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_empty_string_is_embedded(server):
    reply = post(server, {"model": "all-minilm", "input": ""})
    assert reply.status_code == 200 and len(reply.json()["data"]) == 1


@pytest.mark.parametrize(
    "body, status, message, param",
    [
        ({"model": "all-minilm", "input": []}, 400, "invalid input", "input"),
        ({"model": "all-minilm", "input": None}, 400, "invalid input", "input"),
        ({"model": "all-minilm", "input": [[1, 2]]}, 400, "invalid input", "input"),
        (
            {"model": "all-minilm", "input": "x", "encoding_format": "int8"},
            400,
            "Invalid value for 'encoding_format' = int8. Supported values: ['float', 'base64'].",
            "encoding_format",
        ),
        (
            {"model": "nope", "input": "x"},
            404,
            'model "nope" not found, try pulling it first',
            None,
        ),
    ],
)
def test_errors_use_openai_shape(server, body, status, message, param):
    reply = post(server, body)
    assert reply.status_code == status
    error = reply.json()["error"]
    assert error["message"] == message and error["param"] == param
    assert error["type"] == ("invalid_request_error" if status == 400 else "not_found_error")


def test_sdk_raises_not_found(client):
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input="x")
