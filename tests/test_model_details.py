"""details, model_info and capabilities derived from a model directory (spec §3, §4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_models import CHATML, THINKING, TOOLS, make_model, write_safetensors

from mlx_ollama_bridge.model_details import (
    ModelDescription,
    describe_model,
    human_number,
    read_safetensors_header,
)


def describe(path: Path, *, format: str = "mlx", template: str | None = None) -> ModelDescription:
    return describe_model(path, format=format, template=template, basename=path.name)


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (134515008, "134.52M"),
        (7615616512, "7.6B"),
        (3212749888, "3.2B"),
        (8000000000, "8B"),
        (22713216, "22.71M"),
        (2000000, "2M"),
        (107072, "107K"),
        (999, "999"),
    ],
)
def test_human_number_is_ollamas(count, text):
    assert human_number(count) == text


def test_details_of_a_quantized_mlx_model(tmp_path):
    found = describe(make_model(tmp_path / "m", bits=4))
    # packed 16x1 uint32 at 4 bits = 16x8 parameters; scales and biases are not parameters
    assert found.details == {
        "parent_model": "",
        "format": "mlx",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "936",
        "quantization_level": "4bit",
    }
    assert found.model_info["general.parameter_count"] == 936
    assert found.context_length == 32768


def test_per_module_bit_widths_count_right(tmp_path):
    config = {
        "quantization": {"group_size": 8, "bits": 8, "model.layers.0.mlp.up_proj": {"bits": 4}}
    }
    found = describe(make_model(tmp_path / "m", bits=4, config=config))
    assert found.model_info["general.parameter_count"] == 936
    assert found.details["quantization_level"] == "8bit"


def test_mxfp4_models(tmp_path):
    config = {"quantization": {"group_size": 32, "bits": 4, "mode": "mxfp4"}}
    assert describe(make_model(tmp_path / "m", bits=4, config=config)).details[
        "quantization_level"
    ] == ("MXFP4")


@pytest.mark.parametrize(("dtype", "label", "file_type"), [("F16", "F16", 1), ("BF16", "BF16", 32)])
def test_unquantized_models_report_their_float_type(tmp_path, dtype, label, file_type):
    found = describe(make_model(tmp_path / "m", dtype=dtype))
    assert found.details["quantization_level"] == label
    assert found.model_info["general.file_type"] == file_type


def test_without_safetensors_the_config_dtype_is_used(tmp_path):
    model = make_model(tmp_path / "m", config={"torch_dtype": "bfloat16"})
    (model / "model.safetensors").unlink()
    found = describe(model)
    assert found.details["quantization_level"] == "BF16"
    assert found.details["parameter_size"] == ""
    assert "general.parameter_count" not in found.model_info


def test_model_info_from_config_uses_gguf_key_names(tmp_path):
    info = describe(make_model(tmp_path / "Qwen3-Fake", model_type="qwen3")).model_info
    assert info == {
        "general.architecture": "qwen3",
        "general.basename": "Qwen3-Fake",
        "general.parameter_count": 936,
        "general.file_type": 1,
        "qwen3.attention.head_count": 2,
        "qwen3.attention.head_count_kv": 1,
        "qwen3.attention.layer_norm_rms_epsilon": 1e-6,
        "qwen3.block_count": 1,
        "qwen3.context_length": 32768,
        "qwen3.embedding_length": 8,
        "qwen3.feed_forward_length": 16,
        "qwen3.rope.freq_base": 1000000.0,
        "qwen3.vocab_size": 100,
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
    }
    assert list(info) == sorted(info)


def test_architecture_names_follow_llama_cpp(tmp_path):
    assert describe(make_model(tmp_path / "a", model_type="mistral")).details["family"] == "llama"
    nested = {
        "model_type": "gemma3",
        "text_config": {"model_type": "gemma3_text", "hidden_size": 8},
    }
    gemma = describe(make_model(tmp_path / "b", config=nested))
    assert gemma.details["family"] == "gemma3"
    assert gemma.model_info["gemma3.embedding_length"] == 8
    assert describe(make_model(tmp_path / "c", model_type="gpt_oss")).capabilities == (
        "completion",
        "thinking",
    )


def test_gguf_conversions_use_model_info_json(tmp_path):
    model = make_model(tmp_path / "m", template=None)
    info = {
        "general.architecture": "llama",
        "general.basename": "SmolLM2",
        "general.file_type": 3,
        "general.parameter_count": 134515008,
        "llama.context_length": 8192,
        "tokenizer.ggml.tokens": [],
    }
    (model / "model_info.json").write_text(json.dumps(info))
    found = describe(model, format="gguf")
    assert found.details["format"] == "gguf"
    assert found.details["parameter_size"] == "134.52M"
    assert found.details["quantization_level"] == "Q4_1"
    assert found.model_info == dict(sorted(info.items()))
    assert found.context_length == 8192
    # the converter may name the level itself; private keys never reach model_info
    labelled = {**info, "general.file_type": 15, "mlx_bridge.quantization_level": "Q4_K_M"}
    (model / "model_info.json").write_text(json.dumps(labelled))
    found = describe(model, format="gguf")
    assert found.details["quantization_level"] == "Q4_K_M"
    assert not any(key.startswith("mlx_bridge.") for key in found.model_info)


@pytest.mark.parametrize(
    ("template", "capabilities"),
    [
        (None, ("completion",)),
        (CHATML, ("completion",)),
        (TOOLS, ("completion", "tools")),
        ("{{ message.tool_calls }}" + CHATML, ("completion", "tools")),
        (THINKING, ("completion", "tools", "thinking")),
        ("{{ content.split('</think>')[-1] }}", ("completion", "thinking")),
        ("<think> only an opening tag", ("completion",)),
        ([{"name": "default", "template": THINKING}, {"name": "rag", "template": "x"}],
         ("completion", "tools", "thinking")),
        ([{"name": "tool_use", "template": TOOLS}], ("completion", "tools")),
    ],
)  # fmt: skip
def test_capabilities_from_the_chat_template(tmp_path, template, capabilities):
    assert describe(make_model(tmp_path / "m", template=template)).capabilities == capabilities


def test_template_sources_in_order(tmp_path):
    model = make_model(tmp_path / "m", template=CHATML)
    assert describe(model).chat_template == CHATML
    (model / "chat_template.json").write_text(json.dumps({"chat_template": TOOLS}))
    assert describe(model).chat_template == TOOLS
    (model / "chat_template.jinja").write_text(THINKING)
    assert describe(model).chat_template == THINKING
    override = describe(model, template="{{ tools }}")  # a manifest override wins
    assert override.chat_template == "{{ tools }}"
    assert override.capabilities == ("completion", "tools")


def test_sentence_transformers_dirs_are_embedding_models(tmp_path):
    model = make_model(tmp_path / "minilm", model_type="bert", template=None)
    write_safetensors(
        model / "model.safetensors",
        {"embeddings.word_embeddings.weight": ("F32", [100, 8]), "position_ids": ("I64", [512])},
    )
    (model / "modules.json").write_text(
        json.dumps([{"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"}])
    )
    (model / "1_Pooling").mkdir()
    (model / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    found = describe(model)
    assert found.capabilities == ("embedding",)
    assert found.model_info["bert.pooling_type"] == 2
    assert found.details["parameter_size"] == "800"  # position_ids are not parameters
    assert found.details["quantization_level"] == "F32"


def test_encoders_without_sentence_transformers_files_pool_by_mean(tmp_path):
    found = describe(make_model(tmp_path / "m", model_type="xlm-roberta", template=None))
    assert found.model_info["bert.pooling_type"] == 1
    assert found.capabilities == ("embedding",)


def test_broken_files_degrade_to_empty_values(tmp_path, caplog):
    model = make_model(tmp_path / "m")
    (model / "config.json").write_text("{broken")
    (model / "model.safetensors").write_bytes(b"\xff" * 4)
    found = describe(model)
    assert found.details["family"] == "" and found.details["families"] is None
    assert found.context_length == 0
    assert "config.json" in caplog.text and "safetensors" in caplog.text


def test_safetensors_header_limits(tmp_path):
    too_big = tmp_path / "big.safetensors"
    too_big.write_bytes((10**12).to_bytes(8, "little"))
    with pytest.raises(ValueError):
        read_safetensors_header(too_big)
    not_object = tmp_path / "list.safetensors"
    not_object.write_bytes((2).to_bytes(8, "little") + b"[]")
    with pytest.raises(ValueError):
        read_safetensors_header(not_object)
