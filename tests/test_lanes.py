"""Lanes: every rate domain at its own limit, whatever the input order.

The queue and the scheduler alone, then whole runs on virtual time against the emulator
with a limit per region: a file sorted by region runs at the sum of the regions' rates, and
a slow region does not hold the workers the others need.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from batch_updater import RunSummary, Status, run_batch
from batch_updater import lanes as lanes_module
from batch_updater.emulator import EmulatorConfig, EmulatorServer
from batch_updater.lanes import LaneQueue, LaneScheduler
from batch_updater.rows import LoginSettings, Row, RowPlan
from batch_updater.sender import Lane
from batch_updater.shard import Shard

from . import virtual_time
from .conftest import fast, read_report, write_csv

UP = "us-east-1_AbC123xyz"
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2", "us-west-2")


def row(line: int, region: str = "us-east-1") -> Row:
    settings = LoginSettings(None, None, UP, f"client{line}")
    return Row(line, f"d{line}abc", region, settings, f"{line:016x}", (f"note {line}",))


# -- the queue ---------------------------------------------------------------------------


def test_a_lane_queue_keeps_order_and_spills_beyond_its_memory() -> None:
    queue = LaneQueue(memory_rows=3)
    for line in range(2, 22):
        queue.push(row(line))
        assert queue.in_memory <= 3
    assert len(queue) == 20
    taken = [queue.pop() for _ in range(7)]
    queue.push(row(22))  # pushed while rows are spilled: still last
    taken += list(queue.drain())
    assert taken == [row(line) for line in range(2, 23)]  # every field survives the file
    assert len(queue) == 0
    with pytest.raises(IndexError):
        queue.pop()
    queue.close()


def test_a_lane_queue_refuses_no_memory() -> None:
    with pytest.raises(ValueError, match="memory_rows"):
        LaneQueue(0)


# -- the scheduler -----------------------------------------------------------------------


def test_the_lane_that_can_send_soonest_goes_first() -> None:
    due = {"a": 0.5, "b": 0.0, "c": -1.0}

    async def scenario() -> list[str]:
        lanes = LaneScheduler("abc", due.__getitem__, concurrency=8)
        for line, lane in enumerate("aabbcc", start=2):
            lanes.push(lane, row(line))
        order = []
        for _ in range(6):
            taken = await lanes.take()
            assert taken is not None
            order.append(taken[0])
        return order

    # c and b are due now (ties go to the lane with fewer rows out), a only in 0.5 s.
    assert virtual_time.run(scenario()) == ["b", "c", "b", "c", "a", "a"]


def test_no_lane_takes_every_worker() -> None:
    async def scenario() -> list[str]:
        lanes = LaneScheduler("ab", lambda lane: 0.0 if lane == "a" else 1.0, concurrency=3)
        for line in range(2, 12):
            lanes.push("a", row(line))
        lanes.push("b", row(12))
        # "a" is always due first, but with "b" busy it may hold only 3 - 1 rows.
        return [taken[0] for taken in [await lanes.take() for _ in range(3)] if taken]

    assert virtual_time.run(scenario()) == ["a", "a", "b"]


def test_a_lane_that_finishes_gives_its_share_of_workers_back() -> None:
    async def scenario() -> list[str]:
        lanes = LaneScheduler("ab", lambda lane: 0.0 if lane == "a" else 1.0, concurrency=3)
        for line in range(2, 12):
            lanes.push("a", row(line))
        lanes.push("b", row(12))
        taken = [t[0] for t in [await lanes.take() for _ in range(3)] if t]
        lanes.release("b")  # b's only row is final: a may now hold all 3
        taken += [t[0] for t in [await lanes.take()] if t]
        lanes.push("b", row(13))  # b busy again: a holds 3, more than its 2 now
        taken += [t[0] for t in [await lanes.take()] if t]
        return taken

    assert virtual_time.run(scenario()) == ["a", "a", "b", "a", "b"]


def test_a_lane_due_now_with_nothing_out_is_taken_without_asking_the_lanes_after_it() -> None:
    # With many lanes (accounts x regions) each take would otherwise ask every lane.
    asked: list[int] = []

    def due(lane: int) -> float:
        asked.append(lane)
        return 0.0

    async def scenario() -> Any:
        lanes = LaneScheduler(range(100), due, concurrency=16)
        for lane in range(100):
            lanes.push(lane, row(lane + 2))
        return await lanes.take()

    taken = virtual_time.run(scenario())
    assert taken is not None
    assert taken[0] == 0
    assert asked == [0]


def test_take_waits_for_rows_and_ends_once_every_row_is_out() -> None:
    async def scenario() -> tuple[Any, Any, Any, float]:
        loop = asyncio.get_running_loop()
        lanes = LaneScheduler(["a"], lambda lane: 0.0, concurrency=2)
        waiting = asyncio.create_task(lanes.take())
        loop.call_later(1.0, lanes.push, "a", row(2))
        first = await waiting
        loop.call_later(1.0, lanes.close)
        ended = await lanes.take()
        lanes.stop()
        return first, ended, await lanes.take(), loop.time()

    first, ended, after_stop, _ = virtual_time.run(scenario(), start=0.0)
    assert first == ("a", row(2))
    assert ended is None
    assert after_stop is None


def test_stop_hands_out_nothing_more_and_drain_gives_back_the_rest() -> None:
    async def scenario() -> tuple[Any, list[int]]:
        lanes = LaneScheduler("ab", lambda lane: 0.0, concurrency=4, memory_rows=1)
        for line in range(2, 8):
            lanes.push("ab"[line % 2], row(line))
        lanes.stop()
        return await lanes.take(), sorted(r.line for r in lanes.drain())

    assert virtual_time.run(scenario()) == (None, [2, 3, 4, 5, 6, 7])


# -- how far the reader reads -----------------------------------------------------------


def read(lanes: LaneScheduler, rows: list[tuple[str, Row]]) -> list[int]:
    """Push ``rows`` as the reader does, up to where it would wait; the lines pushed."""
    pushed = []
    while rows and not lanes.stocked:
        lane, item = rows.pop(0)
        lanes.push(lane, item)
        lanes.passed(item.line)
        pushed.append(item.line)
    return pushed


def test_the_reader_stops_once_every_lane_with_rows_to_come_has_enough() -> None:
    async def scenario() -> tuple[list[int], list[int], bool, list[int]]:
        lanes = LaneScheduler((), lambda lane: 0.0, concurrency=4, memory_rows=4,
                              last_lines={"a": 21})  # fmt: skip
        rows = [("a", row(line)) for line in range(2, 22)]
        first = read(lanes, rows)  # one lane: as many rows as it keeps in memory, no more
        taken = [t[1].line for t in [await lanes.take() for _ in range(2)] if t]
        reading = not lanes.stocked  # down to half: read on
        await lanes.wanted()  # returns at once: a lane is short
        return first, taken, reading, read(lanes, rows)

    first, taken, reading, then = virtual_time.run(scenario())
    assert first == [2, 3, 4, 5]
    assert taken == [2, 3]
    assert reading
    assert then == [6, 7]  # back up to 4 in hand, and nothing spilled


def test_the_reader_reads_past_a_full_lane_to_a_lane_that_has_none_yet() -> None:
    # Sorted by lane: to reach b's rows the reader must pass a's, which spill.
    lanes = LaneScheduler((), lambda lane: 0.0, concurrency=4, memory_rows=3,
                          last_lines={"a": 11, "b": 21})  # fmt: skip
    rows = [("a" if line <= 11 else "b", row(line)) for line in range(2, 22)]
    assert read(lanes, rows) == list(range(2, 15))  # all of a, then b up to 3 in hand
    assert lanes.stocked


def test_a_lane_the_reader_has_no_last_line_for_never_holds_it_back() -> None:
    lanes = LaneScheduler((), lambda lane: 0.0, concurrency=4, memory_rows=2,
                          last_lines={"a": 9})  # fmt: skip
    rows = [("a", row(2)), ("a", row(3)), ("x", row(4)), ("a", row(5))]
    assert read(lanes, list(rows[:2])) == [2, 3]  # a has 2 in hand: stocked
    lanes.push("x", row(4))  # a lane validation did not name (the lanes disagree: a bug)
    assert not lanes.stocked


def test_stop_wakes_a_reader_waiting_for_a_lane_to_want_rows() -> None:
    async def scenario() -> bool:
        lanes = LaneScheduler((), lambda lane: 0.0, concurrency=4, memory_rows=2,
                              last_lines={"a": 9})  # fmt: skip
        read(lanes, [("a", row(line)) for line in range(2, 10)])
        waiting = asyncio.create_task(lanes.wanted())
        await asyncio.sleep(1)
        blocked = not waiting.done()
        lanes.stop()
        await waiting
        return blocked

    assert virtual_time.run(scenario())


def test_a_queue_seeks_to_its_end_only_after_it_has_read_back() -> None:
    queue = LaneQueue(memory_rows=1)
    for line in range(2, 6):
        queue.push(row(line))
    assert queue.pop() == row(2)
    assert queue.pop() == row(3)  # read back from the file
    queue.push(row(6))  # written at the end, not where the reading stopped
    assert list(queue.drain()) == [row(4), row(5), row(6)]
    queue.close()


def test_a_closed_queue_used_again_reads_its_new_file_from_the_start() -> None:
    queue = LaneQueue(memory_rows=1)
    for line in range(2, 6):
        queue.push(row(line))
    assert [queue.pop() for _ in range(2)] == [row(2), row(3)]  # one read back from the file
    queue.close()
    for line in range(10, 14):
        queue.push(row(line))
    assert list(queue.drain()) == [row(line) for line in range(10, 14)]
    queue.close()


def test_a_plan_sharded_by_hash_gives_each_lane_the_last_line_of_its_own_rows() -> None:
    # Two lanes, three shards: each shard takes the rows that hash to it. A lane's last
    # line is its last row that this shard reads: the reader never passes a later one.
    cells = [
        {"app_id": f"d{i}abc", "region": REGIONS[i % 2], "user_pool_id": UP} for i in range(60)
    ]
    for k in range(3):
        shard = Shard(k, 3)
        with RowPlan(cells, None, shard=shard) as plan:
            assert plan.rate_divided
            last: dict[tuple[str, str], int] = {}
            for item in plan:
                if isinstance(item, Row):
                    last[plan.lane_of(item)] = item.line
            assert plan.last_lines == last


# -- whole runs --------------------------------------------------------------------------


def sorted_by_region(tmp_path: Path, per_region: int) -> Path:
    rows = [
        f"d{r}x{i}abc,{region},{UP}" for r, region in enumerate(REGIONS) for i in range(per_region)
    ]
    return write_csv(tmp_path / "sorted.csv", "app_id,region,user_pool_id", *rows)


def test_a_file_sorted_by_region_runs_at_the_sum_of_the_regions_rates(
    tmp_path: Path, session: Any
) -> None:
    # 100 rows per region (more than a lane keeps in memory), 20/s each, the server allows
    # 22/s per region: together 80/s, where one region at a time would give 20/s.
    per_region, rate = 100, 20.0
    source = sorted_by_region(tmp_path, per_region)

    async def scenario() -> tuple[RunSummary, dict[str, list[float]], float]:
        loop = asyncio.get_running_loop()
        config = EmulatorConfig(rate=22, limit_per="region", latency_ms=20)
        async with EmulatorServer(config) as server:
            start = loop.time()
            summary = await run_batch(
                source, fast(tmp_path, endpoint_url=server.url, rate=rate), session=session
            )
            times: dict[str, list[float]] = defaultdict(list)
            for record in server.emulator.requests:
                times[record.region].append(record.time - start)
            return summary, times, loop.time() - start

    summary, times, elapsed = virtual_time.run(scenario())
    assert summary.counts[Status.SUCCEEDED] == 4 * per_region
    assert summary.throttles == 0
    # pacing, plus the answers each of a lane's first requests waits for (20 ms each)
    assert elapsed == pytest.approx((per_region - 1) / rate + Lane.ALONE * 0.02, abs=0.05)
    for region in REGIONS:
        arrivals = sorted(times[region])
        assert len(arrivals) == per_region
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        assert min(gaps) >= 1 / rate - 1e-9  # each region at its own rate, never above
    lines = [int(r["line"]) for r in read_report(tmp_path / "report.csv")]
    assert sorted(lines) == list(range(2, 2 + 4 * per_region))


def spills(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The lines of the rows lanes write to their spill files from now on."""
    written: list[int] = []
    encode = lanes_module._encode

    def counted(item: Row) -> str:
        written.append(item.line)
        return encode(item)

    monkeypatch.setattr(lanes_module, "_encode", counted)
    return written


