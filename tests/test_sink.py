"""The result sink writes the records of the rows that end in one turn of the event loop
together (``ResultSink.batched``): one write at the turn's end, nothing lost or reordered,
while counts, hook and stop rules take each result at once."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web

from batch_updater import run_batch
from batch_updater.breaker import BreakerSettings
from batch_updater.control import FailureRules, RunControl, StopReason
from batch_updater.emulator import EmulatorServer
from batch_updater.policy import StopPolicy
from batch_updater.report import ReportWriter
from batch_updater.results import RowResult, RunSummary, Status, Unsent
from batch_updater.sink import HELD_AT_MOST, ResultSink

from .conftest import fast, read_report, serving, write_csv


def make_sink(path: Path, seen: list[RowResult] | None = None) -> ResultSink:
    policy = StopPolicy(
        RunControl(),
        FailureRules(1.0, 100, None),
        breaker=BreakerSettings(),
        log=structlog.get_logger(),
    )
    return ResultSink(
        ReportWriter(path, run_id="r1"),
        RunSummary(path),
        total=10,
        policy=policy,
        log=structlog.get_logger(),
        on_result=seen.append if seen is not None else None,
    )


def succeeded(line: int) -> RowResult:
    return RowResult(line, f"d{line}abc", "us-east-1", Status.SUCCEEDED, attempts=1)


def not_attempted(line: int) -> Unsent:
    return (Status.NOT_ATTEMPTED, line, f"d{line}abc", "us-east-1", "not sent", "", (), "")


def lines_on_disk(path: Path) -> list[str]:
    """The report's ``line`` cells that have reached the file (not a buffer)."""
    with path.open(newline="", encoding="utf-8") as f:
        return [row["line"] for row in csv.DictReader(f)]


