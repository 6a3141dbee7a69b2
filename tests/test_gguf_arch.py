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

    def longrope(writer: gguf.GGUFWriter) -> None:  # llama.cpp: factors as tensors
        writer.add_uint32("phi3.rope.scaling.original_context_length", 512)
        writer.add_tensor("rope_factors_long.weight", np.array(factors["long_factor"], np.float32))
        writer.add_tensor(
            "rope_factors_short.weight", np.array(factors["short_factor"], np.float32)
        )

    path = write_gguf(tmp_path / "model.gguf", source, extra=longrope)
    result = convert_gguf(path, tmp_path / "out")
    model, _, config = load(str(result.path), return_config=True)
    assert config["rope_scaling"] == scaling
    assert config["original_max_position_embeddings"] == 512
    long_prompt = mx.array([list(range(3, 259)) * 3])  # longer than 512: long factors used
    np.testing.assert_allclose(
        np.array(model(long_prompt)), np.array(source(long_prompt)), atol=1e-3, rtol=1e-3
    )


def _llama3_rope_freqs(config: dict) -> np.ndarray:
    """llama.cpp's LlamaModel.generate_extra_tensors for a ``llama3`` rope_scaling."""
    scaling, dims = config["rope_scaling"], config["hidden_size"] // config["num_attention_heads"]
    freqs = 1.0 / (config["rope_theta"] ** (np.arange(0, dims, 2, dtype=np.float32) / dims))
    low_wavelen = scaling["original_max_position_embeddings"] / scaling["low_freq_factor"]
    high_wavelen = scaling["original_max_position_embeddings"] / scaling["high_freq_factor"]
    factors = []
    for freq in freqs:
        wavelen = 2 * np.pi / freq
        if wavelen < high_wavelen:
            factors.append(1)
        elif wavelen > low_wavelen:
            factors.append(scaling["factor"])
        else:
            smooth = (scaling["original_max_position_embeddings"] / wavelen - 1) / (4 - 1)
            factors.append(1 / ((1 - smooth) / scaling["factor"] + smooth))
    return np.array(factors, dtype=np.float32)


