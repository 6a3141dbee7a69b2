"""Stop sequences across token boundaries."""

from __future__ import annotations

import pytest

from mlx_ollama_bridge.engine.stops import StopMatcher


def feed_all(matcher: StopMatcher, pieces: list[str]) -> str:
    return "".join(matcher.feed(p) for p in pieces) + matcher.flush()


def test_no_stops_passes_text_through():
    assert feed_all(StopMatcher([]), ["a", "b"]) == "ab"


@pytest.mark.parametrize(
    "pieces",
    [["Hello wor", "ld. END here"], ["Hello world. E", "N", "D here"], ["Hello world. END"]],
)
def test_stop_split_across_pieces_is_removed_with_what_follows(pieces):
    matcher = StopMatcher(["END"])
    assert feed_all(matcher, pieces) == "Hello world. "
    assert matcher.stopped


def test_partial_match_that_fails_is_released():
    matcher = StopMatcher(["END"])
    assert matcher.feed("the EN") == "the "
    assert matcher.feed("ding") == "ENding"
    assert not matcher.stopped


def test_held_back_text_is_flushed_at_the_end():
    matcher = StopMatcher(["<|im_end|>"])
    assert matcher.feed("ok <|im") == "ok "
    assert matcher.flush() == "<|im"


def test_earliest_of_several_stops_wins():
    matcher = StopMatcher(["world", "lo"])
    assert feed_all(matcher, ["hello world"]) == "hel"
    assert matcher.matched == "lo"  # which one ended it (Anthropic's stop_sequence)


def test_nothing_after_stop():
    matcher = StopMatcher(["x"])
    matcher.feed("axb")
    assert matcher.feed("more") == ""