class Turns:
    """``defer`` for the sink: keeps the callbacks, runs them when told (a turn's end)."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []

    def __call__(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)

    def end(self) -> None:
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback()


def test_the_records_of_one_turn_reach_the_file_together_at_its_end(tmp_path: Path) -> None:
    report, seen, turns = tmp_path / "report.csv", [], Turns()
    sink = make_sink(report, seen)
    with sink.batched(turns):
        sink.emit(succeeded(2))
        sink.emit_unsent(not_attempted(3))
        sink.emit(succeeded(4))
        # One drain asked for the turn; the hook and the counts had each result at once.
        assert len(turns.callbacks) == 1
        assert [r.line for r in seen] == [2, 3, 4]
        assert sink.summary.counts[Status.SUCCEEDED] == 2
        assert lines_on_disk(report) == []
        turns.end()
        assert lines_on_disk(report) == ["2", "3", "4"]  # in the order they ended
        sink.emit(succeeded(5))
        assert len(turns.callbacks) == 1  # the next turn asks again
        turns.end()
    assert lines_on_disk(report) == ["2", "3", "4", "5"]


def test_records_still_waiting_are_written_when_the_batch_ends(tmp_path: Path) -> None:
    report, turns = tmp_path / "report.csv", Turns()
    sink = make_sink(report)
    with sink.batched(turns):
        sink.emit(succeeded(2))
        sink.emit_unsent(not_attempted(3))
    assert lines_on_disk(report) == ["2", "3"]
    turns.end()  # the drain asked for earlier finds nothing left: nothing written twice
    assert lines_on_disk(report) == ["2", "3"]
    sink.emit(succeeded(4))  # outside a batch: written (and flushed) at once, as before
    assert lines_on_disk(report) == ["2", "3", "4"]


def test_records_waiting_when_the_batch_is_left_by_an_error_are_written(
    tmp_path: Path,
) -> None:
    report, turns = tmp_path / "report.csv", Turns()
    sink = make_sink(report)

    def cancelled_mid_batch() -> None:
        with sink.batched(turns):
            sink.emit(succeeded(2))
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        cancelled_mid_batch()
    assert lines_on_disk(report) == ["2"]


@pytest.mark.parametrize(
    ("error", "told"),
    [
        pytest.param(OSError(28, "No space left on device"), "No space left on device", id="full"),
        # Raised in the loop's drain callback, an error the writer does not expect would only
        # be printed: the run went on, its report short of the turn's rows, no output_error.
        pytest.param(
            ValueError("a value the encoder cannot take"),
            "ValueError: a value the encoder cannot take",
            id="unexpected",
        ),
    ],
)
def test_a_report_that_cannot_be_written_stops_the_run_at_the_turns_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception, told: str
) -> None:
    report, turns = tmp_path / "report.csv", Turns()
    sink = make_sink(report)
    with sink.batched(turns):
        sink.emit(succeeded(2))

        def broken(*_: object) -> None:
            raise error

        monkeypatch.setattr(sink._writer, "_write", broken)
        turns.end()
        assert sink.summary.output_error is not None
        assert told in sink.summary.output_error
        assert sink.policy.stopping


async def test_a_real_loop_writes_a_turns_records_before_it_next_waits(tmp_path: Path) -> None:
    report = tmp_path / "report.csv"
    sink = make_sink(report)
    loop = asyncio.get_running_loop()
    with sink.batched(loop.call_soon):
        sink.emit(succeeded(2))
        sink.emit(succeeded(3))
        assert lines_on_disk(report) == []
        await asyncio.sleep(0)  # one turn: the drain runs before anything waits
        assert lines_on_disk(report) == ["2", "3"]


def test_a_turn_that_ends_a_great_many_rows_writes_them_as_they_come(tmp_path: Path) -> None:
    # A stop ends every row not read yet in one turn: held for the turn's end, a big
    # input's rows would all wait in memory.
    report, turns = tmp_path / "report.csv", Turns()
    sink = make_sink(report)
    rows = 3 * HELD_AT_MOST
    with sink.batched(turns):
        for line in range(2, rows + 2):
            sink.emit(succeeded(line))
        on_disk = lines_on_disk(report)
        assert len(on_disk) >= rows - HELD_AT_MOST  # the turn has not ended
        assert on_disk == [str(line) for line in range(2, len(on_disk) + 2)]  # in order
        turns.end()
        assert lines_on_disk(report) == [str(line) for line in range(2, rows + 2)]
    turns.end()  # any drain asked for since finds nothing: nothing written twice
    assert lines_on_disk(report) == [str(line) for line in range(2, rows + 2)]


async def test_a_stop_writes_the_unread_rows_of_a_big_input_in_bounded_batches(
    tmp_path: Path, session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[int] = []
    write_all = ReportWriter.write_all

    def counted(writer: ReportWriter, records: Iterable[RowResult | Unsent]) -> None:
        records = list(records)
        batches.append(len(records))
        write_all(writer, records)

    monkeypatch.setattr(ReportWriter, "write_all", counted)
    rows = 3 * HELD_AT_MOST
    source = write_csv(
        tmp_path / "in.csv",
        "app_id,region,user_pool_id",
        *(f"d{i}abc,us-east-1,us-east-1_AbC123xyz" for i in range(rows)),
    )
    control = RunControl()

    def stop_at_once(_: RowResult) -> None:
        control.stop(StopReason("signal", "received SIGTERM", 15))

    async with EmulatorServer() as server:
        summary = await run_batch(
            source,
            fast(tmp_path, endpoint_url=server.url, concurrency=1, collect_results=False),
            session=session,
            control=control,
            on_result=stop_at_once,
        )
    assert summary.counts[Status.NOT_ATTEMPTED] == rows - 1
    assert max(batches) <= HELD_AT_MOST
    records = read_report(tmp_path / "report.csv")
    assert sorted(int(r["line"]) for r in records) == list(range(2, rows + 2))


# -- a record the report cannot take as it is ---------------------------------------------


@pytest.fixture
async def surrogate_service() -> AsyncIterator[str]:
    """A service that answers every call 400 with a message holding a JSON-escaped lone
    surrogate (valid JSON; botocore's parser gives it to us as it is)."""

    async def refuse(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(
            body=b'{"message": "no app named \\ud800 here"}',
            status=400,
            content_type="application/json",
            headers={"x-amzn-ErrorType": "BadRequestException"},
        )

    async with serving(refuse) as url:
        yield url


@pytest.mark.parametrize("name", ["report.csv", "report.jsonl"])
async def test_a_message_with_a_lone_surrogate_is_written_escaped_in_every_row(
    tmp_path: Path, session: Any, surrogate_service: str, name: str
) -> None:
    source = write_csv(
        tmp_path / "in.csv",
        "app_id,region,user_pool_id",
        *(f"d{i}abc,us-east-1,us-east-1_AbC123xyz" for i in range(6)),
    )
    config = fast(
        tmp_path, name, endpoint_url=surrogate_service, concurrency=2, max_failure_rate=1.0
    )
    summary = await run_batch(source, config, session=session)
    assert summary.output_error is None
    assert summary.counts[Status.FAILED] == 6
    records = read_report(tmp_path / name)
    assert sorted(int(r["line"]) for r in records) == list(range(2, 8))
    # JSON lines: the escape reads back as the message; CSV: the escape, as text.
    shown = "\ud800" if name.endswith(".jsonl") else "\\ud800"
    assert {r["error_message"] for r in records} == {f"no app named {shown} here"}
