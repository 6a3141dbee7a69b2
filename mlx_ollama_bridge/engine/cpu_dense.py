"""CPU mode: small quantized models run as dense float32 when MLX computes on the CPU.

On MLX's CPU backend quantized matmuls run on MLX's own single-threaded kernels, while a
float32 matmul is one ``cblas_sgemm`` call: with OpenBLAS preloaded (``cpu_blas.py``) that
is multi-threaded and vectorised, and a small model dequantized to float32 prefills and
decodes faster than its Q4 form, and batches far better (figures: docs/benchmarks.md). With
MLX's bundled reference BLAS the dense model is no faster, so it stays quantized there.
float32 rather than the float16/bfloat16 ``dequantize_model`` yields: BLAS has no half-
precision gemm, so half-precision matmuls fall back to MLX's slow generic kernel.

The cost is memory: 4 bytes per parameter instead of about 0.6, so only models at or below
``MLX_BRIDGE_CPU_DENSE_MAX_PARAMS`` are converted, and only if the dense weights fit in
half of the memory available at load time.
"""

from __future__ import annotations

import logging
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.utils import dequantize_model

from .. import cpu_blas

log = logging.getLogger(__name__)

DENSE_DTYPE = mx.float32
_DENSE_BYTES_PER_PARAM = 4
_AVAILABLE_SHARE = 0.5  # dense weights may take at most this share of available memory


def parameter_count(model: nn.Module) -> int:
    """Parameters of ``model`` as if dense (a quantized matrix counts its logical size)."""
    total = 0
    for _, module in model.named_modules():
        own = {k: v for k, v in module.items() if isinstance(v, mx.array)}
        bits = getattr(module, "bits", None)
        if bits and "scales" in own and "weight" in own:
            # packed uint32 words: 32 / bits values each; scales/biases are not parameters
            total += own["weight"].size * 32 // bits
            total += own["bias"].size if "bias" in own else 0
        else:
            total += sum(v.size for v in own.values())
    return total


def is_quantized(model: nn.Module) -> bool:
    """True if any layer of ``model`` holds quantized weights."""
    return any(
        getattr(module, "bits", None) and "scales" in module for _, module in model.named_modules()
    )


def openblas_in_use() -> bool:
    """True if MLX's ``cblas_sgemm`` is a preloaded BLAS (OpenBLAS, or the library
    ``MLX_BRIDGE_CPU_BLAS`` names), not the reference one the wheel bundles.

    Not "is an OpenBLAS mapped": numpy maps its own, which MLX never calls.
    """
    provider = cpu_blas.cblas_provider()
    if provider is not None:
        return "mlx_cpu.libs" not in provider
    return bool(cpu_blas.preloaded_blas())  # no dladdr (not glibc): trust LD_PRELOAD


def configured_max_params() -> int:
    """``MLX_BRIDGE_CPU_DENSE_MAX_PARAMS`` from the environment or config.toml, for a
    backend built without settings (``MLXBackend.from_settings`` passes the value)."""
    from ..config import Settings

    return Settings.from_env().cpu_dense_max_params


def dense_decision(
    params: int,
    *,
    on_cpu: bool,
    quantized: bool,
    max_params: int,
    openblas: bool,
    available_bytes: int | None,
) -> str | None:
    """None if the model should be made dense, else the reason it stays as it is."""
    if not on_cpu:
        return "not on the CPU"
    if not quantized:
        return "not quantized"
    if max_params <= 0:
        return "disabled (MLX_BRIDGE_CPU_DENSE_MAX_PARAMS=0)"
    if params > max_params:
        return f"{params} parameters > MLX_BRIDGE_CPU_DENSE_MAX_PARAMS={max_params}"
    if not openblas:
        # measured: dense float32 on the reference BLAS is no faster than Q4 (benchmarks.md)
        return "no OpenBLAS in this process"
    dense_bytes = params * _DENSE_BYTES_PER_PARAM
    if available_bytes is not None and dense_bytes > available_bytes * _AVAILABLE_SHARE:
        return f"dense weights ({dense_bytes} bytes) would not fit in available memory"
    return None


def densify(model: nn.Module) -> nn.Module:
    """Dequantize every quantized layer and cast the floating weights to float32, evaluated."""
    model = dequantize_model(model)
    model.set_dtype(DENSE_DTYPE)  # floating parameters only
    mx.eval(model.parameters())
    return model


def maybe_densify(model: Any, *, on_gpu: bool, max_params: int | None = None) -> Any:
    """``model`` made dense float32 if CPU mode applies to it (see :func:`dense_decision`)."""
    if on_gpu or not isinstance(model, nn.Module) or not is_quantized(model):
        return model  # the common cases, decided without reading settings or /proc
    if max_params is None:
        max_params = configured_max_params()
    import psutil

    params = parameter_count(model)
    reason = dense_decision(
        params,
        on_cpu=True,
        quantized=True,
        max_params=max_params,
        openblas=openblas_in_use(),
        available_bytes=int(psutil.virtual_memory().available),
    )
    if reason is not None:
        log.info("cpu mode: keeping quantized weights params=%d reason=%s", params, reason)
        return model
    model = densify(model)
    log.info("cpu mode: dequantized to float32 params=%d (OpenBLAS in use)", params)
    return model


__all__ = [
    "DENSE_DTYPE",
    "configured_max_params",
    "dense_decision",
    "densify",
    "is_quantized",
    "maybe_densify",
    "openblas_in_use",
    "parameter_count",
]
