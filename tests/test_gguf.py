"""GGUF -> MLX conversion: the real SmolLM2 file end to end, plus small synthetic GGUFs.

The synthetic model is a random llama written with llama.cpp's q/k row permutation: after
conversion it must produce the same logits as the original, which checks the tensor names,
the un-permutation and the config in one go.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map
from mlx_lm import load, stream_generate
from mlx_lm.models import llama
from mlx_lm.sample_utils import make_sampler
from tokenizers import pre_tokenizers

from mlx_ollama_bridge.errors import BadRequest
from mlx_ollama_bridge.store import gguf
from mlx_ollama_bridge.store.gguf import GGUFConversion, convert_gguf
from mlx_ollama_bridge.store.gguf_reader import MAX_KEYS, read_gguf_header

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
BYTE_CHARS = sorted(pre_tokenizers.ByteLevel.alphabet())
TINY_TOKENS = SPECIAL + BYTE_CHARS + ["Ġt", "he"]
TINY_MERGES = ["Ġ t", "h e"]
LAYER_NAMES = {  # mlx-lm llama name -> GGUF name, written out independently of the module
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """What llama.cpp's convert_hf_to_gguf.py does to q/k projection rows."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


# --- synthetic GGUF files --------------------------------------------------------------------


def tiny_args(tied: bool) -> llama.ModelArgs:
    return llama.ModelArgs(
        model_type="llama",
        hidden_size=64,
        num_hidden_layers=2,
        intermediate_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        vocab_size=len(TINY_TOKENS),
        rope_theta=10000.0,
        tie_word_embeddings=tied,
    )


def tiny_model(tied: bool) -> llama.Model:
    """A random HF-layout llama, norms randomised too so a mixed-up norm would show."""
    mx.random.seed(0)
    model = llama.Model(tiny_args(tied))
    model.update(tree_map(lambda p: mx.random.normal(p.shape) * 0.2, model.parameters()))
    mx.eval(model.parameters())
    return model


def gguf_tensors(model: llama.Model) -> dict[str, mx.array]:
    """The model's weights under GGUF names, q/k permuted the way llama.cpp stores them."""
    args = model.args
    out = {}
    for name, value in tree_flatten(model.parameters()):
        array = np.array(value)
        if name.startswith("model.layers."):
            index, module = name[len("model.layers.") : -len(".weight")].split(".", 1)
            if module == "self_attn.q_proj":
                array = llama_cpp_permute(array, args.num_attention_heads)
            if module == "self_attn.k_proj":
                array = llama_cpp_permute(array, args.num_key_value_heads)
            out[f"blk.{index}.{LAYER_NAMES[module]}.weight"] = mx.array(array)
        else:
            short = {"model.embed_tokens": "token_embd", "model.norm": "output_norm"}
            stem = short.get(name[: -len(".weight")], "output")
            out[f"{stem}.weight"] = mx.array(array)
    return out


def tiny_metadata(
    args: llama.ModelArgs, pre: str = "smollm", add_bos: bool = False
) -> dict[str, Any]:
    u32 = lambda v: mx.array(v, dtype=mx.uint32)  # noqa: E731
    return {
        "general.architecture": "llama",
        "general.name": "tiny test model",
        "general.file_type": u32(0),
        "llama.context_length": u32(512),
        "llama.embedding_length": u32(args.hidden_size),
        "llama.feed_forward_length": u32(args.intermediate_size),
        "llama.block_count": u32(args.num_hidden_layers),
        "llama.attention.head_count": u32(args.num_attention_heads),
        "llama.attention.head_count_kv": u32(args.num_key_value_heads),
        "llama.attention.layer_norm_rms_epsilon": mx.array(args.rms_norm_eps),
        "llama.rope.freq_base": mx.array(args.rope_theta),
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": TINY_TOKENS,
        "tokenizer.ggml.token_type": mx.array([3] * 3 + [1] * (len(TINY_TOKENS) - 3), mx.int32),
        "tokenizer.ggml.merges": TINY_MERGES,
        "tokenizer.ggml.bos_token_id": u32(1),
        "tokenizer.ggml.eos_token_id": u32(2),
        "tokenizer.ggml.add_bos_token": mx.array(add_bos),
        "tokenizer.chat_template": "{% for m in messages %}<|im_start|>{{ m['content'] }}"
        "<|im_end|>{% endfor %}",
    }


