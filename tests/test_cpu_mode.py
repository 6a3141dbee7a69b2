"""Linux CPU mode: finding OpenBLAS, the one re-exec that preloads it, dense small models."""

from __future__ import annotations

import sys
from pathlib import Path

import psutil
import pytest
import requests
from helpers import RunningServer, start_server, stop_server

from mlx_ollama_bridge import cpu_blas
from mlx_ollama_bridge.config import Settings

DEBIAN_LIB = "usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3"
OPENBLAS = cpu_blas.find_openblas()
# Where MLX runs on a GPU (Metal) there is no CPU mode to test; on a CPU, OpenBLAS is part
# of the setup (`make test` installs it), so its absence fails these tests instead.
on_cpu = pytest.mark.skipif(not cpu_blas.mlx_runs_on_cpu(), reason="MLX does not run on a CPU")


@pytest.fixture
def require_openblas() -> None:
    """Fail (not skip) when OpenBLAS is missing on a CPU machine."""
    if OPENBLAS is None:
        pytest.fail(f"no OpenBLAS: run `make cpu-blas` ({cpu_blas.DEBIAN_PACKAGE})")


def needs_openblas(test):
    """A CPU-mode test: skipped where MLX runs on a GPU, failing without OpenBLAS."""
    return on_cpu(pytest.mark.usefixtures("require_openblas")(test))


