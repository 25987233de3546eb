"""The real CLI in a subprocess: signals, kill -9, resume, and secrets in every output."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch_updater.resume import read_report

from .child_process import HANG_SECONDS, StderrLines
from .conftest import SECRET_KEY, write_csv

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLEsessionTOKEN/with+slashes=="
CLI = [sys.executable, "-m", "batch_updater"]


@pytest.fixture
def emulator_url() -> Iterator[str]:
    """A standalone emulator process (20 ms latency) on a free port."""
    proc = subprocess.Popen(
        [*CLI, "emulate", "--port", "0", "--latency-ms", "20"],
        stderr=subprocess.PIPE,
        text=True,
    )
    line = StderrLines(proc).wait_for(lambda line: "listening on http://" in line)
    assert "listening on http://127.0.0.1:" in line, line
    yield line.rsplit(" ", 1)[-1].strip()
    proc.terminate()
    proc.wait(HANG_SECONDS)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAPROCESSTEST1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return dict(os.environ)


def rows(tmp_path: Path, n: int) -> Path:
    return write_csv(
        tmp_path / "in.csv",
        "app_id,user_pool_id",
        *(f"d{i}abc,us-east-1_AbC123xyz" for i in range(n)),
    )


def start_run(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], StderrLines]:
    """Start a run that logs JSON lines, with a ``progress`` event every 0.1 s."""
    proc = subprocess.Popen(
        [*CLI, "run", *args, "--log-format", "json", "--progress-interval", "0.1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, StderrLines(proc)


def wait_for_rows_done(stderr: StderrLines, n: int) -> None:
    """The child's readiness signal: a progress event saying ``n`` rows are final."""
    stderr.wait_for_event("progress", lambda fields: fields["done"] >= n)


def statuses(report: Path, n: int) -> Counter[str]:
    warnings: list[str] = []
    records = list(read_report(report, warnings.append))
    lines = [int(r["line"]) for r in records]
    assert len(lines) == len(set(lines)), "a line appears twice"
    assert set(lines) <= set(range(2, n + 2))
    return Counter(str(r["status"]) for r in records)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_run_then_resume_finishes_the_job(
    tmp_path: Path, emulator_url: str, env: dict[str, str], signum: int, code: int
) -> None:
    n = 300
    source, report = rows(tmp_path, n), tmp_path / "first.csv"
    argv = [str(source), "--endpoint-url", emulator_url, "--rate", "60", "--report", str(report)]
    proc, stderr = start_run(env, *argv)
    wait_for_rows_done(stderr, 20)
    proc.send_signal(signum)
    err = stderr.rest()

    assert proc.returncode == code, err
    assert "Traceback" not in err
    first = statuses(report, n)
    assert sum(first.values()) == n  # complete: unread rows are in it too
    assert set(first) == {"succeeded", "not_attempted"}
    summary = json.loads(Path(f"{report}.summary.json").read_text())
    assert summary["stopped"]["reason"] == "signal"
    assert summary["exit_code"] == code
    command = summary["resume_command"]
    # stderr is not a terminal: JSON lines only, the run_end event carries the command
    ends = [json.loads(x) for x in err.splitlines() if '"event": "run_end"' in x]
    assert [e["resume_command"] for e in ends] == [command]
    assert f"--resume {report}" in command

    resumed = tmp_path / "second.csv"
    again = shlex.split(command)[1:]  # drop "batch-updater"
    done = subprocess.run(
        [*CLI, *again, "--rate", "0", "--report", str(resumed)],
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    second = statuses(resumed, n)
    assert second == {"skipped": first["succeeded"], "succeeded": n - first["succeeded"]}


def test_kill_9_keeps_every_finished_row_and_resume_finishes(
    tmp_path: Path, emulator_url: str, env: dict[str, str]
) -> None:
    n = 300
    source, report = rows(tmp_path, n), tmp_path / "killed.jsonl"
    proc, stderr = start_run(
        env, str(source), "--endpoint-url", emulator_url, "--rate", "60", "--report", str(report)
    )
    wait_for_rows_done(stderr, 20)  # and flushed: the report is written before the count
    proc.kill()
    stderr.rest()
    assert proc.returncode == -signal.SIGKILL

    first = statuses(report, n)
    assert first["succeeded"] >= 20
    assert set(first) == {"succeeded"}

    resumed = tmp_path / "after.csv"
    done = subprocess.run(
        [
            *CLI,
            "run",
            str(source),
            "--endpoint-url",
            emulator_url,
            "--rate",
            "0",
            "--resume",
            str(report),
            "--report",
            str(resumed),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert statuses(resumed, n) == {
        "skipped": first["succeeded"],
        "succeeded": n - first["succeeded"],
    }


def test_credentials_never_reach_any_output_even_at_debug(
    tmp_path: Path, emulator_url: str, env: dict[str, str]
) -> None:
    report = tmp_path / "r.jsonl"
    done = subprocess.run(
        [
            *CLI,
            "run",
            str(rows(tmp_path, 5)),
            "--endpoint-url",
            emulator_url,
            "--rate",
            "0",
            "--log-level",
            "debug",
            "--report",
            str(report),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    outputs = {
        "stdout": done.stdout,
        "stderr": done.stderr,
        "report": report.read_text(),
        "summary": Path(f"{report}.summary.json").read_text(),
    }
    assert "botocore" in done.stderr  # the SDK's debug logs were really there
    for name, text in outputs.items():
        assert SECRET_KEY not in text, name
        assert SESSION_TOKEN not in text, name
        assert "AKIAPROCESSTEST1" not in text, name
