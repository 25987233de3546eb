"""2,000 rows against an emulator where about one request in five goes wrong.

Random faults (dropped connections, answers later than the read timeout, HTML 500/503 from
a load balancer, 504, 429) are drawn from a seeded source, plus a few rows scripted to
fail (or recover) in every way, so that the rare paths run every time. The run must report
every row exactly once, and what it reports must agree with what the emulator saw and
holds. It runs on virtual time (``tests/virtual_time.py``): an ordinary answer is never read
too late, however busy the machine, so the run is the same every time but for the backoff.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from batch_updater import Rate, Retries, RowResult, RunConfig, RunSummary, Status, run_batch, runner
from batch_updater.breaker import BreakerSettings
from batch_updater.emulator import Emulator, EmulatorConfig, EmulatorServer, RequestRecord
from batch_updater.rows import Row, RowPlan
from batch_updater.runner import MAYBE_APPLIED
from benchmarks.generate_rows import write_rows

from . import virtual_time
from .conftest import read_report

ROWS = 2000
SEED = 20240611
MAX_ATTEMPTS = 6
TIMEOUT = 0.3  # the client's read timeout
SLOW = 0.6  # a "slow" answer comes after the client gave up
FAULTS = {"drop": 0.04, "slow": 0.03, "500html": 0.04, "503html": 0.03, "504": 0.03, "429": 0.03}
RETRIED = frozenset(FAULTS)  # every random fault is retried by the tool

# What a row reports when every attempt got this fault.
EXHAUSTED = {
    "drop": "ConnectionClosedError",
    "slow": "ReadTimeoutError",
    "500html": "500",
    "503html": "503",
    "504": "GatewayTimeoutException",
    "429": "TooManyRequestsException",
}
# Rows (by index among the valid rows) scripted to run out of attempts or to recover late.
SCRIPTED: dict[int, list[str]] = {
    **{i: [fault] * MAX_ATTEMPTS for i, fault in enumerate(EXHAUSTED)},
    10: ["error:backend is being deleted"],
    11: ["404"],
    12: ["slow", "drop", "500html", "503html", "ok"],
    13: ["slow"] * (MAX_ATTEMPTS - 1) + ["ok"],
    # Applied by the first (timed-out) attempt, then failed otherwise: the report says
    # failed, the service holds the settings. Only a later run can tell.
    14: ["slow"] + ["503html"] * (MAX_ATTEMPTS - 1),
}

WIRE = {
    "AwsCognitoIdentityPoolId": "aws_cognito_identity_pool_id",
    "AwsCognitoRegion": "aws_cognito_region",
    "AwsUserPoolsId": "aws_user_pools_id",
    "AwsUserPoolsWebClientId": "aws_user_pools_web_client_id",
}

# The last request a row sent, as the emulator logged it (status, fault), decides the row's
# report: (status, error_code, http_status, ran out of attempts).
LAST: dict[tuple[int, str | None], tuple[Status, str, int | None, bool]] = {
    (200, None): (Status.SUCCEEDED, "", 200, False),
    (200, "error"): (Status.FAILED, "ResponseError", 200, False),
    (404, "404"): (Status.FAILED, "NotFoundException", 404, False),
    (200, "slow"): (Status.FAILED, "ReadTimeoutError", None, True),
    (0, "drop"): (Status.FAILED, "ConnectionClosedError", None, True),
    (500, "500html"): (Status.FAILED, "500", 500, True),
    (503, "503html"): (Status.FAILED, "503", 503, True),
    (504, "504"): (Status.FAILED, "GatewayTimeoutException", 504, True),
    (429, "429"): (Status.FAILED, "TooManyRequestsException", 429, True),
}


def test_chaos_every_row_reported_once_and_the_report_matches_the_service(
    tmp_path: Path, session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The circuit breaker is not under test here (tests/test_breaker.py specifies it): with
    # a fifth of the requests failing, five transport failures in a row in one region do
    # happen now and then, and a row that waits for the breaker sends more requests than
    # --max-attempts, which the scripted rows' expectations below do not allow for.
    monkeypatch.setattr(runner, "BreakerSettings", lambda: BreakerSettings(open_after=10**9))
    source = tmp_path / "rows.csv"
    write_rows(source, ROWS, seed=SEED, regions=("us-east-1", "eu-west-1"), unique=True)
    plan = [item for item in RowPlan(source, None) if isinstance(item, Row)]
    assert len(plan) == ROWS
    rows = {row.app_id: row for row in plan}
    assert len(rows) == ROWS  # the emulator keys its state by app id alone

    config = EmulatorConfig(
        seed=SEED,
        faults=FAULTS,
        slow_seconds=SLOW,
        latency_jitter_ms=3.0,
        script={plan[i].app_id: outcomes for i, outcomes in SCRIPTED.items()},
    )
    report = tmp_path / "report.csv"

    async def scenario() -> tuple[RunSummary, Emulator]:
        async with EmulatorServer(config) as server:
            run = RunConfig(
                output=report,
                endpoint_url=server.url,
                rate=Rate(0, concurrency=32),
                retries=Retries(
                    MAX_ATTEMPTS, request_timeout=TIMEOUT, backoff_base=0.001, backoff_cap=0.01
                ),
            )
            return await run_batch(source, run, session=session), server.emulator

    summary, emulator = virtual_time.run(scenario())

    # Every input line exactly once, in the report file and in the summary.
    records = read_report(report)
    assert sorted(int(r["line"]) for r in records) == [row.line for row in plan]
    results = {r.app_id: r for r in summary.results or []}
    assert len(results) == ROWS
    assert summary.counts[Status.SUCCEEDED] + summary.counts[Status.FAILED] == ROWS
    assert summary.stop_reason is None

    sent: defaultdict[str, list[RequestRecord]] = defaultdict(list)
    for record in emulator.requests:
        sent[record.app_id].append(record)
    assert set(sent) == set(rows)
    assert set(emulator.apps) <= set(rows)
    assert summary.requests == emulator.request_count

    busy = sum(
        check_row(row, results[app_id], sent[app_id], emulator.apps.get(app_id))
        for app_id, row in rows.items()
    )
    check_scripted(plan, results, emulator)

    faults = Counter(r.fault or "none" for r in emulator.requests)
    statuses = Counter(str(r["status"]) for r in records)
    codes = Counter(str(r["error_code"]) for r in records if r["error_code"])
    print(f"\nreport: {dict(statuses)}; error codes: {dict(codes)}")
    print(f"requests: {emulator.request_count}, faults: {dict(faults)}")
    print(f"retries: {summary.retries}, elapsed: {summary.elapsed_seconds:.1f} s")
    assert busy == 0  # on virtual time an answer due before the read timeout is read in time
    # Every scripted outcome was used; the other requests drew from FAULTS in its
    # proportions (the seeded draws are fixed; only their number varies by a few).
    assert all(not emulator.pending(plan[i].app_id) for i in SCRIPTED)
    script_faults = Counter(f for outcomes in SCRIPTED.values() for f in outcomes)
    draws = emulator.request_count - script_faults.total()
    drawn = {fault: faults[fault] - script_faults[fault] for fault in FAULTS}
    print(f"random faults in {draws} draws: {drawn}")
    assert 0.17 < sum(drawn.values()) / draws < 0.23
    for fault, probability in FAULTS.items():
        assert 0.65 < drawn[fault] / (probability * draws) < 1.35, fault


def check_row(
    row: Row, result: RowResult, log: list[RequestRecord], stored: dict[str, str] | None
) -> int:
    """The row's report agrees with the requests the emulator got for it and its state.

    Returns how many ordinary answers (200, no fault) the client gave up on: on a real
    clock that happens when the machine is too busy to read an answer within the read
    timeout; on virtual time, never.
    """
    settings = {WIRE[k]: v for k, v in row.settings.to_api().items()}
    why = (row.app_id, result, log)
    # Every attempt reached the service; only the last one may end the row: the earlier
    # ones ended on a retried fault, or on an ordinary answer the client gave up on.
    assert result.attempts == len(log), why
    gave_up = [r for r in log[:-1] if r.fault not in RETRIED]
    assert all(r.status == 200 and r.applied and r.fault is None for r in gave_up), why
    last = log[-1]
    expected = LAST[last.status, last.fault]
    if last.fault is None and last.applied and result.status is Status.FAILED:
        gave_up.append(last)
        expected = LAST[200, "slow"]  # as late as a "slow" answer, for the client
    status, code, http_status, exhausted = expected
    assert (result.status, result.error_code, result.http_status) == (
        status,
        code,
        http_status,
    ), why
    if exhausted:
        assert result.attempts == MAX_ATTEMPTS, why
    if result.status is Status.SUCCEEDED:
        assert stored == settings, why
    elif stored is not None:
        # Applied by an attempt whose answer came after the client's read timeout: the
        # report says so, whatever error ended the row.
        assert result.status is Status.FAILED, why
        assert any(r.applied for r in log), why
        assert stored == settings, why
        assert MAYBE_APPLIED in result.error_message, why
    else:
        assert not any(r.applied for r in log), why
    return len(gave_up)


def check_scripted(plan: list[Row], results: dict[str, RowResult], emulator: Emulator) -> None:
    """The scripted rows ended as scripted."""
    scripted = {i: results[plan[i].app_id] for i in SCRIPTED}
    for i, code in enumerate(EXHAUSTED.values()):
        assert (scripted[i].status, scripted[i].error_code) == (Status.FAILED, code)
        assert scripted[i].attempts == MAX_ATTEMPTS
    assert (scripted[10].error_code, scripted[10].attempts) == ("ResponseError", 1)
    assert (scripted[11].error_code, scripted[11].attempts) == ("NotFoundException", 1)
    assert [scripted[i].status for i in (12, 13)] == [Status.SUCCEEDED] * 2
    assert [scripted[i].attempts for i in (12, 13)] == [5, MAX_ATTEMPTS]
    assert (scripted[14].status, scripted[14].error_code) == (Status.FAILED, "503")
    # Failed, yet applied: by "slow" attempts whose answers came too late.
    assert {plan[1].app_id, plan[14].app_id} <= set(emulator.apps)
