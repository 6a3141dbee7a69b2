"""Prompt-lookup decoding (engine/prompt_lookup.py): drafts from the prompt's n-grams, checked
by the model in one pass; greedy output is the same with and without it."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import chat_turn, engine_fixture, import_copy
from parrot_model import TOOL_SCRIPT

from mlx_ollama_bridge.engine.prompt_lookup import NgramIndex, worth_it
from mlx_ollama_bridge.registry import LocalModel

CODE = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(20))
EDIT = [{"role": "user", "content": f"Rewrite this file, f3 renamed g3:\n\n{CODE}"}]


def test_the_index_drafts_what_followed_the_tail_and_follows_its_source():
    index = NgramIndex([1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3])
    start, draft = index.draft(4)
    assert draft == [4, 5, 6, 7] and start == 3
    index.accepted(start, 2)  # the model kept 4, 5; its own next token lines up with 6
    for token in (4, 5, 6):
        index.append(token)
    assert index.draft(3) == (6, [7, 8, 9])  # still copying from the same place
    index.append(42)
    assert index.draft(3) == (-1, [])  # a token never seen before: nothing to draft


def test_the_rule_takes_greedy_unconstrained_long_prompts_decoding_alone():
    base = {"greedy": True, "constrained": False, "has_draft": False, "alone": True}
    assert worth_it(**base, prompt_len=500)
    assert not worth_it(**base, prompt_len=20)
    for key in ("greedy", "alone"):
        assert not worth_it(**{**base, key: False}, prompt_len=500)
    for key in ("constrained", "has_draft"):
        assert not worth_it(**{**base, key: True}, prompt_len=500)


@pytest.fixture
def parrot(isolated_home, feature_model_dirs) -> LocalModel:
    return import_copy(isolated_home, feature_model_dirs["parrot-tools"], "parrot")


lookup = engine_fixture(prompt_lookup_tokens=8, prompt_cache_disk_bytes=0)


plain = engine_fixture(prompt_lookup_tokens=0, prompt_cache_disk_bytes=0)


@pytest.mark.parametrize(
    "options",
    [
        {"temperature": 0, "repeat_penalty": 1.0},
        {"temperature": 0, "repeat_penalty": 1.3, "presence_penalty": 0.5},  # processors
    ],
)
def test_greedy_output_is_identical_with_and_without_lookup(lookup, plain, tiny, options):
    options = {**options, "num_predict": 40, "num_ctx": 2048}
    with_lookup = [chat_turn(lookup, tiny, EDIT, options)[0] for _ in range(2)]  # 2nd: cached
    without = chat_turn(plain, tiny, EDIT, options)[0]
    assert with_lookup == [without, without]
    assert lookup.stats()["prompt_tokens_reused"] > 0  # lookup caches are kept for reuse
    assert plain.stats()["lookup_tokens"] == 0


def test_a_copying_answer_is_drafted_from_the_prompt(lookup, plain, parrot):
    said = "".join(TOOL_SCRIPT)
    filler = "Please answer with the tool call, as you did before. " * 4
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "What is the weather?"},
        {"role": "assistant", "content": said},
        {"role": "user", "content": filler},
    ]
    options = {"temperature": 0, "num_predict": 16}
    text, done = chat_turn(lookup, parrot, messages, options)
    assert text == chat_turn(plain, parrot, messages, options)[0]
    stats = lookup.stats()
    assert stats["lookup_accepted"] >= len(TOOL_SCRIPT) - 1  # the script came from the prompt
    assert stats["lookup_accepted"] <= stats["lookup_tokens"]


def test_sampled_and_short_requests_decode_in_the_batch_as_before(lookup, tiny):
    chat_turn(lookup, tiny, EDIT, {"temperature": 0.8, "seed": 1, "num_predict": 8})
    # greedy but short: whether to draft is decided from the prompt's length when the job is
    # made, so a few tokens show it (unbounded, the tiny model decoded 4k tokens: ~85 s)
    hi = [{"role": "user", "content": "hi"}]
    chat_turn(lookup, tiny, hi, {"temperature": 0, "num_predict": 8})
    stats = lookup.stats()
    assert stats["lookup_tokens"] == 0 and stats["batched_tokens"] > 0
