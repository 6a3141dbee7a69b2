"""RSS over many short requests: does the server's memory grow with use?

Starts the bridge (the model from the store the environment points at), sends a warm-up of
short generations, records the worker's RSS, sends ``--requests`` more (4 concurrent
clients, a mix of /api/generate and /api/chat, each a few tokens, some with a seed), and
records the RSS again. Prints JSON and one line of text.
Usage: ``python bench/rss.py [--model smollm2:135m] [--requests 1000] [--warmup 200]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server import start_bridge  # noqa: E402


def short_request(url: str, model: str, index: int) -> int:
    """One short generation; returns the HTTP status."""
    options = {"num_predict": 3, "temperature": 0.7, "seed": index % 7}
    if index % 2:
        body = {"model": model, "prompt": f"Say {index}.", "stream": False, "options": options}
        return requests.post(f"{url}/api/generate", json=body, timeout=600).status_code
    messages = [{"role": "user", "content": f"Number {index}?"}]
    body = {"model": model, "messages": messages, "stream": index % 4 == 0, "options": options}
    with requests.post(f"{url}/api/chat", json=body, timeout=600, stream=True) as reply:
        for _ in reply.iter_lines():
            pass
        return reply.status_code


def run(url: str, model: str, count: int, offset: int) -> list[int]:
    """``count`` short requests from 4 concurrent clients; their statuses."""
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda i: short_request(url, model, offset + i), range(count)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2:135m")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    bridge = start_bridge(OLLAMA_NUM_PARALLEL="4", OLLAMA_KEEP_ALIVE="-1")
    try:
        warm = run(bridge.url, args.model, args.warmup, 0)
        before = bridge.rss_bytes()
        measured = run(bridge.url, args.model, args.requests, args.warmup)
        after = bridge.rss_bytes()
    finally:
        bridge.stop()
    statuses = warm + measured
    report = {
        "model": args.model,
        "requests": args.requests,
        "warmup": args.warmup,
        "non_200": len([s for s in statuses if s != 200]),
        "rss_mb_after_warmup": round(before / 2**20, 1),
        "rss_mb_after_requests": round(after / 2**20, 1),
        "rss_growth_mb": round((after - before) / 2**20, 2),
    }
    print(json.dumps(report, indent=2))
    print(
        f"RSS after {args.warmup} warm-up requests {report['rss_mb_after_warmup']} MB, after "
        f"{args.requests} more {report['rss_mb_after_requests']} MB "
        f"(growth {report['rss_growth_mb']} MB); non-200: {report['non_200']}"
    )


if __name__ == "__main__":
    main()
