"""``run`` and ``chat``: talk to a model, streaming its answer as it is written.

``run MODEL PROMPT`` (or piped stdin) is one ``/api/generate`` stream, as ``ollama run``
does; with no prompt on a terminal it becomes the interactive chat: every turn is one
``/api/chat`` stream carrying the whole history. In the chat, ``/bye`` leaves, ``/clear``
forgets the history, and a message between ``\"\"\"`` lines may span several lines. On a
vision model, image files named in a prompt go as images (``images``), as in Ollama.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import click

from ..client import Client, ClientError
from .common import backend_option, state
from .format import stats
from .images import extract_images
from .pull import PullProgress

MULTILINE = '"""'
HELP_TEXT = """Available commands:
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command

Use \"\"\" to begin a multi-line message."""


@dataclass
class Session:
    """One conversation with a model: the request options and the chat history."""

    client: Client
    model: str
    options: dict[str, Any] = field(default_factory=dict)  # keep_alive, format, think
    verbose: bool = False
    hide_thinking: bool = False
    messages: list[dict[str, Any]] = field(default_factory=list)
    vision: bool = False  # image files named in a prompt are sent as images (``images``)

    def generate(self, prompt: str) -> None:
        """One ``/api/generate`` stream, printed as it arrives."""
        body = {"model": self.model, "prompt": prompt, **self.options}
        if self.vision:
            body["prompt"], images = extract_images(prompt)
            body.update({"images": images} if images else {})
        final = _print_stream(self.client.stream("/api/generate", body), "response", self)
        click.echo()
        self._summary(final)

    def chat(self, text: str) -> None:
        """One chat turn; the reply joins the history only if it arrived whole."""
        message: dict[str, Any] = {"role": "user", "content": text}
        if self.vision:
            message["content"], images = extract_images(text)
            message.update({"images": images} if images else {})
        self.messages.append(message)
        body = {"model": self.model, "messages": self.messages, **self.options}
        parts: list[str] = []
        try:
            final = _print_stream(self.client.stream("/api/chat", body), "message", self, parts)
        except (ClientError, KeyboardInterrupt):
            self.messages.pop()
            raise
        self.messages.append({"role": "assistant", "content": "".join(parts)})
        click.echo("\n")
        self._summary(final)

    def load(self) -> None:
        """Load the model before the first turn (an empty ``/api/generate``), as ollama does."""
        body = {"model": self.model}
        if "keep_alive" in self.options:
            body["keep_alive"] = self.options["keep_alive"]
        self.client.json("POST", "/api/generate", body)

    def _summary(self, final: dict[str, Any]) -> None:
        if self.verbose:
            for line in stats(final):
                click.echo(line, err=True)


def _print_stream(
    lines: Iterator[dict[str, Any]], key: str, session: Session, parts: list[str] | None = None
) -> dict[str, Any]:
    """Echo each chunk's text (and thinking) at once; return the final object."""
    final: dict[str, Any] = {}
    thinking = False
    for line in lines:
        item = line.get(key) if key == "message" else line
        item = item if isinstance(item, dict) else {}
        think = item.get("thinking") or ""
        text = str(item.get("content" if key == "message" else "response") or "")
        if think and not session.hide_thinking:
            if not thinking:
                click.echo("Thinking...")
                thinking = True
            click.echo(think, nl=False)
        if text and thinking:
            click.echo("\n...done thinking.\n")
            thinking = False
        if text:
            click.echo(text, nl=False)
            sys.stdout.flush()
            if parts is not None:
                parts.append(text)
        if line.get("done"):
            final = line
    return final


def _ensure_model(client: Client, model: str) -> dict[str, Any]:
    """``/api/show``; on a 404 pull the model first (as ``ollama run``), then show again."""
    try:
        return client.show(model)
    except ClientError as exc:
        if exc.status != 404:
            raise
        missing = exc
    progress = PullProgress()
    try:
        for line in client.stream("/api/pull", {"model": model, "stream": True}):
            progress.update(line)
    except ClientError as exc:
        if exc.status in (404, 405) and "does not offer" in exc.message:
            raise missing from exc  # this server cannot pull: the "not found" is the news
        raise
    finally:
        progress.finish()
    return client.show(model)


def _options(
    keepalive: str | None, fmt: str | None, think: str | None, pairs: tuple[str, ...]
) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if pairs:
        options["options"] = dict(_option(pair) for pair in pairs)
    if keepalive:
        options["keep_alive"] = keepalive
    if fmt:
        try:
            options["format"] = fmt if fmt == "json" else json.loads(fmt)
        except ValueError as exc:
            raise click.BadParameter('"json" or a JSON schema', param_hint="--format") from exc
    if think is not None:
        options["think"] = {"true": True, "false": False}.get(think, think)
    return options


