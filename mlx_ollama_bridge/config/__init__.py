"""The bridge's settings (``settings.py``), with what they are read from: ``OLLAMA_HOST``
(``host.py``), value parsers (``values.py``), default directories (``paths.py``) and
``config.toml`` (``file.py``). Import them from here."""

from __future__ import annotations

from .file import CONFIG_FILE_NAME
from .host import DEFAULT_PORT, HostAddress, parse_ollama_host, parse_upstream
from .paths import APP_NAME, default_config_dir, default_data_dir, default_models_dir
from .settings import (
    DEFAULT_CPU_DENSE_MAX_PARAMS,
    DEFAULT_PROMPT_CACHE_ENTRIES,
    DEFAULT_UPSTREAM,
    SETTINGS,
    Setting,
    Settings,
)
from .values import KV_CACHE_TYPES, parse_go_bool, parse_kv_cache_type, parse_rate_limit, trim

__all__ = [
    "APP_NAME",
    "CONFIG_FILE_NAME",
    "DEFAULT_CPU_DENSE_MAX_PARAMS",
    "DEFAULT_PROMPT_CACHE_ENTRIES",
    "DEFAULT_PORT",
    "DEFAULT_UPSTREAM",
    "KV_CACHE_TYPES",
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
    "parse_rate_limit",
    "parse_upstream",
    "trim",
]
