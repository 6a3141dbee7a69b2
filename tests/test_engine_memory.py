"""Unloading really gives the memory back (MLX's active memory falls to where it was)."""

from __future__ import annotations

import gc

import mlx.core as mx
import pytest

from mlx_ollama_bridge.engine.backend import MLXBackend


def active_bytes() -> int:
    gc.collect()
    mx.clear_cache()
    return mx.get_active_memory()


@pytest.mark.parametrize("fixture", ["minilm_dir", "tiny_model_dir"])
def test_unload_releases_the_weights(fixture, request):
    model_dir = request.getfixturevalue(fixture)
    backend = MLXBackend()
    before = active_bytes()
    loaded = backend.load(model_dir)
    size = loaded.size_bytes
    assert active_bytes() - before >= 0.9 * size  # the weights really are resident
    backend.unload(loaded)
    del loaded
    assert active_bytes() - before < 0.05 * size