def test_a_file_of_one_region_or_of_regions_mixed_spills_nothing(
    tmp_path: Path, session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 300 rows, 4 times what a lane keeps in memory at --concurrency 8 (64).
    one = write_csv(tmp_path / "one.csv", "app_id,region,user_pool_id",
                    *(f"d{i}abc,us-east-1,{UP}" for i in range(300)))  # fmt: skip
    mixed = write_csv(tmp_path / "mixed.csv", "app_id,region,user_pool_id",
                      *(f"d{i}abc,{REGIONS[i % 4]},{UP}" for i in range(300)))  # fmt: skip
    written = spills(monkeypatch)

    async def scenario(source: Path) -> RunSummary:
        async with EmulatorServer(EmulatorConfig()) as server:
            report = f"{source.stem}-report.csv"
            config = fast(tmp_path, report, endpoint_url=server.url, concurrency=8)
            return await run_batch(source, config, session=session)

    for source in (one, mixed):
        summary = virtual_time.run(scenario(source))
        assert summary.counts[Status.SUCCEEDED] == 300
        report = read_report(tmp_path / f"{source.stem}-report.csv")
        assert sorted(int(r["line"]) for r in report) == list(range(2, 302))
    assert written == []


def test_a_file_sorted_by_region_spills_only_the_rows_the_reader_must_pass(
    tmp_path: Path, session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    per_region = 150  # more than the 64 a lane keeps in memory at --concurrency 8
    source = sorted_by_region(tmp_path, per_region)
    written = spills(monkeypatch)

    async def scenario() -> RunSummary:
        async with EmulatorServer(EmulatorConfig(rate=22, limit_per="region")) as server:
            config = fast(tmp_path, endpoint_url=server.url, rate=20, concurrency=8)
            return await run_batch(source, config, session=session)

    summary = virtual_time.run(scenario())
    assert summary.counts[Status.SUCCEEDED] == 4 * per_region
    # The reader passes the first three regions' rows to reach the last one's; the last
    # region's rows past its 64 in memory are read as it needs them, never spilled.
    last_region = range(2 + 3 * per_region, 2 + 4 * per_region)
    assert written
    assert not [line for line in written if line in last_region]


def test_a_shard_by_hash_of_regions_mixed_spills_nothing(
    tmp_path: Path, session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two regions, three shards: split by hash. In shard 0, us-east-1's rows end early; the
    # input's last us-east-1 row is shard 1's. The reader must not wait for that row to
    # hold back on eu-west-1's 200 rows that come after.
    shard = Shard(0, 3)

    def apps(prefix: str, region: str, mine: bool, count: int) -> list[str]:
        names = (f"{prefix}{n}abc" for n in itertools.count())
        return list(itertools.islice((a for a in names if shard.owns(region, a) == mine), count))

    east, west = apps("d", "us-east-1", True, 100), apps("de", "eu-west-1", True, 300)
    other = apps("df", "us-east-1", False, 1)[0]
    lines = [f"{e},us-east-1,{UP}\n{w},eu-west-1,{UP}" for e, w in zip(east, west, strict=False)]
    lines += [f"{w},eu-west-1,{UP}" for w in west[100:]] + [f"{other},us-east-1,{UP}"]
    source = write_csv(tmp_path / "in.csv", "app_id,region,user_pool_id", *lines)
    written = spills(monkeypatch)

    async def scenario() -> RunSummary:
        async with EmulatorServer(EmulatorConfig()) as server:
            config = fast(tmp_path, endpoint_url=server.url, concurrency=8, shard=shard)
            return await run_batch(source, config, session=session)

    summary = virtual_time.run(scenario())
    assert summary.counts[Status.SUCCEEDED] == 400
    assert written == []


def test_a_slow_region_does_not_hold_the_workers_the_others_need(
    tmp_path: Path, session: Any
) -> None:
    # eu-west-1 answers in 250 ms and comes first in the file; 4 workers. Without lanes it
    # took every worker while the three fast regions waited behind it.
    per_region, rate = 20, 20.0
    source = sorted_by_region(tmp_path, per_region)
    slow = {f"d1x{i}abc": ["slow"] for i in range(per_region)}

    async def scenario() -> tuple[RunSummary, dict[str, float]]:
        loop = asyncio.get_running_loop()
        config = EmulatorConfig(script=slow, slow_seconds=0.25)
        async with EmulatorServer(config) as server:
            start = loop.time()
            summary = await run_batch(
                source,
                fast(tmp_path, endpoint_url=server.url, rate=rate, concurrency=4),
                session=session,
            )
            last: dict[str, float] = {}
            for record in server.emulator.requests:
                last[record.region] = record.time - start
            return summary, last

    summary, last = virtual_time.run(scenario())
    assert summary.counts[Status.SUCCEEDED] == 4 * per_region
    for region in ("us-east-1", "ap-southeast-2", "us-west-2"):
        # each fast region's 20 rows at its 20/s, as if the slow one were not there
        assert last[region] == pytest.approx((per_region - 1) / rate, abs=0.01)
    assert last["eu-west-1"] > max(last.values()) - 1e-9  # the slow one takes its own time


def test_a_lanes_first_requests_go_alone_and_pacing_starts_from_their_answers(
    tmp_path: Path, session: Any
) -> None:
    # A lane's first call is slow (a new connection, the client's first use, a role being
    # assumed): a second request paced right behind it would reach a service admitting one
    # every 1/rate seconds right after it, and be refused. So the others wait for its answer;
    # and the next two go alone too, while the lane's rate is still a guess.
    source = write_csv(
        tmp_path / "in.csv",
        "app_id,region,user_pool_id",
        *(f"d{i}abc,us-east-1,{UP}" for i in range(6)),
    )

    async def scenario() -> list[float]:
        loop = asyncio.get_running_loop()
        async with EmulatorServer(EmulatorConfig(latency_ms=100)) as server:
            start = loop.time()
            await run_batch(
                source, fast(tmp_path, endpoint_url=server.url, rate=20), session=session
            )
            return [record.time - start for record in server.emulator.requests]

    arrivals = virtual_time.run(scenario())
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(arrivals)]
    alone = Lane.ALONE
    # each of the first ones: its answer, then one slot
    assert gaps[:alone] == pytest.approx([0.1 + 1 / 20] * alone, abs=0.002)
    assert gaps[alone:] == pytest.approx([1 / 20] * (5 - alone), abs=0.002)


def test_a_rate_far_above_the_services_limit_costs_few_429s_at_the_start(
    tmp_path: Path, session: Any
) -> None:
    # --rate 100 against a service admitting 5/s (burst 1, 30 ms answers): paced at 100/s
    # from the start, every request sent before the first 429 came back was refused too.
    # While the lane's rate is a guess, its requests go one at a time.
    source = write_csv(
        tmp_path / "in.csv",
        "app_id,region,user_pool_id",
        *(f"d{i}abc,us-east-1,{UP}" for i in range(20)),
    )

    async def scenario() -> RunSummary:
        config = EmulatorConfig(rate=5, burst=1, latency_ms=30)
        async with EmulatorServer(config) as server:
            return await run_batch(
                source,
                fast(
                    tmp_path,
                    endpoint_url=server.url,
                    rate=100,
                    backoff_base=0.5,  # the default backoff: a retry is not refused at once
                    backoff_cap=20.0,
                ),
                session=session,
            )

    summary = virtual_time.run(scenario())
    assert summary.counts[Status.SUCCEEDED] == 20
    assert summary.throttles <= 5  # 7 when only the first request went alone
