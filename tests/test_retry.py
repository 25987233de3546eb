"""Retrier: attempts, what is retried, and full-jitter backoff, with an injected sleep."""

from __future__ import annotations

import pytest

from batch_updater.retry import Retrier, RetryEvent, RetryPolicy


class Flaky(Exception):
    pass


class Fatal(Exception):
    pass


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def failing(errors: list[BaseException], result: str = "ok"):  # type: ignore[no-untyped-def]
    seen: list[int] = []

    async def fn(attempt: int) -> str:
        seen.append(attempt)
        if errors:
            raise errors.pop(0)
        return result

    return fn, seen


async def test_retries_until_success_and_reports_each_retry() -> None:
    sleeps = Sleeps()
    events: list[RetryEvent] = []
    fn, seen = failing([Flaky(), Flaky()])
    retrier = Retrier(RetryPolicy(max_attempts=5), sleep=sleeps)
    out = await retrier.call(fn, retry_on=lambda e: isinstance(e, Flaky), on_retry=events.append)
    assert out == "ok"
    assert seen == [1, 2, 3]
    assert [e.attempt for e in events] == [1, 2]
    assert all(isinstance(e.error, Flaky) for e in events)
    assert [e.sleep for e in events] == sleeps.calls


async def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    sleeps = Sleeps()
    fn, seen = failing([Flaky("1"), Flaky("2"), Flaky("3")])
    retrier = Retrier(RetryPolicy(max_attempts=3), sleep=sleeps)
    with pytest.raises(Flaky, match="3"):
        await retrier.call(fn, retry_on=lambda e: isinstance(e, Flaky))
    assert seen == [1, 2, 3]
    assert len(sleeps.calls) == 2


async def test_non_retryable_error_is_raised_after_one_attempt() -> None:
    sleeps = Sleeps()
    fn, seen = failing([Fatal()])
    retrier = Retrier(RetryPolicy(max_attempts=8), sleep=sleeps)
    with pytest.raises(Fatal):
        await retrier.call(fn, retry_on=lambda e: isinstance(e, Flaky))
    assert seen == [1]
    assert sleeps.calls == []


async def test_full_jitter_stays_under_the_exponential_bound_and_the_cap() -> None:
    sleeps = Sleeps()
    fn, _ = failing([Flaky() for _ in range(200)])
    retrier = Retrier(RetryPolicy(max_attempts=201, backoff_base=0.5, backoff_cap=4), sleep=sleeps)
    await retrier.call(fn, retry_on=lambda e: isinstance(e, Flaky))
    for n, waited in enumerate(sleeps.calls, start=1):
        assert 0 <= waited <= min(4, 0.5 * 2 ** (n - 1))
    # Jitter: late waits spread over [0, cap] rather than sitting at the cap.
    late = sleeps.calls[10:]
    assert min(late) < 2 < max(late)


async def test_zero_base_means_no_waiting() -> None:
    sleeps = Sleeps()
    fn, _ = failing([Flaky(), Flaky()])
    await Retrier(RetryPolicy(backoff_base=0), sleep=sleeps).call(
        fn, retry_on=lambda e: isinstance(e, Flaky)
    )
    assert sleeps.calls == [0, 0]


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(backoff_cap=-1)
    assert "max_attempts=8" in repr(Retrier(RetryPolicy()))
