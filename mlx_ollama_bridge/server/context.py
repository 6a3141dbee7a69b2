"""Reaching the app's settings, registry and engine from a request (``app.extensions``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app

if TYPE_CHECKING:
    from ..config import Settings
    from ..engine import Engine
    from ..registry import Registry

EXTENSION = "mlx_ollama_bridge"


def _state() -> dict:
    return current_app.extensions[EXTENSION]


def get_settings() -> Settings:
    """The settings the app was created with."""
    return _state()["settings"]


def get_registry() -> Registry:
    """The model registry."""
    return _state()["registry"]


def get_engine() -> Engine:
    """The engine, started on first use (so that MLX starts in the serving process)."""
    engine = _state()["engine"]
    engine.start()
    return engine


def peek_engine() -> Engine:
    """The engine, not started (health, metrics and diagnostics must not start it)."""
    return _state()["engine"]
