"""Docs that must not drift from the code."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mlx_ollama_bridge import OLLAMA_COMPAT_VERSION
from mlx_ollama_bridge.cli import main as cli_main
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


# -- every shell command in the docs is run (or, if it cannot run in a test, checked) ----------

# Pages other people own check their own commands.
OWN_PAGES = [DOCS.parent / "README.md"] + [
    p for p in sorted(DOCS.glob("*.md")) if p.name not in {"benchmarks.md", "structured-output.md"}
]
# `mlx-ollama-bridge` subcommands that are run against the live test server.
RUN_AGAINST_SERVER = {"list", "ps", "show", "cp", "rm", "stop", "status", "version"}
# Commands that cannot run in a test, and what checks them instead.
NOT_RUN = {
    "make": "`make test` is the CI command; `make run` is import-defaults + serve",
    "ollama": "the Go CLI's requests are replayed by tests/compat/test_replay.py",
    "export": "sets the variable the following commands use",
    "echo": "feeds a command that is checked on its own",
    "python3": "only used to generate a secret",
    "jq": "formats the output of a command that is run",
}
DEFAULT_URL = re.compile(r"(https?://)?(127\.0\.0\.1|localhost):11434|\$OLLAMA_HOST")


def shell_commands(page: Path) -> list[str]:
    """Commands in a page's ``sh``/``console`` blocks (``$ `` prompts in console blocks)."""
    commands, block, lang, pending = [], False, "", ""
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            block, lang = (not block), line[3:].strip()
            continue
        if not block or lang not in ("sh", "console"):
            continue
        if lang == "console":
            if not line.startswith("$ "):
                continue
            line = line[2:]
        pending = f"{pending}\n{line}" if pending else line
        try:  # a quoted JSON body may span lines: wait until the quotes close
            words = shlex.split(pending, comments=True)
        except ValueError:
            continue
        if words:
            commands.append(pending)
        pending = ""
    return commands


def _stages(command: str) -> list[tuple[dict[str, str], list[str]]]:
    """Each stage of a pipeline as (leading ``VAR=value`` words, argv)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars="|")
    lexer.whitespace_split, lexer.commenters = True, "#"
    stages: list[list[str]] = [[]]
    for token in lexer:
        if token == "|":
            stages.append([])
        else:
            stages[-1].append(token)
    result = []
    for words in stages:
        env = {}
        while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        result.append((env, words))
    return result


def _curl(server, words: list[str]) -> subprocess.CompletedProcess:
    """Run a curl command against the test server instead of the default address."""
    words = [DEFAULT_URL.sub(server.url, w) for w in words]
    return subprocess.run(
        [words[0], "-sS", "--fail-with-body", *words[1:]],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _cli(server, env: dict[str, str], words: list[str]) -> Result:
    """Run an ``mlx-ollama-bridge`` client command in-process against the test server."""
    args = [w for i, w in enumerate(words) if w != "--host" and words[i - 1] != "--host"][1:]
    env = {**env, "OLLAMA_HOST": server.url}
    return CliRunner().invoke(cli_main, ["--host", server.url, *args], env=env)


def _check_options(words: list[str]) -> None:
    """A command that cannot run here: its subcommand exists and knows every option used."""
    path = [w for w in words[1:3] if re.fullmatch(r"[a-z][a-z-]*", w)]
    helped = CliRunner().invoke(cli_main, [*path, "--help"])
    if helped.exit_code != 0 and len(path) > 1:  # `pull NAME`: NAME is not a subcommand
        helped = CliRunner().invoke(cli_main, [*path[:1], "--help"])
    assert helped.exit_code == 0, f"{' '.join(words)}: no such command"
    for word in words:
        option = word.split("=")[0]
        if option.startswith("--"):
            assert option in helped.output, f"{' '.join(words)}: unknown option {option}"


def _needs_upstream(words: list[str]) -> bool:
    """Commands aimed at a real Ollama: the test server has none (tests/test_upstream.py)."""
    return "ollama" in words[words.index("--backend") + 1 :][:1] if "--backend" in words else False


@pytest.mark.parametrize("page", OWN_PAGES, ids=lambda p: p.name)
def test_shell_commands_in_docs_run(server, page):
    for command, (env, words) in ((c, stage) for c in shell_commands(page) for stage in _stages(c)):
        if words[0] in NOT_RUN:
            continue
        if words[0] == "curl":
            done = _curl(server, words)
            assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
        elif words[0] == "mlx-ollama-bridge" and words[1] in RUN_AGAINST_SERVER:
            if _needs_upstream(words):
                _check_options(words)
                continue
            result = _cli(server, env, words)
            assert result.exit_code == 0, f"{command}\n{result.output}"
        elif words[0] == "mlx-ollama-bridge":
            _check_options(words)
        else:
            pytest.fail(f"{page.name}: `{command}` is neither run nor listed in NOT_RUN")


def test_python_examples_in_quickstart_run(server):
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "quickstart.md").read_text(), re.S)
    assert len(blocks) == 3
    code = "\nprint('-- next --')\n".join(blocks)  # one interpreter start for all of them
    done = subprocess.run(
        [sys.executable, "-c", code.replace("http://127.0.0.1:11434", server.url)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert all(part.strip() for part in done.stdout.split("-- next --"))


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
