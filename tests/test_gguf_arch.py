"""GGUF -> MLX for each architecture family: a tiny random mlx-lm model written the way
llama.cpp writes it (``tests/gguf_layouts.py``), converted, loaded with mlx-lm, and its
logits compared with the source model's."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import mlx.core as mx
import numpy as np
import pytest
from gguf_layouts import LAYOUTS, SPM_TOKENS, gguf_tensors, tiny_source, write_gguf
from mlx_lm import load

from mlx_ollama_bridge.errors import BadRequest
from mlx_ollama_bridge.store.gguf import convert_gguf

PROMPT = mx.array([[1, 40, 7, 99, 200, 250, 3, 5, 9, 17]])
Q = gguf.GGMLQuantizationType


def logits(model) -> np.ndarray:
    return np.array(model(PROMPT).astype(mx.float32))


@pytest.mark.parametrize("model_type", list(LAYOUTS))
def test_each_architecture_gives_the_source_models_logits(tmp_path: Path, model_type: str):
    source = tiny_source(model_type)
    write_gguf(tmp_path / "model.gguf", source)
    result = convert_gguf(tmp_path / "model.gguf", tmp_path / "out")
    model, _, config = load(str(result.path), return_config=True)
    np.testing.assert_allclose(logits(model), logits(source), atol=1e-4, rtol=1e-4)
    expected_type = "llama" if model_type == "mistral" else model_type
    assert config["model_type"] == expected_type
    assert result.architecture == gguf.MODEL_ARCH_NAMES[LAYOUTS[model_type][0]]
    assert "quantization" not in config


def test_gemma_norm_offset_is_undone(tmp_path: Path):
    """llama.cpp stores Gemma's RMSNorm weight as 1 + w; the MLX file has w again."""
    source = tiny_source("gemma2")
    write_gguf(tmp_path / "model.gguf", source)
    out = convert_gguf(tmp_path / "model.gguf", tmp_path / "out").path
    stored = mx.load(str(out / "model.safetensors"))["model.layers.0.input_layernorm.weight"]
    expected = source.model.layers[0].input_layernorm.weight
    np.testing.assert_allclose(np.array(stored), np.array(expected), atol=1e-6)


def test_phi3_longrope_factors_become_the_rope_scaling(tmp_path: Path):
    factors = {"long_factor": [1.0 + i / 8 for i in range(8)], "short_factor": [1.0] * 8}
    scaling = {"type": "longrope", **factors}
    source = tiny_source(
        "phi3",
        rope_scaling=scaling,
        max_position_embeddings=8192,
        original_max_position_embeddings=512,
    )
    path = write_gguf(tmp_path / "model.gguf", source)
    # llama.cpp writes the factors as tensors and the original context as a key
    reader_extra = {
        "rope_factors_long.weight": np.array(factors["long_factor"], np.float32),
        "rope_factors_short.weight": np.array(factors["short_factor"], np.float32),
    }
    writer = gguf.GGUFWriter(str(path), "phi3")
    _rewrite(writer, path, reader_extra, {"phi3.rope.scaling.original_context_length": 512})
    result = convert_gguf(path, tmp_path / "out")
    model, _, config = load(str(result.path), return_config=True)
    assert config["rope_scaling"] == scaling
    assert config["original_max_position_embeddings"] == 512
    long_prompt = mx.array([list(range(3, 259)) * 3])  # longer than 512: long factors used
    np.testing.assert_allclose(
        np.array(model(long_prompt)), np.array(source(long_prompt)), atol=1e-3, rtol=1e-3
    )


def _rewrite(writer: gguf.GGUFWriter, path: Path, tensors: dict, keys: dict) -> None:
    """Re-write ``path`` with extra tensors and uint32 keys (the reader keeps the rest)."""
    reader = gguf.GGUFReader(str(path))
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        value = field.contents()
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, kind, sub_type=sub)
    for name, value in keys.items():
        writer.add_uint32(name, value)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, np.array(tensor.data))
    for name, value in tensors.items():
        writer.add_tensor(name, value)
    path.unlink()
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _with_weights(model, weights: dict[str, np.ndarray]):
    from mlx.utils import tree_unflatten

    model.update(tree_unflatten([(k, mx.array(v)) for k, v in weights.items()]))
    return model


def test_q8_0_and_q4_0_tensors_stay_quantized(tmp_path: Path):
    source = tiny_source("qwen3")
    layer = "blk.0"
    types = {f"{layer}.attn_q.weight": Q.Q8_0, f"{layer}.ffn_up.weight": Q.Q4_0}
    write_gguf(tmp_path / "model.gguf", source, file_type=7, **types)
    result = convert_gguf(tmp_path / "model.gguf", tmp_path / "out")
    model, _, config = load(str(result.path), return_config=True)
    assert config["quantization"]["group_size"] == 32
    assert result.quantization_level == "Q8_0"
    stored = gguf_tensors(source)
    expected = {
        "model.layers.0.self_attn.q_proj.weight": _roundtrip(
            stored, f"{layer}.attn_q.weight", Q.Q8_0
        ),
        "model.layers.0.mlp.up_proj.weight": _roundtrip(stored, f"{layer}.ffn_up.weight", Q.Q4_0),
    }
    reference = _with_weights(tiny_source("qwen3"), expected)
    np.testing.assert_allclose(logits(model), logits(reference), atol=2e-3, rtol=2e-3)


