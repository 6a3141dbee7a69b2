"""Docs that must not drift from the code."""

from __future__ import annotations

import re
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


# -- architecture.md names every module -------------------------------------------------------

PACKAGE = DOCS.parent / "mlx_ollama_bridge"


def test_architecture_page_names_every_module():
    text = (DOCS / "architecture.md").read_text()
    missing = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if f"`{path.name}`" not in text and f"`{path.relative_to(PACKAGE)}`" not in text
    ]
    assert missing == [], "add these modules to docs/architecture.md"


def test_readme_links_every_page():
    readme = (DOCS.parent / "README.md").read_text()
    missing = [p.name for p in sorted(DOCS.glob("*.md")) if f"(docs/{p.name})" not in readme]
    assert missing == []


# Every command in the docs is run against a live server: tests/test_docs_commands.py.


# -- troubleshooting.md quotes messages the code can print ------------------------------------

# Example values the page uses in place of a message's variable parts.
EXAMPLES = re.compile(
    r"…|\bx\b|\(\d+\)|\"high\"|\"temperature\"|float32|https?://\S+?(?=[ )]|$)"
    r"|127\.0\.0\.1:11434|\[Errno 48\] Address already in use"
)


def test_troubleshooting_messages_exist_in_the_code():
    code = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    code = re.sub(r"\"\s*\n\s*f?\"", "", code)  # join implicitly concatenated string literals
    rows = [line for line in (DOCS / "troubleshooting.md").read_text().splitlines()]
    quoted = [
        m
        for row in rows
        if row.startswith("| `")
        for m in re.findall(r"`([^`]+)`", row.split("|")[1])
    ]
    assert len(quoted) > 30
    stale = [
        fragment
        for message in quoted
        for fragment in (f.strip(" :()'\"-,") for f in EXAMPLES.split(message))
        if len(fragment) >= 8 and fragment not in code
    ]
    assert stale == [], "troubleshooting.md quotes messages the code no longer prints"
