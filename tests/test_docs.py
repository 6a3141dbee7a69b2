"""Docs that must not drift from the code."""

from __future__ import annotations

from pathlib import Path

from mlx_ollama_bridge import OLLAMA_COMPAT_VERSION
from mlx_ollama_bridge.config import SETTINGS
from mlx_ollama_bridge.engine.options import IGNORED_OPTIONS, OPTION_TYPES

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_setting_is_documented():
    text = (DOCS / "configuration.md").read_text()
    missing = [s.env for s in SETTINGS if f"`{s.env}`" not in text]
    assert missing == []


def test_every_option_is_documented_with_its_effect():
    text = (DOCS / "api.md").read_text()
    missing = [key for key in OPTION_TYPES if f"`{key}`" not in text]
    assert missing == []
    for key, reason in IGNORED_OPTIONS.items():
        assert f"| `{key}` | accepted, no effect: {reason} |" in text


def test_api_page_states_the_reported_version():
    assert OLLAMA_COMPAT_VERSION in (DOCS / "api.md").read_text()
