"""Settings: one table of every knob, read from the environment and an optional TOML file.

Names follow Ollama (``OLLAMA_*``) where Ollama has the setting, ``MLX_BRIDGE_*`` otherwise.
Values are parsed the way Ollama's ``envconfig`` parses them: trimmed of spaces and
surrounding quotes, booleans with Go's ``strconv.ParseBool`` (an unparsable non-empty value
counts as true), and a bad number falls back to the default with a warning.

Precedence: command-line flag (``Settings.with_overrides``) > environment > file > default.
The file is ``<config_dir>/config.toml`` with the setting names as keys, e.g.::

    keep_alive_s = "10m"        # any form the environment variable accepts
    context_length = 8192
    origins = ["https://app.example.com"]
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .durations import DEFAULT_KEEP_ALIVE_S, parse_env_duration, parse_env_keep_alive

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

log = logging.getLogger(__name__)

APP_NAME = "mlx-ollama-bridge"
DEFAULT_PORT = 11434
DEFAULT_UPSTREAM = "http://127.0.0.1:11435"  # where `OLLAMA_HOST=127.0.0.1:11435 ollama serve` is
CONFIG_FILE_NAME = "config.toml"
_PORT = re.compile(r"[+-]?[0-9]+")
_UINT = re.compile(r"[0-9]+")


# -- OLLAMA_HOST ----------------------------------------------------------------------------


@dataclass(frozen=True)
class HostAddress:
    """Where the server listens (and where clients connect): Ollama's ``OLLAMA_HOST``."""

    scheme: str = "http"
    host: str = "127.0.0.1"  # "" = every interface
    port: int = DEFAULT_PORT
    path: str = ""  # base path with a leading "/", for clients behind a proxy

    def __str__(self) -> str:
        """The URL as Ollama prints it, e.g. ``http://:1234`` for an empty host."""
        return f"{self.scheme}://{_join_host_port(self.host, self.port)}{self.path}"

    @property
    def url(self) -> str:
        """Base URL a client should use: unspecified addresses become loopback."""
        host = self.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return f"{self.scheme}://{_join_host_port(host, self.port)}{self.path}"

    @property
    def bind(self) -> str:
        """Address for gunicorn's ``bind``: ``127.0.0.1:11434``, ``[::1]:11434``."""
        return _join_host_port(self.host or "0.0.0.0", self.port)

    @property
    def is_loopback(self) -> bool:
        """True when only this machine can connect (127.0.0.0/8, ::1, localhost)."""
        if self.host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_ollama_host(value: str | None) -> HostAddress:
    """Parse ``OLLAMA_HOST`` exactly as Ollama's ``envconfig.Host()`` does.

    ``[scheme://]host[:port][/path]``: scheme ``http`` (default port 11434 without a scheme,
    80 with ``http://``, 443 with ``https://``); bare IPv6 with or without brackets; empty
    host = all interfaces; an invalid port falls back to the default with a warning; the
    bare value ``ollama.com`` means ``https://ollama.com:443``.
    """
    text = _trim(value or "").strip()
    default_port = str(DEFAULT_PORT)
    scheme, sep, hostport = text.partition("://")
    if not sep:
        scheme, hostport = "http", text
        if text == "ollama.com":
            scheme, hostport = "https", "ollama.com:443"
    elif scheme in ("http", "https"):
        default_port = "80" if scheme == "http" else "443"
    hostport, slash, path = hostport.partition("/")
    split = _split_host_port(hostport)
    if split is None:
        host, port_text = "127.0.0.1", default_port
        if (ip := _parse_ip(hostport.strip("[]"))) is not None:
            host = ip
        elif hostport:
            host = hostport
    else:
        host, port_text = split
    port = int(port_text) if _PORT.fullmatch(port_text) else -1
    if not 0 <= port <= 65535:
        log.warning("invalid port, using default port=%s default=%s", port_text, default_port)
        port = int(default_port)
    return HostAddress(scheme, host, port, "/" + path if slash and path else "")


