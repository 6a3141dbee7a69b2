"""Every command in the docs is run against a live server, or listed in ``NOT_RUN`` with why.

The shell commands of ``sh`` and ``console`` blocks (``$ `` prompts; in a console block the
``>>> ``/``... `` lines after a command are what is typed into it) and every ``python`` block
of README.md and docs/*.md are extracted and executed:

* ``curl`` (pipelines with ``jq`` included) runs in bash against the session ``server``; a
  trailing ``# 403``-style comment is the status the command must get.
* ``mlx-ollama-bridge`` client commands run in-process (click's runner) against the same
  server; ``pull`` from Hugging Face runs against a second server whose ``HF_ENDPOINT`` is
  a fake Hub holding the documented repo (``tests/fake_hub.py``); ``--backend ollama`` and
  ``status`` reach a fake upstream Ollama (``tests/fake_ollama.py``).
* ``mlx-ollama-bridge serve`` lines (with their ``VAR=value`` prefixes) start real servers,
  which must answer ``GET /``; they are then stopped.
* ``python`` blocks run in one interpreter and must print something.

What the test changes in a command: the default address (``127.0.0.1:11434``, ``localhost:11434``,
``$OLLAMA_HOST``, ``--host``) becomes the test server's, a served port becomes a free one, and
``run``/``chat`` without ``num_predict`` get ``-o num_predict=8`` (the CPU decodes ~8 tokens/s).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fake_ollama
import pytest
import requests
from click.testing import CliRunner, Result
from fake_hub import FakeHub
from fake_ollama import FakeOllama
from helpers import (
    RunningServer,
    clean_environ,
    free_port,
    isolated_env,
    start_server,
    wait_until,
)
from helpers import stop_server as stop_running_server

from mlx_ollama_bridge.cli import main as cli_main

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
# benchmarks.md's commands take minutes on a Mac; bench/ runs them (another owner's page).
PAGES = [REPO / "README.md"] + [p for p in sorted(DOCS.glob("*.md")) if p.name != "benchmarks.md"]

# First words that are not run, and why.
NOT_RUN = {
    "make": "`make test` is the command running this test; `make run` is import-defaults + serve",
    "ollama": "the Go CLI is not installable here (no PyPI/npm/Debian package); the requests it "
    "sends are replayed by tests/compat/test_replay.py",
    "export": "only sets the variable the following commands use",
    **{
        agent: "a coding agent: tests/compat/test_agents.py runs it headless against a real "
        "server with the configuration the page shows"
        for agent in ("cn", "codex", "claude")
    },
}
# `mlx-ollama-bridge` subcommands that are not run, and why (their options are still checked).
CLI_NOT_RUN = {
    "service": "installs a login service into the real user session (launchctl on macOS, "
    "systemctl --user on Linux); tests/test_service.py drives it against fakes",
}
# Exit codes a command may end with besides 0 (documented on the page).
OTHER_EXITS = {"doctor": {1}}  # 1 when a check fails (e.g. no upstream Ollama on this box)
DEFAULT_URL = re.compile(r"(https?://)?(127\.0\.0\.1|localhost):11434|\$OLLAMA_HOST")
EXPECTED_STATUS = re.compile(r"#\s*(\d{3})\s*$")
# The Hugging Face repos the docs pull, served by the fake Hub from the tiny model.
HUB_REPOS = ["mlx-community/Qwen3-0.6B-4bit"]
GENERATION_CAP = ["-o", "num_predict=8"]


@dataclass
class Command:
    """One documented command: its text, where it is, and what is typed into it."""

    page: str
    text: str
    stdin: str | None = None

    def __str__(self) -> str:
        return f"{self.page}: {self.text}"


def blocks(page: Path) -> Iterator[tuple[str, list[str]]]:
    """``(language, lines)`` of each fenced block, indented ones (in lists) included."""
    lang, lines, indent = None, [], ""
    for line in page.read_text().splitlines():
        fence = re.match(r"^(\s*)```(\S*)", line)
        if fence and lang is None:
            indent, lang, lines = fence.group(1), fence.group(2), []
        elif fence:
            yield lang, lines
            lang = None
        elif lang is not None:
            lines.append(line[len(indent) :] if line.startswith(indent) else line)


def shell_commands(page: Path) -> list[Command]:
    """Commands of the ``sh`` and ``console`` blocks of a page."""
    commands: list[Command] = []
    for lang, lines in blocks(page):
        if lang not in ("sh", "console"):
            continue
        pending = ""
        for line in lines:
            if lang == "console" and not line.startswith("$ "):
                typed = re.match(r"^(?:>>>|\.\.\.) (.*)$", line)  # typed, not output
                if typed and commands and not pending:
                    commands[-1].stdin = (commands[-1].stdin or "") + typed.group(1) + "\n"
                continue
            line = line[2:] if lang == "console" else line
            pending = f"{pending}\n{line}" if pending else line
            try:  # a quoted JSON body may span lines: wait until the quotes close
                words = shlex.split(pending, comments=True)
            except ValueError:
                continue
            if words:
                commands.append(Command(page.name, pending))
            pending = ""
    return commands


def stages(command: str) -> list[tuple[dict[str, str], list[str]]]:
    """Each stage of a pipeline as (leading ``VAR=value`` words, argv)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars="|")
    lexer.whitespace_split, lexer.commenters = True, "#"
    words_by_stage: list[list[str]] = [[]]
    for token in lexer:
        if token == "|":
            words_by_stage.append([])
        else:
            words_by_stage[-1].append(token)
    result = []
    for words in words_by_stage:
        env = {}
        while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        result.append((env, words))
    return result


