"""Speculative decoding: a user alias names a draft; the output is the model's own, drafts count."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import chat

from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.engine import Engine, GenerationRequest, merge_options
from mlx_ollama_bridge.engine.requests import Finished, TextChunk
from mlx_ollama_bridge.registry import LocalModel, Registry
from mlx_ollama_bridge.store.importer import import_model_dir

SYSTEM = {"role": "system", "content": "Answer briefly. " * 10}


@pytest.fixture
def registry(isolated_home, tiny_model_dir) -> Registry:
    """``tiny`` in the store; user aliases over a copy of the same files: ``fast`` (drafting
    with ``tiny``), ``plain`` (no draft) and ``lost`` (its draft is not here)."""
    registry = Registry(Settings.from_env())
    source = isolated_home / "src"
    shutil.copytree(tiny_model_dir, source)
    import_model_dir(registry, source, "tiny", source="test")
    copy = isolated_home / "copy"
    shutil.copytree(tiny_model_dir, copy)
    config = Path(registry.settings.config_dir)
    config.mkdir(parents=True, exist_ok=True)
    (config / "models.toml").write_text(
        "[aliases]\n"
        f'"fast" = {{ path = {json.dumps(str(copy))}, draft = "tiny" }}\n'
        f'"plain" = {{ path = {json.dumps(str(copy))} }}\n'
        f'"lost" = {{ path = {json.dumps(str(copy))}, draft = "nowhere:1b" }}\n'
    )
    return registry


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = Engine(Settings.from_env())
    engine.start()
    yield engine
    engine.stop()


def test_aliases_resolve_their_draft_only_when_it_is_here(registry):
    fast = registry.resolve("fast")
    assert fast.draft is not None and fast.draft.path == registry.resolve("tiny").path
    assert registry.resolve("plain").draft is None
    assert registry.resolve("lost").draft is None


def _turns(engine: Engine, model: LocalModel, **options) -> list[str]:
    messages = [SYSTEM, {"role": "user", "content": "Count to ten."}]
    first, _ = chat(engine, model, messages, num_predict=24, **options)
    messages += [{"role": "assistant", "content": first}, {"role": "user", "content": "More."}]
    second, _ = chat(engine, model, messages, num_predict=24, **options)
    return [first, second]


def test_greedy_output_is_the_same_with_and_without_the_draft(registry, engine, caplog):
    with caplog.at_level(logging.INFO, logger="mlx_ollama_bridge.engine.backend"):
        drafted = _turns(engine, registry.resolve("fast"))
    stats = engine.stats()
    plain = _turns(engine, registry.resolve("plain"))
    assert drafted == plain and all(drafted)
    # the draft has the model's own weights: it proposes what the model would say
    assert stats["draft_tokens"] > 0
    assert 0 < stats["draft_accepted"] <= stats["draft_tokens"]
    assert stats["draft_accepted"] >= stats["draft_tokens"] // 2
    assert "speculative decoding model=copy generated=24" in caplog.text
    # the second turn reused the first one's caches (model and draft layers together)
    assert stats["prompt_tokens_reused"] > 0
    # the plain name is a separate resident without a draft; it added no draft counts
    assert engine.stats()["draft_tokens"] == stats["draft_tokens"]
    sizes = {r.name: r.size_bytes for r in engine.running()}
    assert sizes["fast:latest"] == 2 * sizes["plain:latest"]  # the draft is counted


def test_penalties_and_sampling_still_apply_with_a_draft(registry, engine):
    fast, plain = registry.resolve("fast"), registry.resolve("plain")
    # repeat penalties are logits processors: the same greedy output either way
    penalized = {"repeat_penalty": 1.5, "repeat_last_n": 16}
    assert _turns(engine, fast, **penalized) == _turns(engine, plain, **penalized)
    # a seeded sampler gives the draft path its own, reproducible output
    sampled = {"temperature": 1.5, "seed": 7, "top_k": 40}
    first = _turns(engine, fast, **sampled)
    assert first == _turns(engine, fast, **sampled) and all(first)


def test_structured_output_runs_without_the_draft(registry, engine):
    model = registry.resolve("fast")
    options = merge_options({}, {"temperature": 0, "num_predict": 40}, default_num_ctx=4096)
    messages = [{"role": "user", "content": "Give me JSON."}]
    request = GenerationRequest(model=model, options=options, messages=messages, format="json")
    job, _ready = engine.submit(request)
    text = []
    while not isinstance(event := job.replies.get(timeout=60), Finished):
        assert isinstance(event, TextChunk), event
        text.append(event.text)
    json.loads("".join(text))
    assert engine.stats()["draft_tokens"] == 0