def _split_host_port(hostport: str) -> tuple[str, str] | None:
    """Go's ``net.SplitHostPort``: (host, port) or None where Go returns an error."""
    colon = hostport.rfind(":")
    if colon < 0:
        return None  # missing port
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or end + 1 != colon:
            return None  # missing ']', missing port or too many colons
        host, start_bracket, start_close = hostport[1:end], 1, end + 1
    else:
        host, start_bracket, start_close = hostport[:colon], 0, 0
        if ":" in host:
            return None  # too many colons
    if "[" in hostport[start_bracket:] or "]" in hostport[start_close:]:
        return None
    return host, hostport[colon + 1 :]


def _parse_ip(text: str) -> str | None:
    """Go's ``net.ParseIP(text).String()``, or None if ``text`` is not an IP literal."""
    if "%" in text:
        return None  # Go's ParseIP takes no IPv6 zone
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- the settings table ---------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One row of the settings table (also the source of docs/configuration.md)."""

    name: str  # field of Settings; the unit is in the name (keep_alive_s, max_body_bytes)
    env: str
    default: Any  # a value, or a function of the environment for platform-dependent paths
    help: str
    parse: Callable[[str], Any]  # raises ValueError for a bad value


def _trim(value: str) -> str:
    """Ollama's ``envconfig.Var``: strip spaces, then surrounding quotes."""
    return value.strip().strip("\"'")


def _parse_uint(text: str) -> int:
    """Go's ``strconv.ParseUint``: digits only."""
    if not _UINT.fullmatch(text):
        raise ValueError(text)
    return int(text)


def _parse_count(text: str) -> int:
    """A positive integer (0 would stall the server: no queue, no threads, no context)."""
    if (value := _parse_uint(text)) < 1:
        raise ValueError(text)
    return value


_RATE_SPEC = re.compile(r"\s*(\d+)\s*(?:/|per)\s*(second|minute|hour|day)s?\s*", re.IGNORECASE)
_RATE_PERIODS_S = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}


def parse_rate_limit(text: str) -> tuple[int, float] | None:
    """``"60/minute"`` -> ``(60, 60.0)`` (requests, period in s); ``""``/``"off"`` -> None."""
    if not text.strip() or text.strip().lower() in ("off", "0", "none"):
        return None
    match = _RATE_SPEC.fullmatch(text)
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"invalid rate limit {text!r}: expected N/second|minute|hour|day")
    return int(match.group(1)), _RATE_PERIODS_S[match.group(2).lower()]


def parse_go_bool(text: str) -> bool:
    """Go's ``strconv.ParseBool`` for an env flag: unparsable non-empty text counts as true."""
    return text not in ("0", "f", "F", "FALSE", "false", "False")


def _parse_load_timeout(text: str) -> float:
    """Duration or integer seconds; zero or negative = no limit (``math.inf``)."""
    seconds = parse_env_duration(text)
    if seconds is None:
        raise ValueError(text)
    return math.inf if seconds <= 0 else seconds


def _parse_fraction(text: str) -> float:
    """A share of physical memory: 0 < value <= 1."""
    value = float(text)
    if not 0 < value <= 1:
        raise ValueError(text)
    return value


KV_CACHE_TYPES = ("f16", "q8_0", "q4_0")


def parse_kv_cache_type(text: str) -> str:
    """``OLLAMA_KV_CACHE_TYPE``: f16, q8_0 or q4_0 (any case); anything else is f16 with a
    warning, as Ollama falls back to an unquantized cache."""
    value = text.strip().lower()
    if value in KV_CACHE_TYPES:
        return value
    log.warning(
        "unsupported OLLAMA_KV_CACHE_TYPE=%r (expected one of %s); using f16",
        text,
        ", ".join(KV_CACHE_TYPES),
    )
    return "f16"


def _parse_origins(text: str) -> tuple[str, ...]:
    return tuple(origin.strip() for origin in text.split(",") if origin.strip())


def _parse_path(text: str) -> Path:
    return Path(text).expanduser()


_OFF = ("off", "none", "no", "false", "0", "disabled")


def parse_upstream(text: str) -> str | None:
    """``MLX_BRIDGE_UPSTREAM``: an ``OLLAMA_HOST``-style address -> base URL; ``off`` -> None."""
    if text.strip().lower() in _OFF:
        return None
    return parse_ollama_host(text).url


def _parse_cpu_blas(text: str) -> str:
    """``auto``, ``off`` (any of the off words) or a library path, kept as given."""
    lowered = text.strip().lower()
    if lowered in _OFF:
        return "off"
    return "auto" if lowered == "auto" else str(Path(text.strip()).expanduser())


