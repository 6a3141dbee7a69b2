"""The coding agents themselves, headless, against the real bridge on the default model.

Continue's CLI (``cn -p``, a model with ``provider: ollama``), Codex (``codex exec --oss``)
and Claude Code (``claude -p``) are the npm packages pinned in ``tests/compat/agents``
(``make agents-deps``, run by ``make test``), with the Node 22 they need from the same place.
Each runs once against a real ``serve`` (gunicorn) on ``smollm2:135m`` (greedy: see ``bridge``)
and must exit 0 with an answer, the bridge's access log must show its requests answered, and
nothing may try to leave the machine (see ``agents_env``). Their requests are far longer than
the model's context (tools and system prompts of 5 to 50 KB): the bridge cuts them as Ollama
does.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from agents_env import (
    BIN,
    MODEL,
    Trap,
    claude_env,
    codex_env,
    continue_env,
    run_agent,
)
from helpers import RunningServer, Store, isolated_env, start_server, stop_server

from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.registry import Registry
from mlx_ollama_bridge.store.manifests import write_manifest


@pytest.fixture(autouse=True)
def _npm_is_installed() -> None:
    """Fail, never skip: without npm the agents were not installed (``make agents-deps``)."""
    if shutil.which("npm") is None:
        pytest.fail("npm not installed: the coding agents and their Node 22 come from npm")


PROMPT = "Say hello in one short sentence."
NUM_CTX = 1024
# Continue's CLI asks api.continue.dev for its latest version at every start (with a machine
# id), with no setting to stop it; through the trap, the one proxy it is given, that is
# refused on loopback. Anything else is a failure.
CONTINUE_VERSION_CHECK = frozenset({"CONNECT api.continue.dev:443 HTTP/1.1"})


@pytest.fixture(scope="module")
def bridge(
    shared_store: Store, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """A bridge of the agents' own, so that its log holds only their requests. Its num_ctx
    of 1024 keeps each run to seconds on a CPU: every prompt over it is cut to 514 tokens
    (reading a prompt is most of a run: with 2048, 1026 tokens took twice as long).

    Its store names the session store's smollm2 and parrot-think (the same files), smollm2
    with ``temperature 0`` as a default parameter, as ``ollama create`` with ``PARAMETER
    temperature 0`` makes it: none of the agents sends a temperature, and sampled at the
    default 0.8, what smollm2 answers (text, a tool call, nothing) and so what the agent
    does next would change from run to run."""
    root = tmp_path_factory.mktemp("agents-server")
    env = {**isolated_env(root), "OLLAMA_CONTEXT_LENGTH": str(NUM_CTX)}
    shared = Registry(Settings.from_env(shared_store.env))
    own = Registry(Settings.from_env(env))
    for name, defaults in ((MODEL, {"temperature": 0}), ("parrot-think", {})):
        model = shared.resolve(name)
        parameters = {**model.manifest.parameters, **defaults}
        manifest = replace(model.manifest, model_dir=str(model.path), parameters=parameters)
        write_manifest(own, name, manifest)
    running = start_server(env, root / "server.log")
    yield running
    stop_server(running)


@pytest.fixture
def trap() -> Iterator[Trap]:
    """The proxy every agent is given: it must see no connection at all."""
    listener = Trap()
    yield listener
    listener.close()


@pytest.fixture(autouse=True)
def agents_installed() -> None:
    for name in ("node", "cn", "codex", "claude"):
        if not (BIN / name).exists():
            pytest.fail(f"{name} is not installed in {BIN}: run `make agents-deps`")


def access_lines(server: RunningServer, since: int) -> list[str]:
    """The access-log lines the bridge wrote after byte ``since`` of its log."""
    text = server.log()[since:]
    return [line for line in text.splitlines() if " path=" in line and "method=" in line]


def answered(lines: list[str], method: str, path: str) -> list[str]:
    """The access lines of successful ``method path`` requests."""
    pattern = re.compile(rf"method={method} path={re.escape(path)}(\?\S*)? status=200\b")
    return [line for line in lines if pattern.search(line)]


def check_run(
    done,
    server: RunningServer,
    since: int,
    trap: Trap,
    method: str,
    path: str,
    known_calls: frozenset[str] = frozenset(),
):
    """Exit 0 with an answer on stdout, the bridge served the agent, nothing left loopback."""
    report = f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"
    lines = access_lines(server, since)
    assert done.returncode == 0, report + "\nbridge:\n" + "\n".join(lines)
    assert done.stdout.strip(), report
    assert answered(lines, method, path), f"no 200 for {method} {path}:\n" + "\n".join(lines)
    unknown = [hit for hit in trap.hits if hit not in known_calls]
    assert unknown == [], f"the agent tried to reach the network: {unknown}"


def test_continue_cli(bridge: RunningServer, trap: Trap, tmp_path: Path):
    env, config = continue_env(tmp_path / "home", trap, bridge.url)
    since = len(bridge.log())
    done = run_agent(["cn", "--config", str(config), "-p", PROMPT], env, tmp_path / "work")
    check_run(done, bridge, since, trap, "POST", "/v1/chat/completions", CONTINUE_VERSION_CHECK)


def test_codex_exec_oss(bridge: RunningServer, trap: Trap, tmp_path: Path):
    env = codex_env(tmp_path / "home", trap, bridge.url)
    since = len(bridge.log())
    argv = ["codex", "exec", "--oss", "-m", MODEL, "--skip-git-repo-check", "--color", "never"]
    done = run_agent([*argv, PROMPT], env, tmp_path / "work")
    check_run(done, bridge, since, trap, "POST", "/v1/responses")


def test_codex_shows_reasoning_and_answer_from_responses(
    bridge: RunningServer, trap: Trap, tmp_path: Path
):
    """Codex on a scripted thinking model (``parrot-think``, tools capable): the reasoning
    summary and the answer it prints come from /v1/responses' reasoning and message items."""
    env = codex_env(tmp_path / "home", trap, bridge.url)
    since = len(bridge.log())
    argv = ["codex", "exec", "--oss", "-m", "parrot-think:latest", "--skip-git-repo-check"]
    done = run_agent([*argv, "--color", "never", PROMPT], env, tmp_path / "work")
    check_run(done, bridge, since, trap, "POST", "/v1/responses")
    assert done.stdout.strip() == "Hello there!"
    assert "The user greets me. I should greet back." in done.stderr


def test_claude_code(bridge: RunningServer, trap: Trap, tmp_path: Path):
    env = claude_env(tmp_path / "home", trap, bridge.url)
    since = len(bridge.log())
    done = run_agent(["claude", "-p", "--model", MODEL, PROMPT], env, tmp_path / "work")
    check_run(done, bridge, since, trap, "POST", "/v1/messages")
