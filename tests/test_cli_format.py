"""The CLI's text, checked against what the ``ollama`` CLI prints (format/*.go, cmd.go)."""

from __future__ import annotations

import io

from mlx_ollama_bridge.commands import format as fmt
from mlx_ollama_bridge.commands.pull import PullProgress


def test_human_bytes_like_ollama():
    assert [fmt.human_bytes(n) for n in (0, 999, 1000, 1500, 134_000_000, 2_019_393_189)] == [
        "0 B",
        "999 B",
        "1 KB",
        "1.5 KB",
        "134 MB",
        "2.0 GB",
    ]


def test_go_durations():
    cases = {0: "0s", 999: "999ns", 1500: "1.5µs", 30_352_670: "30.35267ms"}
    cases.update(
        {2_500_000_000: "2.5s", 362_213_205_901: "6m2.213205901s", 3_600 * 10**9: "1h0m0s"}
    )
    assert {n: fmt.go_duration(n) for n in cases} == cases


def test_human_time_and_until():
    now = 1_700_000_000.0
    assert fmt.human_time("2023-11-14T22:11:20Z", now=now) == "2 minutes ago"
    assert fmt.human_time("2023-11-14T22:13:19.123456789Z", now=now) == "Less than a second ago"
    assert fmt.until("2317-01-01T00:00:00Z", now=now) == "Forever"
    assert fmt.until("2023-11-14T22:18:10+00:00", now=now) == "4 minutes from now"
    assert fmt.until("2023-11-14T22:00:00Z", now=now) == "Stopping..."
    assert fmt.processor(100, 100) == "100% GPU" and fmt.processor(100, 0) == "100% CPU"
    assert fmt.processor(100, 25) == "75%/25% CPU/GPU"


def test_table_pads_columns_four_spaces_apart():
    assert fmt.table(["NAME", "ID"], [["a:latest", "1"], ["bb", "22"]]) == (
        "NAME        ID\na:latest    1\nbb          22"
    )


def test_pull_progress_on_a_terminal_redraws_in_place():
    out = io.StringIO()
    progress = PullProgress(out, tty=True)
    digest = "sha256:" + "ab" * 32
    for completed in (0, 500, 1000):
        progress.update(
            {"status": "pulling", "digest": digest, "total": 1000, "completed": completed}
        )
    progress.update({"status": "success"})
    progress.finish()
    text = out.getvalue()
    assert text.count("\r\x1b[K") == 2 and " 50% " in text and "100% " in text
    assert text.endswith("\nsuccess\n")
