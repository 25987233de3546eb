"""End to end through run_batch: the job survives the emulator's injected faults.

Transport failures (a dropped connection, an answer later than the read timeout) and 5xx
answers (a load balancer's HTML 500/503, 504) and a 200 whose body cannot be read are
retried; a 200 with ``Error`` set fails the row after one attempt without disturbing the
others; a 429 storm is ridden out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from batch_updater import RowResult, RunConfig, RunSummary, Status, run_batch
from batch_updater.emulator import EmulatorConfig, EmulatorServer
from batch_updater.runner import MAYBE_APPLIED

from . import conftest
from .conftest import read_report, write_csv

HEADER = "app_id,region,user_pool_id,web_client_id"
UP = "us-east-1_AbC123xyz"
WIRE = {"aws_user_pools_id": UP}  # what the emulator stores for every row here
TIMEOUT = 0.3  # the client's read timeout
SLOW = 0.6  # how late a "slow" answer comes: after TIMEOUT, so the client gives up first


@pytest.fixture
async def server() -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer(EmulatorConfig(slow_seconds=SLOW)) as running:
        yield running


def fast(tmp_path: Path, server: EmulatorServer, **kw: Any) -> RunConfig:
    """No client-side limit, near-zero backoff, a short read timeout, reporting to tmp."""
    return conftest.fast(tmp_path, **{"endpoint_url": server.url, "request_timeout": TIMEOUT, **kw})


def rows(tmp_path: Path, *app_ids: str) -> Path:
    return write_csv(tmp_path / "in.csv", HEADER, *(f"{a},us-east-1,{UP}," for a in app_ids))


def by_app(summary: RunSummary) -> dict[str, RowResult]:
    return {r.app_id: r for r in summary.results or []}


def faults_seen(server: EmulatorServer, app_id: str) -> list[str | None]:
    return [r.fault for r in server.emulator.requests if r.app_id == app_id]


RETRIED = ["drop", "slow", "500html", "503html", "504", "malformed"]


@pytest.mark.parametrize("fault", RETRIED)
async def test_transport_errors_and_5xx_are_retried_until_an_attempt_works(
    tmp_path: Path, server: EmulatorServer, session: Any, fault: str
) -> None:
    server.emulator.script("d1abc", [fault, fault, "ok"])
    config = fast(tmp_path, server)
    summary = await run_batch(rows(tmp_path, "d1abc", "d2abc"), config, session=session)

    results = by_app(summary)
    first = results["d1abc"]
    assert first.status is Status.SUCCEEDED
    assert first.attempts == 3
    assert first.http_status == 200
    assert first.error_code == ""
    assert results["d2abc"].status is Status.SUCCEEDED
    assert results["d2abc"].attempts == 1
    assert faults_seen(server, "d1abc") == [fault, fault, None]
    assert summary.requests == 4
    assert summary.retries == 2
    assert summary.exit_code == 0
    assert server.emulator.apps == {"d1abc": WIRE, "d2abc": WIRE}


# fault -> (error_code, http_status, error_message starts with)
EXHAUSTED = {
    "drop": ("ConnectionClosedError", None, "Connection was closed before we received"),
    "slow": ("ReadTimeoutError", None, "Read timeout on endpoint URL"),
    "500html": ("500", 500, "Internal Server Error"),
    "503html": ("503", 503, "Service Unavailable"),
    "504": ("GatewayTimeoutException", 504, "Gateway Timeout"),
    "malformed": ("ResponseParserError", 200, "the service answered 200 with a body that could"),
}


@pytest.mark.parametrize("fault", list(EXHAUSTED))
async def test_a_retried_fault_on_every_attempt_fails_the_row_after_max_attempts(
    tmp_path: Path, server: EmulatorServer, session: Any, fault: str
) -> None:
    code, status, message = EXHAUSTED[fault]
    server.emulator.script("d1abc", [fault] * 10)
    config = fast(tmp_path, server, max_attempts=3)
    summary = await run_batch(rows(tmp_path, "d1abc", "d2abc"), config, session=session)

    results = by_app(summary)
    failed = results["d1abc"]
    assert failed.status is Status.FAILED
    assert failed.attempts == 3
    assert failed.error_code == code
    assert failed.http_status == status
    assert failed.error_message.startswith(message)
    assert results["d2abc"].status is Status.SUCCEEDED
    assert faults_seen(server, "d1abc") == [fault] * 3
    assert summary.exit_code == 1
    record = next(r for r in read_report(tmp_path / "report.csv") if r["app_id"] == "d1abc")
    assert (record["status"], record["attempts"], record["error_code"]) == ("failed", "3", code)
    assert record["http_status"] == ("" if status is None else str(status))
    if fault == "slow":
        # The server applied it every time; the client only ever saw its read timeout.
        assert server.emulator.apps == {"d1abc": WIRE, "d2abc": WIRE}
    else:
        assert server.emulator.apps == {"d2abc": WIRE}


BAD_200 = [
    pytest.param("error:backend is being deleted", "ResponseError", id="error"),
]


@pytest.mark.parametrize(("outcome", "code"), BAD_200)
async def test_an_unusable_200_fails_the_row_after_one_attempt(
    tmp_path: Path, server: EmulatorServer, session: Any, outcome: str, code: str | None
) -> None:
    server.emulator.script("d2abc", [outcome, "ok"])  # "ok" would show a retry
    config = fast(tmp_path, server)
    summary = await run_batch(rows(tmp_path, "d1abc", "d2abc", "d3abc"), config, session=session)

    results = by_app(summary)
    bad = results["d2abc"]
    assert bad.status is Status.FAILED
    assert bad.attempts == 1
    assert bad.http_status == 200
    assert bad.error_code not in ("", "InternalError")
    if code is not None:
        assert bad.error_code == code
    assert results["d1abc"].status is Status.SUCCEEDED
    assert results["d3abc"].status is Status.SUCCEEDED
    assert server.emulator.apps == {"d1abc": WIRE, "d3abc": WIRE}


async def test_a_malformed_200_is_an_unknown_outcome_it_is_retried_and_said_so(
    tmp_path: Path, server: EmulatorServer, session: Any
) -> None:
    # A 200 whose body cannot be read may have applied the update, like a read timeout.
    server.emulator.script("d1abc", ["malformed", "ok"])
    server.emulator.script("d2abc", ["malformed"] * 3)
    config = fast(tmp_path, server, max_attempts=3)
    summary = await run_batch(rows(tmp_path, "d1abc", "d2abc", "d3abc"), config, session=session)

    results = by_app(summary)
    assert (results["d1abc"].status, results["d1abc"].attempts) == (Status.SUCCEEDED, 2)
    failed = results["d2abc"]
    assert (failed.status, failed.attempts, failed.error_code) == (
        Status.FAILED,
        3,
        "ResponseParserError",
    )
    assert failed.error_message.endswith(MAYBE_APPLIED)
    assert results["d3abc"].status is Status.SUCCEEDED
    assert sorted(int(r["line"]) for r in read_report(tmp_path / "report.csv")) == [2, 3, 4]


STORM = 1.0


async def test_a_429_storm_is_ridden_out(
    tmp_path: Path, server: EmulatorServer, session: Any
) -> None:
    app_ids = [f"d{i}abc" for i in range(8)]
    # Full-jitter waits before retries 1-11 are uniform in [0, 0.1], [0, 0.2], [0, 0.4],
    # [0, 0.8], then [0, 1.0]: the chance that one row's 11 waits add up to less than the
    # 1 s storm is about 2e-6 (with 7 retries it would be about 1%).
    config = fast(tmp_path, server, backoff_base=0.1, backoff_cap=1.0, max_attempts=12)
    server.emulator.configure(storm_seconds=STORM)  # from the first request on
    summary = await run_batch(rows(tmp_path, *app_ids), config, session=session)

    results = summary.results or []
    assert [r.status for r in results] == [Status.SUCCEEDED] * len(app_ids)
    assert all(r.attempts >= 2 for r in results)
    assert server.emulator.apps == dict.fromkeys(app_ids, WIRE)
    records = server.emulator.requests
    storm_start = records[0].time
    storm = [r for r in records if r.fault == "storm"]
    assert summary.throttles == len(storm) == summary.requests - len(app_ids)
    assert {r.status for r in storm} == {429}
    # Nothing got through during the storm.
    assert all(r.fault == "storm" for r in records if r.time < storm_start + STORM)
