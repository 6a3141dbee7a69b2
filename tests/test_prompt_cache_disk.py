"""Prompt caches of long prompts on disk: a restarted server does not evaluate them again."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import requests
from helpers import chat, own_server, stop_server

from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.engine import Engine
from mlx_ollama_bridge.engine.prompt_disk import DIR_NAME
from mlx_ollama_bridge.registry import LocalModel

# ~500 tokens with the tiny model's tokenizer: above the default 256-token threshold
SYSTEM = "You are a helpful assistant. Answer the question of the user in a short way. " * 30


def _messages(question: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def test_a_restarted_server_reuses_a_long_system_prompt_from_disk(tmp_path, tiny_model_dir):
    models = {"tiny": tiny_model_dir}
    body = {"model": "tiny", "stream": False, "options": {"temperature": 0, "num_predict": 4}}
    first = own_server(tmp_path / "a", models)
    try:
        reply = requests.post(
            f"{first.url}/api/chat", json={**body, "messages": _messages("Hi?")}, timeout=120
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["prompt_eval_count"] > 256
    finally:
        stop_server(first)
    store = tmp_path / "a" / "models" / DIR_NAME
    assert list(store.glob("*/*.safetensors"))
    # a new process on the same store (own_server rewrites the same manifest)
    second = own_server(tmp_path / "a", models)
    try:
        messages = _messages("What is the weather like in Paris?")
        reply = requests.post(f"{second.url}/api/chat", json={**body, "messages": messages})
        assert reply.status_code == 200, reply.text
        health = requests.get(f"{second.url}/health", timeout=30).json()
        assert health["engine_stats"]["prompt_tokens_reused"] > 256
        assert "prompt cache loaded from disk" in second.log()
    finally:
        stop_server(second)


# -- the engine, restarted in-process -----------------------------------------------------------


def _run(model: LocalModel, question: str, **settings: Any) -> dict[str, int]:
    """One chat turn on a fresh engine (a restart); the engine's counters after it."""
    engine = Engine(Settings.from_env().with_overrides(**settings))
    engine.start()
    try:
        text, _done = chat(engine, model, _messages(question), num_predict=4)
        assert text
        return engine.stats()
    finally:
        engine.stop()


def _files(root: Path) -> list[Path]:
    return sorted((root / "models" / DIR_NAME).glob("*/*.safetensors"))


def test_the_shared_prefix_is_reused_and_saved_once(isolated_home, tiny):
    assert _run(tiny, "One?")["prompt_tokens_reused"] == 0
    (whole,) = _files(isolated_home)  # the first prompt, whole
    assert _run(tiny, "Two?")["prompt_tokens_reused"] > 256
    assert len(_files(isolated_home)) == 2  # plus the part the two prompts share
    assert _run(tiny, "Three?")["prompt_tokens_reused"] > 256
    assert len(_files(isolated_home)) == 2  # nothing new: the shared part is there
    assert whole in _files(isolated_home)


def test_short_prompts_and_disabled_disk_write_nothing(isolated_home, tiny):
    engine = Engine(Settings.from_env())
    engine.start()
    try:
        chat(engine, tiny, [{"role": "user", "content": "short"}], num_predict=2)
    finally:
        engine.stop()
    assert _files(isolated_home) == []
    _run(tiny, "One?", prompt_cache_disk_bytes=0)
    assert _files(isolated_home) == []


def test_a_corrupt_file_is_removed_and_the_request_still_answers(isolated_home, tiny):
    _run(tiny, "One?")
    (path,) = _files(isolated_home)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    assert _run(tiny, "Two?")["prompt_tokens_reused"] == 0
    (path,) = _files(isolated_home)  # the second prompt's, saved in its place
    path.write_bytes(b"\x00" * 64)  # not even a header
    assert _run(tiny, "Three?")["prompt_tokens_reused"] == 0
    assert path not in _files(isolated_home)


def test_a_changed_model_never_reads_old_caches(isolated_home, tiny):
    _run(tiny, "One?")
    (old,) = _files(isolated_home)
    config = tiny.path / "generation_config.json"
    config.write_text(config.read_text())  # same bytes, new mtime: another signature
    os.utime(config, (1, 1))
    assert _run(tiny, "Two?")["prompt_tokens_reused"] == 0
    new = [p for p in _files(isolated_home) if p.parent != old.parent]
    assert new  # saved under the new signature; the old one waits for the budget


def test_the_budget_deletes_the_oldest_files_first(isolated_home, tiny):
    _run(tiny, "One?")
    (first,) = _files(isolated_home)
    size = first.stat().st_size
    os.utime(first, (1, 1))  # the oldest by far
    # the next prompt saves the part it shares with the first (a little smaller); both do
    # not fit in one and a half files, so the oldest goes
    _run(tiny, "Two?", prompt_cache_disk_bytes=size + size // 2)
    (left,) = _files(isolated_home)
    assert left != first and left.stat().st_size <= size
