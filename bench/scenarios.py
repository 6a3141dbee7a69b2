"""The benchmark scenarios that need a running bridge: concurrency and multi-turn chat."""

from __future__ import annotations

import threading
from typing import Any

from server import engine_stats, run_threads, stream_chat

GREEDY = {"temperature": 0, "repeat_penalty": 1.0}
SYSTEM = (
    "You are a helpful assistant for a small shipping company. Answer briefly and "
    "politely, in plain English, without lists. If you do not know, say so. "
    "The company sells boxes, tape and labels, ships within Europe and is open from "
    "Monday to Friday, nine to five."
)
QUESTIONS = [
    "What do you sell?",
    "Where do you ship?",
    "When are you open?",
    "Can I buy tape?",
    "Do you ship to Spain?",
    "Are you open on Sunday?",
]


def concurrency(url: str, model: str, streams: int, tokens: int) -> dict[str, float]:
    """``streams`` identical-length requests at once: aggregate decode tok/s (wall clock,
    first request start to last request end, generated tokens only) and mean TTFT.

    The prompt asks for a long story, so that every stream generates its ``tokens`` (a
    stream that ended early at end-of-sequence would leave the batch and make the figure
    one of the prompts, not of batching); ``shortest`` reports the fewest generated."""
    results: list[tuple[float, dict[str, Any]]] = []
    lock = threading.Lock()

    def one(index: int) -> None:
        body = {
            "model": model,
            "messages": [
                {
                    "role": "user",
                    "content": f"Tell me a long story about a dragon called number {index}.",
                }
            ],
            "options": {**GREEDY, "num_predict": tokens},
        }
        ttft, _text, final = stream_chat(url, body)
        with lock:
            results.append((ttft, final))

    wall = run_threads([threading.Thread(target=one, args=(i,)) for i in range(streams)])
    generated = sum(final.get("eval_count", 0) for _ttft, final in results)
    return {
        "streams": streams,
        "aggregate_tps": generated / wall,
        "mean_ttft_s": sum(t for t, _ in results) / len(results),
        "wall_s": wall,
        "shortest": min(final.get("eval_count", 0) for _ttft, final in results),
    }


def multi_turn(url: str, model: str, turns: int, tokens: int) -> list[dict[str, float]]:
    """A chat that resends its whole history each turn (as clients do): per turn the
    client-side TTFT, prompt_eval_count and the prompt tokens the engine reused."""
    messages: list[dict[str, str]] = [{"role": "system", "content": SYSTEM}]
    rows = []
    for turn in range(turns):
        messages.append({"role": "user", "content": QUESTIONS[turn % len(QUESTIONS)]})
        body = {"model": model, "messages": messages, "options": {**GREEDY, "num_predict": tokens}}
        before = engine_stats(url).get("prompt_tokens_reused", 0)
        ttft, text, final = stream_chat(url, body)
        reused = engine_stats(url).get("prompt_tokens_reused", 0) - before
        messages.append({"role": "assistant", "content": text})
        rows.append(
            {
                "turn": turn + 1,
                "ttft_s": ttft,
                "prompt_eval_count": final.get("prompt_eval_count", 0),
                "reused_tokens": reused,
            }
        )
    return rows
