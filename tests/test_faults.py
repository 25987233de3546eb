"""End to end through run_batch: the job survives the emulator's injected faults.

Transport failures (a dropped connection, an answer later than the read timeout) and 5xx
answers (a load balancer's HTML 500/503, 504) and a 200 whose body cannot be read are
retried; a 200 with ``Error`` set fails the row after one attempt without disturbing the
others; a 429 storm is ridden out.

Every test runs on virtual time (``tests/virtual_time.py``): read timeouts, "slow" answers,
backoff and storm windows are exact, whatever the machine's load.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from batch_updater import RowResult, RunConfig, RunSummary, Status, run_batch
from batch_updater.emulator import Emulator, EmulatorConfig, EmulatorServer
from batch_updater.runner import MAYBE_APPLIED

from . import conftest, virtual_time
from .conftest import read_report, write_csv

HEADER = "app_id,region,user_pool_id,web_client_id"
UP = "us-east-1_AbC123xyz"
WIRE = {"aws_user_pools_id": UP}  # what the emulator stores for every row here
TIMEOUT = 0.3  # the client's read timeout
SLOW = 0.6  # how late a "slow" answer comes: after TIMEOUT, so the client gives up first


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer(EmulatorConfig(slow_seconds=SLOW)) as running:
        yield running


def fast(tmp_path: Path, server: EmulatorServer, **kw: Any) -> RunConfig:
    """No client-side limit, near-zero backoff, a short read timeout, reporting to tmp."""
    return conftest.fast(tmp_path, **{"endpoint_url": server.url, "request_timeout": TIMEOUT, **kw})


def run(
    tmp_path: Path,
    session: Any,
    path: Path,
    prepare: Callable[[Emulator], None] = lambda emulator: None,
    **kw: Any,
) -> tuple[RunSummary, Emulator]:
    """Run ``path`` against a fresh emulator (set up by ``prepare``) on virtual time."""

    async def scenario() -> tuple[RunSummary, Emulator]:
        async with serving() as server:
            prepare(server.emulator)
            summary = await run_batch(path, fast(tmp_path, server, **kw), session=session)
            return summary, server.emulator

    return virtual_time.run(scenario())


def rows(tmp_path: Path, *app_ids: str) -> Path:
    return write_csv(tmp_path / "in.csv", HEADER, *(f"{a},us-east-1,{UP}," for a in app_ids))


def by_app(summary: RunSummary) -> dict[str, RowResult]:
    return {r.app_id: r for r in summary.results or []}


def faults_seen(emulator: Emulator, app_id: str) -> list[str | None]:
    return [r.fault for r in emulator.requests if r.app_id == app_id]


def gaps(emulator: Emulator, app_id: str) -> list[float]:
    """Seconds between one app's consecutive requests."""
    times = [r.time for r in emulator.requests if r.app_id == app_id]
    return [b - a for a, b in itertools.pairwise(times)]


RETRIED = ["drop", "slow", "500html", "503html", "504", "malformed"]


@pytest.mark.parametrize("fault", RETRIED)
def test_transport_errors_and_5xx_are_retried_until_an_attempt_works(
    tmp_path: Path, session: Any, fault: str
) -> None:
    summary, emulator = run(
        tmp_path,
        session,
        rows(tmp_path, "d1abc", "d2abc"),
        lambda emulator: emulator.script("d1abc", [fault, fault, "ok"]),
    )

    results = by_app(summary)
    first = results["d1abc"]
    assert first.status is Status.SUCCEEDED
    assert first.attempts == 3
    assert first.http_status == 200
    assert first.error_code == ""
    assert results["d2abc"].status is Status.SUCCEEDED
    assert results["d2abc"].attempts == 1
    assert faults_seen(emulator, "d1abc") == [fault, fault, None]
    assert summary.requests == 4
    assert summary.retries == 2
    assert summary.exit_code == 0
    assert emulator.apps == {"d1abc": WIRE, "d2abc": WIRE}
    # A retry follows the client's read timeout (for a late answer) plus a backoff of at
    # most backoff_cap (0.01 s); other faults are answered at once.
    waited = TIMEOUT if fault == "slow" else 0.0
    assert all(waited <= gap <= waited + 0.01 for gap in gaps(emulator, "d1abc"))


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
def test_a_retried_fault_on_every_attempt_fails_the_row_after_max_attempts(
    tmp_path: Path, session: Any, fault: str
) -> None:
    code, status, message = EXHAUSTED[fault]
    summary, emulator = run(
        tmp_path,
        session,
        rows(tmp_path, "d1abc", "d2abc"),
        lambda emulator: emulator.script("d1abc", [fault] * 10),
        max_attempts=3,
    )

    results = by_app(summary)
    failed = results["d1abc"]
    assert failed.status is Status.FAILED
    assert failed.attempts == 3
    assert failed.error_code == code
    assert failed.http_status == status
    assert failed.error_message.startswith(message)
    assert results["d2abc"].status is Status.SUCCEEDED
    assert faults_seen(emulator, "d1abc") == [fault] * 3
    assert summary.exit_code == 1
    record = next(r for r in read_report(tmp_path / "report.csv") if r["app_id"] == "d1abc")
    assert (record["status"], record["attempts"], record["error_code"]) == ("failed", "3", code)
    assert record["http_status"] == ("" if status is None else str(status))
    if fault == "slow":
        # The server applied it every time; the client only ever saw its read timeout.
        assert emulator.apps == {"d1abc": WIRE, "d2abc": WIRE}
        assert all(TIMEOUT <= gap <= TIMEOUT + 0.01 for gap in gaps(emulator, "d1abc"))
    else:
        assert emulator.apps == {"d2abc": WIRE}