def _touch(root: Path, relative: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x7fELF")
    return path


# -- detection ------------------------------------------------------------------------------


def test_finds_debians_pthread_openblas_first(tmp_path):
    _touch(tmp_path, "usr/lib/x86_64-linux-gnu/libopenblas.so.0")
    _touch(tmp_path, "usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3")
    wanted = _touch(tmp_path, DEBIAN_LIB)
    assert cpu_blas.find_openblas("x86_64", tmp_path) == wanted


def test_finds_the_arm64_triplet_and_other_distributions(tmp_path):
    arm = _touch(tmp_path, "usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3")
    assert cpu_blas.find_openblas("aarch64", tmp_path) == arm
    fedora = tmp_path / "fedora"
    assert cpu_blas.find_openblas("x86_64", fedora) is None
    lib64 = _touch(fedora, "usr/lib64/libopenblasp.so.0")
    assert cpu_blas.find_openblas("x86_64", fedora) == lib64
    arch = tmp_path / "arch"
    assert cpu_blas.find_openblas("x86_64", arch) is None
    assert cpu_blas.find_openblas("x86_64", arch) is None
    assert cpu_blas.find_openblas("riscv64", arch) is None
    plain = _touch(arch, "usr/lib/libopenblas.so.0")
    assert cpu_blas.find_openblas("riscv64", arch) == plain


def test_a_dangling_alternatives_link_is_not_a_library(tmp_path):
    link = tmp_path / DEBIAN_LIB
    link.parent.mkdir(parents=True)
    link.symlink_to(tmp_path / "gone")
    assert cpu_blas.find_openblas("x86_64", tmp_path) is None


def test_decide_on_linux_macos_and_off(tmp_path):
    lib = _touch(tmp_path, DEBIAN_LIB)
    found = cpu_blas.decide("auto", platform_name="linux", machine="x86_64", root=tmp_path)
    assert found.library == lib
    assert cpu_blas.decide("", platform_name="linux", root=tmp_path).library == lib  # unset
    mac = cpu_blas.decide("auto", platform_name="darwin", root=tmp_path)
    assert mac.library is None and "does not use" in mac.reason
    for off in ("off", "OFF", "0", "false", "none"):
        choice = cpu_blas.decide(off, platform_name="linux", root=tmp_path)
        assert choice.library is None and "MLX_BRIDGE_CPU_BLAS" in choice.reason
    missing = cpu_blas.decide("auto", platform_name="linux", root=tmp_path / "empty")
    assert missing.library is None and cpu_blas.DEBIAN_PACKAGE in missing.reason


def test_decide_with_an_explicit_path(tmp_path):
    lib = _touch(tmp_path, "opt/blas/libblis.so")
    assert cpu_blas.decide(str(lib), platform_name="linux").library == lib
    gone = cpu_blas.decide(str(tmp_path / "nope.so"), platform_name="linux")
    assert gone.library is None and "no such file" in gone.reason


def test_a_cuda_mlx_is_not_cpu_mode(monkeypatch):
    real = cpu_blas.importlib.metadata.distribution

    def fake(name: str):
        if name == "mlx-cuda":
            return object()
        return real(name)

    assert cpu_blas.mlx_runs_on_cpu("linux")
    monkeypatch.setattr(cpu_blas.importlib.metadata, "distribution", fake)
    assert not cpu_blas.mlx_runs_on_cpu("linux")
    assert not cpu_blas.mlx_runs_on_cpu("darwin")


def test_settings_read_the_cpu_mode_knobs():
    env = {"MLX_BRIDGE_CPU_BLAS": "Off", "MLX_BRIDGE_CPU_DENSE_MAX_PARAMS": "1.5B"}
    settings = Settings.from_env(env)
    assert (settings.cpu_blas, settings.cpu_dense_max_params) == ("off", 1_500_000_000)
    for text, count in (("600M", 600_000_000), ("250k", 250_000), ("0", 0), ("42", 42)):
        assert (
            Settings.from_env({"MLX_BRIDGE_CPU_DENSE_MAX_PARAMS": text}).cpu_dense_max_params
            == count
        )
    default = Settings.from_env({})
    assert default.cpu_blas == "auto" and default.cpu_dense_max_params == 1_000_000_000
    assert Settings.from_env({"MLX_BRIDGE_CPU_DENSE_MAX_PARAMS": "lots"}) == default


# -- the re-exec decision -------------------------------------------------------------------


def test_reexec_env_preloads_once_and_keeps_user_preloads(tmp_path):
    lib = _touch(tmp_path, DEBIAN_LIB)
    choice = cpu_blas.BlasChoice(lib, "found")
    env = cpu_blas.reexec_env({"PATH": "/bin", "LD_PRELOAD": "/x/libmine.so"}, choice)
    assert env is not None
    assert env["LD_PRELOAD"] == f"{lib}:/x/libmine.so"  # ours first: its cblas_* win
    assert env[cpu_blas.MARKER_ENV] == "1" and env["PATH"] == "/bin"
    assert cpu_blas.reexec_env(env, choice) is None  # the re-executed process goes on
    # preloaded already (e.g. by the user or a service file), under any spelling: no re-exec
    assert cpu_blas.reexec_env({"LD_PRELOAD": f"/a.so {lib}"}, choice) is None
    # the marker alone stops it even if the preload did not take
    assert cpu_blas.reexec_env({cpu_blas.MARKER_ENV: "1"}, choice) is None
    assert cpu_blas.reexec_env({}, cpu_blas.BlasChoice(None, "off")) is None


def test_reexec_argv_keeps_python_options_and_the_module_form():
    orig = ["python3", "-X", "dev", "-m", "mlx_ollama_bridge", "serve", "--host", ":1"]
    argv = cpu_blas.reexec_argv(orig)
    assert argv == [sys.executable, "-X", "dev", "-m", "mlx_ollama_bridge", "serve", "--host", ":1"]


def test_maybe_reexec_execs_with_the_new_environment(tmp_path, monkeypatch):
    lib = _touch(tmp_path, DEBIAN_LIB)
    calls = []
    monkeypatch.setattr(cpu_blas, "decide", lambda setting: cpu_blas.BlasChoice(lib, "found"))
    monkeypatch.setattr(cpu_blas.os, "execve", lambda *args: calls.append(args))
    cpu_blas.maybe_reexec("auto", {"HOME": "/h"})
    [(exe, argv, env)] = calls
    assert exe == sys.executable and argv[0] == sys.executable
    assert env["LD_PRELOAD"] == str(lib) and env[cpu_blas.MARKER_ENV] == "1"
    cpu_blas.maybe_reexec("auto", env)  # the second process: no second exec
    assert len(calls) == 1


def test_mapped_blas_reads_proc_maps():
    import mlx.core  # noqa: F401  maps MLX's BLAS (bundled, or OpenBLAS if preloaded)

    mapped = cpu_blas.mapped_blas()
    assert mapped and all("blas" in Path(p).name.lower() for p in mapped)
    assert cpu_blas.mapped_blas(999_999_999) == []


_PROBE = (
    "import json, numpy, mlx.core\n"  # numpy maps its own OpenBLAS, which MLX never calls
    "from mlx_ollama_bridge import cpu_blas\n"
    "from mlx_ollama_bridge.engine.cpu_dense import openblas_in_use\n"
    "print(json.dumps([cpu_blas.cblas_provider(), cpu_blas.preloaded_blas(), openblas_in_use()]))"
)


def _probe(env: dict[str, str]) -> list:
    import json
    import os
    import subprocess

    base = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], env={**base, **env}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_numpys_openblas_does_not_count_as_mlxs():
    provider, preloaded, in_use = _probe({})
    assert (provider, preloaded, in_use) == (None, [], False)


