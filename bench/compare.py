"""The bridge beside its peers, one server at a time on the same box, same model and prompts.

For each server (the bridge with its defaults, ``mlx_lm.server``, llama.cpp's server): a
warm-up, then single-stream TTFT and decode (medians of ``runs``), 1/4/8 concurrent streams,
a 6-turn chat, the 10-turn agent session with its ~6k-token system prompt (TTFT per turn) and
a second session sharing that system prompt, and the edit benchmark. For the bridge only:
the same agent turns on a server without prompt cache (the uncached reference), the edit
without prompt lookup (same text?), a restart (the second session's system prompt read back
from disk) and memory over many agent sessions.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import agent
from peers import (
    Reply,
    dense_copy,
    llamacpp_problem,
    smollm2_gguf,
    start_llamacpp_server,
    start_mlx_lm_server,
    stream_ollama,
    stream_openai,
)
from server import engine_stats, run_threads, start_bridge

QUESTION = "Write one sentence about the sea."
SHORT_SYSTEM = "You are a helpful assistant for a small shipping company. Answer briefly."
QUESTIONS = ["What do you sell?", "Where do you ship?", "When are you open?",
             "Can I buy tape?", "Do you ship to Spain?", "Are you open on Sunday?"]  # fmt: skip
Chat = Callable[[list[dict[str, Any]], int], Reply]


def measure(chat: Chat, args: argparse.Namespace, system: str) -> dict[str, Any]:
    """Every scenario against one server, through ``chat``."""
    chat([{"role": "user", "content": "hi"}], 4)  # warm-up: the model loads
    single = [chat([{"role": "user", "content": QUESTION}], args.tokens) for _ in range(args.runs)]
    out: dict[str, Any] = {
        "single": {
            "ttft_s": statistics.median(r.ttft_s for r in single),
            "decode_tps": statistics.median(r.decode_tps for r in single),
        },
        "concurrency": [concurrent(chat, n, args.concurrency_tokens) for n in args.stream_list],
    }
    messages: list[dict[str, Any]] = [{"role": "system", "content": SHORT_SYSTEM}]
    turns = []
    for question in QUESTIONS[: args.turns]:
        messages.append({"role": "user", "content": question})
        reply = chat(messages, args.turn_tokens)
        turns.append(reply.ttft_s)
        messages.append({"role": "assistant", "content": reply.text})
    out["multi_turn_ttft_s"] = turns
    sess = agent.session(chat, system, args.agent_turns, args.agent_tokens)
    out["agent"] = {"ttft_s": sess["ttft_s"]}
    out["agent"]["second_session_ttft_s"] = agent.second_session(chat, system, args.agent_tokens)
    edit = chat(agent.edit_messages(), args.edit_tokens)
    out["edit"] = {"decode_tps": edit.decode_tps, "tokens": edit.completion_tokens,
                   "ttft_s": edit.ttft_s, "text": edit.text}  # fmt: skip
    out["_messages"] = sess["messages"]
    return out


def concurrent(chat: Chat, streams: int, tokens: int) -> dict[str, float]:
    """``streams`` requests at once: aggregate tokens/s over the wall time, mean TTFT."""
    replies: list[Reply] = []
    lock = threading.Lock()

    def one(index: int) -> None:
        content = f"Tell me a long story about a dragon called number {index}."
        reply = chat([{"role": "user", "content": content}], tokens)
        with lock:
            replies.append(reply)

    wall = run_threads([threading.Thread(target=one, args=(i,)) for i in range(streams)])
    return {
        "streams": streams,
        "aggregate_tps": sum(r.completion_tokens for r in replies) / wall,
        "mean_ttft_s": statistics.mean(r.ttft_s for r in replies),
        "shortest": min(r.completion_tokens for r in replies),
    }


def bridge_chat(url: str, model: str) -> Chat:
    return lambda messages, tokens: stream_ollama(url, model, messages, tokens)


def openai_chat(url: str, model: str, **extra: Any) -> Chat:
    return lambda messages, tokens: stream_openai(url, model, messages, tokens, **extra)


def run_bridge(args: argparse.Namespace, system: str) -> dict[str, Any]:
    """The bridge with its defaults, then the references only it has."""
    bridge = start_bridge(OLLAMA_KEEP_ALIVE="-1")
    try:
        chat = bridge_chat(bridge.url, args.model)
        before = engine_stats(bridge.url)
        out = measure(chat, args, system)
        after = engine_stats(bridge.url)
        # counters as this run's difference; gauges (bytes) as they are at the end
        out["engine_stats"] = {
            k: v if k.endswith("_bytes") else v - before.get(k, 0) for k, v in after.items()
        }
        out["rss_mb"] = bridge.rss_bytes() / 2**20
    finally:
        bridge.stop()
    messages = out.pop("_messages")
    # uncached reference, and the edit without prompt lookup, on one more server
    plain = start_bridge(
        OLLAMA_KEEP_ALIVE="-1", MLX_BRIDGE_PROMPT_CACHE="0", MLX_BRIDGE_PROMPT_LOOKUP="0"
    )
    try:
        chat = bridge_chat(plain.url, args.model)
        chat([{"role": "user", "content": "hi"}], 4)
        turn1 = chat(messages[:2], args.agent_tokens).ttft_s
        last = chat(messages[:-1], args.agent_tokens).ttft_s  # the last turn's request
        edit = chat(agent.edit_messages(), args.edit_tokens)
    finally:
        plain.stop()
    out["agent"]["uncached_turn1_ttft_s"] = turn1
    out["agent"]["uncached_last_turn_ttft_s"] = last
    out["edit_without_lookup"] = {"decode_tps": edit.decode_tps, "tokens": edit.completion_tokens}
    out["edit"]["same_text_as_without_lookup"] = edit.text == out["edit"]["text"]
    out["restart_and_memory"] = restart_and_memory(args, system)
    return out


def restart_and_memory(args: argparse.Namespace, system: str) -> dict[str, Any]:
    """A restarted server's second session (the system prompt from disk), then memory over
    ``args.sessions`` agent sessions sharing the system prompt (the first turn of each, its
    own task: the pool fills with different conversations under one prefix)."""
    bridge = start_bridge(OLLAMA_KEEP_ALIVE="-1")
    try:
        chat = bridge_chat(bridge.url, args.model)
        chat([{"role": "user", "content": "hi"}], 4)
        ttft = agent.second_session(chat, system, args.agent_tokens)
        reused = engine_stats(bridge.url).get("prompt_tokens_reused", 0)
        rss = []
        for index in range(args.sessions):
            task = f"Task {index}: {agent.SECOND_SESSION}"
            messages = [{"role": "system", "content": system}, {"role": "user", "content": task}]
            chat(messages, 8)
            if (index + 1) % 10 == 0:
                cached = engine_stats(bridge.url).get("prompt_cache_bytes", 0) / 2**20
                rss_mb = bridge.rss_bytes() / 2**20
                rss.append({"sessions": index + 1, "rss_mb": rss_mb, "prompt_cache_mb": cached})
        stats = engine_stats(bridge.url)
    finally:
        bridge.stop()
    return {
        "second_session_after_restart_ttft_s": ttft,
        "reused_from_disk_tokens": reused,
        "rss_over_sessions": rss,
        "memory_budget_mb": stats.get("memory_budget_bytes", 0) / 2**20,
    }


def run_peers(args: argparse.Namespace, model_path: Path) -> dict[str, Any]:
    """Every server's figures, and each as a ratio to the bridge."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_path / "tokenizer.json"))
    system = agent.system_prompt(
        uuid.uuid4().hex[:12], lambda s: len(tokenizer.encode(s).ids), args.agent_prompt_tokens
    )
    results: dict[str, Any] = {"agent_system_tokens": len(tokenizer.encode(system).ids)}
    results["bridge"] = run_bridge(args, system)
    cache = Path(args.cache_dir)
    logs = cache / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    dense = dense_copy(model_path, cache / "smollm2-dense-f32")
    try:  # a peer that fails leaves its column empty, never the whole run
        server = start_mlx_lm_server(dense, logs)
        try:
            results["mlx_lm_server"] = measure(openai_chat(server.url, server.model), args, system)
            results["mlx_lm_server"]["rss_mb"] = server.rss_bytes() / 2**20
        finally:
            server.stop()
    except Exception as exc:
        results["mlx_lm_server"], results["mlx_lm_server_error"] = None, repr(exc)
    gguf = smollm2_gguf(Path(args.wheels), cache)
    problem = llamacpp_problem(gguf)
    if problem is None:
        try:
            server = start_llamacpp_server(gguf, logs)
            try:
                chat = openai_chat(server.url, server.model, repeat_penalty=1.0)
                results["llama_cpp_server"] = measure(chat, args, system)
                results["llama_cpp_server"]["rss_mb"] = server.rss_bytes() / 2**20
            finally:
                server.stop()
        except Exception as exc:
            problem = repr(exc)
    if problem is not None:
        results["llama_cpp_server"], results["llama_cpp_server_error"] = None, problem
    for name in ("mlx_lm_server", "llama_cpp_server"):
        if results.get(name):
            results[name].pop("_messages", None)
    results["ratios"] = ratios(results)
    return results