_COUNT_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}
_PARAM_COUNT = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([kmbg]?)", re.IGNORECASE)


def _parse_param_count(text: str) -> int:
    """A parameter count: ``600000000``, ``600M``, ``1.5B``; 0 allowed."""
    match = _PARAM_COUNT.fullmatch(text.strip())
    if match is None:
        raise ValueError(text)
    return int(float(match.group(1)) * _COUNT_SUFFIXES[match.group(2).lower()])


def _home(env: Mapping[str, str]) -> Path:
    return Path(env["HOME"]) if env.get("HOME") else Path.home()


def default_data_dir(env: Mapping[str, str]) -> Path:
    """Per-user data directory of the bridge (macOS Application Support, else XDG)."""
    if sys.platform == "darwin":
        return _home(env) / "Library" / "Application Support" / APP_NAME
    return Path(env.get("XDG_DATA_HOME") or _home(env) / ".local" / "share") / APP_NAME


def default_models_dir(env: Mapping[str, str]) -> Path:
    """Default model store: ``<data dir>/models``."""
    return default_data_dir(env) / "models"


def default_config_dir(env: Mapping[str, str]) -> Path:
    """Per-user config directory (holds ``models.toml`` and ``config.toml``)."""
    if sys.platform == "darwin":
        return _home(env) / "Library" / "Application Support" / APP_NAME
    return Path(env.get("XDG_CONFIG_HOME") or _home(env) / ".config") / APP_NAME


