"""AdaptiveRate against a simulated rate-limited service, in virtual time: no real waiting.

The simulation runs real asyncio (workers, ``acquire``, ``asyncio.sleep``) on the shared
virtual-time loop (``tests/virtual_time.py``), whose clock jumps to the next timer instead of
waiting for it, so a minute of traffic takes a fraction of a second and every run is
deterministic.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch_updater.adaptive import AdaptiveRate, RateChange, Tuning
from batch_updater.limiter import RateLimiter

from . import virtual_time


@dataclass
class Run:
    """What one simulated batch did; times are seconds from its start."""

    seconds: float = 0.0
    sent: list[tuple[float, bool]] = field(default_factory=list)  # (time, admitted)
    rates: list[tuple[float, float]] = field(default_factory=list)  # (time, rate after event)
    changes: list[RateChange] = field(default_factory=list)

    def rows_per_second(self) -> float:
        return sum(ok for _, ok in self.sent) / self.seconds

    def throttled(self, start: float = 0.0, end: float = math.inf) -> float:
        window = [ok for at, ok in self.sent if start <= at < end]
        return window.count(False) / len(window)

    def success_rate(self, start: float, end: float) -> float:
        return sum(ok for at, ok in self.sent if start <= at < end) / (end - start)


def simulate(
    limit: float,
    *,
    max_rate: float = 500.0,
    rows: int = 2000,
    burst: int = 5,
    latency: float = 0.02,
    workers: int = 16,
    limits: Sequence[tuple[float, float]] = (),
    tokens: bool = True,
    spread: float = 0.0,
    make: Callable[..., AdaptiveRate] = AdaptiveRate,
) -> Run:
    """Send ``rows`` rows through ``workers`` workers against a service limited to ``limit``/s.

    Each request waits for the controller, reaches the service after ``latency / 2`` and its
    answer comes back after another ``latency / 2``; a 429 is retried with the runner's
    backoff (full jitter, 0.5 s base). ``limits`` changes the service's limit at given times.
    """
    run = Run()
    service = RateLimiter(limit, burst)  # the service's hidden limit, as the emulator's

    async def main() -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        control = make(max_rate, 1, on_change=run.changes.append)
        jitter = random.Random(7)
        left = rows

        async def worker() -> None:
            nonlocal left
            while left:
                left -= 1
                attempt = 0
                while True:
                    token = await control.acquire()
                    sent = loop.time() - start
                    await asyncio.sleep(latency / 2 * jitter.uniform(1 - spread, 1 + spread))
                    admitted = service.try_acquire(loop.time())
                    await asyncio.sleep(latency / 2 * jitter.uniform(1 - spread, 1 + spread))
                    run.sent.append((sent, admitted))
                    if admitted:
                        control.on_success(token if tokens else None)
                    else:
                        control.on_throttle(token if tokens else None)
                    run.rates.append((loop.time() - start, control.rate))
                    if admitted:
                        break
                    attempt += 1
                    await asyncio.sleep(jitter.uniform(0, min(20.0, 0.5 * 2 ** (attempt - 1))))

        async def change_limits() -> None:
            for at, rate in limits:
                await asyncio.sleep(at - (loop.time() - start))
                service.rate = rate

        changer = asyncio.create_task(change_limits())
        await asyncio.gather(*(worker() for _ in range(workers)))
        run.seconds = loop.time() - start
        changer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await changer

    virtual_time.run(main(), start=1000.0)
    return run


@functools.cache
def steady(limit: float) -> Run:
    """The issue's benchmark at ``limit``/s: burst 5, 20 ms, 16 workers, 2,000 rows from 500/s."""
    return simulate(limit)


def test_issue_benchmark_reaches_the_limit_with_few_throttles() -> None:
    run = steady(50)
    assert run.rows_per_second() >= 48
    assert run.throttled() <= 0.03


@pytest.mark.parametrize("limit", [10, 50, 100, 200])
def test_converges_just_below_the_hidden_limit(limit: float) -> None:
    run = steady(limit)
    warm = 5.0 if limit < 50 else 2.0
    assert run.success_rate(warm, run.seconds - 1) >= 0.95 * limit
    assert run.throttled(warm) <= 0.03
    assert run.throttled() <= 0.03
    assert all(0 < rate <= 500 for _, rate in run.rates)


@functools.cache
def episode() -> Run:
    """Limit 50/s, but 20/s from 10 s to 20 s into the run."""
    return simulate(50, rows=1700, limits=[(10.0, 20.0), (20.0, 50.0)])


