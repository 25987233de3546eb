"""Nothing lost: resume, stop rules, stopping from outside, cancellation, report safety."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from batch_updater import RowResult, RunConfig, RunSummary, Status, run_batch
from batch_updater.control import FailureRules, RunControl, StopReason
from batch_updater.emulator import EmulatorConfig, EmulatorServer
from batch_updater.errors import SetupError
from batch_updater.resume import ResumeIndex

from . import virtual_time
from .conftest import EXAMPLE, fast, read_report, serving, write_csv

HEADER = "app_id,region,user_pool_id"
UP = "us-east-1_AbC123xyz"


def rows_file(tmp_path: Path, n: int, name: str = "in.csv") -> Path:
    return write_csv(tmp_path / name, HEADER, *(f"d{i}abc,us-east-1,{UP}" for i in range(n)))


def lines_once(report: Path, n: int) -> list[dict[str, Any]]:
    records = read_report(report)
    assert sorted(int(r["line"]) for r in records) == list(range(2, n + 2))
    return records


# -- resume -------------------------------------------------------------------------------


async def test_resume_skips_what_succeeded_and_runs_what_changed(
    tmp_path: Path, server: EmulatorServer, session: Any
) -> None:
    first = fast(tmp_path, "one.csv", endpoint_url=server.url)
    await run_batch(EXAMPLE, first, session=session)
    assert server.emulator.request_count == 50

    changed = tmp_path / "changed.csv"
    lines = EXAMPLE.read_text().splitlines()
    cells = lines[5].split(",")
    cells[-1] = "zzzzchangedclientid0000000"
    lines[5] = ",".join(cells)
    changed.write_text("\n".join(lines) + "\n")

    second = fast(tmp_path, "two.jsonl", endpoint_url=server.url, resume=(tmp_path / "one.csv",))
    summary = await run_batch(changed, second, session=session)
    assert server.emulator.request_count == 51
    assert summary.counts[Status.SUCCEEDED] == 1
    assert summary.counts[Status.SKIPPED] == 49
    records = {r["line"]: r for r in read_report(tmp_path / "two.jsonl")}
    assert records[6]["status"] == "succeeded"
    assert records[2]["error_message"].startswith(f"succeeded in {tmp_path / 'one.csv'} at 20")
    assert summary.exit_code == 0

    # The newest report alone is a complete record: resuming from it skips all 50.
    third = fast(tmp_path, "three.csv", endpoint_url=server.url, resume=(tmp_path / "two.jsonl",))
    summary = await run_batch(changed, third, session=session)
    assert summary.counts[Status.SKIPPED] == 50
    assert server.emulator.request_count == 51
    again = {int(r["line"]): r for r in read_report(tmp_path / "three.csv")}
    assert again[2]["error_message"] == records[2]["error_message"]  # original source kept


async def test_resume_tolerates_a_torn_last_line_with_a_warning(tmp_path: Path) -> None:
    report = tmp_path / "old.csv"
    await run_batch(rows_file(tmp_path, 3), fast(tmp_path, "old.csv", dry_run=True, region=None))
    text = report.read_text()
    torn = text + text.splitlines()[1][:17]  # a record cut mid-write, no newline
    report.write_text(torn)
    warnings: list[str] = []
    index = ResumeIndex.load([report], warn=warnings.append)
    assert len(index) == 0  # dry_run rows are not successes
    assert len(warnings) == 1
    assert "line 5: incomplete last line ignored" in warnings[0]

    jsonl = tmp_path / "old.jsonl"
    good = {"status": "succeeded", "region": "r", "app_id": "d1", "settings_digest": "x"}
    jsonl.write_text(json.dumps(good) + "\n" + '{"status": "succ')
    assert len(ResumeIndex.load([jsonl], warn=warnings.append)) == 1
    assert len(warnings) == 2


def test_resume_refuses_something_that_is_not_a_report(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match=r"x\.csv, line 1: not a batch-updater report"):
        ResumeIndex.load([write_csv(tmp_path / "x.csv", HEADER, f"d1abc,us-east-1,{UP}")])
    bad = tmp_path / "x.jsonl"
    bad.write_text("{}\nnot json\n{}\n")
    with pytest.raises(SetupError, match=r"x\.jsonl, line 2: not a JSON report line"):
        ResumeIndex.load([bad])
    with pytest.raises(SetupError, match="cannot read the report"):
        ResumeIndex.load([tmp_path / "missing.csv"])


async def test_an_existing_report_is_never_overwritten_unless_asked(tmp_path: Path) -> None:
    config = fast(tmp_path, dry_run=True)
    await run_batch(EXAMPLE, config)
    before = (tmp_path / "report.csv").read_text()
    with pytest.raises(SetupError, match="already exists: choose another --report, or pass"):
        await run_batch(EXAMPLE, config)
    assert (tmp_path / "report.csv").read_text() == before
    await run_batch(EXAMPLE, config.with_settings(overwrite=True))


# -- stop rules ---------------------------------------------------------------------------


@pytest.fixture
async def denying_service() -> AsyncIterator[str]:
    """A service that answers every call 403 AccessDeniedException, as AWS would."""
    calls: list[int] = []

    async def deny(request: web.Request) -> web.Response:
        await request.read()
        calls.append(1)
        return web.json_response(
            {"message": "User is not authorized to perform: amplifybackend:UpdateBackendConfig"},
            status=403,
            headers={"x-amzn-ErrorType": "AccessDeniedException"},
        )

    async with serving(deny) as url:
        yield url


async def test_access_denied_stops_the_run_at_once(
    tmp_path: Path, denying_service: str, session: Any
) -> None:
    config = fast(tmp_path, endpoint_url=denying_service, concurrency=2)
    summary = await run_batch(rows_file(tmp_path, 40), config, session=session)

    assert summary.stop_reason is not None
    assert summary.stop_reason.kind == "fatal_error"
    assert "AccessDeniedException" in summary.stop_reason.message
    assert "amplifybackend:UpdateBackendConfig" in summary.stop_reason.message
    assert summary.requests <= 4  # the first failure plus what was already in flight
    assert summary.counts[Status.NOT_ATTEMPTED] >= 36
    assert summary.exit_code == 1
    records = lines_once(tmp_path / "report.csv", 40)
    assert {r["status"] for r in records} == {"failed", "not_attempted"}


async def test_failure_rate_over_the_window_stops_the_run(tmp_path: Path, session: Any) -> None:
    config = fast(tmp_path, concurrency=2, failure_window=10, max_failure_rate=0.5)
    async with EmulatorServer(EmulatorConfig(known_apps=frozenset())) as server:
        summary = await run_batch(
            rows_file(tmp_path, 100), replace(config, endpoint_url=server.url), session=session
        )
    assert summary.stop_reason is not None
    assert summary.stop_reason.kind == "failure_rate"
    assert "10 of the last 10 rows failed" in summary.stop_reason.message
    assert 10 <= summary.counts[Status.FAILED] <= 12
    assert summary.counts[Status.NOT_ATTEMPTED] == 100 - summary.counts[Status.FAILED]
    lines_once(tmp_path / "report.csv", 100)


async def test_max_failures_stops_the_run(tmp_path: Path, session: Any) -> None:
    config = fast(tmp_path, concurrency=1, max_failures=3)
    async with EmulatorServer(EmulatorConfig(known_apps=frozenset())) as server:
        summary = await run_batch(
            rows_file(tmp_path, 30), replace(config, endpoint_url=server.url), session=session
        )
    assert summary.stop_reason is not None
    assert summary.stop_reason.kind == "max_failures"
    assert summary.counts[Status.FAILED] == 4
    assert summary.counts[Status.NOT_ATTEMPTED] == 26


def test_failure_rules_window_arithmetic() -> None:
    rules = FailureRules(max_rate=0.5, window=4, max_failures=None)
    outcomes = [True, False, True, False]  # 2 of 4: not more than half
    assert [rules.record(failed) for failed in outcomes] == [None] * 4
    assert rules.record(False) is None  # window slides: F T F F, 1 of 4
    assert rules.record(True) is None  # T F F T, 2 of 4
    assert rules.record(True) is None  # F F T T, 2 of 4: the oldest failure slid out
    reason = rules.record(True)  # F T T T, 3 of 4
    assert reason is not None
    assert reason.kind == "failure_rate"
    assert "3 of the last 4" in reason.message
    assert "failures=5" in repr(rules)


# -- stopping from outside ----------------------------------------------------------------


def test_stop_lets_calls_in_flight_finish_and_reports_the_rest(
    tmp_path: Path, session: Any
) -> None:
    control = RunControl()
    seen: list[RowResult] = []
    stopped_at: list[float] = []

    def after_five(result: RowResult) -> None:
        seen.append(result)
        if len(seen) == 5:
            stopped_at.append(asyncio.get_running_loop().time())
            control.stop(StopReason("signal", "received SIGTERM", 15))

    async def scenario() -> tuple[RunSummary, set[str], float, float]:
        loop = asyncio.get_running_loop()
        config = fast(tmp_path, concurrency=4)
        async with EmulatorServer(EmulatorConfig(latency_ms=20)) as server:
            start = loop.time()
            summary = await run_batch(
                rows_file(tmp_path, 60),
                replace(config, endpoint_url=server.url),
                session=session,
                on_result=after_five,
                control=control,
            )
            return summary, set(server.emulator.apps), start, loop.time()

    summary, applied, start, ended = virtual_time.run(scenario())
    assert summary.exit_code == 143
    succeeded = {r.app_id for r in seen if r.status is Status.SUCCEEDED}
    assert succeeded == applied  # in-flight calls finished and were reported
    # Four rows answered at 20 ms, four more sent then; the fifth answer (40 ms) stops the
    # run, and the three calls still in flight finish at that same instant.
    assert len(succeeded) == 8
    assert stopped_at[0] - start == pytest.approx(0.04, abs=1e-9)
    assert ended == pytest.approx(stopped_at[0], abs=1e-9)
    assert summary.counts[Status.NOT_ATTEMPTED] == 60 - 8
    records = lines_once(tmp_path / "report.csv", 60)
    assert all(
        r["error_message"] == "not started: run stopped (signal)"
        for r in records
        if r["status"] == "not_attempted"
    )


def test_grace_period_over_cancels_calls_in_flight_to_the_virtual_second(
    tmp_path: Path, session: Any
) -> None:
    control = RunControl()
    config = fast(tmp_path, concurrency=3, grace_period=0.5)

    async def scenario() -> tuple[RunSummary, float]:
        loop = asyncio.get_running_loop()
        async with EmulatorServer(EmulatorConfig(latency_ms=2000)) as server:
            task = asyncio.create_task(
                run_batch(
                    rows_file(tmp_path, 10),
                    replace(config, endpoint_url=server.url),
                    session=session,
                    control=control,
                )
            )
            await asyncio.sleep(1.0)  # virtual: the first three calls are half-way through
            assert server.emulator.request_count == 3
            stopped = loop.time()
            control.stop(StopReason("signal", "received SIGINT", 2))
            summary = await task
            return summary, loop.time() - stopped

    summary, waited = virtual_time.run(scenario())
    assert waited == pytest.approx(0.5, abs=1e-9)  # the grace period, no more, no less
    assert summary.exit_code == 130
    assert summary.counts[Status.NOT_ATTEMPTED] == 10
    records = lines_once(tmp_path / "report.csv", 10)
    cancelled = [
        r
        for r in records
        if r["error_message"].startswith("cancelled while attempt 1 was in flight")
    ]
    assert len(cancelled) == 3
    assert all(r["attempts"] == "1" for r in cancelled)


def test_calls_answered_within_the_grace_period_finish(tmp_path: Path, session: Any) -> None:
    control = RunControl()
    config = fast(tmp_path, concurrency=3, grace_period=1.5)

    async def scenario() -> tuple[RunSummary, float]:
        loop = asyncio.get_running_loop()
        async with EmulatorServer(EmulatorConfig(latency_ms=2000)) as server:
            task = asyncio.create_task(
                run_batch(
                    rows_file(tmp_path, 10),
                    replace(config, endpoint_url=server.url),
                    session=session,
                    control=control,
                )
            )
            await asyncio.sleep(1.0)  # virtual: answers are due at 2 s, within the grace
            control.stop(StopReason("signal", "received SIGINT", 2))
            summary = await task
            return summary, loop.time()

    summary, ended = virtual_time.run(scenario(), start=0.0)
    assert ended == pytest.approx(2.0, abs=1e-9)  # when the answers came, not at 2.5
    assert summary.counts[Status.SUCCEEDED] == 3
    assert summary.counts[Status.NOT_ATTEMPTED] == 7


def test_second_stop_cancels_at_once(tmp_path: Path, session: Any) -> None:
    control = RunControl()
    config = fast(tmp_path, concurrency=2, grace_period=30)

    async def scenario() -> tuple[RunSummary, float]:
        loop = asyncio.get_running_loop()
        async with EmulatorServer(EmulatorConfig(latency_ms=2000)) as server:
            task = asyncio.create_task(
                run_batch(
                    rows_file(tmp_path, 5),
                    replace(config, endpoint_url=server.url),
                    session=session,
                    control=control,
                )
            )
            await asyncio.sleep(1.0)  # virtual: two calls in flight until 2 s
            assert server.emulator.request_count == 2
            reason = StopReason("signal", "received SIGTERM", 15)
            control.stop(reason)
            await asyncio.sleep(0.5)
            assert not task.done()  # waiting for the grace period
            second = loop.time()
            control.stop(reason)
            summary = await task
            return summary, loop.time() - second

    summary, waited = virtual_time.run(scenario())
    assert waited == 0.0  # at once: not even the answers due at 2 s were waited for
    assert summary.counts[Status.NOT_ATTEMPTED] == 5


def test_cancelling_the_task_completes_the_report_and_reraises(
    tmp_path: Path, session: Any
) -> None:
    config = fast(tmp_path, concurrency=2)

    async def scenario() -> None:
        async with EmulatorServer(EmulatorConfig(latency_ms=2000)) as server:
            task = asyncio.create_task(
                run_batch(
                    rows_file(tmp_path, 8),
                    replace(config, endpoint_url=server.url),
                    session=session,
                )
            )
            await asyncio.sleep(1.0)  # virtual: two calls in flight until 2 s
            assert server.emulator.request_count == 2
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    virtual_time.run(scenario())
    lines_once(tmp_path / "report.csv", 8)
    summary = json.loads((tmp_path / "report.csv.summary.json").read_text())
    assert summary["counts"]["not_attempted"] == 8
    assert summary["stopped"]["reason"] == "cancelled"


# -- report and endpoint safety -----------------------------------------------------------


async def test_csv_report_defuses_formulas_and_jsonl_keeps_them(
    tmp_path: Path, server: EmulatorServer, session: Any
) -> None:
    path = rows_file(tmp_path, 2)
    evil = '=HYPERLINK("http://x","click")'
    for report in ("r.csv", "r.jsonl"):
        server.emulator.script("d0abc", [f"error:{evil}"])
        server.emulator.script("d1abc", ["error:-1+2", "error:@SUM(A1)"])
        await run_batch(path, fast(tmp_path, report, endpoint_url=server.url), session=session)
    csv_msgs = {r["app_id"]: r["error_message"] for r in read_report(tmp_path / "r.csv")}
    assert csv_msgs == {"d0abc": "'" + evil, "d1abc": "'-1+2"}
    json_msgs = {r["app_id"]: r["error_message"] for r in read_report(tmp_path / "r.jsonl")}
    assert json_msgs == {"d0abc": evil, "d1abc": "@SUM(A1)"}


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("http://10.1.2.3:4566", False),
        ("http://emulator.internal", False),
        ("https://amplifybackend.example.com", True),
        ("http://127.0.0.1:4566", True),
        ("http://localhost:4566", True),
        ("http://[::1]:4566", True),
    ],
)
def test_plain_http_only_to_loopback_unless_allowed(url: str, ok: bool) -> None:
    if ok:
        RunConfig(endpoint_url=url)
    else:
        with pytest.raises(SetupError, match="--allow-insecure-endpoint"):
            RunConfig(endpoint_url=url)
    RunConfig(endpoint_url=url, allow_insecure_endpoint=True)


async def test_insecure_endpoint_from_the_environment_is_refused_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, session: Any
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://192.0.2.10")
    with pytest.raises(SetupError, match="AWS_ENDPOINT_URL: plain http://"):
        await run_batch(EXAMPLE, fast(tmp_path), session=session)