def _roundtrip(stored: dict, name: str, kind: Q) -> np.ndarray:
    return gguf.quants.dequantize(gguf.quants.quantize(stored[name], kind), kind)


def _k_quant_bytes(rows: int, cols: int, kind: Q, seed: int) -> np.ndarray:
    """Random blocks of a K-quant type with sane fp16 scales (gguf-py cannot write K-quants)."""
    block, size = gguf.GGML_QUANT_SIZES[kind]
    raw = np.random.default_rng(seed).integers(0, 256, (rows, cols // block * size), np.uint8)
    raw[:, 1::2] &= 0x2B  # keep every fp16 small and finite
    return raw


def test_k_quants_and_q5_0_are_dequantized_and_requantized(tmp_path: Path):
    """Ollama's q4_K_M files: Q4_K and Q6_K blocks, dequantized by gguf-py and quantized
    again for MLX with at least as many bits (4 and 6, group size 32)."""
    source = tiny_source("qwen2", hidden_size=256, intermediate_size=256)
    tensors = gguf_tensors(source)
    kinds = {"blk.0.attn_q.weight": Q.Q4_K, "blk.1.ffn_down.weight": Q.Q6_K}
    raw = {
        name: _k_quant_bytes(*tensors[name].shape, kind, i)
        for i, (name, kind) in enumerate(kinds.items())
    }
    writer = gguf.GGUFWriter(str(tmp_path / "model.gguf"), "qwen2")
    from gguf_layouts import _hparams, _vocab

    _hparams(writer, source.config, gguf.MODEL_ARCH.QWEN2)
    writer.add_file_type(15)  # MOSTLY_Q4_K_M
    _vocab(writer, "qwen2")
    for name, array in tensors.items():
        if name in raw:
            writer.add_tensor(name, raw[name], raw_dtype=kinds[name])
        elif name == "blk.1.ffn_up.weight":
            writer.add_tensor(name, gguf.quants.quantize(array, Q.Q5_0), raw_dtype=Q.Q5_0)
        else:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    result = convert_gguf(tmp_path / "model.gguf", tmp_path / "out")
    assert result.quantization_level == "Q4_K_M"
    config = json.loads((result.path / "config.json").read_text())
    assert config["quantization"]["model.layers.1.mlp.down_proj"] == {"group_size": 32, "bits": 6}
    assert config["quantization"]["model.layers.1.mlp.up_proj"] == {"group_size": 32, "bits": 5}
    expected = {
        "model.layers.0.self_attn.q_proj": (
            gguf.quants.dequantize(raw["blk.0.attn_q.weight"], Q.Q4_K),
            4,
        ),
        "model.layers.1.mlp.down_proj": (
            gguf.quants.dequantize(raw["blk.1.ffn_down.weight"], Q.Q6_K),
            6,
        ),
        "model.layers.1.mlp.up_proj": (_roundtrip(tensors, "blk.1.ffn_up.weight", Q.Q5_0), 5),
    }
    stored = mx.load(str(result.path / "model.safetensors"))
    for module, (want, bits) in expected.items():
        parts = [stored[f"{module}.{part}"] for part in ("weight", "scales", "biases")]
        got = np.array(mx.dequantize(*parts, group_size=32, bits=bits))
        assert np.abs(got - want).mean() < 0.05 * np.abs(want).mean(), module
    model, _ = load(str(result.path))
    assert np.isfinite(logits(model)).all()


def test_sentencepiece_vocabulary_becomes_a_working_tokenizer(tmp_path: Path):
    write_gguf(tmp_path / "model.gguf", tiny_source("mistral"))
    _, tokenizer = load(str(convert_gguf(tmp_path / "model.gguf", tmp_path / "out").path))
    ids = tokenizer.encode("the he")
    assert ids == [1, SPM_TOKENS.index("▁the"), SPM_TOKENS.index("▁he")]  # BOS first
    assert tokenizer.decode(ids, skip_special_tokens=True) == "the he"
    assert tokenizer.decode(tokenizer.encode("é!", add_special_tokens=False)) == "é!"  # bytes


def test_qwen2_pre_tokenizer_comes_from_transformers_table(tmp_path: Path):
    write_gguf(tmp_path / "model.gguf", tiny_source("qwen2"))
    _, tokenizer = load(str(convert_gguf(tmp_path / "model.gguf", tmp_path / "out").path))
    ids = tokenizer.encode("<|im_start|> the 42", add_special_tokens=False)
    assert ids[0] == 1 and tokenizer.decode(ids) == "<|im_start|> the 42"
    assert tokenizer.eos_token_ids == {2}


def test_unknown_pre_tokenizer_is_a_bad_request(tmp_path: Path):
    path = write_gguf(tmp_path / "model.gguf", tiny_source("llama"))
    data = path.read_bytes().replace(b"smollm", b"zzzzzz", 1)
    path.write_bytes(data)
    with pytest.raises(BadRequest, match="pre-tokenizer 'zzzzzz'"):
        convert_gguf(path, tmp_path / "models" / "out")
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").iterdir())


def test_unmapped_tensor_is_a_bad_request(tmp_path: Path):
    path = write_gguf(tmp_path / "model.gguf", tiny_source("qwen2"))
    data = path.read_bytes().replace(b"blk.0.attn_q.bias", b"blk.0.attn_z.bias", 1)
    path.write_bytes(data)
    with pytest.raises(
        BadRequest, match=r"unexpected tensors for a qwen2 model: blk.0.attn_z.bias"
    ):
        convert_gguf(path, tmp_path / "out")