def ratios(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each peer's speed as a fraction of the bridge's, every figure oriented alike: tokens/s
    over the bridge's tokens/s, and for times to first token the bridge's TTFT over the
    peer's (speed = 1 / TTFT). 1.0 = as fast as the bridge, 0.5 = half as fast."""
    bridge = results["bridge"]
    out = {}
    for name in ("mlx_lm_server", "llama_cpp_server"):
        peer = results.get(name)
        if not peer:
            continue
        row = {
            "single_decode": peer["single"]["decode_tps"] / bridge["single"]["decode_tps"],
            "single_ttft": bridge["single"]["ttft_s"] / peer["single"]["ttft_s"],
        }
        for mine, theirs in zip(bridge["concurrency"], peer["concurrency"], strict=True):
            row[f"streams_{mine['streams']}"] = theirs["aggregate_tps"] / mine["aggregate_tps"]
        row["chat_turn_last_ttft"] = bridge["multi_turn_ttft_s"][-1] / peer["multi_turn_ttft_s"][-1]
        row["agent_turn_1_ttft"] = bridge["agent"]["ttft_s"][0] / peer["agent"]["ttft_s"][0]
        row["agent_turn_last_ttft"] = bridge["agent"]["ttft_s"][-1] / peer["agent"]["ttft_s"][-1]
        row["agent_second_session_ttft"] = (
            bridge["agent"]["second_session_ttft_s"] / peer["agent"]["second_session_ttft_s"]
        )
        row["edit_decode"] = peer["edit"]["decode_tps"] / bridge["edit"]["decode_tps"]
        out[name] = row
    return out
