"""OpenBLAS for MLX's CPU backend on Linux: find it, preload it, say which BLAS is in use.

The Linux ``mlx[cpu]`` wheel links ``libmlx.so`` against a reference (netlib) BLAS it
bundles in ``mlx_cpu.libs/``. Float matmuls (``cblas_sgemm``) go through it, about ten
times slower than OpenBLAS for prefill. ``libmlx.so`` resolves ``cblas_*`` dynamically, so an
OpenBLAS named in ``LD_PRELOAD`` wins over the bundled copy, with no rebuild. The dynamic
loader reads ``LD_PRELOAD`` only when a program starts, so ``serve`` re-executes itself once
with the variable set (:func:`maybe_reexec`); a marker variable stops a second round.

Stdlib only and MLX is never imported here: this runs in the gunicorn master and in
``doctor``, before (or without) MLX. On macOS MLX uses Accelerate and Metal: nothing to do.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SETTING_ENV = "MLX_BRIDGE_CPU_BLAS"
# Set in the re-executed process: never re-execute twice, even if the preload did not take.
MARKER_ENV = "MLX_BRIDGE_CPU_BLAS_REEXEC"
OFF_VALUES = ("off", "none", "no", "false", "0", "disabled")
DEBIAN_PACKAGE = "libopenblas0-pthread"

# Debian/Ubuntu multiarch triplets by ``platform.machine()``.
_TRIPLETS = {
    "x86_64": "x86_64-linux-gnu",
    "amd64": "x86_64-linux-gnu",
    "aarch64": "aarch64-linux-gnu",
    "arm64": "aarch64-linux-gnu",
    "ppc64le": "powerpc64le-linux-gnu",
    "s390x": "s390x-linux-gnu",
    "riscv64": "riscv64-linux-gnu",
}
# Distributions of MLX that run on a GPU on Linux: there the BLAS does not matter.
_GPU_MLX_DISTRIBUTIONS = ("mlx-cuda", "mlx_cuda")


@dataclass(frozen=True)
class BlasChoice:
    """What :func:`decide` found: the library to preload (or None) and why."""

    library: Path | None
    reason: str


def candidate_paths(machine: str | None = None, root: Path = Path("/")) -> list[Path]:
    """Where OpenBLAS lives, most specific first, under ``root`` (tests pass a fake root).

    Debian/Ubuntu's ``libopenblas0-pthread`` first (its ``libblas.so.3`` carries BLAS and
    CBLAS), then the OpenMP and serial variants, then the plain ``libopenblas.so.0`` of other
    distributions (Fedora/RHEL ``lib64``, Arch and Alpine ``lib``, builds in ``/usr/local``).
    """
    machine = (machine or platform.machine()).lower()
    dirs: list[str] = []
    if triplet := _TRIPLETS.get(machine):
        for variant in ("openblas-pthread", "openblas-openmp", "openblas-serial"):
            dirs.append(f"usr/lib/{triplet}/{variant}/libblas.so.3")
        dirs.append(f"usr/lib/{triplet}/libopenblas.so.0")
    dirs += [
        "usr/lib64/libopenblasp.so.0",  # Fedora/RHEL: the pthreads build
        "usr/lib64/libopenblas.so.0",
        "usr/lib/libopenblas.so.0",
        "usr/local/lib/libopenblas.so.0",
        "opt/OpenBLAS/lib/libopenblas.so.0",  # OpenBLAS's own `make install` prefix
    ]
    return [root / d for d in dirs]


def find_openblas(machine: str | None = None, root: Path = Path("/")) -> Path | None:
    """The first OpenBLAS library that exists, or None."""
    for path in candidate_paths(machine, root):
        if path.is_file():  # follows symlinks; a dangling alternatives link does not count
            return path
    return None


def mlx_runs_on_cpu(platform_name: str | None = None) -> bool:
    """True where MLX computes on the CPU with the wheel's BLAS: Linux without ``mlx-cuda``.

    Decided from installed distributions, not by importing MLX (slow, and the gunicorn
    master must stay free of it).
    """
    if (platform_name or sys.platform) != "linux":
        return False
    for name in _GPU_MLX_DISTRIBUTIONS:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        return False
    return True


def decide(
    setting: str = "auto",
    *,
    platform_name: str | None = None,
    machine: str | None = None,
    root: Path = Path("/"),
) -> BlasChoice:
    """Which OpenBLAS to preload given the setting and the machine; ``library`` None = none.

    ``setting`` is ``MLX_BRIDGE_CPU_BLAS``: ``auto`` finds one, ``off`` (or any off word)
    keeps MLX's bundled BLAS, anything else is the path of the library to preload.
    """
    setting = setting.strip().strip("\"'") or "auto"
    if setting.lower() in OFF_VALUES:
        return BlasChoice(None, f"{SETTING_ENV}={setting}")
    if not mlx_runs_on_cpu(platform_name):
        return BlasChoice(None, "MLX does not use a CPU BLAS here")
    if setting.lower() != "auto":
        path = Path(setting).expanduser()
        if path.is_file():
            return BlasChoice(path, f"{SETTING_ENV} names it")
        return BlasChoice(None, f"{SETTING_ENV}={setting}: no such file")
    found = find_openblas(machine, root)
    if found is None:
        return BlasChoice(None, f"no OpenBLAS found (install {DEBIAN_PACKAGE})")
    return BlasChoice(found, "found")


def preloaded(env: Mapping[str, str], library: Path) -> bool:
    """True if ``LD_PRELOAD`` already names ``library`` (same file, any spelling)."""
    for item in env.get("LD_PRELOAD", "").replace(":", " ").split():
        try:
            if Path(item).resolve() == library.resolve():
                return True
        except OSError:
            continue
    return False


def reexec_env(env: Mapping[str, str], choice: BlasChoice) -> dict[str, str] | None:
    """The environment to re-execute with, or None when the process should just go on.

    None when there is nothing to preload, when it is preloaded already, or when this process
    is itself the re-executed one (the marker is set): at most one re-exec, ever.
    """
    if choice.library is None or env.get(MARKER_ENV) or preloaded(env, choice.library):
        return None
    existing = env.get("LD_PRELOAD", "").strip()
    # Ours first so that its cblas_* win; a user's own preloads are kept after it.
    value = f"{choice.library}:{existing}" if existing else str(choice.library)
    return {**env, "LD_PRELOAD": value, MARKER_ENV: "1"}


def reexec_argv(orig_argv: Sequence[str] | None = None) -> list[str]:
    """The command line that started this interpreter, with its options (``-m``, ``-X``).

    ``sys.orig_argv`` keeps ``-m mlx_ollama_bridge`` where ``sys.argv`` has the module's
    file; the interpreter is ``sys.executable``, which is absolute.
    """
    argv = list(orig_argv if orig_argv is not None else getattr(sys, "orig_argv", []))
    if not argv:  # Python < 3.10: the console script or `python file.py` form still works
        argv = [sys.executable, *sys.argv]
    return [sys.executable, *argv[1:]]


def maybe_reexec(setting: str = "auto", env: Mapping[str, str] | None = None) -> None:
    """Re-execute this process with OpenBLAS in ``LD_PRELOAD`` if it should; else return.

    Call before anything is bound or started (threads, sockets): ``execve`` replaces the
    process, keeping its pid, so a supervisor (systemd, launchd, a test) keeps tracking it.
    """
    env = os.environ if env is None else env
    new_env = reexec_env(env, decide(setting))
    if new_env is None:
        return
    argv = reexec_argv()
    log.debug("re-executing with LD_PRELOAD=%s argv=%s", new_env["LD_PRELOAD"], argv)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        os.execve(argv[0], argv, new_env)
    except OSError as exc:  # keep serving with the bundled BLAS rather than not at all
        log.warning("could not re-execute to preload OpenBLAS error=%s", exc)


def mapped_blas(pid: int | str = "self") -> list[str]:
    """Paths of BLAS libraries mapped into process ``pid`` (Linux ``/proc``), in map order.

    Not all of them serve MLX: numpy's wheel maps its own ``libscipy_openblas64_`` (with
    renamed symbols) into any process that imports it; see :func:`preloaded_blas`.
    """
    try:
        text = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return []
    found: list[str] = []
    for line in text.splitlines():
        fields = line.split(None, 5)  # address perms offset dev inode [path]
        path = fields[5].strip() if len(fields) == 6 else ""
        if "blas" in os.path.basename(path).lower() and path not in found:
            found.append(path)
    return found


def preloaded_blas(pid: int | str = "self") -> list[str]:
    """The BLAS libraries process ``pid`` has from its ``LD_PRELOAD`` (and really mapped).

    Those are the ones ``libmlx.so``'s ``cblas_*`` bind to: preloaded objects come first in
    the dynamic loader's global scope, before the copy the wheel bundles.
    """
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return []
    environ = dict(
        item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item
    )
    wanted = {_resolved(p) for p in environ.get("LD_PRELOAD", "").replace(":", " ").split()}
    return [path for path in mapped_blas(pid) if _resolved(path) in wanted]


def cblas_provider() -> str | None:
    """The file that defines ``cblas_sgemm`` in this process's global symbol scope, or None.

    MLX's own copy is loaded ``RTLD_LOCAL`` (with the Python extension), so a hit here is a
    preloaded (or globally loaded) BLAS, which is the one MLX's matmuls call.
    """
    import ctypes

    class DlInfo(ctypes.Structure):
        _fields_ = [
            ("dli_fname", ctypes.c_char_p),
            ("dli_fbase", ctypes.c_void_p),
            ("dli_sname", ctypes.c_char_p),
            ("dli_saddr", ctypes.c_void_p),
        ]

    try:
        scope = ctypes.CDLL(None)
        address = ctypes.cast(scope.cblas_sgemm, ctypes.c_void_p)
        info = DlInfo()
        if not scope.dladdr(address, ctypes.byref(info)) or not info.dli_fname:
            return None
    except (AttributeError, OSError):  # no such symbol in the global scope; not glibc
        return None
    return os.fsdecode(info.dli_fname)


def _resolved(path: str) -> str:
    try:
        return str(Path(path).resolve())
    except OSError:
        return path


def describe(pid: int | str = "self", setting: str = "auto") -> str:
    """One line saying which BLAS MLX's CPU backend uses (or will use) in process ``pid``."""
    if not mlx_runs_on_cpu():
        return "none needed (MLX runs on Metal/Accelerate or a GPU here)"
    preloaded = preloaded_blas(pid)
    if preloaded:
        name = "OpenBLAS" if "openblas" in preloaded[0].lower() else "preloaded BLAS"
        return f"{name} {preloaded[0]}"
    choice = decide(setting)
    if choice.library is not None:
        return f"MLX's bundled reference BLAS (slow); OpenBLAS {choice.library} not preloaded"
    return f"MLX's bundled reference BLAS (slow): {choice.reason}"


__all__ = [
    "DEBIAN_PACKAGE",
    "MARKER_ENV",
    "SETTING_ENV",
    "BlasChoice",
    "candidate_paths",
    "decide",
    "describe",
    "find_openblas",
    "mapped_blas",
    "maybe_reexec",
    "mlx_runs_on_cpu",
    "cblas_provider",
    "preloaded",
    "preloaded_blas",
    "reexec_argv",
    "reexec_env",
]
