"""The per-user directories the settings default to (macOS Application Support, else XDG)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

APP_NAME = "mlx-ollama-bridge"


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


__all__ = ["APP_NAME", "default_config_dir", "default_data_dir", "default_models_dir"]