def write_tiny_gguf(path: Path, *, tied: bool = True, **meta_kwargs: Any) -> llama.Model:
    model = tiny_model(tied)
    mx.save_gguf(str(path), gguf_tensors(model), tiny_metadata(model.args, **meta_kwargs))
    return model


def write_gguf_header(path: Path, metadata: dict[str, Any], tensors: list[tuple]) -> None:
    """A GGUF v3 header and zeros for the tensor data, for files the converter must reject
    before loading any tensor."""

    def string(s: str) -> bytes:
        return struct.pack("<Q", len(s.encode())) + s.encode()

    def value(v: Any) -> bytes:
        if isinstance(v, str):
            return struct.pack("<I", 8) + string(v)
        if isinstance(v, list):
            return struct.pack("<IIQ", 9, 8, len(v)) + b"".join(string(s) for s in v)
        return struct.pack("<II", 4, v)

    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata))
    out += b"".join(string(k) + value(v) for k, v in metadata.items())
    for name, dims, kind in tensors:
        out += string(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, kind, 0)
    path.write_bytes(out + bytes(32 + 4096))  # alignment, then room for every test tensor


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir()) if parent.exists() else []


# --- q/k un-permutation ----------------------------------------------------------------------


@pytest.mark.parametrize("n_head", [1, 3, 9])
def test_unpermute_inverts_llama_cpp_permute(n_head: int):
    original = np.arange(n_head * 8 * 5, dtype=np.float32).reshape(n_head * 8, 5)
    stored = llama_cpp_permute(original, n_head)
    assert not np.array_equal(stored, original)
    restored = gguf._unpermute_rows(mx.array(stored), n_head)
    np.testing.assert_array_equal(np.array(restored), original)


def test_unpermute_applies_to_quantized_rows():
    """Permuting packed weights, scales and biases row-wise commutes with quantization."""
    mx.random.seed(1)
    w = mx.random.normal((3 * 16, 64))
    packed = mx.quantize(w, group_size=32, bits=4)
    stored = [mx.array(llama_cpp_permute(np.array(part), 3)) for part in packed]
    restored = [gguf._unpermute_rows(part, 3) for part in stored]
    expected = mx.dequantize(*packed, group_size=32, bits=4)
    got = mx.dequantize(*restored, group_size=32, bits=4)
    assert mx.array_equal(got, expected).item()


# --- synthetic files -------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [True, False])
def test_tiny_gguf_gives_the_same_logits_as_the_original(tmp_path: Path, tied: bool):
    source = write_tiny_gguf(tmp_path / "tiny.gguf", tied=tied)
    result = convert_gguf(tmp_path / "tiny.gguf", tmp_path / "out")
    model, tokenizer, config = load(str(result.path), return_config=True)
    ids = mx.array([[1, 40, 7, 99, 200, 259, 3]])
    np.testing.assert_allclose(np.array(model(ids)), np.array(source(ids)), atol=1e-4, rtol=1e-4)
    assert config["tie_word_embeddings"] is tied
    assert "quantization" not in config
    assert result.quantization_level == "F32"
    expected = sum(v.size for _, v in tree_flatten(source.parameters()))
    assert result.parameter_count == expected == result.model_info["general.parameter_count"]
    assert "general.name" not in result.model_info
    assert tokenizer.eos_token_ids == {2}


def test_tiny_tokenizer_uses_merges_and_keeps_control_tokens_whole(tmp_path: Path):
    write_tiny_gguf(tmp_path / "tiny.gguf")
    _, tokenizer = load(str(convert_gguf(tmp_path / "tiny.gguf", tmp_path / "out").path))
    ids = tokenizer.encode("<|im_start|> the<|im_end|>", add_special_tokens=False)
    assert ids == [1, TINY_TOKENS.index("Ġt"), TINY_TOKENS.index("he"), 2]
    assert tokenizer.decode(ids) == "<|im_start|> the<|im_end|>"
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert prompt == "<|im_start|>hi<|im_end|>"


def test_llama3_style_tokenizer_prepends_bos_once(tmp_path: Path):
    write_tiny_gguf(tmp_path / "tiny.gguf", pre="llama-bpe", add_bos=True)
    _, tokenizer = load(str(convert_gguf(tmp_path / "tiny.gguf", tmp_path / "out").path))
    ids = tokenizer.encode("hello there 123")
    assert ids[0] == 1 and ids.count(1) == 1
    assert tokenizer.decode(ids, skip_special_tokens=True) == "hello there 123"


