"""The circuit breaker: its rule on an injected clock, then outages end to end over HTTP.

End-to-end tests run on virtual time (tests/virtual_time.py) against the emulator: real
botocore, real sockets, real connection refusals; only the clock is virtual.
"""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog.testing

from batch_updater import Rate, Retries, RunConfig, Status, StopRules, run_batch
from batch_updater.breaker import (
    ENDPOINT_UNREACHABLE,
    Admission,
    Breaker,
    BreakerSettings,
    BreakerState,
)
from batch_updater.control import RunControl, StopReason
from batch_updater.emulator import EmulatorConfig, EmulatorServer

from . import virtual_time
from .conftest import read_report, write_csv

HEADER = "app_id,region,user_pool_id,web_client_id"
UP = "us-east-1_AbC123xyz"
SETTINGS = BreakerSettings(open_after=3, probe_every=2.0, down_after=10.0)
UNREACHABLE = "the endpoint was unreachable"


class Clock:
    """A clock the test moves by hand."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def probe(breaker: Breaker) -> Admission | None:
    """What admit() gives when the probe is due: it returns at once."""
    return virtual_time.run(breaker.admit())


def opened(clock: Clock, settings: BreakerSettings = SETTINGS) -> Breaker:
    breaker = Breaker(settings, clock=clock)
    for _ in range(settings.open_after):
        breaker.unanswered(Admission.SEND)
    assert breaker.state is BreakerState.OPEN
    return breaker


# --- the rule, on an injected clock --------------------------------------------------------


def test_transport_failures_below_the_threshold_keep_it_closed_and_ask_for_a_retry() -> None:
    breaker = Breaker(SETTINGS, clock=Clock())
    assert [breaker.unanswered(Admission.SEND) for _ in range(2)] == [False, False]
    assert breaker.state is BreakerState.CLOSED
    assert breaker.admits(Admission.SEND)


def test_any_answer_resets_the_count_of_failures_in_a_row() -> None:
    breaker = Breaker(SETTINGS, clock=Clock())
    for _ in range(5):
        breaker.unanswered(Admission.SEND)
        breaker.unanswered(Admission.SEND)
        breaker.answered()  # a 503 or a 429 counts: the endpoint is reachable
    assert breaker.state is BreakerState.CLOSED


def test_open_after_failures_in_a_row_then_nothing_is_admitted_until_a_probe_is_due() -> None:
    clock = Clock()
    breaker = Breaker(SETTINGS, clock=clock)
    assert not breaker.unanswered(Admission.SEND)
    assert not breaker.unanswered(Admission.SEND)
    assert breaker.unanswered(Admission.SEND)  # the third opens it: wait, do not retry
    assert breaker.state is BreakerState.OPEN
    assert not breaker.admits(Admission.SEND)  # rows already past admit() must not send
    # A request sent before it opened fails late: still "wait".
    assert breaker.unanswered(Admission.SEND)
    assert "open_for=0.0s/10s probe_in=2.0s" in repr(breaker)


def test_a_probe_that_gets_an_answer_closes_it() -> None:
    clock = Clock()
    breaker = opened(clock)
    clock.now += SETTINGS.probe_every
    assert probe(breaker) is Admission.PROBE
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.probes == 1
    breaker.answered()
    assert breaker.state is BreakerState.CLOSED
    assert probe(breaker) is Admission.SEND


def test_a_failed_probe_reopens_it_until_the_lane_has_been_open_for_down_after() -> None:
    clock = Clock()
    breaker = opened(clock)
    seen = []
    for _ in range(5):
        clock.now += SETTINGS.probe_every
        assert probe(breaker) is Admission.PROBE
        assert breaker.unanswered(Admission.PROBE)
        seen.append(breaker.state)
    # Probes failed at 2, 4, 6, 8 s: open again; at 10 s (= down_after): down.
    assert seen == [BreakerState.OPEN] * 4 + [BreakerState.DOWN]
    assert breaker.down


def test_down_is_final_a_late_answer_does_not_revive_the_lane() -> None:
    clock = Clock()
    breaker = opened(clock, BreakerSettings(open_after=1, down_after=0.0))
    clock.now += 2.0
    assert probe(breaker) is Admission.PROBE
    breaker.unanswered(Admission.PROBE)
    breaker.answered()
    assert breaker.state is BreakerState.DOWN
    assert not breaker.admits(Admission.SEND)


def test_a_released_probe_goes_to_the_next_row_at_once_and_a_send_release_changes_nothing() -> None:
    clock = Clock()
    breaker = opened(clock)
    breaker.release(Admission.SEND)
    assert breaker.state is BreakerState.OPEN
    clock.now += SETTINGS.probe_every
    assert probe(breaker) is Admission.PROBE
    breaker.release(Admission.PROBE)  # e.g. the probe's row was cancelled
    assert breaker.state is BreakerState.OPEN
    assert "probe_in=0.0s" in repr(breaker)
    assert probe(breaker) is Admission.PROBE  # the next row takes it without waiting


def test_while_open_rows_wait_one_probe_goes_every_probe_every_seconds_then_all_resume() -> None:
    async def scenario() -> tuple[list[float], list[Admission | None], float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        breaker = Breaker(SETTINGS)  # the loop's (virtual) clock
        for _ in range(SETTINGS.open_after):
            breaker.unanswered(Admission.SEND)
        probes: list[float] = []

        async def row() -> Admission | None:
            while True:
                admission = await breaker.admit()
                if admission is not Admission.PROBE:
                    return admission
                probes.append(loop.time() - start)
                if len(probes) < 3:
                    breaker.unanswered(admission)  # still refused
                else:
                    breaker.answered()  # the endpoint is back

        results = await asyncio.gather(*(row() for _ in range(8)))
        return probes, results, loop.time() - start

    probes, results, elapsed = virtual_time.run(scenario())
    assert probes == pytest.approx([2.0, 4.0, 6.0])  # one at a time, probe_every apart
    assert results == [Admission.SEND] * 8  # every waiting row resumes on the answer
    assert elapsed == pytest.approx(6.0)


def test_rows_waiting_on_a_lane_that_goes_down_are_told_so() -> None:
    async def scenario() -> list[Admission | None]:
        breaker = Breaker(BreakerSettings(open_after=1, probe_every=1.0, down_after=3.0))
        breaker.unanswered(Admission.SEND)

        async def row() -> Admission | None:
            while (admission := await breaker.admit()) is Admission.PROBE:
                breaker.unanswered(admission)
            return admission

        return await asyncio.gather(*(row() for _ in range(4)))

    assert virtual_time.run(scenario()) == [None] * 4


def test_every_change_of_state_is_reported() -> None:
    changes: list[tuple[str, str]] = []
    clock = Clock()
    breaker = Breaker(
        BreakerSettings(open_after=1), clock=clock, on_change=lambda a, b: changes.append((a, b))
    )
    breaker.unanswered(Admission.SEND)
    breaker.answered()
    assert changes == [("closed", "open"), ("open", "closed")]


@pytest.mark.parametrize(
    ("field", "value"), [("open_after", 0), ("probe_every", 0.0), ("down_after", -1.0)]
)
def test_settings_out_of_range_are_refused(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        BreakerSettings(**{field: value})


# --- outages end to end, over HTTP on virtual time -----------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on: connections to it are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def rows_csv(tmp_path: Path, n: int, regions: tuple[str, ...] = ("us-east-1",)) -> Path:
    lines = [f"d{i}abc,{regions[i % len(regions)]},{UP}," for i in range(n)]
    return write_csv(tmp_path / "in.csv", HEADER, *lines)


@pytest.mark.parametrize("regions", [("us-east-1",), ("us-east-1", "eu-west-1")])
def test_an_endpoint_refusing_connections_from_the_start_stops_the_run_quickly(
    tmp_path: Path, session: Any, regions: tuple[str, ...]
) -> None:
    # Default rate, concurrency and backoff, as a user would run it; max_attempts=2 shows
    # that rows waiting for the breaker do not spend their attempts.
    config = RunConfig(
        output=tmp_path / "report.csv",
        endpoint_url=f"http://127.0.0.1:{closed_port()}",
        retries=2,
    )
    path = rows_csv(tmp_path, 300, regions)

    async def scenario() -> tuple[Any, float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        summary = await run_batch(
            path, config, session=session, resume_command=lambda r: f"resume {r}"
        )
        return summary, loop.time() - start

    summary, elapsed = virtual_time.run(scenario())
    assert elapsed <= 30
    assert summary.requests <= 50
    assert summary.exit_code == 1
    assert summary.stop_reason is not None
    assert summary.stop_reason.kind == ENDPOINT_UNREACHABLE
    assert summary.stop_reason.message.startswith(UNREACHABLE)
    assert "in every region" in summary.stop_reason.message
    assert summary.resume_command == f"resume {tmp_path / 'report.csv'}"
    records = read_report(tmp_path / "report.csv")
    assert sorted(int(r["line"]) for r in records) == list(range(2, 302))  # each row once
    assert {r["status"] for r in records} == {Status.NOT_ATTEMPTED}
    for record in records:
        assert UNREACHABLE in record["error_message"]
        assert record["error_message"].endswith("re-running the row is safe")
    unsent = [r for r in records if r["attempts"] == "0"]
    assert all(r["error_message"].startswith("not sent: ") for r in unsent)
    assert len(unsent) >= 300 - summary.requests


def test_a_ten_second_outage_mid_run_is_ridden_out_without_a_failed_row(
    tmp_path: Path, session: Any
) -> None:
    config = RunConfig(output=tmp_path / "report.csv", rate=20)
    path = rows_csv(tmp_path, 300)  # 15 s of work at 20/s

    async def scenario() -> tuple[Any, int, int]:
        async with EmulatorServer() as server:
            config_here = replace(config, endpoint_url=server.url)
            run = asyncio.create_task(run_batch(path, config_here, session=session))
            await asyncio.sleep(5)
            before = len(server.emulator.requests)
            await server.close()
            await asyncio.sleep(10)
            await server.start()  # the same port
            summary = await run
            return summary, before, len(server.emulator.requests)

    summary, before, received = virtual_time.run(scenario())
    assert 0 < before < 300  # the outage came mid-run
    assert summary.counts[Status.SUCCEEDED] == 300
    assert summary.counts[Status.FAILED] == 0
    assert summary.exit_code == 0
    assert summary.stop_reason is None
    # While it was down, only a few requests went out: those in flight, a few until the
    # breaker opened, and one probe every 2 s.
    assert summary.requests - received <= 16 + 5 + 5


def test_a_signal_while_rows_wait_for_an_open_breaker_ends_the_run_without_the_grace_period(
    tmp_path: Path, session: Any
) -> None:
    config = RunConfig(
        output=tmp_path / "report.csv",
        endpoint_url=f"http://127.0.0.1:{closed_port()}",
        stop=StopRules(grace_period=20),
    )
    path = rows_csv(tmp_path, 50)

    async def scenario() -> tuple[Any, float]:
        loop = asyncio.get_running_loop()
        control = RunControl()
        run = asyncio.create_task(run_batch(path, config, session=session, control=control))
        await asyncio.sleep(5)  # the breaker is open: every row waits for it
        stopped_at = loop.time()
        control.stop(StopReason("signal", "received SIGINT", 2))
        summary = await run
        return summary, loop.time() - stopped_at

    summary, after_stop = virtual_time.run(scenario())
    assert after_stop < 1
    assert summary.exit_code == 130
    records = read_report(tmp_path / "report.csv")
    assert len(records) == 50
    messages = {r["error_message"] for r in records if r["status"] == Status.NOT_ATTEMPTED}
    # Rows that waited for the breaker, and rows never read: not sent, and told why.
    assert messages == {
        "not started: the run was stopped while the row waited for the endpoint to be reachable",
        "not started: run stopped (signal)",
    }
    failed = [r for r in records if r["status"] == Status.FAILED]
    assert all(r["error_message"].endswith("(no retry: the run was stopped)") for r in failed)


def test_an_endpoint_answering_only_5xx_is_reachable_rows_fail_with_its_answers(
    tmp_path: Path, session: Any
) -> None:
    config = RunConfig(output=tmp_path / "report.csv", rate=0, retries=6)
    path = rows_csv(tmp_path, 4)

    async def scenario() -> Any:
        async with EmulatorServer(EmulatorConfig(faults={"503html": 1.0})) as server:
            return await run_batch(path, replace(config, endpoint_url=server.url), session=session)

    summary = virtual_time.run(scenario())
    assert summary.counts[Status.FAILED] == 4
    assert summary.requests == 4 * 6  # every attempt sent: the breaker never opened
    assert summary.stop_reason is None
    assert all(UNREACHABLE not in r.error_message for r in summary.results or [])


def test_connections_dropped_after_sending_count_as_unreachable_and_say_maybe_applied(
    tmp_path: Path, session: Any
) -> None:
    config = RunConfig(output=tmp_path / "report.csv", rate=Rate(0, concurrency=2))
    path = rows_csv(tmp_path, 6)

    async def scenario() -> tuple[Any, list[str]]:
        with structlog.testing.capture_logs() as logs:
            async with EmulatorServer(EmulatorConfig(faults={"drop": 1.0})) as server:
                config_here = replace(config, endpoint_url=server.url)
                summary = await run_batch(path, config_here, session=session)
        return summary, [e["state"] for e in logs if e["event"] == "breaker"]

    summary, states = virtual_time.run(scenario())
    assert states == ["open", "down"]  # probes going out and failing are not logged
    assert summary.stop_reason is not None
    assert summary.stop_reason.kind == ENDPOINT_UNREACHABLE
    results = summary.results or []
    assert {r.status for r in results} == {Status.NOT_ATTEMPTED}
    sent = [r for r in results if r.attempts]
    assert sent  # a dropped connection: the request went out, its outcome is unknown
    for result in sent:
        assert UNREACHABLE in result.error_message
        assert "the update may have been applied" in result.error_message


def test_a_region_that_is_down_does_not_stop_the_others_and_the_resume_command_is_printed(
    tmp_path: Path, session: Any
) -> None:
    # Every request for eu-west-1's apps is dropped (no answer at all); us-east-1 answers.
    path = rows_csv(tmp_path, 40, ("us-east-1", "eu-west-1"))
    dead = {f"d{i}abc": ["drop"] * 100 for i in range(1, 40, 2)}
    config = RunConfig(output=tmp_path / "report.csv", rate=Rate(2, concurrency=4))

    async def scenario() -> Any:
        async with EmulatorServer(EmulatorConfig(script=dead)) as server:
            return await run_batch(
                path,
                replace(config, endpoint_url=server.url),
                session=session,
                resume_command=lambda r: f"resume {r}",
            )

    summary = virtual_time.run(scenario())
    results = {r.app_id: r for r in summary.results or []}
    assert len(results) == 40
    for app_id, result in results.items():
        if app_id in dead:
            assert result.status is Status.NOT_ATTEMPTED
            assert UNREACHABLE in result.error_message
        else:
            assert result.status is Status.SUCCEEDED
    assert summary.stop_reason is None  # one region down: the other went on to the end
    assert summary.exit_code == 1
    assert summary.resume_command == f"resume {tmp_path / 'report.csv'}"
    assert summary.lanes_down == ["eu-west-1"]  # the summary names what was unreachable
    written = json.loads((tmp_path / "report.csv.summary.json").read_text())
    assert written["lanes_down"] == ["eu-west-1"]


def test_an_endpoint_that_accepts_but_never_answers_times_out_into_the_breaker(
    tmp_path: Path, session: Any
) -> None:
    path = rows_csv(tmp_path, 30)

    async def scenario() -> tuple[Any, float]:
        loop = asyncio.get_running_loop()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # reads the request, never answers, until the client hangs up
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        config = RunConfig(
            output=tmp_path / "report.csv",
            endpoint_url=f"http://127.0.0.1:{port}",
            retries=Retries(request_timeout=5),
        )
        start = loop.time()
        async with server:
            summary = await run_batch(path, config, session=session)
        return summary, loop.time() - start

    summary, elapsed = virtual_time.run(scenario())
    assert summary.stop_reason is not None
    assert summary.stop_reason.kind == ENDPOINT_UNREACHABLE
    assert elapsed <= 5 + 20 + 2 + 5  # first timeouts, open for down_after, one more probe
    results = summary.results or []
    assert {r.status for r in results} == {Status.NOT_ATTEMPTED}
    timed_out = [r for r in results if r.error_code == "ReadTimeoutError"]
    assert timed_out
    assert all("the update may have been applied" in r.error_message for r in timed_out)
