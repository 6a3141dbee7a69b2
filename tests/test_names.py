"""Ollama model names (spec §11): grammar, defaults, display forms, path safety."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlx_ollama_bridge.errors import InvalidModelName
from mlx_ollama_bridge.names import ModelName


@pytest.mark.parametrize(
    ("text", "parts", "display"),
    [
        ("llama3.2", ("registry.ollama.ai", "library", "llama3.2", "latest"), "llama3.2:latest"),
        ("llama3.2:3b", ("registry.ollama.ai", "library", "llama3.2", "3b"), "llama3.2:3b"),
        ("jmorgan/foo:7b", ("registry.ollama.ai", "jmorgan", "foo", "7b"), "jmorgan/foo:7b"),
        ("jmorgan/foo", ("registry.ollama.ai", "jmorgan", "foo", "latest"), "jmorgan/foo:latest"),
        (
            "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
            ("hf.co", "bartowski", "Llama-3.2-1B-Instruct-GGUF", "Q4_K_M"),
            "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
        ),
        (
            "registry.ollama.ai/library/qwen3:8b",
            ("registry.ollama.ai", "library", "qwen3", "8b"),
            "qwen3:8b",
        ),
        (
            "REGISTRY.OLLAMA.AI/Library/qwen3:8b",  # defaults are compared case-insensitively
            ("REGISTRY.OLLAMA.AI", "Library", "qwen3", "8b"),
            "qwen3:8b",
        ),
        (
            "registry.ollama.ai/jmorgan/foo:latest",
            ("registry.ollama.ai", "jmorgan", "foo", "latest"),
            "jmorgan/foo:latest",
        ),
        (
            "https://registry.ollama.ai/library/qwen3",  # the scheme is stripped
            ("registry.ollama.ai", "library", "qwen3", "latest"),
            "qwen3:latest",
        ),
        (
            "localhost:5000/me/model:v1",  # a port in the host, not a tag
            ("localhost:5000", "me", "model", "v1"),
            "localhost:5000/me/model:v1",
        ),
        ("_x/y_:z_", ("registry.ollama.ai", "_x", "y_", "z_"), "_x/y_:z_"),
        ("a..b:c..d", ("registry.ollama.ai", "library", "a..b", "c..d"), "a..b:c..d"),
    ],
)
def test_valid_names(text, parts, display):
    name = ModelName.parse(text)
    assert name.parts == parts
    assert name.display == display


def test_fully_qualified_and_str():
    name = ModelName.parse("llama3.2")
    assert name.fully_qualified == "registry.ollama.ai/library/llama3.2:latest"
    assert str(name) == name.fully_qualified


@pytest.mark.parametrize(
    "text",
    [
        "",
        "foo:",  # a promised tag that is missing
        ":tag",
        "/foo",
        "foo/",
        "a//b",
        "a/b/c/d",  # the extra part folds into the host, which then contains "/"
        "ns.with.dot/model",  # no dots in a namespace
        "-model",
        ".model",
        "model:-tag",
        "model:.tag",
        "model name",
        "mödel",
        "model@sha256:abc",
        "http://foo",
        "host_with space/ns/m",
    ],
)
def test_invalid_names(text):
    with pytest.raises(InvalidModelName) as caught:
        ModelName.parse(text)
    assert caught.value.status_code == 400
    assert caught.value.message == f'invalid model name "{text}"'


@pytest.mark.parametrize(
    "text",
    [
        "..",
        "../x",
        "../../etc/passwd",
        "x/../y",
        "a/./b",
        "/etc/passwd",
        "C:\\models\\x",
        "foo\\bar",
        "..\\x",
        "a\x00b",
        "~/x",
        "~root/x",
    ],
)
def test_path_like_names_are_invalid(text):
    with pytest.raises(InvalidModelName):
        ModelName.parse(text)


def test_part_lengths():
    assert ModelName.parse("m" * 80).model == "m" * 80
    assert ModelName.parse(f"{'h' * 350}/ns/m").host == "h" * 350
    for text in ("m" * 81, f"m:{'t' * 81}", f"{'n' * 81}/m", f"{'h' * 351}/ns/m"):
        with pytest.raises(InvalidModelName):
            ModelName.parse(text)


def test_non_strings_are_invalid():
    with pytest.raises(InvalidModelName):
        ModelName.parse(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidModelName):
        ModelName.parse(42)  # type: ignore[arg-type]


def test_key_is_case_insensitive():
    assert ModelName.parse("Llama3.2").key == ModelName.parse("llama3.2:LATEST").key
    assert ModelName.parse("Llama3.2") != ModelName.parse("llama3.2")  # spelling is kept


def test_hugging_face_names():
    assert ModelName.parse("hf.co/org/repo").is_hf
    assert ModelName.parse("HuggingFace.co/org/repo:Q4").is_hf
    assert not ModelName.parse("org/repo").is_hf
    assert ModelName.parse("qwen3").is_library
    assert not ModelName.parse("org/repo").is_library


def test_from_parts_validates():
    assert ModelName.from_parts("h", "n", "m", "t").display == "h/n/m:t"
    for parts in (
        ("h", "n", "..", "t"),
        ("h", "n.x", "m", "t"),
        ("h", "n", "m", ""),
        ("", "n", "m", "t"),
    ):
        with pytest.raises(InvalidModelName):
            ModelName.from_parts(*parts)


def test_filepath_stays_inside_root(tmp_path: Path):
    name = ModelName.parse("hf.co/org/repo:Q4_K_M")
    path = name.filepath(tmp_path)
    assert path == tmp_path / "hf.co" / "org" / "repo" / "Q4_K_M"
    assert path.resolve().is_relative_to(tmp_path.resolve())


def test_with_tag():
    assert ModelName.parse("qwen3").with_tag("8b").display == "qwen3:8b"
    with pytest.raises(InvalidModelName):
        ModelName.parse("qwen3").with_tag("../x")
