"""OLLAMA_KV_CACHE_TYPE: quantized KV caches are really used, answers stay, reuse still works."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tiny_model
from helpers import chat, engine_fixture, import_copy
from mlx_lm.models.cache import KVCache, QuantizedKVCache

from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.engine import Engine, merge_options
from mlx_ollama_bridge.engine.backend import MLXBackend
from mlx_ollama_bridge.registry import LocalModel, Registry

GREEDY = {"temperature": 0, "repeat_penalty": 1.0}


def test_setting_accepts_ollamas_values_and_falls_back_to_f16(tmp_path, caplog):
    def kv_type(value: str) -> str:
        return Settings.from_env(
            {"HOME": str(tmp_path), "OLLAMA_KV_CACHE_TYPE": value}
        ).kv_cache_type

    assert Settings.from_env({"HOME": str(tmp_path)}).kv_cache_type == "f16"
    assert kv_type("q8_0") == "q8_0"
    assert kv_type(" Q4_0 ") == "q4_0"
    with caplog.at_level(logging.WARNING, logger="mlx_ollama_bridge.config"):
        assert kv_type("q5_1") == "f16"
    assert "unsupported OLLAMA_KV_CACHE_TYPE='q5_1'" in caplog.text


# -- a real model: smollm2 -----------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2(shared_store) -> Iterator[Any]:
    """smollm2 loaded once: its weights do not depend on the KV cache type (``prepare`` sets
    that, for each type below)."""
    path = Registry(Settings.from_env(shared_store.env)).resolve("smollm2:135m").path
    backend = MLXBackend(4)
    loaded = backend.load(path)
    yield loaded
    backend.unload(loaded)


def _greedy(loaded: Any, kind: str, n: int = 8) -> tuple[str, list[Any]]:
    """``n`` greedy tokens of smollm2 with the KV cache type ``kind``, and its cache."""
    backend = MLXBackend(4, kv_cache_type=kind)
    backend.prepare(loaded, digest="test")
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = backend.encode(loaded, backend.render_chat(loaded, messages), add_special_tokens=False)
    options = merge_options({}, GREEDY, default_num_ctx=4096)
    generation = backend.generate(loaded, prompt, options)
    tokens = [next(generation.tokens) for _ in range(n)]
    cache = list(generation.cache or [])  # the running generation's layers
    generation.tokens.close()
    return loaded.tokenizer.decode(tokens), cache


def test_q8_0_quantizes_the_running_cache_and_answers_as_f16(smollm2):
    plain, plain_cache = _greedy(smollm2, "f16")
    q8, q8_cache = _greedy(smollm2, "q8_0")
    assert all(type(c) is KVCache for c in plain_cache)
    assert q8_cache and all(isinstance(c, QuantizedKVCache) and c.bits == 8 for c in q8_cache)
    assert "Paris" in plain
    # 8-bit keys and values: the same greedy tokens as f16 (checked for 16 tokens by hand)
    assert q8 == plain


def test_q4_0_quantizes_to_4_bits_and_still_answers(smollm2):
    text, cache = _greedy(smollm2, "q4_0", n=4)
    assert cache and all(isinstance(c, QuantizedKVCache) and c.bits == 4 for c in cache)
    assert text.strip()  # coarser: the answer may differ from f16, but it comes


# -- the engine: a tiny model whose head size (32) can be quantized -------------------------


@pytest.fixture(scope="module")
def tiny_kv_dir(tmp_path_factory) -> Path:
    """The tiny random model with 2 heads of 32 (the stock one has heads of 16, which MLX
    cannot quantize in groups)."""
    original = tiny_model._model_config

    def two_heads(*args: Any) -> dict[str, Any]:
        return {**original(*args), "num_attention_heads": 2, "num_key_value_heads": 1}

    tiny_model._model_config = two_heads
    try:
        return tiny_model.build_tiny_model(tmp_path_factory.mktemp("tiny-kv") / "tiny")
    finally:
        tiny_model._model_config = original


@pytest.fixture
def tiny_kv(isolated_home, tiny_kv_dir) -> LocalModel:
    return import_copy(isolated_home, tiny_kv_dir, "tinykv")


q8_cached = engine_fixture(kv_cache_type="q8_0")


q8_uncached = engine_fixture(kv_cache_type="q8_0", prompt_cache_entries=0)


def _conversation(engine: Engine, model: LocalModel) -> list[str]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "Be brief. " * 20}]
    answers = []
    for turn in range(3):
        messages.append({"role": "user", "content": f"Question {turn}?"})
        text, _done = chat(engine, model, messages)
        answers.append(text)
        messages.append({"role": "assistant", "content": text})
    return answers


def test_quantized_caches_are_reused_across_turns_with_the_same_output(
    q8_cached, q8_uncached, tiny_kv
):
    with_reuse = _conversation(q8_cached, tiny_kv)
    without = _conversation(q8_uncached, tiny_kv)
    assert with_reuse == without
    assert all(with_reuse)
    assert q8_cached.stats()["prompt_tokens_reused"] > 0
    (resident,) = q8_cached._scheduler._models.snapshot()  # noqa: SLF001 - white-box: what was kept
    assert resident.handle.kv is not None and resident.handle.kv.bits == 8
    assert not q8_cached.backend.batchable(resident.handle)
    pool = resident.handle.prompt_cache
    cache, rest = pool.fetch(list(range(3)))  # a fresh cache is quantized from token 0
    assert all(isinstance(c, QuantizedKVCache) for c in cache) and rest == [0, 1, 2]


def test_a_model_whose_heads_cannot_be_quantized_falls_back_to_f16(
    isolated_home, tiny_model_dir, caplog
):
    backend = MLXBackend(4, kv_cache_type="q4_0")
    loaded = backend.load(tiny_model_dir)
    with caplog.at_level(logging.WARNING):
        backend.prepare(loaded)
    assert loaded.kv is None and backend.batchable(loaded)
    assert "using f16" in caplog.text
    cache = loaded.prompt_cache.new_cache()
    assert all(type(c) is KVCache for c in cache)