def test_unsupported_architecture_is_a_bad_request(tmp_path: Path):
    path = tmp_path / "rwkv.gguf"
    write_gguf_header(path, {"general.architecture": "rwkv6"}, [("token_embd.weight", [8, 4], 0)])
    with pytest.raises(BadRequest, match=r"architecture 'rwkv6'.*llama, qwen2") as info:
        convert_gguf(path, tmp_path / "models" / "out")
    assert info.value.status_code == 400
    assert leftovers(tmp_path / "models") == []


def test_unsupported_tensor_type_is_a_bad_request(tmp_path: Path):
    meta = {f"llama.{k}": 4 for k in gguf._REQUIRED_KEYS}
    meta |= {"general.architecture": "llama", "tokenizer.ggml.tokens": ["a", "b"]}
    path = tmp_path / "iq2.gguf"
    write_gguf_header(path, meta, [("token_embd.weight", [256, 2], 16)])  # 16 = IQ2_XXS
    with pytest.raises(BadRequest, match=r"IQ2_XXS.*supported: F32, F16, Q4_0, Q4_1, Q8_0, .*Q6_K"):
        convert_gguf(path, tmp_path / "out")
    assert leftovers(tmp_path) == ["iq2.gguf"]


def test_not_a_gguf_file_is_a_bad_request(tmp_path: Path):
    (tmp_path / "x.gguf").write_bytes(b"PK\x03\x04 not gguf at all")
    with pytest.raises(BadRequest, match="not a GGUF file"):
        read_gguf_header(tmp_path / "x.gguf")
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(BadRequest):
        convert_gguf(tmp_path / "empty.gguf", tmp_path / "out")


def _crafted(head: bytes, tail: bytes = b"") -> bytes:
    """A GGUF v3 file: magic, version, then ``head`` (counts, entries) and ``tail``."""
    return b"GGUF" + struct.pack("<I", 3) + head + tail


def _key(name: str) -> bytes:
    return struct.pack("<Q", len(name)) + name.encode()


_ARCH = _key("general.architecture") + struct.pack("<IQ", 8, 5) + b"llama"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (_crafted(struct.pack("<QQ", 0, MAX_KEYS + 1)), r"4097 metadata keys \(at most 4096\)"),
        (_crafted(struct.pack("<QQ", 0, 1000)), "1000 metadata keys .* past the end of the file"),
        (_crafted(struct.pack("<QQ", 10**9, 0)), r"tensors \(at most 65536\)"),
        (
            _crafted(struct.pack("<QQ", 0, 1) + _key("k") + struct.pack("<IQ", 8, 2**40)),
            r"a string of \d+ bytes",
        ),
        (
            _crafted(struct.pack("<QQ", 0, 1) + _key("k") + struct.pack("<IQ", 8, 900)),
            "string at offset .* past the end of the file",
        ),
        (  # a million empty strings announced, none there
            _crafted(struct.pack("<QQ", 0, 1) + _key("k") + struct.pack("<IIQ", 9, 8, 10**6)),
            "array items at offset .* past the end of the file",
        ),
        (
            _crafted(struct.pack("<QQ", 0, 1) + _key("k") + struct.pack("<IIQ", 9, 6, 2**40)),
            r"array items \(at most",
        ),
        (  # a tensor whose data would lie far past the end of the file
            _crafted(
                struct.pack("<QQ", 1, 1) + _ARCH + _key("t.weight"),
                struct.pack("<I2QIQ", 2, 4, 4, 0, 2**50) + bytes(64),
            ),
            "tensor t.weight .* lies past the end of the file",
        ),
        (
            _crafted(
                struct.pack("<QQ", 1, 1) + _ARCH + _key("t.weight"),
                struct.pack("<I9QIQ", 9, *[1] * 9, 0, 0) + bytes(64),
            ),
            r"9 dimensions \(at most 4\)",
        ),
        (_crafted(struct.pack("<QQ", 0, 1) + _key("k") + struct.pack("<I", 77)), "77"),
    ],
    ids=[
        "too many keys",
        "keys past the end",
        "too many tensors",
        "huge string",
        "string past the end",
        "array past the end",
        "huge array",
        "tensor data past the end",
        "too many dimensions",
        "unknown value type",
    ],
)
def test_hostile_headers_are_refused_with_a_clear_400(tmp_path: Path, content, message):
    path = tmp_path / "hostile.gguf"
    path.write_bytes(content)
    with pytest.raises(BadRequest, match=message) as info:
        convert_gguf(path, tmp_path / "models" / "out")
    assert info.value.status_code == 400
    assert leftovers(tmp_path / "models") == []


