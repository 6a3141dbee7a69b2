"""Ollama options: validation, merge order and derived limits."""

from __future__ import annotations

import math

import pytest

from mlx_ollama_bridge.engine.options import Options, merge_options, validate_options
from mlx_ollama_bridge.errors import BadRequest


def test_defaults_are_ollamas():
    options = merge_options({}, {}, default_num_ctx=4096)
    assert (options.temperature, options.top_k, options.top_p) == (0.8, 40, 0.9)
    assert (options.repeat_penalty, options.repeat_last_n, options.num_ctx) == (1.1, 64, 4096)


def test_request_overrides_model_parameters_and_stop_replaces():
    model = {"temperature": 0.2, "stop": ["<a>", "<b>"], "top_k": 10}
    options = merge_options(
        model, validate_options({"temperature": 0.5, "stop": ["x"]}), default_num_ctx=2048
    )
    assert options.temperature == 0.5
    assert options.top_k == 10
    assert options.stop == ("x",)
    assert options.num_ctx == 2048


def test_unknown_and_null_options_are_ignored():
    assert validate_options({"mirostat": 2, "temperature": None, "tfs_z": 1.0}) == {}


def test_integers_accept_floats_truncated():
    assert validate_options({"num_predict": 5.9}) == {"num_predict": 5}


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"stop": "x"}, 'option "stop" must be of type array'),
        ({"temperature": "hot"}, 'option "temperature" must be of type float32'),
        ({"num_ctx": True}, 'option "num_ctx" must be of type integer'),
        ({"temperature": math.nan}, "finite"),
        ({"top_p": 1.5}, "between"),
        ({"num_ctx": -3}, "between"),
        ({"temperature": -1}, "between"),
    ],
)
def test_bad_values_are_400(raw, message):
    with pytest.raises(BadRequest, match=message):
        validate_options(raw)


def test_options_must_be_an_object():
    with pytest.raises(BadRequest):
        validate_options(["temperature", 1])


def test_num_predict_caps_at_ten_times_context():
    assert Options(num_ctx=100, num_predict=-1).max_tokens() == 1000
    assert Options(num_ctx=100, num_predict=5000).max_tokens() == 1000
    assert Options(num_ctx=100, num_predict=7).max_tokens() == 7


def test_repeat_window_minus_one_means_context():
    assert Options(num_ctx=512, repeat_last_n=-1).repeat_window() == 512