def test_comes_down_for_a_throttling_episode_and_recovers_after_it() -> None:
    run = episode()
    assert run.success_rate(12, 20) >= 0.9 * 20  # settled under the lower limit
    assert run.throttled(11, 20) <= 0.03
    recovered = (t / 10 for t in range(200, 400) if run.success_rate(t / 10, t / 10 + 1) >= 45)
    assert next(recovered, math.inf) <= 20 + 15
    assert run.throttled(10) <= 0.03


@pytest.mark.parametrize("max_rate", [30.0, 49.0, 50.0])
def test_a_max_rate_below_the_limit_is_kept_without_a_single_throttle(max_rate: float) -> None:
    run = simulate(50, max_rate=max_rate, rows=600)
    assert run.throttled() == 0
    assert {rate for _, rate in run.rates} == {max_rate}
    assert run.rows_per_second() == pytest.approx(max_rate, rel=0.02)
    assert run.changes == []


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    limit=st.floats(5, 300),
    max_rate=st.floats(1, 600),
    burst=st.integers(1, 10),
    latency=st.floats(0.005, 0.3),
    workers=st.integers(1, 32),
)
def test_the_rate_stays_within_bounds(
    limit: float, max_rate: float, burst: int, latency: float, workers: int
) -> None:
    run = simulate(
        limit, max_rate=max_rate, rows=150, burst=burst, latency=latency, workers=workers
    )
    assert all(Tuning().min_rate <= rate <= max_rate for _, rate in run.rates)
    if max_rate <= limit:
        assert run.throttled() == 0


def test_on_change_reports_every_move_of_more_than_20_percent_and_nothing_else() -> None:
    run = episode()
    assert run.changes, "the episode must be reported"
    assert {change.reason for change in run.changes} == {"throttled", "recovering"}
    reported = 500.0
    changes = iter(run.changes)
    for _, rate in run.rates:
        if abs(rate - reported) > 0.2 * reported:
            change = next(changes)
            assert change == RateChange(reported, rate, change.reason)
            assert (change.reason == "throttled") == (rate < reported)
            reported = rate
    assert next(changes, None) is None


def test_not_adaptive_keeps_the_fixed_rate_whatever_happens() -> None:
    make = functools.partial(AdaptiveRate, adaptive=False)
    run = simulate(50, max_rate=80, rows=300, make=make)
    assert run.throttled() > 0.1  # the service throttles, and the rate stays
    assert {rate for _, rate in run.rates} == {80.0}
    assert run.changes == []