_MIB = 1024 * 1024
# Dense float32 beat Q4 at every size measured (135M to 1.5B, docs/benchmarks.md): the limit
# is memory, 4 bytes per parameter: at most ~4 GB of weights by default.
DEFAULT_CPU_DENSE_MAX_PARAMS = 1_000_000_000
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "host", "OLLAMA_HOST", HostAddress(), "Listen address: host[:port].", parse_ollama_host
    ),
    Setting(
        "models_dir",
        "MLX_BRIDGE_MODELS",
        default_models_dir,
        "Model store (manifests/, weights/). Default: ~/Library/Application Support/"
        "mlx-ollama-bridge/models on macOS, else $XDG_DATA_HOME/mlx-ollama-bridge/models.",
        _parse_path,
    ),
    Setting(
        "config_dir",
        "MLX_BRIDGE_CONFIG_DIR",
        default_config_dir,
        "Holds models.toml (user aliases) and config.toml. Default: ~/Library/Application "
        "Support/mlx-ollama-bridge on macOS, else $XDG_CONFIG_HOME/mlx-ollama-bridge.",
        _parse_path,
    ),
    Setting(
        "keep_alive_s",
        "OLLAMA_KEEP_ALIVE",
        DEFAULT_KEEP_ALIVE_S,
        "Idle time before a model is unloaded: Go duration (5m, 1h) or seconds; "
        "negative = forever, 0 = at once.",
        parse_env_keep_alive,
    ),
    Setting(
        "context_length", "OLLAMA_CONTEXT_LENGTH", 4096, "Default num_ctx in tokens.", _parse_count
    ),
    Setting(
        "num_parallel",
        "OLLAMA_NUM_PARALLEL",
        1,
        "Requests per loaded model that decode together (continuous batching).",
        _parse_count,
    ),
    Setting("max_queue", "OLLAMA_MAX_QUEUE", 512, "Queue size; beyond it: 503.", _parse_count),
    Setting(
        "max_loaded_models",
        "OLLAMA_MAX_LOADED_MODELS",
        0,
        "Loaded at once; 0 = auto (3).",
        _parse_uint,
    ),
    Setting(
        "load_timeout_s",
        "OLLAMA_LOAD_TIMEOUT",
        300.0,
        "Longest model load: duration or seconds; 0 or negative = no limit.",
        _parse_load_timeout,
    ),
    Setting("debug", "OLLAMA_DEBUG", False, "Debug logging: 1 or true.", parse_go_bool),
    Setting(
        "origins",
        "OLLAMA_ORIGINS",
        (),
        "Extra allowed CORS origins, comma-separated; * wildcards allowed.",
        _parse_origins,
    ),
    Setting(
        "max_body_bytes",
        "MLX_BRIDGE_MAX_BODY_BYTES",
        64 * _MIB,
        "Largest request body accepted, in bytes.",
        _parse_count,
    ),
    Setting(
        "threads", "MLX_BRIDGE_THREADS", 16, "HTTP threads of the gunicorn worker.", _parse_count
    ),
    Setting(
        "memory_fraction",
        "MLX_BRIDGE_MEMORY_FRACTION",
        0.75,
        "Share of physical RAM loaded models may use (0-1]; a model that cannot fit is refused, "
        "idle ones are evicted to make room.",
        _parse_fraction,
    ),
    Setting(
        "upstream",
        "MLX_BRIDGE_UPSTREAM",
        DEFAULT_UPSTREAM,
        "A real Ollama to forward unknown models to and merge into /api/tags and /api/ps "
        "(host:port or URL, OLLAMA_HOST forms); off = none.",
        parse_upstream,
    ),
    Setting(
        "prompt_cache_entries",
        "MLX_BRIDGE_PROMPT_CACHE",
        4,
        "KV caches kept per loaded model for reuse across turns (LRU, at most 1 GiB each "
        "model); 0 = off.",
        _parse_uint,
    ),
    Setting(
        "cpu_blas",
        "MLX_BRIDGE_CPU_BLAS",
        "auto",
        "Linux CPU mode: auto = serve runs MLX with OpenBLAS (LD_PRELOAD) when one is "
        "installed (Debian/Ubuntu: libopenblas0-pthread); off = MLX's bundled reference BLAS; "
        "or the path of a BLAS library to preload.",
        _parse_cpu_blas,
    ),
    Setting(
        "cpu_dense_max_params",
        "MLX_BRIDGE_CPU_DENSE_MAX_PARAMS",
        DEFAULT_CPU_DENSE_MAX_PARAMS,
        "Linux CPU mode: quantized models with at most this many parameters are loaded as "
        "dense float32 when OpenBLAS is in use (faster, 4 bytes per parameter); accepts K, M, "
        "B suffixes; 0 = never.",
        _parse_param_count,
    ),
    Setting(
        "prompt_cache_disk_bytes",
        "MLX_BRIDGE_PROMPT_CACHE_DISK",
        2048 * _MIB,
        "Disk budget in bytes for KV caches of long prompts kept in <models dir>/.prompt-cache "
        "across restarts (oldest deleted first); 0 = off.",
        _parse_uint,
    ),
    Setting(
        "prompt_cache_disk_min_tokens",
        "MLX_BRIDGE_PROMPT_CACHE_DISK_MIN_TOKENS",
        256,
        "Shortest prompt, in tokens, whose KV cache is saved to disk; shorter ones are "
        "cheaper to evaluate again than to read back.",
        _parse_count,
    ),
    Setting(
        "kv_cache_type",
        "OLLAMA_KV_CACHE_TYPE",
        "f16",
        "KV cache quantization: f16 (none), q8_0 (8-bit) or q4_0 (4-bit); unknown values "
        "warn and use f16.",
        parse_kv_cache_type,
    ),
    Setting(
        "num_draft_tokens",
        "MLX_BRIDGE_NUM_DRAFT_TOKENS",
        3,
        "Tokens a draft model proposes per step when a model's alias names a draft "
        "(speculative decoding); 0 = never use draft models.",
        _parse_uint,
    ),
    Setting(
        "api_key",
        "MLX_BRIDGE_API_KEY",
        "",
        "Bearer token required on every route except GET and HEAD /; empty = no key.",
        str,
    ),
    Setting(
        "rate_limit",
        "MLX_BRIDGE_RATE_LIMIT",
        None,
        "Requests allowed per API key (or client address), e.g. 60/minute; unset = no limit.",
        parse_rate_limit,
    ),
    Setting(
        "graceful_timeout_s",
        "MLX_BRIDGE_GRACEFUL_TIMEOUT_S",
        30,
        "Seconds in-flight streams get to finish after SIGTERM before they end with an error.",
        _parse_count,
    ),
    Setting(
        "log_file",
        "MLX_BRIDGE_LOG_FILE",
        None,
        "Write the server log to this file, rotated by size; unset = standard error.",
        _parse_path,
    ),
    Setting(
        "log_max_bytes",
        "MLX_BRIDGE_LOG_MAX_BYTES",
        10 * _MIB,
        "Size at which the log file is rotated, in bytes.",
        _parse_count,
    ),
    Setting(
        "log_backups",
        "MLX_BRIDGE_LOG_BACKUPS",
        3,
        "Rotated log files kept beside the current one.",
        _parse_count,
    ),
)


