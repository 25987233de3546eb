"""Running where operators run it: environment configuration, sharding, progress, run ids."""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from batch_updater import Rate, RunConfig, RunSummary, Status, run_batch
from batch_updater.cli import main
from batch_updater.errors import SetupError
from batch_updater.progress import BarStream, Progress, ProgressSnapshot, render_bar, tick
from batch_updater.rows import RowPlan
from batch_updater.shard import Shard, shard_from_environment

from .child_process import HANG_SECONDS
from .conftest import EXAMPLE, INVALID_EXAMPLE, read_report


def events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def summary_of(report: Path) -> dict[str, Any]:
    return json.loads(Path(f"{report}.summary.json").read_text())  # type: ignore[no-any-return]


# -- environment ---------------------------------------------------------------------------


def test_every_flag_can_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = tmp_path / "env.csv"
    monkeypatch.setenv("BATCH_UPDATER_INPUT", str(EXAMPLE))
    monkeypatch.setenv("BATCH_UPDATER_REPORT", str(report))
    monkeypatch.setenv("BATCH_UPDATER_DRY_RUN", "true")
    monkeypatch.setenv("BATCH_UPDATER_RATE", "5")
    monkeypatch.setenv("BATCH_UPDATER_NO_ADAPTIVE", "yes")
    monkeypatch.setenv("BATCH_UPDATER_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("BATCH_UPDATER_RESUME", "")
    assert main(["run"]) == 0
    settings = summary_of(report)["settings"]
    assert settings["rate"] == 5.0
    assert settings["adaptive"] is False
    assert settings["max_attempts"] == 3
    assert settings["dry_run"] is True


def test_the_command_line_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCH_UPDATER_RATE", "5")
    monkeypatch.setenv("BATCH_UPDATER_DRY_RUN", "false")
    report = tmp_path / "r.csv"
    assert main(["run", str(EXAMPLE), "--dry-run", "--rate", "7", "--report", str(report)]) == 0
    assert summary_of(report)["settings"]["rate"] == 7.0


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("BATCH_UPDATER_RATE", "fast", "BATCH_UPDATER_RATE='fast'"),
        ("BATCH_UPDATER_CONCURRENCY", "0", "must be at least 1"),
        ("BATCH_UPDATER_SKIP_INVALID", "maybe", "use true or false"),
        ("BATCH_UPDATER_LOG_FORMAT", "xml", "use one of auto, json, console"),
        ("BATCH_UPDATER_SHARD", "3", "is not K/N"),
    ],
)
def test_a_bad_environment_value_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(name, value)
    assert main(["run", str(EXAMPLE), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert name in err or name == "BATCH_UPDATER_SHARD"
    assert "Traceback" not in err


def test_run_help_lists_the_variables(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out.replace("\n", " ")
    for name in ("BATCH_UPDATER_RATE", "BATCH_UPDATER_SKIP_INVALID", "BATCH_UPDATER_INPUT"):
        assert name in out


def test_no_input_at_all_is_a_setup_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run"]) == 2
    assert "BATCH_UPDATER_INPUT" in capsys.readouterr().err


# -- run id and progress -------------------------------------------------------------------


def test_every_log_event_the_report_and_the_summary_carry_the_run_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "r.csv"
    assert main(["run", "--local", "--rate", "0", str(EXAMPLE), "--report", str(report)]) == 0
    run_id = summary_of(report)["run_id"]
    logged = events(capsys.readouterr().err)
    assert logged
    assert {e["run_id"] for e in logged} == {run_id}
    assert {r["run_id"] for r in read_report(report)} == {run_id}
    progress = [e for e in logged if e["event"] == "progress"]
    assert progress[-1]["done"] == progress[-1]["total"] == 50


def test_progress_counts_rate_and_eta_on_an_injected_clock() -> None:
    now = [100.0]
    progress = Progress(10, clock=lambda: now[0])
    first = progress.snapshot()
    assert first.eta_seconds is None
    assert first.rows_per_second == 0
    now[0] += 2
    for status in (Status.SUCCEEDED, Status.FAILED, Status.SUCCEEDED, Status.SKIPPED):
        progress.record(status)
    progress.throttled = 7
    snap = progress.snapshot()
    # The skipped row is done but cost nothing: the rate counts the 3 rows sent.
    assert snap == ProgressSnapshot(4, 10, 2.0, 1.5, 4.0, 1, 7, 0)
    assert snap.as_event()["eta_seconds"] == 4
    assert "4/10" in render_bar(snap)
    assert "ETA 0:04" in render_bar(snap)
    assert "failed 1 throttled 7" in render_bar(snap)
    assert "not attempted" not in render_bar(snap)


def test_after_a_stop_progress_shows_rows_sent_and_not_attempted_ones_apart() -> None:
    # After Ctrl-C the bar said "300/300 100%" and 84.5 rows/s when 44 rows had been sent.
    now = [0.0]
    progress = Progress(300, clock=lambda: now[0])
    now[0] = 10.0
    for status in [Status.SUCCEEDED] * 44 + [Status.NOT_ATTEMPTED] * 256:
        progress.record(status)
    snap = progress.snapshot()
    assert (snap.done, snap.not_attempted, snap.rows_per_second) == (44, 256, 4.4)
    assert snap.eta_seconds == 0.0  # nothing is left to send
    bar = render_bar(snap, 120)
    assert "44/300  15% 4.4 rows/s" in bar
    assert bar.endswith("not attempted 256")


async def test_tick_reports_every_interval_until_cancelled() -> None:
    sleeps: list[float] = []
    seen: list[ProgressSnapshot] = []
    gate = asyncio.Event()

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) > 3:
            gate.set()
            await asyncio.Event().wait()  # park until cancelled

    progress = Progress(5, clock=lambda: 0.0)
    task = asyncio.create_task(tick(progress, seen.append, 30.0, sleep=fake_sleep))
    await gate.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sleeps == [30.0] * 4
    assert len(seen) == 3


def test_bar_stream_keeps_log_lines_above_the_bar() -> None:
    out = io.StringIO()
    bar = BarStream(out)
    snap = ProgressSnapshot(1, 2, 1.0, 1.0, 1.0, 0, 0)
    bar.show(snap)
    bar.write("a log line\n")
    bar.clear()
    text = out.getvalue()
    drawn = render_bar(snap)
    assert text == f"\r\x1b[K{drawn}\r\x1b[Ka log line\n{drawn}\r\x1b[K"


# -- sharding ------------------------------------------------------------------------------


async def test_shards_split_the_rows_into_disjoint_parts_covering_every_row(
    tmp_path: Path,
) -> None:
    seen: Counter[int] = Counter()
    for k in range(4):
        config = RunConfig(dry_run=True, shard=Shard(k, 4), rate=40, output=tmp_path / f"s{k}.csv")
        summary = await run_batch(EXAMPLE, config)
        lines = [int(r["line"]) for r in read_report(tmp_path / f"s{k}.csv")]
        assert 0 < len(lines) < 50
        assert summary.rows == len(lines)
        # Four regions (lanes) over four shards: each shard owns one whole lane, so its
        # rate is not divided (the shards never share a lane).
        assert summary.settings["effective_rate"] == 40.0
        assert len({r["region"] for r in read_report(tmp_path / f"s{k}.csv")}) == 1
        assert summary.settings["shard"] == f"{k}/4"
        seen.update(lines)
    assert sorted(seen) == list(range(2, 52))
    assert set(seen.values()) == {1}


# Which shard of N owns each (region, app_id), computed once (blake2b, 2026-11): a changed
# hash would move rows between shards of a job already running, so it must fail here.
SHARD_KEYS = [
    ("us-east-1", "d1abc"),
    ("us-east-1", "d2abc"),
    ("us-east-1", "d3abc"),
    ("eu-west-1", "d1abc"),
    ("eu-west-1", "dq7r2k9x1m4n"),
    ("ap-southeast-2", "d0000000000001"),
    ("us-west-2", "dzzzzzzzzzzzzz"),
    ("eu-central-1", "d5f8a2c9e1b7d3"),
    ("sa-east-1", "d123"),
    ("us-east-2", "dabcdef"),
    ("ca-central-1", "d42"),
    ("ap-northeast-1", "d9x8y7w6"),
]
SHARD_OWNERS = {
    2: [1, 0, 1, 1, 1, 0, 1, 0, 0, 0, 0, 1],
    3: [0, 0, 2, 1, 0, 1, 1, 1, 2, 1, 1, 1],
    7: [4, 3, 1, 2, 6, 0, 5, 0, 5, 0, 4, 6],
}


@pytest.mark.parametrize("count", sorted(SHARD_OWNERS))
def test_shard_membership_is_pinned_so_a_changed_hash_fails(count: int) -> None:
    owners = [
        [k for k in range(count) if Shard(k, count).owns(region, app_id)]
        for region, app_id in SHARD_KEYS
    ]
    assert owners == [[k] for k in SHARD_OWNERS[count]]  # exactly one shard each, as pinned


def test_rate_per_shard_keeps_the_rate_and_a_bad_index_is_refused() -> None:
    shard = Shard(1, 3)
    assert Shard(0, 1).owns("any", "thing")
    assert RunConfig(rate=Rate(30, rate_per_shard=True), shard=shard).effective_rate == 30
    assert RunConfig(rate=30, shard=shard).effective_rate == 10
    with pytest.raises(SetupError, match="index must be 0 to count - 1"):
        Shard(3, 3)


def test_each_shard_validates_the_whole_file(tmp_path: Path) -> None:
    plans = [RowPlan(INVALID_EXAMPLE, None, shard=Shard(k, 3)) for k in range(3)]
    assert all(not p.ok for p in plans)  # a bad row anywhere stops every shard
    assert sum(p.total for p in plans) == plans[0].input_rows == 24
    # Every shard counts the whole input's invalid rows (conflicting duplicates included)
    # and its own, which are the invalid records its second pass yields.
    assert {p.input_invalid for p in plans} == {17}
    for p in plans:
        assert p.invalid == sum(getattr(item, "status", "") == "invalid" for item in p)
    assert sum(p.invalid for p in plans) == 17


@pytest.mark.parametrize(
    ("env", "count", "expected"),
    [
        ({"JOB_COMPLETION_INDEX": "2"}, 5, Shard(2, 5)),
        ({"AWS_BATCH_JOB_ARRAY_INDEX": "1", "AWS_BATCH_JOB_ARRAY_SIZE": "4"}, None, Shard(1, 4)),
        ({}, None, None),
    ],
)
def test_shard_from_job_engines(
    env: dict[str, str], count: int | None, expected: Shard | None
) -> None:
    assert shard_from_environment(count, env) == expected


@pytest.mark.parametrize(
    ("env", "count", "message"),
    [
        ({"JOB_COMPLETION_INDEX": "2"}, None, "--shard-count"),
        ({"JOB_COMPLETION_INDEX": "x"}, 3, "not a whole number"),
        ({"AWS_BATCH_JOB_ARRAY_INDEX": "0"}, None, "AWS_BATCH_JOB_ARRAY_SIZE"),
        ({}, 3, "no shard index"),
    ],
)
def test_shard_environment_errors_say_what_to_set(
    env: dict[str, str], count: int | None, message: str
) -> None:
    with pytest.raises(SetupError, match=message):
        shard_from_environment(count, env)


def test_indexed_job_through_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    monkeypatch.setenv("BATCH_UPDATER_SHARD_COUNT", "2")
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--dry-run", str(EXAMPLE)]) == 0
    (report,) = (tmp_path / "reports").glob("*.csv")
    assert report.name.endswith("-shard-1-of-2.csv")
    assert summary_of(report)["settings"]["shard"] == "1/2"
    assert "shard-1-of-2" in capsys.readouterr().err


def test_merge_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shards = [tmp_path / f"s{k}.csv" for k in range(3)]
    for k, report in enumerate(shards):
        argv = ["run", "--dry-run", "--shard", f"{k}/3", str(EXAMPLE), "--report", str(report)]
        assert main(argv) == 0
    merged = tmp_path / "all.jsonl"
    argv = ["merge", *map(str, shards), "--input", str(EXAMPLE), "--output", str(merged)]
    assert main(argv) == 0
    assert [r["line"] for r in read_report(merged)] == list(range(2, 52))
    assert summary_of(merged)["counts"]["dry_run"] == 50
    capsys.readouterr()

    missing = ["merge", *map(str, shards[:2]), "--input", str(EXAMPLE), "--output"]
    assert main([*missing, str(tmp_path / "partial.csv")]) == 2
    err = capsys.readouterr().err
    assert "missing" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "partial.csv").exists()


def test_run_id_must_be_safe_to_write_anywhere() -> None:
    with pytest.raises(SetupError, match="run id"):
        RunConfig(run_id="=cmd|' /C calc'!A0")
    assert RunConfig(run_id="migration-2026.11:shard-1").run_id == "migration-2026.11:shard-1"


def test_a_terminal_gets_a_live_bar_that_log_lines_scroll_above(tmp_path: Path) -> None:
    report = tmp_path / "r.csv"
    code, screen = run_on_terminal(
        80, "--local", "--rate", "200", str(EXAMPLE), "--report", str(report)
    )
    assert code == 0
    assert re.search(r"\[#+\] 50/50", screen)  # the final bar, fitted to 80 columns
    assert "\r\x1b[K" in screen  # redrawn in place, cleared before log lines
    assert "run_end" in screen  # console log lines, not JSON, on a terminal
    assert '{"' not in screen


def test_no_progress_turns_the_events_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "--dry-run", "--no-progress", str(EXAMPLE), "--report", str(tmp_path / "r.csv")]
    assert main(argv) == 0
    assert not [e for e in events(capsys.readouterr().err) if e["event"] == "progress"]