ALL_COMMANDS = [c for page in PAGES for c in shell_commands(page)]


def kind(command: Command) -> str:
    """How a command is handled: a NOT_RUN key, ``curl``, ``serve``, ``pull``, ``cli``."""
    parts = stages(command.text)
    env, words = parts[-1] if parts[0][1][0] == "echo" else parts[0]
    first = words[0]
    if first in NOT_RUN:
        return first
    if first == "curl":
        return "curl"
    assert first == "mlx-ollama-bridge", f"{command}: neither run nor listed in NOT_RUN"
    sub = subcommand(words)
    if sub in CLI_NOT_RUN:
        return "service"
    if sub == "serve":
        return "serve"
    if sub == "pull" and not backend_ollama(words):
        return "pull"
    return "cli"


def subcommand(words: list[str]) -> str:
    """The first word after the program that is not ``--host VALUE``."""
    rest = [w for i, w in enumerate(words[1:], 1) if w != "--host" and words[i - 1] != "--host"]
    return rest[0]


def backend_ollama(words: list[str]) -> bool:
    """``--backend ollama``: the command talks to the upstream Ollama directly."""
    return "--backend" in words and words[words.index("--backend") + 1] == "ollama"


def test_every_command_is_run_or_listed():
    kinds = {str(c): kind(c) for c in ALL_COMMANDS}
    assert len(kinds) > 40
    for name in ("curl", "cli", "pull", "serve"):
        assert name in kinds.values(), f"no {name} command found: extraction is broken"


# -- running -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOllama]:
    """A fake Ollama where ``llama3.2`` (the model the docs pull with ``--backend ollama``)
    can be pulled."""
    saved = fake_ollama.PULLABLE
    fake_ollama.PULLABLE = "llama3.2"
    running = FakeOllama().start()
    yield running
    running.stop()
    fake_ollama.PULLABLE = saved


@pytest.fixture(scope="module")
def hub_server(tiny_model_dir, tmp_path_factory) -> Iterator[RunningServer]:
    """A server that pulls from a fake Hub holding every repo the docs pull."""
    hub = FakeHub().start()
    for repo in HUB_REPOS:
        hub.add_repo(repo, tiny_model_dir)
    root = tmp_path_factory.mktemp("docs-pull")
    env = {k: v for k, v in isolated_env(root).items() if k != "HF_HUB_OFFLINE"}
    running = start_server({**env, "HF_ENDPOINT": hub.url}, root / "server.log")
    yield running
    stop_running_server(running)
    hub.stop()


def substitute(text: str, url: str) -> str:
    """The default address in a command -> ``url``."""
    return DEFAULT_URL.sub(url, text)


def run_curl(command: Command, url: str) -> None:
    """In bash (pipes and quoting as written), failing on an HTTP error unless the page
    names the status the command gets."""
    text = substitute(command.text, url)
    expected = EXPECTED_STATUS.search(text)
    if expected:
        text = EXPECTED_STATUS.sub("", text) + " -s -o /dev/null -w '%{http_code}'"
    else:
        text = re.sub(r"^curl ", "curl -sS --fail-with-body ", text, flags=re.M)
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", text], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
    if expected:
        assert done.stdout == expected.group(1), f"{command}: got {done.stdout}"
    else:
        assert done.stdout.strip(), f"{command}: no output"


