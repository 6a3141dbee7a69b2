"""Structured output (``format`` / ``response_format``) is enforced while decoding.

The acceptance test is the tiny RANDOM model: whatever it would say, the token mask keeps it
inside the schema and the closing logic finishes the document within ``num_predict``.
"""

from __future__ import annotations

import json

import jsonschema
import ollama
import openai
import pydantic
import pytest
import requests

from mlx_ollama_bridge.engine.json_grammar import format_key, grammar_for_format
from mlx_ollama_bridge.errors import BadRequest

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "color": {"enum": ["red", "green", "blue"]},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age", "color", "tags"],
}
NESTED = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "owner": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "admin": {"type": "boolean"}},
            "required": ["name", "admin"],
        },
        "scores": {"type": "array", "items": {"type": "number"}, "minItems": 1},
    },
    "required": ["id", "owner", "scores"],
}
STRICT = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "level": {"enum": ["low", "high"]}},
    "required": ["ok", "level"],
    "additionalProperties": False,
}


def generate(server, body: dict) -> requests.Response:
    return requests.post(server.url + "/api/generate", json=body, timeout=120)


def sampled(seed: int, num_predict: int = 96) -> dict:
    return {"temperature": 1.0, "seed": seed, "num_predict": num_predict}


# -- unit ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [None, ""])
def test_no_format_means_unconstrained(fmt):
    assert format_key(fmt) is None and grammar_for_format(fmt) is None


@pytest.mark.parametrize("fmt", ["xml", 3, ["json"], True])
def test_other_formats_are_invalid(fmt):
    with pytest.raises(BadRequest, match=r'^invalid format: .*; expected "json" or a valid JSON'):
        format_key(fmt)


@pytest.mark.parametrize(
    "schema, part",
    [
        ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, '"not"'),
        ({"type": "object", "properties": {"a": {"type": "strin"}}}, "strin"),
        ({"type": "string", "format": "bogus"}, "bogus"),
    ],
)
def test_uncompilable_schemas_are_refused_naming_the_part(schema, part):
    with pytest.raises(BadRequest, match="unsupported JSON schema in format") as raised:
        grammar_for_format(schema)
    assert part in str(raised.value)


def test_compiled_grammars_are_cached():
    assert grammar_for_format(PERSON) is grammar_for_format(json.loads(json.dumps(PERSON)))


# -- real server, tiny random model -------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_schema_output_validates_on_the_random_model_every_seed(server, seed):
    body = {"model": "tiny", "prompt": "A person:", "format": PERSON, "stream": False}
    reply = generate(server, {**body, "options": sampled(seed)})
    assert reply.status_code == 200, reply.text
    jsonschema.validate(json.loads(reply.json()["response"]), PERSON)


@pytest.mark.parametrize("schema", [NESTED, STRICT])
@pytest.mark.parametrize("seed", range(3))
def test_nested_and_closed_schemas_validate(server, schema, seed):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "go"}], "format": schema}
    reply = requests.post(
        server.url + "/api/chat",
        json={**body, "stream": False, "options": sampled(seed, 128)},
        timeout=120,
    )
    assert reply.status_code == 200, reply.text
    jsonschema.validate(json.loads(reply.json()["message"]["content"]), schema)


@pytest.mark.parametrize("seed", range(3))
def test_format_json_is_an_object_also_streamed(server, seed):
    body = {"model": "tiny", "prompt": "json", "format": "json", "options": sampled(seed, 64)}
    reply = generate(server, body)
    lines = [json.loads(line) for line in reply.iter_lines() if line]
    assert lines[-1]["done"] is True
    assert isinstance(json.loads("".join(line["response"] for line in lines)), dict)


def test_a_short_budget_still_closes_the_document(server):
    body = {"model": "tiny", "prompt": "x", "format": PERSON, "stream": False}
    reply = generate(server, {**body, "options": sampled(7, 40)}).json()
    jsonschema.validate(json.loads(reply["response"]), PERSON)


@pytest.mark.parametrize(
    "fmt, status, message",
    [
        ("yaml", 400, 'invalid format: "yaml"; expected "json" or a valid JSON Schema'),
        ({"type": "object", "properties": {"a": {"not": {}}}}, 400, "unimplemented"),
    ],
)
def test_bad_formats_are_refused_before_generating(server, fmt, status, message):
    reply = generate(server, {"model": "tiny", "prompt": "x", "format": fmt})
    assert reply.status_code == status
    assert message.lower() in reply.json()["error"].lower()


def test_thinking_model_thinks_freely_then_answers_in_the_schema(server):
    body = {
        "model": "tiny-think",
        "messages": [{"role": "user", "content": "go"}],
        "format": STRICT,
        "think": True,
        "stream": False,
        "options": sampled(1, 160),
    }
    reply = requests.post(server.url + "/api/chat", json=body, timeout=120).json()
    jsonschema.validate(json.loads(reply["message"]["content"]), STRICT)


# -- clients ------------------------------------------------------------------------------


class Weather(pydantic.BaseModel):
    city: str
    degrees: int
    sky: str = pydantic.Field(json_schema_extra={"enum": ["sunny", "rainy"]})


def test_ollama_client_format_returns_a_valid_model(server):
    client = ollama.Client(host=server.url)
    reply = client.chat(
        model="tiny",
        messages=[{"role": "user", "content": "weather?"}],
        format=Weather.model_json_schema(),
        options=sampled(3),
    )
    Weather.model_validate_json(reply.message.content)


@pytest.mark.parametrize("stream", [False, True])
def test_openai_response_format_json_schema_validates(server, stream):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "weather", "schema": Weather.model_json_schema()},
    }
    kwargs = {"model": "tiny", "messages": [{"role": "user", "content": "weather?"}]}
    kwargs |= {"response_format": response_format, "max_tokens": 96, "seed": 5}
    if stream:
        chunks = client.chat.completions.create(**kwargs, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        text = client.chat.completions.create(**kwargs).choices[0].message.content
    Weather.model_validate_json(text)


def test_openai_json_object_is_an_object(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    reply = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "json"}],
        response_format={"type": "json_object"},
        max_tokens=64,
        seed=2,
    )
    assert isinstance(json.loads(reply.choices[0].message.content), dict)


def test_a_real_model_fills_the_schema(server):
    body = {
        "model": "smollm2:135m",
        "prompt": "Describe Paris weather as JSON.",
        "format": STRICT,
        "stream": False,
        "options": {"temperature": 0, "num_predict": 24},
    }
    reply = generate(server, body).json()
    jsonschema.validate(json.loads(reply["response"]), STRICT)
    assert reply["done_reason"] == "stop"


@pytest.mark.parametrize("method", ["json_schema", "json_mode"])
def test_langchain_with_structured_output(server, method):
    from langchain_ollama import ChatOllama

    llm = ChatOllama(model="tiny", base_url=server.url, num_predict=96, temperature=1.0, seed=4)
    if method == "json_schema":
        result = llm.with_structured_output(Weather, method=method).invoke("weather?")
        assert isinstance(result, Weather)
    else:
        assert isinstance(llm.with_structured_output(None, method=method).invoke("x"), dict)
