"""Running the same command again works: a failed set-up leaves no report, and a run may
resume from the very report it writes (a fixed ``--report`` / ``BATCH_UPDATER_REPORT``)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from batch_updater import RowResult, RunControl, Status, StopReason, run_batch
from batch_updater.cli import main
from batch_updater.emulator import EmulatorServer

from .conftest import fast, read_report, write_csv

HEADER = "app_id,region,user_pool_id"
UP = "us-east-1_AbC123xyz"
ROWS = 10


def rows_file(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "in.csv", HEADER, *(f"d{i}abc,us-east-1,{UP}" for i in range(ROWS)))


async def first_run_stopped_after(
    tmp_path: Path, server: EmulatorServer, session: Any, report: Path, done: int
) -> None:
    """A run into ``report`` that a stop ends after ``done`` rows succeeded."""
    control = RunControl()

    def stop_after(result: RowResult) -> None:
        if result.status is Status.SUCCEEDED and server.emulator.request_count >= done:
            control.stop(StopReason("signal", "test stop", 15))

    config = fast(tmp_path, endpoint_url=server.url, report_path=report, concurrency=1)
    summary = await run_batch(
        rows_file(tmp_path), config, session=session, control=control, on_result=stop_after
    )
    assert summary.counts[Status.SUCCEEDED] == done
    assert summary.counts[Status.NOT_ATTEMPTED] == ROWS - done


async def test_a_run_may_resume_from_the_report_it_writes(
    tmp_path: Path, server: EmulatorServer, session: Any
) -> None:
    report = tmp_path / "report.csv"
    await first_run_stopped_after(tmp_path, server, session, report, done=4)
    first_run_id = json.loads((tmp_path / "report.csv.summary.json").read_text())["run_id"]

    config = fast(tmp_path, endpoint_url=server.url, report_path=report, resume=(report,))
    summary = await run_batch(rows_file(tmp_path), config, session=session)

    assert summary.exit_code == 0
    assert (summary.counts[Status.SKIPPED], summary.counts[Status.SUCCEEDED]) == (4, ROWS - 4)
    records = read_report(report)
    assert sorted(int(r["line"]) for r in records) == list(range(2, ROWS + 2))  # once each
    assert all(r["error_message"].startswith("succeeded in ") for r in records[:4])
    assert server.emulator.request_count == ROWS  # nothing sent twice
    assert Counter(r.app_id for r in server.emulator.requests) == {
        f"d{i}abc": 1 for i in range(ROWS)
    }
    written = json.loads((tmp_path / "report.csv.summary.json").read_text())
    assert written["run_id"] == summary.run_id != first_run_id
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "in.csv",
        "report.csv",
        "report.csv.summary.json",
    ]


async def test_the_replaced_report_holds_every_earlier_success_before_any_request(
    tmp_path: Path, server: EmulatorServer, session: Any
) -> None:
    # What a kill -9 at the first request of the resumed run would leave behind.
    report = tmp_path / "report.csv"
    await first_run_stopped_after(tmp_path, server, session, report, done=4)
    seen: list[tuple[list[str], list[str]]] = []

    def at_first_request(result: RowResult) -> None:
        if result.status is Status.SUCCEEDED and not seen:
            on_disk = [r["status"] for r in read_report(report)]
            seen.append((on_disk, sorted(p.name for p in tmp_path.iterdir())))

    config = fast(
        tmp_path, endpoint_url=server.url, report_path=report, resume=(report,), concurrency=1
    )
    await run_batch(rows_file(tmp_path), config, session=session, on_result=at_first_request)

    ((on_disk, files),) = seen
    assert on_disk[:4] == ["skipped"] * 4  # already in the report's place
    assert files == ["in.csv", "report.csv"]  # nothing staged; the stale summary is gone


async def test_a_resume_into_a_new_report_also_writes_earlier_successes_first(
    tmp_path: Path, server: EmulatorServer, session: Any
) -> None:
    old, new = tmp_path / "old.csv", tmp_path / "new.csv"
    await first_run_stopped_after(tmp_path, server, session, old, done=3)
    # The rows that succeeded come last in this input; their records come first.
    reversed_rows = [f"d{i}abc,us-east-1,{UP}" for i in reversed(range(ROWS))]
    source = write_csv(tmp_path / "reversed.csv", HEADER, *reversed_rows)
    order: list[Status] = []
    config = fast(tmp_path, endpoint_url=server.url, report_path=new, resume=(old,), concurrency=1)
    await run_batch(source, config, session=session, on_result=lambda r: order.append(r.status))
    assert order[:3] == [Status.SKIPPED] * 3
    assert Counter(order) == {Status.SKIPPED: 3, Status.SUCCEEDED: ROWS - 3}
    assert read_report(old)[0]["status"] == "succeeded"  # the old report is left alone


def test_a_failed_set_up_leaves_no_report_so_the_same_command_runs_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No credentials anywhere (the test environment has none).
    report = tmp_path / "r.csv"
    argv = ["run", str(rows_file(tmp_path)), "--endpoint-url", "http://127.0.0.1:9"]
    argv += ["--report", str(report)]
    for _ in range(2):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "no AWS credentials found" in err
        assert "already exists" not in err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_the_printed_resume_command_works_with_a_fixed_report_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The README's container set-up: BATCH_UPDATER_REPORT is fixed for every run.
    report = tmp_path / "report.csv"
    monkeypatch.setenv("BATCH_UPDATER_REPORT", str(report))
    source = rows_file(tmp_path)
    write_csv(
        report,
        "line,app_id,region,status,attempts,error_code,http_status,error_message,request_id,"
        "backend_manager_app_id,settings_digest,started_at,finished_at,duration_ms,run_id",
    )
    assert main(["run", "--local", str(source), "--dry-run"]) == 2  # exists: not overwritten
    capsys.readouterr()
    report.unlink()
    assert main(["run", "--local", str(source), "--rate", "0"]) == 0
    first = read_report(report)
    capsys.readouterr()

    code = main(["run", "--local", str(source), "--rate", "0", "--resume", str(report)])

    assert code == 0, capsys.readouterr().err
    again = read_report(report)
    assert [r["line"] for r in again] == [r["line"] for r in first]
    assert {r["status"] for r in again} == {"skipped"}
