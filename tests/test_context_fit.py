"""A prompt longer than num_ctx is cut as Ollama's runner cuts it: the first num_keep tokens
(plus BOS) stay, the tokens after them go, until about half the context is free."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import requests

from mlx_ollama_bridge.engine.context_fit import (
    NO_SHIFT,
    TOO_LONG,
    added_bos,
    fit_to_context,
    shifted_limit,
)
from mlx_ollama_bridge.errors import BadRequest

CTX = 256


def request(num_keep=4, truncate=True, shift=True):
    return SimpleNamespace(
        options=SimpleNamespace(num_keep=num_keep), truncate=truncate, shift=shift
    )


def test_limit_is_ollamas_context_shift_limit():
    # numCtx - max((numCtx - numKeep) / 2, 1), with Go's integer division
    assert shifted_limit(100, 4) == 52
    assert shifted_limit(100, 5) == 53
    assert shifted_limit(100, 99) == 99
    assert shifted_limit(2048, 4) == 1026
    assert shifted_limit(1, 4) == 0


def test_keeps_num_keep_then_the_end():
    tokens = list(range(300))
    cut = fit_to_context(tokens, request(), 100)
    assert cut == [0, 1, 2, 3] + list(range(252, 300))
    assert len(cut) == shifted_limit(100, 4)


def test_a_leading_bos_is_kept_on_top_of_num_keep():
    tokens = [7] + list(range(100, 399))
    cut = fit_to_context(tokens, request(), 100, bos_token_id=7)
    assert cut[:5] == [7, 100, 101, 102, 103]
    assert len(cut) == 53 and cut[-1] == 398
    # a BOS id that does not start the prompt changes nothing
    assert fit_to_context(list(range(300)), request(), 100, bos_token_id=7)[:4] == [0, 1, 2, 3]


def test_num_keep_minus_one_keeps_as_much_as_fits():
    cut = fit_to_context(list(range(300)), request(num_keep=-1), 100)
    assert cut == list(range(99))


def test_fits_until_num_ctx_minus_one():
    assert fit_to_context(list(range(99)), request(), 100) == list(range(99))
    assert len(fit_to_context(list(range(100)), request(), 100)) == 52


def test_truncate_false_and_shift_false_refuse():
    with pytest.raises(BadRequest, match=TOO_LONG):
        fit_to_context(list(range(300)), request(truncate=False), 100)
    with pytest.raises(BadRequest) as raised:
        fit_to_context(list(range(300)), request(shift=False), 100)
    assert str(raised.value) == NO_SHIFT


class Tokenizer:
    def __init__(self, bos, adds):
        self.bos_token_id, self._adds = bos, adds

    def encode(self, text):
        return ([self.bos_token_id] if self._adds else []) + [ord(c) for c in text]


def test_only_a_bos_the_tokenizer_adds_counts():
    assert added_bos(Tokenizer(1, adds=True)) == 1
    assert added_bos(Tokenizer(1, adds=False)) is None  # ChatML: <|im_start|> is BOS, not added
    assert added_bos(Tokenizer(None, adds=False)) is None


def chat(server, messages, model="tiny", **extra):
    body = {
        "model": model,
        "messages": messages,
        "stream": False,
        "options": {"num_ctx": CTX, "num_predict": 8, "temperature": 0},
        **extra,
    }
    return requests.post(server.url + "/api/chat", json=body, timeout=120)


def test_a_system_prompt_over_num_ctx_is_cut_and_leaves_room_to_answer(server):
    """Both messages are kept by the chat step; the runner step cuts the prompt to about half
    the context, so the answer gets its tokens (before, it filled the context and got one)."""
    messages = [
        {"role": "system", "content": "rule " * 600},
        {"role": "user", "content": "hello"},
    ]
    response = chat(server, messages)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["prompt_eval_count"] in {shifted_limit(CTX, 4), shifted_limit(CTX, 5)}
    assert body["eval_count"] == 8


def test_shift_false_refuses_a_prompt_over_num_ctx(server):
    messages = [{"role": "system", "content": "rule " * 600}, {"role": "user", "content": "hi"}]
    response = chat(server, messages, shift=False)
    assert response.status_code == 400
    assert response.json()["error"] == NO_SHIFT


def test_smollm2_prompt_is_cut_to_ollamas_length(server):
    """smollm2's GGUF says add_bos_token=false: Ollama keeps num_keep=4 tokens, so a prompt
    over num_ctx=256 becomes exactly 256 - (256 - 4) // 2 = 130 tokens."""
    messages = [
        {"role": "system", "content": "rule " * 600},
        {"role": "user", "content": "hello"},
    ]
    response = chat(server, messages, model="smollm2:135m")
    assert response.status_code == 200, response.text
    assert response.json()["prompt_eval_count"] == shifted_limit(CTX, 4) == 130