class ManualClock:
    """A clock that moves when told to, or when someone sleeps on it (one sleeper at a time)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def feed(control: AdaptiveRate, clock: ManualClock, count: int, per_second: float) -> None:
    """``count`` successes, one every ``1 / per_second`` seconds."""
    for _ in range(count):
        clock.now += 1 / per_second
        control.on_success()


async def test_acquire_paces_through_the_injected_clock_and_returns_tickets() -> None:
    clock = ManualClock()
    control = AdaptiveRate(10, clock=clock, sleep=clock.sleep)
    tickets, times = [], []
    for _ in range(3):
        tickets.append(await control.acquire())
        times.append(clock.now)
    assert tickets == [1, 2, 3]
    assert times == pytest.approx([1000.0, 1000.1, 1000.2])


async def test_429s_of_requests_paced_before_a_cut_count_as_one_episode() -> None:
    clock = ManualClock()
    control = AdaptiveRate(100, clock=clock, sleep=clock.sleep)
    early = [await control.acquire() for _ in range(5)]
    for ticket in early:
        control.on_throttle(ticket)
    assert control.rate == pytest.approx(85)
    late = [await control.acquire() for _ in range(2)]
    control.on_throttle(late[0])  # its slot was still spaced at the old rate
    assert control.rate == pytest.approx(85)
    control.on_throttle(late[1])
    assert control.rate == pytest.approx(85 * 0.85)
    assert "cuts=2 throttles=7" in repr(control)


def test_without_tickets_429s_within_the_cooldown_are_one_episode() -> None:
    clock = ManualClock()
    control = AdaptiveRate(100, clock=clock)
    control.on_throttle()
    clock.now += 0.15
    control.on_throttle()
    assert control.rate == pytest.approx(85)
    clock.now += 0.1
    control.on_throttle()
    assert control.rate == pytest.approx(85 * 0.85)


def test_a_cut_applies_to_workers_already_waiting() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        control = AdaptiveRate(100)
        times: list[float] = []

        async def send() -> None:
            await control.acquire()
            times.append(loop.time())

        tasks = [asyncio.create_task(send()) for _ in range(6)]
        await asyncio.sleep(0.015)  # two have gone, the others wait
        control.on_throttle()
        await asyncio.gather(*tasks)
        return times

    times = virtual_time.run(main(), start=1000.0)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # One slot was reserved and the next spaced before the cut; the rest follow the new rate.
    assert gaps == pytest.approx([0.01, 0.01, 0.01, 1 / 85, 1 / 85])


def test_returns_fast_to_the_level_that_worked_then_probes_slowly() -> None:
    clock = ManualClock()
    control = AdaptiveRate(120, clock=clock)
    feed(control, clock, 200, per_second=100)
    assert control.measured == pytest.approx(100, rel=0.01)
    assert control.rate == 120  # never throttled: stays at the maximum
    control.on_throttle()
    assert control.rate == pytest.approx(85, rel=0.01)
    clock.now += 0.2  # past the cooldown: the successes below were paced at the new rate
    feed(control, clock, 20, per_second=90)
    assert 93 <= control.rate <= 97
    feed(control, clock, 50, per_second=95)
    assert 95 < control.rate <= 100


def test_does_not_grow_while_the_rate_is_not_in_use() -> None:
    clock = ManualClock()
    control = AdaptiveRate(100, clock=clock)
    control.on_throttle()
    clock.now += 1
    feed(control, clock, 50, per_second=10)  # workers, not the rate, are the bottleneck
    assert control.rate == pytest.approx(85)


def test_an_under_measured_window_cuts_at_most_by_half() -> None:
    clock = ManualClock()
    control = AdaptiveRate(100, clock=clock)
    feed(control, clock, 30, per_second=2)  # e.g. workers asleep in backoff
    control.on_throttle()
    assert control.rate == pytest.approx(50)


@pytest.mark.parametrize(("max_rate", "floor"), [(100.0, 0.1), (0.05, 0.05)])
def test_the_rate_is_never_cut_below_the_floor(max_rate: float, floor: float) -> None:
    clock = ManualClock()
    control = AdaptiveRate(max_rate, clock=clock)
    for _ in range(100):
        clock.now += 1
        control.on_throttle()
    assert control.rate == pytest.approx(floor)


def test_on_change_fires_only_once_the_move_since_the_last_report_exceeds_20_percent() -> None:
    clock = ManualClock()
    changes: list[RateChange] = []
    control = AdaptiveRate(100, clock=clock, on_change=changes.append)
    control.on_throttle()  # 100 -> 85: -15%
    assert changes == []
    clock.now += 1
    control.on_throttle()  # 85 -> 72.25: -27.75% since the last report (100)
    assert changes == [RateChange(100, 100 * 0.85 * 0.85, "throttled")]


async def test_max_rate_zero_is_unlimited_and_never_adapts() -> None:
    clock = ManualClock()
    control = AdaptiveRate(0, clock=clock, sleep=clock.sleep)
    for _ in range(50):
        await control.acquire()
    control.on_throttle()
    control.on_success()
    assert clock.sleeps == []
    assert control.rate == 0
    assert not control.adaptive
    assert "unlimited" in repr(control)


def test_repr_shows_live_state_and_objects_are_slotted() -> None:
    clock = ManualClock()
    control = AdaptiveRate(50, 5, clock=clock)
    assert repr(control) == (
        "<AdaptiveRate rate=50/s max=50/s burst=5 measured=0/s level=50/s cuts=0 throttles=0>"
    )
    feed(control, clock, 30, per_second=40)
    control.on_throttle()
    assert "rate=34/s" in repr(control)
    assert "measured=40/s" in repr(control)
    assert "cuts=1 throttles=1" in repr(control)
    assert "fixed" in repr(AdaptiveRate(50, adaptive=False, clock=clock))
    assert not hasattr(control, "__dict__")
    change = RateChange(1.0, 2.0, "recovering")
    assert not hasattr(change, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        change.new_rate = 3.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("tuning", "message"),
    [
        ({"cut": 1.5}, "cut"),
        ({"cut": 0.5, "deepest_cut": 0.6}, "deepest_cut"),
        ({"recover_to": 0}, "recover_to"),
        ({"window": 0}, "window"),
        ({"samples": 1}, "samples"),
        ({"probe": -0.1}, "probe"),
    ],
)
def test_bad_tuning_is_refused(tuning: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Tuning(**tuning)  # type: ignore[arg-type]


def test_a_negative_max_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="max_rate"):
        AdaptiveRate(-1)