@dataclass(frozen=True)
class Settings:
    """Every setting of the bridge, parsed. Build with :meth:`from_env`."""

    host: HostAddress = HostAddress()
    models_dir: Path = field(default_factory=lambda: default_models_dir(os.environ))
    config_dir: Path = field(default_factory=lambda: default_config_dir(os.environ))
    keep_alive_s: float = DEFAULT_KEEP_ALIVE_S  # math.inf = forever
    context_length: int = 4096  # tokens
    num_parallel: int = 1
    max_queue: int = 512
    max_loaded_models: int = 0  # 0 = auto, see loaded_models_limit
    load_timeout_s: float = 300.0  # math.inf = no limit
    debug: bool = False
    origins: tuple[str, ...] = ()
    max_body_bytes: int = 64 * _MIB
    threads: int = 16
    memory_fraction: float = 0.75  # of physical RAM, for loaded models
    upstream: str | None = DEFAULT_UPSTREAM  # base URL of a real Ollama; None = off
    prompt_cache_entries: int = 4  # per loaded model; 0 = no prompt cache reuse
    cpu_blas: str = "auto"  # "auto", "off" or a library path (Linux CPU mode)
    cpu_dense_max_params: int = DEFAULT_CPU_DENSE_MAX_PARAMS  # 0 = keep models quantized
    prompt_cache_disk_bytes: int = 2048 * _MIB  # 0 = no prompt caches on disk
    prompt_cache_disk_min_tokens: int = 256
    kv_cache_type: str = "f16"  # f16 | q8_0 | q4_0
    num_draft_tokens: int = 3  # 0 = speculative decoding off
    api_key: str = field(default="", repr=False)  # never printed with the settings
    rate_limit: tuple[int, float] | None = None  # (requests, period in seconds)
    graceful_timeout_s: int = 30
    log_file: Path | None = None
    log_max_bytes: int = 10 * _MIB
    log_backups: int = 3

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from ``env`` (default ``os.environ``), then config.toml."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            if text := _trim(env.get(setting.env, "")):
                values[setting.name] = _parse(setting, text)
        config_dir = values.get("config_dir") or default_config_dir(env)
        from_file = _read_config_file(Path(config_dir) / CONFIG_FILE_NAME)
        for setting in SETTINGS:
            if setting.name in values:
                continue
            if setting.name in from_file:
                values[setting.name] = _parse(setting, from_file[setting.name])
            else:
                default = setting.default
                values[setting.name] = default(env) if callable(default) else default
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with some settings replaced (command-line flags win over everything)."""
        return dataclasses.replace(self, **overrides)

    @property
    def loaded_models_limit(self) -> int:
        """``max_loaded_models`` with 0 (auto) resolved to Ollama's 3 for Metal/CPU."""
        return self.max_loaded_models or 3


def _parse(setting: Setting, text: str) -> Any:
    """Parse one value; a bad one falls back to the default with a warning, as Ollama."""
    try:
        return setting.parse(text)
    except ValueError:
        log.warning("invalid setting, using default key=%s value=%r", setting.env, text)
        return setting.default


def _read_config_file(path: Path) -> dict[str, str]:
    """Setting name -> text in the environment-variable form; {} if there is no file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        log.warning("ignoring unreadable config file path=%s error=%s", path, exc)
        return {}
    known = {s.name for s in SETTINGS} - {"config_dir"}
    values = {}
    for key, value in data.items():
        if key not in known:
            log.warning("unknown setting in config file path=%s key=%s", path, key)
        elif isinstance(value, list):
            values[key] = ",".join(str(item) for item in value)
        elif isinstance(value, bool):
            values[key] = "true" if value else "false"
        else:
            values[key] = _trim(str(value))
    return values


__all__ = [
    "SETTINGS",
    "HostAddress",
    "Setting",
    "Settings",
    "default_config_dir",
    "default_data_dir",
    "default_models_dir",
    "parse_go_bool",
    "parse_kv_cache_type",
    "parse_ollama_host",
    "parse_upstream",
]
