"""What coding agents send: a long system prompt with tool schemas, resent every turn.

``system_prompt`` builds a ~6k-token system prompt (instructions and JSON tool schemas, as
Claude Code, Codex or Continue send them) that starts with a run id, so that no cache of an
earlier benchmark run can serve it. ``session`` runs a 10-turn session against any
OpenAI-compatible server, resending the whole conversation every turn, and records the time
to first token of each turn. ``EDIT_*`` is the edit benchmark: a code file to return with one
name changed, the work prompt-lookup decoding is for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peers import Reply

_TOOL_NAMES = [
    "read_file",
    "write_file",
    "edit_file",
    "list_directory",
    "search_files",
    "grep",
    "run_command",
    "run_tests",
    "git_status",
    "git_diff",
    "git_commit",
    "open_url",
    "ask_user",
    "create_todo",
    "update_todo",
    "find_symbol",
    "rename_symbol",
    "format_code",
    "lint",
    "install_package",
]
TURNS = [
    "List the files you would open first to find the bug in the parser.",
    "Open the parser module. What does it do?",
    "Which function handles the stop strings?",
    "Propose a fix for the off-by-one in that function.",
    "Write the test that would catch it.",
    "Run the tests. What command do you use?",
    "The test fails with an IndexError. Why?",
    "Fix it and show the new function.",
    "Run the linter on the file.",
    "Summarise the change for the commit message.",
]
SECOND_SESSION = "Find where the HTTP server reads the request body and explain it."


def system_prompt(run_id: str, count_tokens: Callable[[str], int], target: int = 6000) -> str:
    """Instructions plus tool schemas, grown until ``count_tokens`` says ``target``."""
    head = (
        f"Session configuration {run_id}.\n"
        "You are a coding agent working in the user's repository. You can call tools to "
        "read, search and edit files and to run commands. Think about what you need, call "
        "one tool at a time, read its result, and keep going until the task is done. Never "
        "invent file contents: read them first. Keep answers short.\n\n# Tools\n\n"
    )
    parts = [head]
    round_ = 0
    while count_tokens("".join(parts)) < target:
        for name in _TOOL_NAMES:
            schema = {
                "type": "function",
                "function": {
                    "name": f"{name}_{round_}" if round_ else name,
                    "description": (
                        f"{name.replace('_', ' ').capitalize()} in the workspace. Use it when "
                        "the task needs it; paths are relative to the repository root, and "
                        "the result is returned as text truncated to 10,000 characters."
                    ),
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "path": {"type": "string", "description": "File or directory."},
                            "pattern": {"type": "string", "description": "Text to look for."},
                            "content": {"type": "string", "description": "New file content."},
                            "recursive": {"type": "boolean", "description": "Walk subfolders."},
                        },
                        "required": ["path"],
                    },
                },
            }
            parts.append(json.dumps(schema) + "\n")
            if count_tokens("".join(parts)) >= target:
                break
        round_ += 1
    return "".join(parts)


Chat = Callable[[list[dict[str, Any]], int], Reply]  # (messages, max tokens) -> reply


def session(chat: Chat, system: str, turns: int, tokens: int) -> dict[str, Any]:
    """A session of ``turns`` turns resending everything: TTFT per turn and the messages."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    ttft = []
    for turn in range(turns):
        messages.append({"role": "user", "content": TURNS[turn % len(TURNS)]})
        reply = chat(messages, tokens)
        ttft.append(reply.ttft_s)
        messages.append({"role": "assistant", "content": reply.text})
    return {"ttft_s": ttft, "messages": messages}


def sessions(
    chats: dict[str, Chat],
    system: str,
    turns: int,
    tokens: int,
    order: Callable[[list[str], int], list[str]],
) -> dict[str, Any]:
    """:func:`session` on every server at once, turn by turn (turn ``t`` on each server in
    ``order(names, t)`` before turn ``t + 1`` anywhere), so the box's load hits all alike.
    Per server: TTFT per turn and the messages; ``load``: the load average per turn."""
    out: dict[str, Any] = {name: {"ttft_s": [], "messages": [
        {"role": "system", "content": system}]} for name in chats}  # fmt: skip
    out["load"] = []
    for turn in range(turns):
        out["load"].append(round(os.getloadavg()[0], 2))
        for name in order(list(chats), turn):
            messages = out[name]["messages"]
            messages.append({"role": "user", "content": TURNS[turn % len(TURNS)]})
            reply = chats[name](messages, tokens)
            out[name]["ttft_s"].append(reply.ttft_s)
            messages.append({"role": "assistant", "content": reply.text})
    return out


def second_session(chat: Chat, system: str, tokens: int) -> float:
    """TTFT of the first turn of another session with the same system prompt."""
    messages = [{"role": "system", "content": system}, {"role": "user", "content": SECOND_SESSION}]
    return chat(messages, tokens).ttft_s


EDIT_FILE = Path(__file__).resolve().parent / "data" / "edit_sample.py.txt"  # a fixed file


def edit_messages() -> list[dict[str, Any]]:
    """The edit benchmark's request: return a whole file with one class renamed."""
    code = EDIT_FILE.read_text()
    return [
        {
            "role": "user",
            "content": (
                f"Here is a Python file:\n\n```python\n{code}```\n\nRewrite the whole file, "
                "unchanged except that the class StopMatcher is renamed to StopFilter. Reply "
                "with the full file only."
            ),
        }
    ]