def run_cli(command: Command, url: str, upstream_url: str) -> Result:
    """In-process against ``url``; a leading ``echo`` stage becomes standard input."""
    parts = stages(command.text)
    stdin = command.stdin
    if parts[0][1][0] == "echo":
        stdin = " ".join(parts[0][1][1:]) + "\n"
    env, words = parts[-1]
    args = [w for i, w in enumerate(words) if w != "--host" and words[i - 1] != "--host"][1:]
    if args[0] in ("run", "chat") and not any(a.startswith("num_predict=") for a in args):
        args += GENERATION_CAP
    env = {**env, "OLLAMA_HOST": url, "MLX_BRIDGE_UPSTREAM": upstream_url}
    result = CliRunner().invoke(cli_main, ["--host", url, *args], env=env, input=stdin)
    allowed = {0} | OTHER_EXITS.get(args[0], set())
    assert result.exit_code in allowed, f"{command}\n{result.output}"
    return result


def check_options(command: Command) -> None:
    """A command that is not run: its subcommand exists and knows every option used."""
    words = stages(command.text)[0][1]
    path = [w for w in words[1:3] if re.fullmatch(r"[a-z][a-z-]*", w)]
    helped = CliRunner().invoke(cli_main, [*path, "--help"])
    if helped.exit_code != 0 and len(path) > 1:  # `pull NAME`: NAME is not a subcommand
        helped = CliRunner().invoke(cli_main, [*path[:1], "--help"])
    assert helped.exit_code == 0, f"{command}: no such command"
    for word in words:
        option = word.split("=")[0]
        if option.startswith("--"):
            assert option in helped.output, f"{command}: unknown option {option}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_commands_run(server, upstream, page):
    for command in shell_commands(page):
        how = kind(command)
        if how == "curl":
            run_curl(command, server.url)
        elif how == "cli":
            run_cli(command, server.url, upstream.url)
        elif how == "service":
            check_options(command)


def test_pull_commands_run(hub_server, upstream):
    pulls = [c for c in ALL_COMMANDS if kind(c) == "pull"]
    assert pulls
    for command in pulls:
        result = run_cli(command, hub_server.url, upstream.url)
        assert "success" in result.output, f"{command}\n{result.output}"
    names = [
        m["name"] for m in requests.get(hub_server.url + "/api/tags", timeout=10).json()["models"]
    ]
    assert any("Qwen3-0.6B-4bit" in n for n in names), names


def test_serve_commands_start_a_server(tmp_path):
    """Every documented ``serve`` line, started at once on free ports, answers ``GET /``."""
    serves = {c.text: c for c in ALL_COMMANDS if kind(c) == "serve"}
    assert len(serves) >= 3
    started = []
    ports: set[int] = set()
    for index, command in enumerate(serves.values()):
        env, words = stages(command.text)[0]
        env = {k: v.replace("…", "docs-test-key") for k, v in env.items()}
        # all are picked before any server binds: the kernel may hand out a port twice
        while (port := free_port()) in ports:
            pass
        ports.add(port)
        args = ["--port", str(port)] if "OLLAMA_HOST" in env else ["--host", f"127.0.0.1:{port}"]
        home = isolated_env(tmp_path / str(index))
        log_path = tmp_path / f"serve-{index}.log"
        log = log_path.open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "mlx_ollama_bridge", *words[1:], *args],
            env={**clean_environ(), **home, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append((command, process, f"http://127.0.0.1:{port}", log_path))
    try:
        for command, process, url, log_path in started:
            assert wait_until_up(process, url), f"{command}\n{log_path.read_text()}"
    finally:
        for _command, process, _url, _log in started:
            process.terminate()
        for _command, process, _url, _log in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_until_up(process: subprocess.Popen, url: str, timeout_s: float = 90) -> bool:
    """Poll ``GET /`` until it answers 200 (False if the process dies or time runs out)."""

    def up() -> bool:
        try:
            return requests.get(url, timeout=5).status_code == 200
        except requests.RequestException:
            return False

    return bool(wait_until(lambda: process.poll() is not None or up(), timeout_s, poll=0.2)) and (
        process.poll() is None
    )


def test_python_examples_run(server):
    pages = [p for p in PAGES if "```python" in p.read_text()]
    code_blocks = [
        "\n".join(lines) for page in pages for lang, lines in blocks(page) if lang == "python"
    ]
    assert len(code_blocks) >= 3
    code = "\nprint('-- next --')\n".join(code_blocks)  # one interpreter start for all of them
    done = subprocess.run(
        [sys.executable, "-c", substitute(code, server.url)],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ},
    )
    assert done.returncode == 0, done.stderr
    assert all(part.strip() for part in done.stdout.split("-- next --"))
