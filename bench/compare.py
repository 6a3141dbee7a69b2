"""The bridge beside its peers on the same box, same model and prompts, interleaved.

Every server (the bridge with its defaults, ``mlx_lm.server``, llama.cpp's server) is started
first and stays up; each scenario then runs on one after the other, the order rotating, so
that a change in the shared box's load hits all alike (the load average is recorded with
each scenario): a warm-up, single-stream TTFT and decode (``runs`` rounds, raw mlx-lm in
this process taking part; medians), 1/4/8 concurrent streams, a 6-turn chat, the 10-turn
agent session with its ~6k-token system prompt (TTFT per turn; turn by turn across servers)
and a second session sharing that system prompt, and the edit benchmark. For the bridge only:
the same agent turns on a server without prompt cache (the uncached reference), the edit
without prompt lookup (same text?), a restart (the second session's system prompt read back
from disk) and memory over many agent sessions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import agent
from peers import (
    Reply,
    Server,
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
PEERS = ("mlx_lm_server", "llama_cpp_server")


def load_average() -> float:
    """The 1-minute load average (the box is shared: recorded with every scenario)."""
    return round(os.getloadavg()[0], 2)


def rotated(names: list[str], round_: int) -> list[str]:
    """``names`` starting at a different one each round, so no contender always goes first."""
    k = round_ % len(names)
    return names[k:] + names[:k]


def measure(chats: dict[str, Chat], args: argparse.Namespace, system: str,
            raw: Chat | None) -> dict[str, Any]:  # fmt: skip
    """Every scenario against every server, interleaved: each scenario runs on one server
    after the other (the order rotating), so a change in the box's load hits all alike.
    ``raw`` (raw mlx-lm in this process) joins the single-stream rounds."""
    names = list(chats)
    out: dict[str, Any] = {name: {} for name in names}
    for chat in chats.values():
        chat([{"role": "user", "content": "hi"}], 4)  # warm-up: the model loads
    single_chats = {**chats, **({"raw_mlx_lm": raw} if raw else {})}
    rounds = []
    for round_ in range(args.runs):
        row: dict[str, Any] = {"load": load_average()}
        for name in rotated(list(single_chats), round_):
            reply = single_chats[name]([{"role": "user", "content": QUESTION}], args.tokens)
            row[name] = {"decode_tps": reply.decode_tps, "ttft_s": reply.ttft_s}
        rounds.append(row)
    out["single_rounds"] = rounds
    for name in single_chats:
        out.setdefault(name, {})["single"] = {
            "ttft_s": statistics.median(r[name]["ttft_s"] for r in rounds),
            "decode_tps": statistics.median(r[name]["decode_tps"] for r in rounds),
        }
    for name in names:
        out[name]["concurrency"] = []
    for i, streams in enumerate(args.stream_list):
        for name in rotated(names, i):
            result = concurrent(chats[name], streams, args.concurrency_tokens)
            out[name]["concurrency"].append({**result, "load": load_average()})
    histories = {name: [{"role": "system", "content": SHORT_SYSTEM}] for name in names}
    for name in names:
        out[name]["multi_turn_ttft_s"] = []
    for i, question in enumerate(QUESTIONS[: args.turns]):
        for name in rotated(names, i):
            histories[name].append({"role": "user", "content": question})
            reply = chats[name](histories[name], args.turn_tokens)
            out[name]["multi_turn_ttft_s"].append(reply.ttft_s)
            histories[name].append({"role": "assistant", "content": reply.text})
    sessions = agent.sessions(chats, system, args.agent_turns, args.agent_tokens, rotated)
    for name in names:
        out[name]["agent"] = {"ttft_s": sessions[name]["ttft_s"], "load": sessions["load"]}
        out[name]["_messages"] = sessions[name]["messages"]
    for name in rotated(names, 1):
        ttft = agent.second_session(chats[name], system, args.agent_tokens)
        out[name]["agent"]["second_session_ttft_s"] = ttft
    for name in rotated(names, 2):
        edit = chats[name](agent.edit_messages(), args.edit_tokens)
        out[name]["edit"] = {"decode_tps": edit.decode_tps, "tokens": edit.completion_tokens,
                             "ttft_s": edit.ttft_s, "text": edit.text,
                             "load": load_average()}  # fmt: skip
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
    tokens = sum(r.completion_tokens for r in replies)
    return {
        "streams": streams,
        "tokens": tokens,
        "wall_s": wall,
        "aggregate_tps": tokens / wall,
        "mean_ttft_s": statistics.mean(r.ttft_s for r in replies),
        "shortest": min(r.completion_tokens for r in replies),
    }


def bridge_chat(url: str, model: str) -> Chat:
    return lambda messages, tokens: stream_ollama(url, model, messages, tokens)


def openai_chat(url: str, model: str, **extra: Any) -> Chat:
    return lambda messages, tokens: stream_openai(url, model, messages, tokens, **extra)


def bridge_references(args: argparse.Namespace, out: dict[str, Any]) -> None:
    """What only the bridge has, after the interleaved scenarios: the agent's first and
    last turns on a server without prompt cache (the uncached reference) and the edit
    without prompt lookup (same text?)."""
    messages = out.pop("_messages")
    plain = start_bridge(
        OLLAMA_KEEP_ALIVE="-1", MLX_BRIDGE_PROMPT_CACHE="0", MLX_BRIDGE_PROMPT_LOOKUP="0"
    )
    try:
        chat = bridge_chat(plain.url, args.model)
        chat([{"role": "user", "content": "hi"}], 4)
        turn1 = chat(messages[:2], args.agent_tokens).ttft_s
        last = chat(messages[:-1], args.agent_tokens).ttft_s  # the last turn's request
        edit = chat(agent.edit_messages(), args.edit_tokens)
        load = load_average()
    finally:
        plain.stop()
    out["agent"]["uncached_turn1_ttft_s"] = turn1
    out["agent"]["uncached_last_turn_ttft_s"] = last
    out["agent"]["uncached_load"] = load
    out["edit_without_lookup"] = {"decode_tps": edit.decode_tps, "tokens": edit.completion_tokens}
    out["edit"]["same_text_as_without_lookup"] = edit.text == out["edit"]["text"]


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
        load = load_average()
        rss = []
        for index in range(args.sessions):
            task = f"Task {index}: {agent.SECOND_SESSION}"
            messages = [{"role": "system", "content": system}, {"role": "user", "content": task}]
            chat(messages, 8)
            if (index + 1) % 10 == 0 or index + 1 == args.sessions:
                cached = engine_stats(bridge.url).get("prompt_cache_bytes", 0) / 2**20
                rss_mb = bridge.rss_bytes() / 2**20
                rss.append({"sessions": index + 1, "rss_mb": rss_mb, "prompt_cache_mb": cached})
        stats = engine_stats(bridge.url)
    finally:
        bridge.stop()
    return {
        "second_session_after_restart_ttft_s": ttft,
        "restart_load": load,
        "reused_from_disk_tokens": reused,
        "rss_over_sessions": rss,
        "memory_budget_mb": stats.get("memory_budget_bytes", 0) / 2**20,
    }


def start_mlx_lm_peer(cache: Path, model_path: Path) -> Server:
    """``mlx_lm.server`` on the dense float32 copy of the weights (made once, kept in
    ``cache``), its log in ``cache/logs``."""
    logs = cache / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return start_mlx_lm_server(dense_copy(model_path, cache / "smollm2-dense-f32"), logs)


def streams_ratio(mine: dict[str, Any], theirs: dict[str, Any]) -> float:
    """``mine``'s aggregate tok/s over ``theirs`` for one concurrency run; NaN when either
    side answered some stream with no tokens (that run measured something else)."""
    if min(mine.get("shortest", 1), theirs.get("shortest", 1)) <= 0:
        return float("nan")
    return mine["aggregate_tps"] / theirs["aggregate_tps"]


def start_peers(args: argparse.Namespace, model_path: Path, results: dict[str, Any]) -> dict:
    """mlx_lm.server and llama.cpp's server, started beside the bridge; a peer that cannot
    start leaves its column empty (its error in ``results``), never the whole run."""
    cache = Path(args.cache_dir)
    logs = cache / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    servers: dict[str, Server] = {}
    try:
        servers["mlx_lm_server"] = start_mlx_lm_peer(cache, model_path)
    except Exception as exc:
        results["mlx_lm_server_error"] = repr(exc)
    gguf = smollm2_gguf(Path(args.wheels), cache)
    problem = llamacpp_problem(gguf)
    if problem is None:
        try:
            assert gguf is not None
            servers["llama_cpp_server"] = start_llamacpp_server(gguf, logs)
        except Exception as exc:
            problem = repr(exc)
    if problem is not None:
        results["llama_cpp_server_error"] = problem
    return servers


def run_peers(args: argparse.Namespace, model_path: Path, raw: Chat | None = None) -> dict:
    """Every server's figures, interleaved, and each as a ratio to the bridge."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_path / "tokenizer.json"))
    system = agent.system_prompt(
        uuid.uuid4().hex[:12], lambda s: len(tokenizer.encode(s).ids), args.agent_prompt_tokens
    )
    results: dict[str, Any] = {"agent_system_tokens": len(tokenizer.encode(system).ids)}
    results["load_at_start"] = load_average()
    bridge = start_bridge(OLLAMA_KEEP_ALIVE="-1")
    servers: dict[str, Server] = {}
    try:
        servers = start_peers(args, model_path, results)
        chats: dict[str, Chat] = {"bridge": bridge_chat(bridge.url, args.model)}
        chats["mlx_lm_server"] = (
            openai_chat(servers["mlx_lm_server"].url, servers["mlx_lm_server"].model)
            if "mlx_lm_server" in servers
            else None
        )
        if "llama_cpp_server" in servers:
            server = servers["llama_cpp_server"]
            chats["llama_cpp_server"] = openai_chat(server.url, server.model, repeat_penalty=1.0)
        chats = {k: v for k, v in chats.items() if v is not None}
        before = engine_stats(bridge.url)
        measured = measure(chats, args, system, raw)
        after = engine_stats(bridge.url)
        # counters as this run's difference; gauges (bytes) as they are at the end
        measured["bridge"]["engine_stats"] = {
            k: v if k.endswith("_bytes") else v - before.get(k, 0) for k, v in after.items()
        }
        measured["bridge"]["rss_mb"] = bridge.rss_bytes() / 2**20
        for name, server in servers.items():
            measured[name]["rss_mb"] = server.rss_bytes() / 2**20
    finally:
        bridge.stop()
        for server in servers.values():
            server.stop()
    results.update(measured)
    for name in PEERS:
        results.setdefault(name, None)
        if results.get(name):
            results[name].pop("_messages", None)
    bridge_references(args, results["bridge"])
    results["bridge"]["restart_and_memory"] = restart_and_memory(args, system)
    results["ratios"] = ratios(results)
    results["targets"] = targets(results)
    results["load_at_end"] = load_average()
    return results


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """The figures issue 18's targets are about, as the bridge's ratios (>1: the bridge is
    faster), from this one interleaved run."""
    bridge, mlx = results["bridge"], results.get("mlx_lm_server")
    rounds = results.get("single_rounds", [])
    out: dict[str, Any] = {}
    if rounds and "raw_mlx_lm" in rounds[0]:
        out["single_decode_vs_raw_per_round"] = [
            r["bridge"]["decode_tps"] / r["raw_mlx_lm"]["decode_tps"] for r in rounds
        ]
    if mlx:
        out["single_decode_vs_mlx_lm_server_per_round"] = [
            r["bridge"]["decode_tps"] / r["mlx_lm_server"]["decode_tps"] for r in rounds
        ]
        for mine, theirs in zip(bridge["concurrency"], mlx["concurrency"], strict=True):
            out[f"streams_{mine['streams']}_vs_mlx_lm_server"] = streams_ratio(mine, theirs)
    agent_ = bridge["agent"]
    out["agent_last_turn_over_uncached"] = (
        agent_["ttft_s"][-1] / agent_["uncached_last_turn_ttft_s"]
    )
    out["second_session_over_uncached"] = (
        agent_["second_session_ttft_s"] / agent_["uncached_turn1_ttft_s"]
    )
    memory = bridge["restart_and_memory"]
    out["after_restart_second_session_over_uncached"] = (
        memory["second_session_after_restart_ttft_s"] / agent_["uncached_turn1_ttft_s"]
    )
    out["edit_lookup_speedup"] = (
        bridge["edit"]["decode_tps"] / bridge["edit_without_lookup"]["decode_tps"]
    )
    out["edit_same_text"] = bridge["edit"]["same_text_as_without_lookup"]
    out["max_rss_mb"] = max((r["rss_mb"] for r in memory["rss_over_sessions"]), default=0.0)
    out["memory_budget_mb"] = memory["memory_budget_mb"]
    return out


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
            row[f"streams_{mine['streams']}"] = streams_ratio(theirs, mine)
        row["chat_turn_last_ttft"] = bridge["multi_turn_ttft_s"][-1] / peer["multi_turn_ttft_s"][-1]
        row["agent_turn_1_ttft"] = bridge["agent"]["ttft_s"][0] / peer["agent"]["ttft_s"][0]
        row["agent_turn_last_ttft"] = bridge["agent"]["ttft_s"][-1] / peer["agent"]["ttft_s"][-1]
        row["agent_second_session_ttft"] = (
            bridge["agent"]["second_session_ttft_s"] / peer["agent"]["second_session_ttft_s"]
        )
        row["edit_decode"] = peer["edit"]["decode_tps"] / bridge["edit"]["decode_tps"]
        out[name] = row
    return out
