"""Running the coding agents of ``tests/compat/agents`` headless, sealed off from the internet.

Each agent gets its own empty home, its telemetry, update checks and error reporting switched
off, every base URL on loopback, and all proxy variables pointed at a :class:`Trap`: a loopback
listener that records whoever connects and refuses them as a proxy would. An agent that tries
to reach anything but the bridge goes through the proxy and shows up in the trap: Claude Code
and Codex honour ``HTTPS_PROXY``, and Node's own ``fetch`` (Continue's CLI) does with
``NODE_USE_ENV_PROXY=1`` (without it, it resolves and connects directly). Checked with
``strace -f -e trace=connect``: with this environment every connection the three make is to
loopback, with no DNS lookup.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
from pathlib import Path

AGENTS_DIR = Path(__file__).resolve().parent / "agents"
BIN = AGENTS_DIR / "node_modules" / ".bin"
MODEL = "smollm2:135m"
# The answer's bound where an agent lets the user set one (Claude Code, Continue; Codex sends
# none, so its answer runs to the model's end of turn). Continue is also told temperature 0;
# Codex and Claude Code have no such setting: the agents' bridge gives its smollm2 temperature
# 0 as a default parameter (test_agents.bridge), so that what it says is the same every run.
MAX_OUTPUT_TOKENS = 64
# A bound on a wedged agent, not a performance assertion: a run takes seconds.
RUN_TIMEOUT_S = 300


class Trap:
    """A loopback TCP listener that records the first bytes of every connection to it."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.hits: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:  # closed
                return
            with conn:
                conn.settimeout(2)
                try:
                    head = conn.recv(1024)
                except OSError:
                    head = b""
                self.hits.append(head.split(b"\r\n", 1)[0].decode(errors="replace"))
                # refuse as a proxy would, so that a client fails at once instead of retrying
                with contextlib.suppress(OSError):
                    conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    def close(self) -> None:
        """Stop listening."""
        self._sock.close()


def base_env(home: Path, trap: Trap) -> dict[str, str]:
    """A minimal environment: Node 22 and the agents first on PATH, a private home, every
    proxy variable on the trap, nothing of the developer's shell (no keys, no proxies)."""
    home.mkdir(parents=True, exist_ok=True)
    proxy = {
        name: trap.url
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")
    }
    return {
        "PATH": os.pathsep.join([str(BIN), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
        "DO_NOT_TRACK": "1",
        **proxy,
        "all_proxy": trap.url,
        # Node's own fetch ignores the proxy variables unless told (Node >= 22.21)
        "NODE_USE_ENV_PROXY": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


def claude_env(home: Path, trap: Trap, bridge_url: str) -> dict[str, str]:
    """Claude Code on the bridge: its documented variables for a gateway, and every kind of
    non-essential traffic (telemetry, error reports, auto-update, feedback) off."""
    return {
        **base_env(home, trap),
        "ANTHROPIC_BASE_URL": bridge_url,
        "ANTHROPIC_AUTH_TOKEN": "ollama",
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": MODEL,  # background tasks use the same model
        # max_tokens 64 instead of 32000: smollm2 (greedy) may ramble, the test wants an answer
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": str(MAX_OUTPUT_TOKENS),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_BUG_COMMAND": "1",
    }


CODEX_CONFIG = """\
# Codex on the bridge as an Ollama (`codex exec --oss`); nothing leaves the machine.
oss_provider = "ollama"
check_for_update_on_startup = false

[analytics]
enabled = false

[features]
# Plugins sync a curated marketplace from GitHub and ChatGPT at startup.
plugins = false
"""


def codex_env(home: Path, trap: Trap, bridge_url: str) -> dict[str, str]:
    """Codex on the bridge: ``CODEX_OSS_BASE_URL`` and a config.toml with analytics, update
    checks and plugin sync off."""
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(CODEX_CONFIG)
    return {
        **base_env(home, trap),
        "CODEX_HOME": str(codex_home),
        "CODEX_OSS_BASE_URL": f"{bridge_url}/v1",
    }


CONTINUE_CONFIG = """\
name: mlx-ollama-bridge
version: 1.0.0
schema: v1
models:
  - name: smollm2
    provider: ollama
    model: {model}
    apiBase: {url}
    roles: [chat, edit, apply]
    defaultCompletionOptions:
      maxTokens: {max_tokens}
      temperature: 0
"""


def continue_env(home: Path, trap: Trap, bridge_url: str) -> tuple[dict[str, str], Path]:
    """Continue's CLI on the bridge: a config.yaml with an ``ollama`` model whose ``apiBase``
    is the bridge, telemetry off. Returns the environment and the config's path."""
    global_dir = home / ".continue"
    global_dir.mkdir(parents=True, exist_ok=True)
    config = global_dir / "config.yaml"
    config.write_text(
        CONTINUE_CONFIG.format(model=MODEL, url=bridge_url, max_tokens=MAX_OUTPUT_TOKENS)
    )
    env = {
        **base_env(home, trap),
        "CONTINUE_GLOBAL_DIR": str(global_dir),
        "CONTINUE_CLI_ENABLE_TELEMETRY": "0",
        "CONTINUE_METRICS_ENABLED": "0",
    }
    return env, config


def run_agent(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """Run one agent command (``argv[0]`` from the agents' ``node_modules/.bin``), stdin closed."""
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
