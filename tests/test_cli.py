"""The client commands of the CLI, against the real server (``--host``/``OLLAMA_HOST``).

Every test runs click's ``CliRunner(catch_exceptions=False)``: a traceback anywhere fails
the test, and errors must be one ``Error: ...`` line with exit status 1.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import requests
from click.testing import CliRunner, Result
from fake_ollama import PULLABLE, FakeOllama
from helpers import PACKAGE, free_port, uses

from mlx_ollama_bridge import OLLAMA_COMPAT_VERSION
from mlx_ollama_bridge.cli import main

FEW = ["-o", "num_predict=4", "-o", "temperature=0"]
DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.fixture(autouse=True)
def no_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    """No upstream unless a test sets one (nothing probes a stray local Ollama)."""
    monkeypatch.setenv("MLX_BRIDGE_UPSTREAM", "off")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOllama]:
    server = FakeOllama().start()
    yield server
    server.stop()


def cli(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def one_error_line(result: Result) -> str:
    """The error line (last on stderr, after any progress lines); nothing else on stdout."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and not result.stdout.strip(), result.output
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("Error: "), result.output
    assert not any(line.startswith("Error: ") for line in lines[:-1]), result.output
    return lines[-1]


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))


# -- help and layering --------------------------------------------------------------------


def test_every_command_has_help():
    commands = list(all_commands(main))
    assert {("run",), ("chat",), ("list",), ("ps",), ("show",), ("pull",), ("rm",)} <= set(commands)
    assert {("cp",), ("stop",), ("status",), ("switch",), ("doctor",), ("config", "show")} <= set(
        commands
    )
    for path in commands:
        result = cli(*path, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output, path


def documented_commands(page: str) -> Iterator[list[str]]:
    """The argv of every ``$ mlx-ollama-bridge ...`` line in a console block of a docs page."""
    text = (DOCS / page).read_text()
    for block in re.findall(r"```console\n(.*?)```", text, re.S):
        for line in block.splitlines():
            if line.startswith("$ ") and "mlx-ollama-bridge" in line:
                words = shlex.split(line[2:].split("|")[-1])
                yield words[words.index("mlx-ollama-bridge") + 1 :]


@pytest.mark.parametrize("page", ["cli.md", "upstream.md"])
def test_docs_show_real_commands_and_options(page):
    commands = list(documented_commands(page))
    assert len(commands) >= 5
    for argv in commands:  # parsing stops at --help: names and options are checked, no more
        result = cli(*argv, "--help")
        assert result.exit_code == 0, (argv, result.output)


def test_client_commands_never_import_the_engine_or_mlx():
    for path in [PACKAGE / "cli.py", PACKAGE / "client.py", *(PACKAGE / "commands").glob("*.py")]:
        assert not uses(path, "mlx_ollama_bridge.engine", "mlx", "mlx_lm", "flask"), path


# -- list, ps, show -----------------------------------------------------------------------


def test_list_table_like_ollama(server):
    result = cli("--host", server.url, "list")
    assert result.exit_code == 0
    header, *rows = result.output.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "MODIFIED", "BACKEND"]
    digest = requests.get(server.url + "/api/tags", timeout=30).json()["models"]
    smol = next(m for m in digest if m["name"] == "smollm2:135m")
    row = next(r for r in rows if r.startswith("smollm2:135m "))
    assert re.match(
        rf"smollm2:135m\s{{4,}}{smol['digest'][:12]}\s{{4,}}\d+ MB\s{{4,}}.+ ago\s{{4,}}mlx$", row
    )

    # `ls` is `list`: the same table; only the age may have ticked on between the two calls
    def aged(output: str) -> str:
        return re.sub(r"\d+ (second|minute|hour)s? ago", "<age> ago", output)

    assert aged(cli("--host", server.url, "ls").output) == aged(result.output)


