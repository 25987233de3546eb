"""RateLimiter with an injected clock and sleep: no real waiting."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from batch_updater.limiter import ON_SCHEDULE, RateLimiter


class FakeTime:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        # Sleepers wake in order of their deadline; advancing to the latest is fine
        # because each caller computed its own absolute slot before sleeping.
        self.now = max(self.now, self._deadline(seconds))

    def _deadline(self, seconds: float) -> float:
        return self.now + seconds


async def acquire_times(limiter: RateLimiter, fake: FakeTime, n: int) -> list[float]:
    times: list[float] = []
    for _ in range(n):
        await limiter.acquire()
        times.append(fake.now)
    return times


async def test_evenly_spaced_with_burst_one() -> None:
    fake = FakeTime()
    limiter = RateLimiter(10, 1, clock=fake.clock, sleep=fake.sleep)
    times = await acquire_times(limiter, fake, 5)
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(times)]
    assert times[0] == 1000.0
    assert gaps == [0.1, 0.1, 0.1, 0.1]


async def test_burst_goes_back_to_back_then_paces() -> None:
    fake = FakeTime()
    limiter = RateLimiter(4, 3, clock=fake.clock, sleep=fake.sleep)
    times = await acquire_times(limiter, fake, 5)
    assert times[:3] == [1000.0, 1000.0, 1000.0]
    assert times[3] == pytest.approx(1000.25)
    assert times[4] == pytest.approx(1000.5)


async def test_idle_time_does_not_bank_more_than_burst() -> None:
    fake = FakeTime()
    limiter = RateLimiter(10, 2, clock=fake.clock, sleep=fake.sleep)
    await acquire_times(limiter, fake, 2)
    fake.now += 60  # a long idle period
    resumed = fake.now
    times = await acquire_times(limiter, fake, 4)
    assert times[0] == times[1] == resumed  # two free, then paced
    assert times[2] == pytest.approx(resumed + 0.1)
    assert times[3] == pytest.approx(resumed + 0.2)


async def test_concurrent_waiters_get_distinct_slots_in_order() -> None:
    fake = FakeTime()
    delays: list[float] = []

    async def recording_sleep(seconds: float) -> None:
        delays.append(seconds)  # do not advance: all reserve at the same instant

    limiter = RateLimiter(5, 1, clock=fake.clock, sleep=recording_sleep)
    await asyncio.gather(*(limiter.acquire() for _ in range(4)))
    assert sorted(delays) == pytest.approx([0.2, 0.4, 0.6])


@pytest.mark.parametrize(("rate", "burst"), [(10, 1), (3.5, 1), (50, 5), (100, 2)])
async def test_any_window_holds_at_most_rate_t_plus_burst(rate: float, burst: int) -> None:
    fake = FakeTime()
    limiter = RateLimiter(rate, burst, clock=fake.clock, sleep=fake.sleep)
    times = await acquire_times(limiter, fake, 200)
    for i in range(len(times)):
        for j in range(i, min(len(times), i + 3 * burst + 10)):
            window = times[j] - times[i]
            assert j - i + 1 <= rate * window + burst + 1e-9


async def test_zero_rate_is_unlimited_and_never_sleeps() -> None:
    fake = FakeTime()
    limiter = RateLimiter(0, clock=fake.clock, sleep=fake.sleep)
    await acquire_times(limiter, fake, 100)
    assert fake.sleeps == []
    assert "unlimited" in repr(limiter)


async def test_rate_can_change_live_and_repr_shows_state() -> None:
    fake = FakeTime()
    limiter = RateLimiter(10, clock=fake.clock, sleep=fake.sleep)
    await acquire_times(limiter, fake, 2)
    limiter.rate = 2
    times = await acquire_times(limiter, fake, 2)
    assert times[1] - times[0] == pytest.approx(0.5)
    assert "rate=2/s" in repr(limiter)
    assert "burst=1" in repr(limiter)


def test_burst_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="burst"):
        RateLimiter(1, 0)


# -- try_acquire: the server's side of the same algorithm -----------------------------------


def test_try_acquire_admits_the_burst_then_refuses_until_the_next_slot_is_due() -> None:
    limiter = RateLimiter(4, 3, clock=lambda: 0.0)
    assert [limiter.try_acquire(1000.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.try_acquire(1000.2499) is False
    assert limiter.try_acquire(1000.25) is True
    assert limiter.try_acquire(1000.25) is False
    assert limiter.try_acquire(1000.5) is True


def test_a_refused_request_takes_no_slot() -> None:
    limiter = RateLimiter(10, 1, clock=lambda: 0.0)
    assert limiter.try_acquire(1000.0)
    refused = [limiter.try_acquire(1000.0 + i / 1000) for i in range(1, 100)]
    assert not any(refused)
    assert limiter.try_acquire(1000.1)  # the next slot is still exactly where it was


def test_requests_arriving_exactly_on_schedule_are_all_admitted() -> None:
    # k / rate computed afresh never quite matches the limiter's sum of intervals: the
    # float error must not refuse a request that is on time.
    rate = 10
    limiter = RateLimiter(rate, 1, clock=lambda: 0.0)
    start = 1000.0
    assert all(limiter.try_acquire(start + k / rate) for k in range(1000))
    assert ON_SCHEDULE < 1e-6  # ...and nothing early by a measurable amount is


def test_try_acquire_after_idle_banks_no_more_than_the_burst() -> None:
    limiter = RateLimiter(10, 2, clock=lambda: 0.0)
    assert limiter.try_acquire(1000.0)
    assert [limiter.try_acquire(1060.0) for _ in range(3)] == [True, True, False]


@pytest.mark.parametrize(("rate", "burst"), [(10, 1), (3.5, 1), (50, 5), (100, 2)])
def test_a_flood_is_admitted_at_exactly_rate_t_plus_burst(rate: float, burst: int) -> None:
    limiter = RateLimiter(rate, burst, clock=lambda: 0.0)
    arrivals = [1000.0 + i / 1000 for i in range(10_000)]  # 1,000/s for 10 s
    admitted = [t for t in arrivals if limiter.try_acquire(t)]
    for i in range(len(admitted)):
        for j in range(i, min(len(admitted), i + 3 * burst + 10)):
            assert j - i + 1 <= rate * (admitted[j] - admitted[i]) + burst + 1e-9
    # Over the whole flood: the burst, then one per interval (to a millisecond's grid).
    assert len(admitted) == burst + int(rate * (arrivals[-1] - arrivals[0]) + 1e-6)


def test_try_acquire_and_acquire_share_the_slots() -> None:
    fake = FakeTime()
    limiter = RateLimiter(10, 1, clock=fake.clock, sleep=fake.sleep)
    assert limiter.try_acquire(fake.now)

    async def one() -> None:
        await limiter.acquire()

    asyncio.run(one())
    assert fake.sleeps == [pytest.approx(0.1)]  # the slot try_acquire took is not given twice
    assert not limiter.try_acquire(fake.now)


def test_try_acquire_on_an_unlimited_limiter_always_admits() -> None:
    limiter = RateLimiter(0, clock=lambda: 0.0)
    assert all(limiter.try_acquire(1000.0) for _ in range(1000))


def test_take_paces_from_now_or_from_a_slot_at_most_slack_before_it() -> None:
    limiter = RateLimiter(20, 1, clock=lambda: 0.0)
    limiter.take(10.0)
    assert not limiter.try_acquire(10.0499)
    limiter.take(10.0503, slack=0.0005)  # 0.3 ms after its slot: paced from the slot
    assert limiter.try_acquire(10.1)
    limiter.take(10.2010, slack=0.0005)  # 51 ms late: paced from 0.5 ms before now
    assert not limiter.try_acquire(10.2504)
    assert limiter.try_acquire(10.2505)


def test_repace_spaces_the_next_slot_from_the_last_one_at_the_new_rate() -> None:
    now = 10.0
    plain, limiter = RateLimiter(2, 1, clock=lambda: now), RateLimiter(2, 1, clock=lambda: now)
    plain.take(now)  # next slot 0.5 s on
    limiter.take(now)
    plain.rate = 10  # a plain change keeps the slot where 2/s put it...
    assert plain.due() == pytest.approx(0.5)
    limiter.repace(10)  # ...a repace moves it to 0.1 s after the last one
    assert limiter.due() == pytest.approx(0.1)
    limiter.repace(4)  # and back out, for a cut
    assert limiter.due() == pytest.approx(0.25)
    fresh = RateLimiter(5, 1, clock=lambda: now)
    fresh.repace(10)  # nothing taken yet: nothing to move
    assert fresh.due() == 0


def test_repace_of_a_burst_spaces_every_slot_taken_ahead_at_the_new_rate() -> None:
    limiter = RateLimiter(10, 3, clock=lambda: 0.0)
    for _ in range(3):
        limiter.take(0.0)  # the burst, at once: the next slot at 0.1 s
    assert limiter.due() == pytest.approx(0.1)
    limiter.repace(5)  # three slots owed at 5/s: the next at 0.2 s, not sooner
    assert limiter.due() == pytest.approx(0.2)


@pytest.mark.parametrize("burst", [1, 3])
def test_restart_paces_from_a_departure_at_a_new_rate_with_an_empty_burst(burst: int) -> None:
    now = 10.0
    limiter = RateLimiter(2, burst, clock=lambda: now)
    for _ in range(burst):
        limiter.take(now)  # the whole burst: the next slot at 10.5 s
    assert limiter.due() == pytest.approx(0.5)
    limiter.restart(2.5, 9.8)  # as if the last request had left at 9.8 s, none since
    assert limiter.rate == 2.5
    assert limiter.due() == pytest.approx(0.2)  # 9.8 + 1/2.5, sooner, whatever the burst
    assert not limiter.try_acquire(10.19)
    assert limiter.try_acquire(10.2)