def _option(pair: str) -> tuple[str, Any]:
    """``num_predict=8`` -> ("num_predict", 8): values are JSON if they parse, else text."""
    key, sep, text = pair.partition("=")
    if not sep or not key.strip():
        raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--option")
    try:
        return key.strip(), json.loads(text)
    except ValueError:
        return key.strip(), text


def _run_options(func: Callable) -> Callable:
    options = [
        backend_option,
        click.option("--verbose", is_flag=True, help="Print timings after each answer."),
        click.option("--keepalive", help="How long the model stays loaded (e.g. 5m, 1h, -1)."),
        click.option("--format", "fmt", help='Response format: "json" or a JSON schema.'),
        click.option(
            "--think",
            type=click.Choice(["true", "false", "high", "medium", "low"]),
            help="Thinking models: think before answering (or not).",
        ),
        click.option("--hidethinking", is_flag=True, help="Do not print the thinking."),
        click.option(
            "-o",
            "--option",
            "pairs",
            multiple=True,
            metavar="KEY=VALUE",
            help="A model option (as /set parameter), e.g. -o num_predict=64 -o temperature=0.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.command()
@click.argument("model")
@click.argument("prompt", nargs=-1)
@_run_options
def run(model: str, prompt: tuple[str, ...], backend: str | None, **flags: Any) -> None:
    """Run a model: one answer for PROMPT (or piped stdin), else an interactive chat."""
    parts = list(prompt)
    stdin = sys.stdin
    interactive = not parts and stdin.isatty() and sys.stdout.isatty()
    if not stdin.isatty() and (piped := stdin.read()):
        parts.insert(0, piped)
    session = _session(model, backend, **flags)
    info = _ensure_model(session.client, model)
    session.vision = "vision" in (info.get("capabilities") or [])
    if "embedding" in (info.get("capabilities") or []):
        _embed(session, " ".join(parts))
    elif interactive:
        session.load()
        chat_loop(session)
    else:
        session.generate(" ".join(parts))


@click.command()
@click.argument("model")
@_run_options
def chat(model: str, backend: str | None, **flags: Any) -> None:
    """Chat with a model: each line of input is a turn (history kept); /bye ends."""
    session = _session(model, backend, **flags)
    info = _ensure_model(session.client, model)
    session.vision = "vision" in (info.get("capabilities") or [])
    session.load()
    chat_loop(session)


def _session(model: str, backend: str | None, **flags: Any) -> Session:
    options = _options(flags["keepalive"], flags["fmt"], flags["think"], flags["pairs"])
    client = state().client_for(backend)
    return Session(client, model, options, flags["verbose"], flags["hidethinking"])


def _embed(session: Session, text: str) -> None:
    if not text:
        raise click.ClickException(f'embedding models require input text: run {session.model} "…"')
    body = {"model": session.model, "input": text, **session.options}
    reply = session.client.json("POST", "/api/embed", body) or {}
    click.echo(json.dumps((reply.get("embeddings") or [[]])[0]))


def chat_loop(session: Session, read: Callable[[str], str] | None = None) -> None:
    """Read turns until ``/bye`` or end of input; Ctrl+C cancels the answer being written."""
    prompts = _prompts(read or _reader())
    for text in prompts:
        if text in ("/bye", "/exit"):
            return
        if text == "/clear":
            session.messages.clear()
            click.echo("Cleared session context")
        elif text in ("/?", "/help"):
            click.echo(HELP_TEXT)
        elif text.startswith("/"):
            click.echo(f"Unknown command '{text.split()[0]}'. Type /? for help")
        elif text.strip():
            try:
                session.chat(text)
            except KeyboardInterrupt:
                click.echo()  # the closed stream cancelled the request on the server


def _prompts(read: Callable[[str], str]) -> Iterator[str]:
    """Complete messages: single lines, or everything between two ``\"\"\"``."""
    while True:
        try:
            line = read(">>> ")
        except EOFError:
            click.echo()
            return
        except KeyboardInterrupt:
            click.echo("\nUse Ctrl + d or /bye to exit.")
            continue
        if not line.startswith(MULTILINE):
            yield line
            continue
        body = line[len(MULTILINE) :]
        if body.endswith(MULTILINE):
            yield body[: -len(MULTILINE)]
            continue
        collected = [body]
        while True:
            try:
                more = read("... ")
            except EOFError:
                return
            if more.endswith(MULTILINE):
                collected.append(more[: -len(MULTILINE)])
                break
            collected.append(more)
        yield "\n".join(collected).strip("\n")


def _reader() -> Callable[[str], str]:
    """``input`` with line editing and history on a terminal; plain lines otherwise."""
    stdin = sys.stdin
    if stdin.isatty():
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (importing it gives input() editing and history)
        return input

    def read(_prompt: str) -> str:
        line = stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")

    return read


COMMANDS = (run, chat)