def test_list_follows_ollama_host(server, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", server.url.removeprefix("http://127.0.0.1"))  # ":port"
    result = cli("list", "tiny:")
    assert result.exit_code == 0
    assert [line.split()[0] for line in result.output.splitlines()] == ["NAME", "tiny:latest"]


def test_show_prints_the_model_section(server):
    result = cli("--host", server.url, "show", "smollm2:135m")
    assert result.exit_code == 0
    out = result.output
    assert out.startswith("  Model\n    architecture        llama\n")
    for pattern in (
        r"\n    parameters\s+134.52M\n",
        r"\n    context length\s+\d+\n",
        r"\n    embedding length\s+576\n",
        r"\n    quantization\s+Q4_1\n",
        r"\n  Capabilities\n    completion\n",
    ):
        assert re.search(pattern, out), pattern
    modelfile = cli("--host", server.url, "show", "smollm2:135m", "--modelfile").output
    assert modelfile.startswith('# Modelfile generated by "ollama show"')
    template = cli("--host", server.url, "show", "smollm2:135m", "--template").output
    assert "{{" in template or "{%" in template


def test_run_one_shot_streams_and_prints_stats(server):
    result = cli("--host", server.url, "run", "tiny", "Say hi", "--verbose", *FEW)
    assert result.exit_code == 0
    assert result.stdout.strip()  # gibberish from random weights, but four tokens of it
    assert "eval count:           4 token(s)" in result.stderr
    assert re.search(r"total duration:\s+[\d.]+(ms|s|µs)\n", result.stderr)
    assert re.search(r"eval rate:\s+[\d.]+ tokens/s", result.stderr)


def test_run_reads_a_piped_prompt(server):
    direct = cli("--host", server.url, "run", "tiny", "hello", *FEW)
    piped = cli("--host", server.url, "run", "tiny", *FEW, input="hello")
    assert piped.exit_code == 0 and piped.output == direct.output


def test_run_an_embedding_model_prints_a_vector(server):
    result = cli("--host", server.url, "run", "all-minilm", "hello world")
    assert result.exit_code == 0
    vector = json.loads(result.output)
    assert len(vector) == 384 and all(isinstance(x, float) for x in vector)


def test_chat_keeps_history_and_understands_multiline_and_bye(server):
    turns = 'hello\n"""\nfirst line\nsecond line\n"""\n/bye\nnever sent\n'
    result = cli("--host", server.url, "chat", "tiny", "--verbose", *FEW, input=turns)
    assert result.exit_code == 0
    counts = [int(n) for n in re.findall(r"prompt eval count:\s+(\d+)", result.stderr)]
    assert len(counts) == 2 and counts[1] > counts[0]  # turn 2 carried turn 1 with it


def test_ps_and_stop(server):
    assert cli("--host", server.url, "run", "tiny", "hi", "--keepalive", "5m", *FEW).exit_code == 0
    table = cli("--host", server.url, "ps").output
    header, *rows = table.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL", "BACKEND"]
    row = next(r for r in rows if r.startswith("tiny:latest"))
    assert re.search(r"100% (CPU|GPU)\s+\d+\s+\d+ minutes from now\s+mlx$", row)
    assert cli("--host", server.url, "stop", "tiny").exit_code == 0
    assert "tiny:latest" not in cli("--host", server.url, "ps").output


def test_copy_and_remove(server):
    copied = cli("--host", server.url, "cp", "tiny", "tiny-cli-copy")
    assert copied.exit_code == 0 and copied.output == "copied 'tiny' to 'tiny-cli-copy'\n"
    assert "tiny-cli-copy:latest" in cli("--host", server.url, "list").output
    removed = cli("--host", server.url, "rm", "tiny-cli-copy")
    assert removed.exit_code == 0 and removed.output == "deleted 'tiny-cli-copy'\n"
    assert "tiny-cli-copy" not in cli("--host", server.url, "list").output


# -- errors -------------------------------------------------------------------------------


def test_errors_are_one_line_and_exit_1(server):
    assert one_error_line(cli("--host", server.url, "show", "nope")) == (
        "Error: model 'nope' not found"
    )
    assert one_error_line(cli("--host", server.url, "stop", "nope")) == (
        'Error: couldn\'t find model "nope" to stop'
    )
    assert "not found" in one_error_line(cli("--host", server.url, "rm", "nope"))
    # As `ollama run`: a model that is not there is pulled first; that fails readably.
    assert "nope" in one_error_line(cli("--host", server.url, "run", "nope", "hi"))
    usage = cli("--host", server.url, "run", "tiny", "hi", "--format", "{bad")
    assert usage.exit_code == 2 and "Invalid value for --format" in usage.output


def test_no_server_is_a_readable_error():
    line = one_error_line(cli("--host", f"127.0.0.1:{free_port()}", "list"))
    assert line.startswith("Error: could not connect to a server at http://127.0.0.1:")
    assert "mlx-ollama-bridge serve" in line


def test_pull_failure_is_readable(server):
    line = one_error_line(cli("--host", server.url, "pull", "no-such-org/no-such-model-xyz"))
    assert "Traceback" not in line


# -- pull progress ------------------------------------------------------------------------


def test_pull_from_ollama_draws_progress(fake, monkeypatch):
    monkeypatch.setenv("MLX_BRIDGE_UPSTREAM", fake.url)
    result = cli("pull", PULLABLE, "--backend", "ollama")
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        "pulling manifest",
        "pulling dde5aa3fc5ff: 100% ▕█████████████████████████▏ 2 KB/2 KB",
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    failed = cli("pull", "missing", "--backend", "ollama")
    assert failed.exit_code == 1
    assert failed.stderr.splitlines()[-1] == "Error: pull model manifest: file does not exist"


# -- status, switch, config, doctor -------------------------------------------------------


def test_status_shows_both_backends(server, fake, monkeypatch):
    monkeypatch.setenv("MLX_BRIDGE_UPSTREAM", fake.url)
    result = cli("--host", server.url, "status")
    assert result.exit_code == 0
    rows = {line.split()[0]: line for line in result.output.splitlines()[1:3]}
    bridge_version = re.escape(OLLAMA_COMPAT_VERSION)  # the Ollama API version the bridge serves
    assert re.search(rf"{server.url}\s+up\s+{bridge_version}\s+\d+ ms", rows["mlx"])
    assert re.search(rf"{fake.url}\s+up\s+0\.13\.5\s+\d+ ms\s+-$", rows["ollama"])
    assert "run/chat/list use: auto" in result.output
    monkeypatch.setenv("MLX_BRIDGE_UPSTREAM", f"127.0.0.1:{free_port()}")
    down = cli("--host", f"127.0.0.1:{free_port()}", "status")
    assert down.exit_code == 1 and down.output.count(" down") == 2


def test_switch_is_saved_and_used_by_list(server, fake, monkeypatch, isolated_home):
    monkeypatch.setenv("MLX_BRIDGE_UPSTREAM", fake.url)
    assert cli("switch").output.startswith("auto ")
    assert cli("switch", "ollama").exit_code == 0
    saved = json.loads((isolated_home / "config" / "cli.json").read_text())
    assert saved == {"backend": "ollama"}
    listed = cli("--host", server.url, "list").output.splitlines()
    assert [line.split()[0] for line in listed[1:]] == ["gated:latest"]
    assert listed[1].split()[-1] == "ollama"
    cli("switch", "mlx")
    names = [line.split()[0] for line in cli("--host", server.url, "list").output.splitlines()]
    assert "tiny:latest" in names and "gated:latest" not in names
    assert cli("switch", "bogus").exit_code == 2  # click's usage error


def test_config_show_names_every_setting_and_its_source(server, isolated_home, monkeypatch):
    (isolated_home / "config").mkdir(exist_ok=True)
    (isolated_home / "config" / "config.toml").write_text("context_length = 8192\n")
    monkeypatch.setenv("OLLAMA_KEEP_ALIVE", "10m")
    result = cli("--host", server.url, "config", "show")
    assert result.exit_code == 0
    rows = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    assert re.search(r"OLLAMA_CONTEXT_LENGTH\s+8192\s+file .*config\.toml$", rows["context_length"])
    assert re.search(r"OLLAMA_KEEP_ALIVE\s+600\.0\s+environment$", rows["keep_alive_s"])
    assert re.search(rf"OLLAMA_HOST\s+{server.url}\s+flag --host$", rows["host"])
    assert re.search(r"MLX_BRIDGE_UPSTREAM\s+off\s+environment$", rows["upstream"])
    assert re.search(r"OLLAMA_NUM_PARALLEL\s+0\s+default$", rows["num_parallel"])


def test_doctor_reports_checks_with_marks(server):
    result = cli("--host", server.url, "doctor")
    out = result.output
    assert result.exit_code == (1 if "✗" in out else 0), out
    assert re.search(r"^✓ Python \d+\.\d+", out, re.M)
    assert re.search(r"^✓ MLX [\d.]+, mlx-lm [\d.]+, device (cpu|gpu) ", out, re.M)
    assert re.search(r"^✓ memory: .+ total", out, re.M)
    assert re.search(r"^✓ model store .+ \((writable|will be created)\)$", out, re.M)
    assert f"✓ server answering at {server.url} (Ollama API {OLLAMA_COMPAT_VERSION})" in out
    assert "- upstream Ollama: off" in out


def test_serve_on_a_taken_port_names_the_holder_and_the_ways_out():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        line = one_error_line(cli("serve", "--host", f"127.0.0.1:{port}"))
        assert one_error_line(cli("--host", f"127.0.0.1:{port}", "serve")) == line
    assert f"port {port} is already in use" in line
    assert f"(pid {os.getpid()})" in line  # psutil found this test process holding it
    assert "OLLAMA_HOST=127.0.0.1:11435 ollama serve" in line and "--port" in line


@pytest.mark.real_model
def test_run_a_real_model_streams_an_answer(server):
    greedy = ["-o", "num_predict=8", "-o", "temperature=0"]  # sampled, it could say nothing
    result = cli("--host", server.url, "run", "smollm2:135m", "Say hi", *greedy)
    assert result.exit_code == 0 and len(result.stdout.strip()) > 1


def test_doctor_explains_a_missing_bridge():
    result = cli("--host", f"127.0.0.1:{free_port()}", "doctor")
    assert result.exit_code == 1
    assert re.search(
        r"^✗ no bridge running at .+ \(port \d+ is free\)\n    fix: ", result.output, re.M
    )


def test_python_m_entry_point_has_the_commands():
    done = subprocess.run(
        [sys.executable, "-m", "mlx_ollama_bridge", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "switch" in done.stdout and "doctor" in done.stdout
    assert "mlx" not in {m.split(".")[0] for m in _imported_by_cli()}


def _imported_by_cli() -> set[str]:
    code = "import sys, mlx_ollama_bridge.cli; print('\\n'.join(sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_preference_file_location(isolated_home):
    assert cli("switch", "mlx").exit_code == 0
    assert Path(isolated_home / "config" / "cli.json").exists()


def test_run_without_prompt_on_a_terminal_is_an_interactive_chat(server):
    """The real TTY path: a pseudo-terminal, a prompt, one streamed turn, a prompt, /bye."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlx_ollama_bridge", "--host", server.url, "run", "tiny", *FEW],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={**os.environ, "TERM": "dumb"},
    )
    os.close(follower)
    seen = bytearray()

    def wait_for_prompts(count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while seen.count(b">>> ") < count and time.monotonic() < deadline:
            if select.select([leader], [], [], 0.2)[0]:
                seen.extend(os.read(leader, 4096))
        assert seen.count(b">>> ") >= count, bytes(seen)

    try:
        wait_for_prompts(1)
        os.write(leader, b"hello\n")
        wait_for_prompts(2)  # the answer streamed, then the next prompt
        os.write(leader, b"/bye\n")
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        os.close(leader)
    answer = bytes(seen).split(b"hello", 1)[1].split(b">>> ")[0]
    assert answer.strip() and b"Traceback" not in seen