def test_out_dir_must_not_exist(tmp_path: Path):
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError):
        convert_gguf(tmp_path / "whatever.gguf", tmp_path / "out")


def test_failure_midway_leaves_no_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    write_tiny_gguf(tmp_path / "tiny.gguf")
    models = tmp_path / "models"

    def broken(*args: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(gguf, "_write_tokenizer", broken)
    with pytest.raises(OSError, match="disk full"):
        convert_gguf(tmp_path / "tiny.gguf", models / "out")
    assert leftovers(models) == []


# --- the real SmolLM2-135M-Instruct Q4_1 file ------------------------------------------------


@pytest.fixture(scope="module")
def converted(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> GGUFConversion:
    return convert_gguf(smollm2_gguf, tmp_path_factory.mktemp("converted") / "smollm2")


@pytest.fixture(scope="module")
def loaded(converted: GGUFConversion) -> tuple[Any, Any]:
    return load(str(converted.path))


def test_metadata_reader_agrees_with_mlx(smollm2_gguf: Path):
    ours = read_gguf_header(smollm2_gguf).metadata
    _, theirs = mx.load(str(smollm2_gguf), return_metadata=True)
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        expected = value.tolist() if isinstance(value, mx.array) else value
        assert ours[key] == pytest.approx(expected), key
    assert ours["general.architecture"] == "llama"
    assert isinstance(ours["llama.block_count"], int)


def test_truncated_file_fails_cleanly(smollm2_gguf: Path, tmp_path: Path):
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(smollm2_gguf.read_bytes()[:60_000_000])
    with pytest.raises(BadRequest, match="past the end of the file"):
        convert_gguf(truncated, tmp_path / "models" / "out")
    assert leftovers(tmp_path / "models") == []


@pytest.mark.real_model
def test_real_conversion_result(converted: GGUFConversion):
    assert converted.architecture == "llama"
    assert converted.parameter_count == 134_515_008
    assert converted.quantization_level == "Q4_1"
    assert converted.context_length == 8192
    assert "<|im_start|>" in converted.chat_template
    info = converted.model_info
    assert info["general.architecture"] == "llama"
    assert info["general.file_type"] == 3
    assert info["general.parameter_count"] == 134_515_008
    assert (info["llama.block_count"], info["llama.embedding_length"]) == (30, 576)
    assert (info["llama.attention.head_count"], info["llama.attention.head_count_kv"]) == (9, 3)
    assert info["llama.context_length"] == 8192
    assert info["tokenizer.ggml.tokens"] == [] and info["general.languages"] == ["en"]
    assert "general.name" not in info and "tokenizer.chat_template" not in info
    assert json.loads((converted.path / "model_info.json").read_text()) == info
    config = json.loads((converted.path / "config.json").read_text())
    assert config["quantization"] == {
        "group_size": 32,
        "bits": 4,
        "model.embed_tokens": {"group_size": 32, "bits": 8},
    }
    assert not list(converted.path.parent.glob(".*.tmp"))


@pytest.mark.real_model
def test_real_model_answers_the_capital_of_france(loaded: tuple[Any, Any]):
    model, tokenizer = loaded
    messages = [{"role": "user", "content": "What is the capital of France? One word."}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    text = "".join(
        r.text
        for r in stream_generate(model, tokenizer, prompt, max_tokens=8, sampler=make_sampler(0.0))
    )
    assert "Paris" in text


@pytest.mark.real_model
def test_real_tokenizer_round_trips_text(loaded: tuple[Any, Any]):
    _, tokenizer = loaded
    text = "Héllo  wörld\n\tindented 12345 — 日本語 🎉\n\nend "
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    detokenizer = tokenizer.detokenizer
    detokenizer.reset()
    for token in ids:
        detokenizer.add_token(token)
    detokenizer.finalize()
    assert detokenizer.text == text
    assert tokenizer.encode("<|im_end|>", add_special_tokens=False) == [2]
    assert 2 in tokenizer.eos_token_ids
    assert tokenizer.encode("42", add_special_tokens=False) == [36, 34]  # digits split singly