# -- environment: names that match no flag -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("BATCH_UPDATER_MAX_ATEMPTS", "BATCH_UPDATER_MAX_ATTEMPTS"),
        ("BATCH_UPDATER_REPROT", "BATCH_UPDATER_REPORT"),
        ("BATCH_UPDATER_FROBNICATE", None),
    ],
)
def test_a_variable_that_matches_no_flag_is_warned_about_with_the_closest_name(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    suggestion: str | None,
) -> None:
    monkeypatch.setenv(name, "3")
    monkeypatch.setenv("BATCH_UPDATER_RATE", "5")  # a known one: no warning
    argv = ["run", "--dry-run", str(EXAMPLE), "--report", str(tmp_path / "r.csv")]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "BATCH_UPDATER_" in line and "warning" in line]
    (warning,) = [e for e in events(err) if e["event"] == "unknown_variable"]
    assert warning["level"] == "warning"
    assert warning["variable"] == name
    assert warning["did_you_mean"] == suggestion
    assert warning["message"].startswith(f"{name} matches no option and is ignored")


# -- the bar on an 80-column terminal --------------------------------------------------------


def test_the_bar_fits_any_width_narrowing_then_dropping_the_bar() -> None:
    huge = ProgressSnapshot(999_999, 1_000_000, 5000.0, 123456.7, 3661.0, 1_000_000, 99_999)
    for columns in range(1, 200):
        assert len(render_bar(huge, columns)) <= max(0, columns - 1)
    assert render_bar(huge, 200).startswith("[" + "#" * 24 + "]")  # at most 24 wide
    assert render_bar(huge, 80).startswith("999999/1000000 100% 123456.7 rows/s ETA 1:01:01")
    small = ProgressSnapshot(1, 2, 1.0, 1.0, 1.0, 0, 0)
    assert render_bar(small, 80).startswith("[" + "#" * 12 + "." * 12 + "] 1/2")


