"""Run by ``mlx.launch`` (two loopback ranks) from tests/test_distributed.py: the tiny model
split across the ranks, tensor parallel then pipeline, through the group backend (rank 0) and
its follower (rank 1), greedy, compared on rank 0 with the same model unsplit in one process.
Prints one JSON line per split."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mlx_lm.sample_utils import make_sampler

from mlx_ollama_bridge import cpu_blas
from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.engine.batching import BatchLane
from mlx_ollama_bridge.engine.generation import PREFILL_STEP
from mlx_ollama_bridge.engine.group import GroupBudget
from mlx_ollama_bridge.engine.group_backend import GroupBackend
from mlx_ollama_bridge.engine.group_channel import join
from mlx_ollama_bridge.engine.group_follower import run_follower
from mlx_ollama_bridge.engine.mlx_models import ModelSetup, load_model

TOKENS = 12


def greedy(lane: BatchLane, prompt: list[int]) -> list[int]:
    slot = lane.add(prompt, make_sampler(0.0), [])
    out: list[int] = []
    while len(out) < TOKENS:
        out += [t for uid, t in lane.step().items() if uid == slot.uid]
    lane.finish(slot, keep_cache=False)
    return out


def main() -> None:
    # as serve does: OpenBLAS, so the Q4 model is made dense (a 4-bit matrix of 64 columns
    # cannot be cut in two: its quantization groups are 64 wide)
    cpu_blas.maybe_reexec("auto")
    path = Path(sys.argv[1])
    setup = ModelSetup(num_draft_tokens=0)
    channel = join("ring")
    if channel.rank != 0:
        run_follower(channel, setup)
        return
    single = load_model(path, setup)
    prompt = single.tokenizer.encode("the sea and the sky")
    expected = greedy(BatchLane(single, 1, PREFILL_STEP), prompt)
    backend = GroupBackend(channel)
    # the group's budget counts both ranks' memory
    budget = GroupBudget.of(Settings.from_env(), backend.memory)
    print(json.dumps({"budget": budget.limit_bytes, "memory": backend.memory}), flush=True)
    for sharding in ("tensor", "pipeline"):
        backend.sharding = sharding
        loaded = backend.load(path)
        backend.prepare(loaded)
        got = greedy(backend._lane(loaded, 1), prompt)
        shares = backend.status()["models"][path.name]
        backend.unload(loaded)
        print(json.dumps({"expected": expected, "got": got, **shares}), flush=True)
    backend.shutdown()


if __name__ == "__main__":
    main()
