"""Regression tests for a second reader's findings: nothing lost, nothing sent after a stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog

from batch_updater import RowResult, RunConfig, RunSummary, Shard, Status, run_batch
from batch_updater.breaker import BreakerSettings
from batch_updater.cli import build_parser, main
from batch_updater.control import FailureRules, RunControl, StopReason
from batch_updater.emulator import EmulatorConfig, EmulatorServer
from batch_updater.errors import InputError
from batch_updater.options import resolve
from batch_updater.policy import StopPolicy
from batch_updater.rows import RowPlan
from benchmarks.generate_rows import write_rows

from . import conftest, virtual_time
from .child_process import StderrLines
from .conftest import EXAMPLE, read_report, write_csv

HEADER = "app_id,region,user_pool_id"
UP = "us-east-1_AbC123xyz"


def rows_file(tmp_path: Path, n: int) -> Path:
    return write_csv(tmp_path / "in.csv", HEADER, *(f"d{i}abc,us-east-1,{UP}" for i in range(n)))


def fast(tmp_path: Path, **kw: Any) -> RunConfig:
    return conftest.fast(tmp_path, "r.csv", **kw)


def lines(report: Path) -> list[int]:
    return sorted(int(r["line"]) for r in read_report(report))


async def test_a_failing_result_hook_costs_no_row(
    tmp_path: Path, server: EmulatorServer, session: Any
) -> None:
    seen: list[RowResult] = []

    def hook(result: RowResult) -> None:
        seen.append(result)
        if len(seen) == 3:
            raise RuntimeError("the caller's bug")

    config = fast(tmp_path, endpoint_url=server.url)
    summary = await run_batch(rows_file(tmp_path, 30), config, session=session, on_result=hook)
    assert summary.counts[Status.SUCCEEDED] == 30
    assert lines(tmp_path / "r.csv") == list(range(2, 32))


async def test_a_failing_progress_hook_still_writes_report_and_summary(tmp_path: Path) -> None:
    def hook(_: object) -> None:
        raise RuntimeError("display broke")

    await run_batch(EXAMPLE, fast(tmp_path, dry_run=True), on_progress=hook)
    assert len(lines(tmp_path / "r.csv")) == 50
    assert (tmp_path / "r.csv.summary.json").exists()


def _append(path: Path) -> None:
    with path.open("a") as handle:
        handle.write('d999abc,us-east-1,us-east-1_New1\n"never closed\n')


def _truncate(path: Path) -> None:
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:11]))


def _replace(path: Path) -> None:  # an editor saving: a new file renamed over the old one
    other = path.with_suffix(".new")
    other.write_text(path.read_text())
    other.replace(path)


@pytest.mark.parametrize("change", [_append, _truncate, _replace])
def test_an_input_changed_during_the_run_fails_loudly(
    tmp_path: Path, session: Any, change: Any
) -> None:
    path = rows_file(tmp_path, 400)
    changed: list[int] = []

    def change_the_file(result: RowResult) -> None:
        if not changed:  # after the first row is final, while the others are in flight
            change(path)
            changed.append(result.line)

    async def scenario() -> RunSummary:
        async with EmulatorServer(EmulatorConfig(latency_ms=5)) as server:
            config = fast(tmp_path, endpoint_url=server.url, concurrency=2)
            return await run_batch(path, config, session=session, on_result=change_the_file)

    summary = virtual_time.run(scenario())
    assert changed
    # The rows validated at the start are the rows sent and reported, each exactly once.
    report = read_report(tmp_path / "r.csv")
    assert sorted(int(r["line"]) for r in report) == list(range(2, 402))
    assert {r["status"] for r in report} == {"succeeded"}
    assert summary.exit_code == 1
    written = json.loads((tmp_path / "r.csv.summary.json").read_text())
    assert written["exit_code"] == 1
    assert written["input_problem"].startswith(
        "the input changed during the run; this run used the 400 rows it validated at the "
        "start (a private copy): check the file, then rerun with --resume "
    )


async def test_an_unchanged_input_is_no_input_problem(tmp_path: Path, session: Any) -> None:
    path = rows_file(tmp_path, 3)
    async with EmulatorServer() as server:
        summary = await run_batch(path, fast(tmp_path, endpoint_url=server.url), session=session)
    assert summary.input_problem is None
    assert summary.exit_code == 0


def test_a_set_up_failing_after_the_report_is_opened_leaves_no_report_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing was sent: the same command, once the profile exists, must simply run.
    report = tmp_path / "r.csv"
    for _ in range(2):
        assert main(["run", str(EXAMPLE), "--profile", "nope", "--report", str(report)]) == 2
        err = capsys.readouterr().err
        assert "AWS profile not found: nope" in err
        assert "already exists" not in err
        assert not report.exists()
        assert not Path(f"{report}.summary.json").exists()


def test_cancelling_twice_still_completes_the_report(tmp_path: Path, session: Any) -> None:
    async def scenario() -> None:
        async with EmulatorServer(EmulatorConfig(latency_ms=1000)) as server:
            config = fast(tmp_path, endpoint_url=server.url, concurrency=2)
            task = asyncio.create_task(run_batch(rows_file(tmp_path, 50), config, session=session))
            await asyncio.sleep(0.5)  # virtual: two calls in flight until 1 s
            assert server.emulator.request_count == 2
            task.cancel()
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    virtual_time.run(scenario())
    assert lines(tmp_path / "r.csv") == list(range(2, 52))


def test_the_report_may_not_be_the_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    same = tmp_path / "same.csv"
    same.write_bytes(EXAMPLE.read_bytes())
    argv = ["run", str(same), "--dry-run", "--report", str(same), "--overwrite"]
    assert main(argv) == 2
    assert "is the input file" in capsys.readouterr().err
    assert same.read_bytes() == EXAMPLE.read_bytes()


def test_rows_waiting_for_the_rate_limit_are_not_sent_after_a_stop(
    tmp_path: Path, session: Any
) -> None:
    control = RunControl()

    async def scenario() -> tuple[RunSummary, list[float]]:
        loop = asyncio.get_running_loop()
        async with EmulatorServer() as server:
            config = fast(tmp_path, endpoint_url=server.url, rate=5, concurrency=8, adaptive=False)
            start = loop.time()
            task = asyncio.create_task(
                run_batch(rows_file(tmp_path, 20), config, session=session, control=control)
            )
            await asyncio.sleep(0.3)  # virtual: rows left at 0 and 0.2 s, the next is due at 0.4
            control.stop(StopReason("signal", "received SIGTERM", 15))
            summary = await task
            return summary, [r.time - start for r in server.emulator.requests]

    summary, sent = virtual_time.run(scenario())
    assert sent == pytest.approx([0.0, 0.2], abs=1e-9)  # nothing left after the stop
    records = read_report(tmp_path / "r.csv")
    waiting = [r for r in records if "waited for the rate limit" in r["error_message"]]
    assert len(waiting) == 8  # every worker had taken a row and was waiting for its slot
    assert all(r["attempts"] == "0" and r["status"] == "not_attempted" for r in waiting)
    assert summary.counts[Status.SUCCEEDED] == 2
    assert summary.counts[Status.NOT_ATTEMPTED] == 18  # 8 waiting, 10 never taken
    assert summary.exit_code == 143


def test_a_stop_rule_stops_rows_waiting_for_the_rate_limit_too(
    tmp_path: Path, session: Any
) -> None:
    async def scenario() -> tuple[RunSummary, int]:
        async with EmulatorServer(EmulatorConfig(known_apps=frozenset())) as server:
            config = fast(
                tmp_path,
                endpoint_url=server.url,
                rate=5,
                concurrency=8,
                adaptive=False,
                max_failures=0,
            )
            summary = await run_batch(rows_file(tmp_path, 20), config, session=session)
            return summary, server.emulator.request_count

    summary, requests = virtual_time.run(scenario())
    assert requests == 1  # the first row failed at once; the next slot (0.2 s) never came
    assert summary.stop_reason is not None
    assert summary.stop_reason.kind == "max_failures"
    assert summary.counts[Status.NOT_ATTEMPTED] == 19


def test_a_signal_after_a_stop_rule_counts_as_the_first_and_sets_the_exit_code() -> None:
    control = RunControl()
    policy = StopPolicy(
        control, FailureRules(0.5, 100, None), breaker=BreakerSettings(), log=structlog.get_logger()
    )
    policy.halt(StopReason("max_failures", "3 rows failed"))
    control.stop(StopReason("signal", "received SIGINT", 2))
    assert control.reason == StopReason("signal", "received SIGINT (after: 3 rows failed)", 2)
    assert "hurry" not in repr(control)
    control.stop(StopReason("signal", "received SIGINT", 2))
    assert "hurry" in repr(control)


async def test_shards_divide_the_rate_among_them(
    tmp_path: Path, server: EmulatorServer, session: Any
) -> None:
    config = fast(tmp_path, endpoint_url=server.url, rate=40, shard=Shard(0, 4), adaptive=False)
    summary = await run_batch(rows_file(tmp_path, 8), config, session=session)
    assert summary.to_json()["rate_per_region"] == {"us-east-1": 10.0}


def test_resume_on_the_command_line_replaces_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCH_UPDATER_RESUME", "a.csv,b.csv")
    parser = build_parser()
    given = vars(parser.parse_args(["run", "x.csv", "--resume", "c.csv"]))
    assert [str(p) for p in resolve(given, os.environ)["resume"]] == ["c.csv"]
    given = vars(parser.parse_args(["run", "x.csv"]))
    assert [str(p) for p in resolve(given, os.environ)["resume"]] == ["a.csv", "b.csv"]


async def test_a_gateway_timeout_says_the_update_may_have_been_applied(
    tmp_path: Path, server: EmulatorServer, session: Any
) -> None:
    server.emulator.script("d0abc", ["504"] * 3)
    config = fast(tmp_path, endpoint_url=server.url, max_attempts=3)
    summary = await run_batch(rows_file(tmp_path, 1), config, session=session)
    (result,) = summary.results or []
    assert "may have been applied" in result.error_message


def test_dictreader_extra_cells_are_an_input_error() -> None:
    with pytest.raises(InputError, match="more cells than the header"):
        RowPlan([{"app_id": "d1abc", "user_pool_id": UP, None: "extra"}], "us-east-1")  # type: ignore[dict-item]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_during_the_validation_of_a_long_dry_run_stops_it(tmp_path: Path) -> None:
    source = tmp_path / "big.csv"
    write_rows(source, 400_000, seed=1)
    report = tmp_path / "dry.csv"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "batch_updater", "run", "--dry-run", str(source)),
            *("--report", str(report), "--log-format", "json", "--log-level", "debug"),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr = StderrLines(proc)
    # The readiness signal: the signal handlers are in place and validation begins. The
    # 400,000 rows keep it busy far longer than it takes to send the signal.
    stderr.wait_for_event("validation_started")
    proc.send_signal(signal.SIGINT)
    err = stderr.rest()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "nothing was sent; no report was written" in err
    assert not report.exists()


async def test_a_signal_during_a_dry_runs_report_ends_the_run_as_that_signal(
    tmp_path: Path,
) -> None:
    # The signal handler only sets a flag while the loop is busy writing records: the rest
    # are not_attempted, and the exit code is the signal's, not 1.
    rows = [f"d{i}abc,us-east-1,{UP}" for i in range(3000)]
    source = write_csv(tmp_path / "big.csv", HEADER, *rows)
    control = RunControl()

    def signal_at_row_10(result: RowResult) -> None:
        if result.line == 11:
            control.stop(StopReason("signal", "received SIGINT", 2))

    config = fast(tmp_path, dry_run=True)
    summary = await run_batch(source, config, control=control, on_result=signal_at_row_10)
    assert summary.exit_code == 130
    assert summary.counts[Status.NOT_ATTEMPTED] > 0
    assert summary.counts[Status.DRY_RUN] + summary.counts[Status.NOT_ATTEMPTED] == 3000