@pytest.mark.parametrize("factor", [8.0, 32.0])  # Llama 3.1/3.3 and 3.2
def test_llama3_rope_freqs_become_the_llama3_rope_scaling(tmp_path: Path, factor: float):
    scaling = {
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    source = tiny_source("llama", rope_theta=500000.0, rope_scaling=scaling)
    freqs = _llama3_rope_freqs(source.config)
    assert 1 < len(set(freqs.tolist())) < len(freqs)  # every region of the curve is used

    def rope_freqs(writer: gguf.GGUFWriter) -> None:
        writer.add_tensor("rope_freqs.weight", freqs)

    path = write_gguf(tmp_path / "model.gguf", source, extra=rope_freqs)
    result = convert_gguf(path, tmp_path / "out")
    model, _, config = load(str(result.path), return_config=True)
    assert config["rope_scaling"] == scaling
    far = mx.array([list(range(3, 200))])  # scaled frequencies change every position
    np.testing.assert_allclose(np.array(model(far)), np.array(source(far)), atol=1e-3, rtol=1e-3)


def test_unknown_rope_freqs_are_a_bad_request(tmp_path: Path):
    source = tiny_source("llama")

    def rope_freqs(writer: gguf.GGUFWriter) -> None:
        writer.add_tensor("rope_freqs.weight", np.linspace(1, 3, 8, dtype=np.float32))

    path = write_gguf(tmp_path / "model.gguf", source, extra=rope_freqs)
    with pytest.raises(BadRequest, match="cannot recover the rope scaling"):
        convert_gguf(path, tmp_path / "out")


def test_ollama_gemma3_file_converts_as_text_only(tmp_path: Path):
    """Ollama's own gemma3 GGUF: a vision tower in the same file, per-layer sliding flags and
    its local rope base; the text model is converted, the tower and its keys left out."""
    source = tiny_source("gemma3_text", rope_local_base_freq=20000.0)

    def ollama_keys(writer: gguf.GGUFWriter) -> None:
        writer.add_array("gemma3.attention.sliding_window_pattern", [True] * 5 + [False])
        writer.add_float32("gemma3.rope.local.freq_base", 20000.0)
        writer.add_uint32("gemma3.vision.block_count", 1)
        writer.add_tensor("v.blk.0.attn_q.weight", np.ones((4, 4), np.float32))
        writer.add_tensor("mm.mm_input_projection.weight", np.ones((4, 4), np.float32))

    path = write_gguf(tmp_path / "model.gguf", source, extra=ollama_keys)
    result = convert_gguf(path, tmp_path / "out")
    model, _, config = load(str(result.path), return_config=True)
    assert config["rope_local_base_freq"] == 20000.0 and config["sliding_window_pattern"] == 6
    np.testing.assert_allclose(logits(model), logits(source), atol=1e-4, rtol=1e-4)
    assert not any(k.startswith("gemma3.vision.") for k in result.model_info)


def test_yarn_rope_scaling_is_kept(tmp_path: Path):
    scaling = {
        "rope_type": "yarn",
        "factor": 4.0,
        "original_max_position_embeddings": 256,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
    }
    source = tiny_source("qwen3", rope_scaling=scaling)

    def yarn(writer: gguf.GGUFWriter) -> None:  # as llama.cpp's Qwen converters write it
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(4.0)
        writer.add_rope_scaling_orig_ctx_len(256)
        writer.add_rope_scaling_yarn_beta_fast(32.0)
        writer.add_rope_scaling_yarn_beta_slow(1.0)

    result = convert_gguf(write_gguf(tmp_path / "m.gguf", source, extra=yarn), tmp_path / "out")
    model, _, config = load(str(result.path), return_config=True)
    assert config["rope_scaling"] == scaling
    np.testing.assert_allclose(logits(model), logits(source), atol=1e-4, rtol=1e-4)


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


EXACT_IN_A_K_FILE = {
    "blk.1.ffn_up.weight": Q.Q5_0,
    "blk.0.ffn_up.weight": Q.Q8_0,
    "blk.0.attn_k.weight": Q.Q4_0,
    "blk.1.attn_v.weight": Q.Q4_1,
}


def test_k_quants_and_q5_0_are_dequantized_and_requantized(tmp_path: Path):
    """Ollama's q4_K_M files: Q4_K blocks kept exactly as MLX 4-bit; Q6_K and Q5_0 blocks
    dequantized by gguf-py and quantized again for MLX with as many bits (group size 32)."""
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
        elif name in EXACT_IN_A_K_FILE:
            kind = EXACT_IN_A_K_FILE[name]
            writer.add_tensor(name, gguf.quants.quantize(array, kind), raw_dtype=kind)
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
        "model.layers.1.mlp.down_proj": (
            gguf.quants.dequantize(raw["blk.1.ffn_down.weight"], Q.Q6_K),
            6,
        ),
        "model.layers.1.mlp.up_proj": (_roundtrip(tensors, "blk.1.ffn_up.weight", Q.Q5_0), 5),
    }
    stored = mx.load(str(result.path / "model.safetensors"))
    # Q4_K blocks are MLX affine 4-bit already: kept exactly
    parts = [stored[f"model.layers.0.self_attn.q_proj.{p}"] for p in ("weight", "scales", "biases")]
    q4_k = gguf.quants.dequantize(raw["blk.0.attn_q.weight"], Q.Q4_K)
    np.testing.assert_array_equal(np.array(mx.dequantize(*parts, group_size=32, bits=4)), q4_k)
    for name, kind in EXACT_IN_A_K_FILE.items():  # read by gguf-py here, not mx.load: exact
        if kind == Q.Q5_0:
            continue
        module = {
            "blk.0.ffn_up": "model.layers.0.mlp.up_proj",
            "blk.0.attn_k": "model.layers.0.self_attn.k_proj",
            "blk.1.attn_v": "model.layers.1.self_attn.v_proj",
        }[name[:-7]]
        parts = [stored[f"{module}.{part}"] for part in ("weight", "scales", "biases")]
        bits = 8 if kind == Q.Q8_0 else 4
        got = np.array(mx.dequantize(*parts, group_size=32, bits=bits))
        np.testing.assert_array_equal(got, _roundtrip(tensors, name, kind))
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


@pytest.mark.parametrize(
    ("model_type", "pieces"),
    [("phi3", ["▁the", "▁he"]), ("gemma2", ["t", "he", "▁he"])],  # Gemma: no prefix space
)
def test_sentencepiece_families_tokenize_as_their_converters(tmp_path, model_type, pieces):
    write_gguf(tmp_path / "model.gguf", tiny_source(model_type))
    _, tokenizer = load(str(convert_gguf(tmp_path / "model.gguf", tmp_path / "out").path))
    ids = tokenizer.encode("the he")
    assert ids == [1] + [SPM_TOKENS.index(piece) for piece in pieces]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "the he"
    assert tokenizer.decode(tokenizer.encode("é! x", add_special_tokens=False)) == "é! x"


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