BAD_200 = [
    pytest.param("error:backend is being deleted", "ResponseError", id="error"),
]


@pytest.mark.parametrize(("outcome", "code"), BAD_200)
def test_an_unusable_200_fails_the_row_after_one_attempt(
    tmp_path: Path, session: Any, outcome: str, code: str | None
) -> None:
    summary, emulator = run(
        tmp_path,
        session,
        rows(tmp_path, "d1abc", "d2abc", "d3abc"),
        lambda emulator: emulator.script("d2abc", [outcome, "ok"]),  # "ok" would show a retry
    )

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
    assert emulator.apps == {"d1abc": WIRE, "d3abc": WIRE}


def test_a_malformed_200_is_an_unknown_outcome_it_is_retried_and_said_so(
    tmp_path: Path, session: Any
) -> None:
    # A 200 whose body cannot be read may have applied the update, like a read timeout.
    def prepare(emulator: Emulator) -> None:
        emulator.script("d1abc", ["malformed", "ok"])
        emulator.script("d2abc", ["malformed"] * 3)

    summary, emulator = run(
        tmp_path, session, rows(tmp_path, "d1abc", "d2abc", "d3abc"), prepare, max_attempts=3
    )

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
    assert emulator.apps == {"d1abc": WIRE, "d3abc": WIRE}
    assert sorted(int(r["line"]) for r in read_report(tmp_path / "report.csv")) == [2, 3, 4]


STORM = 1.0


def test_a_429_storm_is_ridden_out_and_nothing_passes_during_it(
    tmp_path: Path, session: Any
) -> None:
    app_ids = [f"d{i}abc" for i in range(8)]
    # Full-jitter waits before retries 1-11 are uniform in [0, 0.1], [0, 0.2], [0, 0.4],
    # [0, 0.8], then [0, 1.0]: the chance that one row's 11 waits add up to less than the
    # 1 s storm is about 2e-6 (with 7 retries it would be about 1%).
    summary, emulator = run(
        tmp_path,
        session,
        rows(tmp_path, *app_ids),
        lambda emulator: emulator.configure(storm_seconds=STORM),  # from the first request on
        backoff_base=0.1,
        backoff_cap=1.0,
        max_attempts=12,
    )

    results = summary.results or []
    assert [r.status for r in results] == [Status.SUCCEEDED] * len(app_ids)
    assert all(r.attempts >= 2 for r in results)
    assert emulator.apps == dict.fromkeys(app_ids, WIRE)
    records = emulator.requests
    storm_start = records[0].time
    storm = [r for r in records if r.fault == "storm"]
    assert summary.throttles == len(storm) == summary.requests - len(app_ids)
    assert {r.status for r in storm} == {429}
    # The storm's window is exact on virtual time: everything in it was throttled, and
    # nothing after it was.
    assert all(r.fault == "storm" for r in records if r.time < storm_start + STORM)
    assert all(r.fault is None for r in records if r.time >= storm_start + STORM)
    assert max(r.time for r in storm) < storm_start + STORM