class Screen:
    """Enough of a terminal to see what stays on screen: printable text, carriage return,
    newline, erase to end of line (ESC [ K), other escapes ignored, wrap at ``columns``."""

    def __init__(self, columns: int) -> None:
        self.columns = columns
        self.lines: list[list[str]] = [[]]
        self.col = 0

    def feed(self, text: str) -> None:
        for token in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]|.", text, re.S):
            line = self.lines[-1]
            if token == "\r":
                self.col = 0
            elif token == "\n":
                self.lines.append([])
                self.col = 0
            elif token == "\x1b[K":
                del line[self.col :]
            elif token.startswith("\x1b"):
                continue
            else:
                if self.col == self.columns:  # wrap
                    self.lines.append([])
                    line, self.col = self.lines[-1], 0
                if self.col < len(line):
                    line[self.col] = token
                else:
                    line.append(token)
                self.col += 1

    def text(self) -> list[str]:
        return ["".join(line) for line in self.lines]


def run_on_terminal(columns: int, *argv: str) -> tuple[int, str]:
    """Run ``batch-updater run ARGV`` with stderr on a pty of ``columns``; (exit code, output)."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "batch_updater", "run", *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=terminal,
    )
    os.close(terminal)
    chunks: list[bytes] = []
    deadline = time.monotonic() + HANG_SECONDS  # only bounds a hang
    while True:
        ready, _, _ = select.select([controller], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"the child wrote nothing for {HANG_SECONDS:g} s"
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    code = proc.wait(HANG_SECONDS)
    os.close(controller)
    return code, b"".join(chunks).decode(errors="replace")


BAR = re.compile(r"(\[[#.]*\] )?\d+/\d+ +\d+% ")


def bars(output: str) -> list[str]:
    """Every bar drawn: the text after each clear-line, up to the next control character."""
    return [m for m in re.findall(r"\r\x1b\[K([^\r\n\x1b]*)", output) if BAR.match(m)]


def test_on_an_80_column_terminal_the_bar_never_wraps_and_leaves_no_stale_line(
    tmp_path: Path,
) -> None:
    # 20,000 rows: the numbers alone ("20000/20000 100% 123456.7 rows/s ...") made the old
    # bar wrap at 80 columns, and each redraw left its first part behind.
    source = tmp_path / "many.csv"
    with source.open("w") as out:
        out.write("app_id,region,user_pool_id\n")
        for i in range(20_000):
            out.write(f"d{i:013d},us-east-1,us-east-1_AbC123xyz\n")
    report = tmp_path / "r.csv"
    code, output = run_on_terminal(80, "--dry-run", str(source), "--report", str(report))
    assert code == 0
    drawn = bars(output)
    assert drawn  # the final bar at least
    assert "20000/20000" in drawn[-1]
    assert all(len(bar) <= 79 for bar in drawn)
    screen = Screen(80)
    screen.feed(output)
    assert not [line for line in screen.text() if BAR.search(line)]  # no stale bar
    assert any("run_end" in line for line in screen.text())


def test_json_logs_on_a_terminal_get_no_bar_and_no_plain_text(tmp_path: Path) -> None:
    report = tmp_path / "r.csv"
    argv = ("--dry-run", "--log-format", "json", str(EXAMPLE), "--report", str(report))
    code, output = run_on_terminal(80, *argv)
    assert code == 0
    lines = [line for line in output.replace("\r\n", "\n").split("\n") if line]
    assert lines
    assert all(line.startswith("{") for line in lines), lines
    assert [json.loads(line)["event"] for line in lines][-1] == "run_end"


def test_the_summary_rate_counts_rows_sent_not_rows_skipped_or_left() -> None:
    summary = RunSummary(None, elapsed_seconds=10.0)
    summary.counts.update({"succeeded": 40, "failed": 4, "skipped": 50, "not_attempted": 206})
    assert summary.rows == 300
    assert summary.rows_per_second == 4.4
    assert summary.to_json()["rows_per_second"] == 4.4