@needs_openblas
def test_a_preloaded_openblas_is_what_mlx_calls():
    provider, preloaded, in_use = _probe({"LD_PRELOAD": str(OPENBLAS)})
    assert Path(provider).resolve() == OPENBLAS.resolve()
    assert [Path(p).resolve() for p in preloaded] == [OPENBLAS.resolve()]
    assert in_use is True


# -- a real server ----------------------------------------------------------------------------


def _worker_blas(server: RunningServer) -> tuple[list[str], list[str]]:
    """(BLAS libraries mapped, those from LD_PRELOAD) in the server's gunicorn worker."""
    workers = psutil.Process(server.process.pid).children(recursive=True)
    assert workers, "no gunicorn worker"
    mapped = [lib for w in workers for lib in cpu_blas.mapped_blas(w.pid)]
    return mapped, [lib for w in workers for lib in cpu_blas.preloaded_blas(w.pid)]


def _generate(server: RunningServer, model: str, prompt: str, tokens: int = 6) -> dict:
    body = {
        "model": model,
        "prompt": prompt,
        "stream": False,
        "options": {"temperature": 0, "num_predict": tokens, "repeat_penalty": 1.0},
    }
    reply = requests.post(f"{server.url}/api/generate", json=body, timeout=600)
    assert reply.status_code == 200, reply.text
    return reply.json()


@needs_openblas
@pytest.mark.real_model
def test_served_worker_runs_with_openblas_and_smollm2_dense(server):
    """The session server (``python -m mlx_ollama_bridge serve``) re-executed itself with
    OpenBLAS preloaded: its worker maps it, and smollm2 is loaded as float32."""
    answer = _generate(server, "smollm2:135m", "The capital of France is")
    assert answer["response"].strip()
    mapped, preloaded = _worker_blas(server)
    assert any(Path(p).resolve() == OPENBLAS.resolve() for p in mapped), mapped
    assert [Path(p).resolve() for p in preloaded] == [OPENBLAS.resolve()]
    assert "cpu blas: OpenBLAS" in server.log()
    assert "cpu mode: dequantized to float32" in server.log()
    [entry] = [m for m in requests.get(f"{server.url}/api/ps", timeout=30).json()["models"]
               if m["name"] == "smollm2:135m"]  # fmt: skip
    # dense float32: ~135M parameters x 4 bytes, vs ~110 MB quantized
    assert 500e6 < entry["size"] < 600e6, entry


@needs_openblas
def test_serve_with_cpu_blas_off_keeps_the_bundled_blas(shared_store, tmp_path):
    running = start_server({**shared_store.env, "MLX_BRIDGE_CPU_BLAS": "off"}, tmp_path / "log")
    try:
        _generate(running, "tiny", "hello", tokens=2)  # the worker has MLX imported now
        mapped, preloaded = _worker_blas(running)
        assert preloaded == [] and any("mlx_cpu.libs" in p for p in mapped), mapped
        assert "bundled reference BLAS" in running.log()
        assert "dequantized to float32" not in running.log()  # dense only with OpenBLAS
    finally:
        stop_server(running)


# -- dense models ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_dir(shared_store) -> Path:
    """The session store's smollm2: its GGUF converted once (quantized MLX weights)."""
    from mlx_ollama_bridge.registry import Registry

    return Registry(Settings.from_env(shared_store.env)).resolve("smollm2:135m").path


def _greedy(model, tokenizer, prompt: str, tokens: int) -> list[int]:
    from mlx_lm import stream_generate

    ids = tokenizer.encode(prompt)
    return [r.token for r in stream_generate(model, tokenizer, ids, max_tokens=tokens)]


