"""Settings: one table of every knob, read from the environment and an optional TOML file.

Each setting is declared once, as a field of :class:`Settings`: its default, environment
variable, help text and parser (``SETTINGS``, the table docs/configuration.md documents, is
read off these fields). Names follow Ollama (``OLLAMA_*``) where Ollama has the setting,
``MLX_BRIDGE_*`` otherwise. Values are parsed as Ollama's ``envconfig`` parses them (see
``values.py``): a bad value falls back to the default with a warning.

Precedence: command-line flag (``Settings.with_overrides``) > environment > file
(``config.toml``, see ``file.py``) > default.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..durations import DEFAULT_KEEP_ALIVE_S, parse_env_keep_alive
from .file import CONFIG_FILE_NAME, read_config_file
from .host import HostAddress, parse_ollama_host, parse_upstream
from .paths import default_config_dir, default_models_dir
from .values import (
    parse_count,
    parse_cpu_blas,
    parse_fraction,
    parse_go_bool,
    parse_group_backend,
    parse_group_sharding,
    parse_kv_cache_type,
    parse_load_timeout,
    parse_origins,
    parse_param_count,
    parse_path,
    parse_pauses,
    parse_positive_seconds,
    parse_rate_limit,
    parse_registry_url,
    parse_uint,
    trim,
)

log = logging.getLogger(__name__)

DEFAULT_UPSTREAM = "http://127.0.0.1:11435"  # where `OLLAMA_HOST=127.0.0.1:11435 ollama serve` is
_MIB = 1024 * 1024
# Dense float32 beat Q4 at every size measured (135M to 1.5B, docs/benchmarks.md): the limit
# is memory, 4 bytes per parameter: at most ~4 GB of weights by default.
DEFAULT_CPU_DENSE_MAX_PARAMS = 1_000_000_000
# One KV cache kept per sequence a model decodes at once (8 on the test box), as Ollama's
# slots keep theirs: with fewer, concurrent sessions evicted each other's every turn.
DEFAULT_PROMPT_CACHE_ENTRIES = 8


@dataclass(frozen=True)
class Setting:
    """One row of the settings table (also the source of docs/configuration.md)."""

    name: str  # field of Settings; the unit is in the name (keep_alive_s, max_body_bytes)
    env: str
    default: Any  # a value, or a function of the environment for platform-dependent paths
    help: str
    parse: Callable[[str], Any]  # raises ValueError for a bad value

    def default_for(self, env: Mapping[str, str]) -> Any:
        """The default value, given the environment (paths depend on HOME, XDG_*)."""
        return self.default(env) if callable(self.default) else self.default


def _setting(env: str, default: Any, help: str, parse: Callable[[str], Any], **options: Any) -> Any:
    """A field of :class:`Settings` carrying its table row (the one place its default is)."""
    metadata = {"env": env, "default": default, "help": help, "parse": parse}
    if callable(default):  # a function of the environment: os.environ when built directly
        return field(default_factory=lambda: default(os.environ), metadata=metadata, **options)
    return field(default=default, metadata=metadata, **options)


@dataclass(frozen=True)
class Settings:
    """Every setting of the bridge, parsed. Build with :meth:`from_env`."""

    host: HostAddress = _setting(
        "OLLAMA_HOST", HostAddress(), "Listen address: host[:port].", parse_ollama_host
    )
    models_dir: Path = _setting(
        "MLX_BRIDGE_MODELS",
        default_models_dir,
        "Model store (manifests/, weights/). Default: ~/Library/Application Support/"
        "mlx-ollama-bridge/models on macOS, else $XDG_DATA_HOME/mlx-ollama-bridge/models.",
        parse_path,
    )
    config_dir: Path = _setting(
        "MLX_BRIDGE_CONFIG_DIR",
        default_config_dir,
        "Holds models.toml (user aliases) and config.toml. Default: ~/Library/Application "
        "Support/mlx-ollama-bridge on macOS, else $XDG_CONFIG_HOME/mlx-ollama-bridge.",
        parse_path,
    )
    keep_alive_s: float = _setting(  # math.inf = forever
        "OLLAMA_KEEP_ALIVE",
        DEFAULT_KEEP_ALIVE_S,
        "Idle time before a model is unloaded: Go duration (5m, 1h) or seconds; "
        "negative = forever, 0 = at once.",
        parse_env_keep_alive,
    )
    context_length: int = _setting(
        "OLLAMA_CONTEXT_LENGTH", 4096, "Default num_ctx in tokens.", parse_count
    )
    num_parallel: int = _setting(  # 0 = auto, see engine/kv_memory.auto_parallel
        "OLLAMA_NUM_PARALLEL",
        0,
        "Requests per loaded model that decode together (continuous batching); 0 = auto: "
        "8, 4 or 1, the most whose KV caches at num_ctx fit the memory budget beside the model.",
        parse_uint,
    )
    max_queue: int = _setting("OLLAMA_MAX_QUEUE", 512, "Queue size; beyond it: 503.", parse_count)
    max_loaded_models: int = _setting(  # 0 = auto, see loaded_models_limit
        "OLLAMA_MAX_LOADED_MODELS", 0, "Loaded at once; 0 = auto (3).", parse_uint
    )
    load_timeout_s: float = _setting(  # math.inf = no limit
        "OLLAMA_LOAD_TIMEOUT",
        300.0,
        "Longest model load: duration or seconds; 0 or negative = no limit.",
        parse_load_timeout,
    )
    debug: bool = _setting("OLLAMA_DEBUG", False, "Debug logging: 1 or true.", parse_go_bool)
    origins: tuple[str, ...] = _setting(
        "OLLAMA_ORIGINS",
        (),
        "Extra allowed CORS origins, comma-separated; * wildcards allowed.",
        parse_origins,
    )
    max_body_bytes: int = _setting(
        "MLX_BRIDGE_MAX_BODY_BYTES",
        64 * _MIB,
        "Largest request body accepted, in bytes.",
        parse_count,
    )
    threads: int = _setting(
        "MLX_BRIDGE_THREADS", 16, "HTTP threads of the gunicorn worker.", parse_count
    )
    memory_fraction: float = _setting(
        "MLX_BRIDGE_MEMORY_FRACTION",
        0.75,
        "Share of physical RAM for loaded models, the KV caches of running requests and the "
        "prompt caches (0-1]; a model that cannot fit is refused, idle ones are evicted, a "
        "request waits until its KV cache fits.",
        parse_fraction,
    )
    upstream: str | None = _setting(  # base URL of a real Ollama; None = off
        "MLX_BRIDGE_UPSTREAM",
        DEFAULT_UPSTREAM,
        "A real Ollama to forward unknown models to and merge into /api/tags and /api/ps "
        "(host:port or URL, OLLAMA_HOST forms); off = none.",
        parse_upstream,
    )
    upstream_check_s: float = _setting(
        "MLX_BRIDGE_UPSTREAM_CHECK_S",
        5.0,
        "Seconds the bridge trusts its last check that the upstream Ollama is up before it "
        "checks again (a failed check: 3 s at most).",
        parse_positive_seconds,
    )
    ollama_registry: str | None = _setting(  # base URL; None = off
        "MLX_BRIDGE_OLLAMA_REGISTRY",
        "https://registry.ollama.ai",
        "Ollama's registry, asked first when a library or namespace/model name is pulled "
        "(host or URL; plain http only when written so); off = pull from Hugging Face only.",
        parse_registry_url,
    )
    prompt_cache_entries: int = _setting(
        "MLX_BRIDGE_PROMPT_CACHE",
        DEFAULT_PROMPT_CACHE_ENTRIES,
        "KV caches kept per loaded model for reuse across turns and sessions (LRU, at most "
        "1 GiB each model, and within the memory budget); one per sequence the model can "
        "decode at once by default, as Ollama's slots keep theirs; 0 = off.",
        parse_uint,
    )
    cpu_blas: str = _setting(  # "auto", "off" or a library path (Linux CPU mode)
        "MLX_BRIDGE_CPU_BLAS",
        "auto",
        "Linux CPU mode: auto = serve runs MLX with OpenBLAS (LD_PRELOAD) when one is "
        "installed (Debian/Ubuntu: libopenblas0-pthread); off = MLX's bundled reference BLAS; "
        "or the path of a BLAS library to preload.",
        parse_cpu_blas,
    )
    cpu_dense_max_params: int = _setting(
        "MLX_BRIDGE_CPU_DENSE_MAX_PARAMS",
        DEFAULT_CPU_DENSE_MAX_PARAMS,
        "Linux CPU mode: quantized models with at most this many parameters are loaded as "
        "dense float32 when OpenBLAS is in use (faster, 4 bytes per parameter); accepts K, M, "
        "B suffixes; 0 = never.",
        parse_param_count,
    )
    prompt_cache_disk_bytes: int = _setting(
        "MLX_BRIDGE_PROMPT_CACHE_DISK",
        2048 * _MIB,
        "Disk budget in bytes for KV caches of long prompts kept in <models dir>/.prompt-cache "
        "across restarts (oldest deleted first); 0 = off.",
        parse_uint,
    )
    prompt_cache_disk_min_tokens: int = _setting(
        "MLX_BRIDGE_PROMPT_CACHE_DISK_MIN_TOKENS",
        256,
        "Shortest prompt, in tokens, whose KV cache is saved to disk; shorter ones are "
        "cheaper to evaluate again than to read back.",
        parse_count,
    )
    kv_cache_type: str = _setting(
        "OLLAMA_KV_CACHE_TYPE",
        "f16",
        "KV cache quantization: f16 (none), q8_0 (8-bit) or q4_0 (4-bit); unknown values "
        "warn and use f16.",
        parse_kv_cache_type,
    )
    batch_gather_ms: int = _setting(
        "MLX_BRIDGE_BATCH_GATHER_MS",
        100,
        "Longest an idle model waits for generation requests already on their way (begun, "
        "not yet queued) so that requests sent together are prefilled in one batch; a "
        "request that comes alone never waits; 0 = off.",
        parse_uint,
    )
    num_draft_tokens: int = _setting(
        "MLX_BRIDGE_NUM_DRAFT_TOKENS",
        3,
        "Tokens a draft model proposes per step when a model's alias names a draft "
        "(speculative decoding); 0 = never use draft models.",
        parse_uint,
    )
    prompt_lookup_tokens: int = _setting(
        "MLX_BRIDGE_PROMPT_LOOKUP",
        8,
        "Prompt-lookup decoding: most tokens drafted from the prompt's own n-grams per step, "
        "for greedy requests of 64+ prompt tokens decoding alone; 0 = off.",
        parse_uint,
    )
    api_key: str = _setting(
        "MLX_BRIDGE_API_KEY",
        "",
        "Bearer token required on every route except GET and HEAD /; empty = no key.",
        str,
        repr=False,  # never printed with the settings
    )
    rate_limit: tuple[int, float] | None = _setting(  # (requests, period in seconds)
        "MLX_BRIDGE_RATE_LIMIT",
        None,
        "Requests allowed per API key (or client address), e.g. 60/minute; unset = no limit.",
        parse_rate_limit,
    )
    graceful_timeout_s: int = _setting(
        "MLX_BRIDGE_GRACEFUL_TIMEOUT_S",
        30,
        "Seconds in-flight streams get to finish after SIGTERM before they end with an error.",
        parse_count,
    )
    log_file: Path | None = _setting(
        "MLX_BRIDGE_LOG_FILE",
        None,
        "Write the server log to this file, rotated by size; unset = standard error.",
        parse_path,
    )
    log_max_bytes: int = _setting(
        "MLX_BRIDGE_LOG_MAX_BYTES",
        10 * _MIB,
        "Size at which the log file is rotated, in bytes.",
        parse_count,
    )
    log_backups: int = _setting(
        "MLX_BRIDGE_LOG_BACKUPS", 3, "Rotated log files kept beside the current one.", parse_count
    )
    responses_store_entries: int = _setting(  # 0 = /v1/responses stores nothing
        "MLX_BRIDGE_RESPONSES_STORE_ENTRIES",
        1000,
        "Responses kept in memory for previous_response_id and GET /v1/responses/{id} "
        "(least recently used dropped first); 0 = keep none.",
        parse_uint,
    )
    responses_store_bytes: int = _setting(
        "MLX_BRIDGE_RESPONSES_STORE_BYTES",
        64 * _MIB,
        "Bytes of JSON those stored responses may hold in all.",
        parse_uint,
    )

    hostfile: Path | None = _setting(
        "MLX_BRIDGE_HOSTFILE",
        None,
        "Distributed: serve one model across the machines of this mlx.launch hostfile (JSON "
        "list of {ssh, ips}); rank 0 answers HTTP (docs/distributed.md); unset = one process.",
        parse_path,
    )
    group_backend: str = _setting(
        "MLX_BRIDGE_GROUP_BACKEND",
        "ring",
        "Distributed: MLX's backend between the ranks: ring (TCP, Ethernet or Thunderbolt "
        "bridge) or jaccl (Thunderbolt 5 RDMA); the hostfile's own backend wins.",
        parse_group_backend,
    )
    group_sharding: str = _setting(
        "MLX_BRIDGE_GROUP_SHARDING",
        "auto",
        "Distributed: how a model is split: auto (pipeline where mlx-lm supports it, else "
        "tensor), pipeline or tensor.",
        parse_group_sharding,
    )
    group_port: int = _setting(
        "MLX_BRIDGE_GROUP_PORT",
        0,
        "Distributed: first TCP port of the ring backend (one per rank and address); 0 = a "
        "free one picked at each launch.",
        parse_uint,
    )
    group_step_timeout_s: float = _setting(
        "MLX_BRIDGE_GROUP_TIMEOUT_S",
        60.0,
        "Distributed: seconds one step may take before the group counts a rank as hung, ends "
        "the running requests and is started again.",
        parse_positive_seconds,
    )
    group_restart_pauses_s: tuple[float, ...] = _setting(
        "MLX_BRIDGE_GROUP_RESTART_PAUSES",
        (1.0, 2.0, 5.0, 10.0, 30.0),
        "Distributed: seconds serve waits before starting the group again, one per launch in a "
        "row that failed fast (the last repeats), comma-separated.",
        parse_pauses,
    )
    group_healthy_run_s: float = _setting(
        "MLX_BRIDGE_GROUP_HEALTHY_RUN_S",
        60.0,
        "Distributed: seconds a launch must run to count as healthy: the next pause after it is "
        "the first again.",
        parse_positive_seconds,
    )
    group_kill_after_s: float = _setting(
        "MLX_BRIDGE_GROUP_KILL_AFTER_S",
        15.0,
        "Distributed: seconds rank 0 gets to stop after a fault before the launch's processes "
        "are killed (a rank stuck waiting on a hung one never stops by itself).",
        parse_positive_seconds,
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from ``env`` (default ``os.environ``), then config.toml."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            if text := trim(env.get(setting.env, "")):
                values[setting.name] = _parse(setting, text, env)
        config_dir = values.get("config_dir") or default_config_dir(env)
        known = {s.name for s in SETTINGS} - {"config_dir"}
        from_file = read_config_file(Path(config_dir) / CONFIG_FILE_NAME, known)
        for setting in SETTINGS:
            if setting.name in values:
                continue
            if setting.name in from_file:
                values[setting.name] = _parse(setting, from_file[setting.name], env)
            else:
                values[setting.name] = setting.default_for(env)
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with some settings replaced (command-line flags win over everything)."""
        return dataclasses.replace(self, **overrides)

    @property
    def loaded_models_limit(self) -> int:
        """``max_loaded_models`` with 0 (auto) resolved to Ollama's 3 for Metal/CPU."""
        return self.max_loaded_models or 3


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(f.name, **f.metadata) for f in dataclasses.fields(Settings)
)


def _parse(setting: Setting, text: str, env: Mapping[str, str]) -> Any:
    """Parse one value; a bad one falls back to the default with a warning, as Ollama."""
    try:
        return setting.parse(text)
    except ValueError:
        log.warning("invalid setting, using default key=%s value=%r", setting.env, text)
        return setting.default_for(env)


__all__ = [
    "DEFAULT_CPU_DENSE_MAX_PARAMS",
    "DEFAULT_PROMPT_CACHE_ENTRIES",
    "DEFAULT_UPSTREAM",
    "SETTINGS",
    "Setting",
    "Settings",
]