@pytest.mark.real_model
def test_dense_smollm2_answers_like_the_quantized_one(smollm2_dir):
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm import load

    from mlx_ollama_bridge.engine import cpu_dense

    model, tokenizer = load(str(smollm2_dir))
    assert cpu_dense.is_quantized(model)
    params = cpu_dense.parameter_count(model)
    assert 130e6 < params < 140e6  # SmolLM2-135M, tied embeddings counted once
    prompts = ["The capital of France is", "def fibonacci(n):", "Once upon a time"]
    quantized = [_greedy(model, tokenizer, p, 8) for p in prompts]
    dense = cpu_dense.densify(model)
    assert not cpu_dense.is_quantized(dense)
    weights = tree_flatten(dense.parameters())
    assert {v.dtype for _, v in weights} == {mx.float32}
    assert sum(v.size for _, v in weights) == params
    # Dequantized weights are exactly the values the quantized kernels use; only the order
    # of float32 sums differs, so greedy tokens agree.
    assert [_greedy(dense, tokenizer, p, 8) for p in prompts] == quantized


def test_dense_decision():
    decide = cpu_dense_decision()
    ok = {"on_cpu": True, "quantized": True, "max_params": 600_000_000, "openblas": True}
    assert decide(135_000_000, **ok, available_bytes=8 * 2**30) is None
    assert decide(135_000_000, **ok, available_bytes=None) is None
    assert "not on the CPU" in decide(1, **{**ok, "on_cpu": False}, available_bytes=None)
    assert "not quantized" in decide(1, **{**ok, "quantized": False}, available_bytes=None)
    assert "disabled" in decide(1, **{**ok, "max_params": 0}, available_bytes=None)
    assert "> MLX_BRIDGE" in decide(700_000_000, **ok, available_bytes=None)
    assert "OpenBLAS" in decide(1, **{**ok, "openblas": False}, available_bytes=None)
    assert "memory" in decide(135_000_000, **ok, available_bytes=2**20)


def test_maybe_densify_leaves_models_alone_without_openblas(monkeypatch):
    import mlx.nn as nn

    from mlx_ollama_bridge.engine import cpu_dense

    model = nn.Sequential(nn.Linear(64, 64))
    nn.quantize(model, group_size=32, bits=4)
    monkeypatch.setattr(cpu_dense, "openblas_in_use", lambda: False)
    assert cpu_dense.maybe_densify(model, on_gpu=False, max_params=10**9) is model
    assert cpu_dense.is_quantized(model)
    assert cpu_dense.maybe_densify(model, on_gpu=True, max_params=10**9) is model
    monkeypatch.setattr(cpu_dense, "openblas_in_use", lambda: True)
    assert cpu_dense.is_quantized(cpu_dense.maybe_densify(model, on_gpu=False, max_params=10))
    dense = cpu_dense.maybe_densify(model, on_gpu=False, max_params=10**9)
    assert not cpu_dense.is_quantized(dense)
    assert cpu_dense.parameter_count(dense) == 64 * 64 + 64


def cpu_dense_decision():
    from mlx_ollama_bridge.engine.cpu_dense import dense_decision

    return dense_decision


# -- doctor -----------------------------------------------------------------------------------


def test_doctor_reports_the_cpu_blas(monkeypatch, tmp_path):
    from mlx_ollama_bridge.commands import doctor

    monkeypatch.setattr(cpu_blas, "mlx_runs_on_cpu", lambda platform_name=None: True)
    lib = _touch(tmp_path, "libopenblas.so.0")
    found = doctor.check_cpu_blas(str(lib))
    assert found.ok is True and f"OpenBLAS {lib} (serve preloads it)" in found.text
    off = doctor.check_cpu_blas("off")
    assert off.ok is None and "MLX_BRIDGE_CPU_BLAS=auto" in off.render()
    monkeypatch.setattr(cpu_blas, "find_openblas", lambda *args: None)
    missing = doctor.check_cpu_blas("auto")
    assert missing.ok is None and "apt-get install libopenblas0-pthread" in missing.render()
    monkeypatch.setattr(cpu_blas, "mlx_runs_on_cpu", lambda platform_name=None: False)
    assert doctor.check_cpu_blas("auto") is None  # macOS, CUDA: no line at all
