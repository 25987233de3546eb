"""Retries: tenacity with exponential backoff and full jitter, wrapped in one place."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

__all__ = ["Retrier", "RetryEvent", "RetryPolicy"]

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry one row.

    The wait before retry *n* (n = 1, 2, ...) is uniform in
    ``[0, min(backoff_cap, backoff_base * 2 ** (n - 1))]`` ("full jitter").
    """

    max_attempts: int = 8
    backoff_base: float = 0.5
    backoff_cap: float = 20.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (the first try counts)")
        if self.backoff_base < 0 or self.backoff_cap < 0:
            raise ValueError("backoff_base and backoff_cap must not be negative")


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """Passed to the ``on_retry`` hook before each backoff sleep."""

    attempt: int  # the attempt that just failed, 1-based
    error: BaseException
    sleep: float


class Retrier:
    """Runs an async callable until it succeeds, fails for good, or runs out of attempts.

    ``sleep`` is the testing seam: pass a fake to make backoff instant and observable.
    """

    __slots__ = ("_policy", "_sleep", "_wait")

    def __init__(self, policy: RetryPolicy, *, sleep: Sleep = asyncio.sleep) -> None:
        self._policy = policy
        self._sleep = sleep
        self._wait = tenacity.wait_random_exponential(
            multiplier=policy.backoff_base, max=policy.backoff_cap
        )

    @property
    def policy(self) -> RetryPolicy:
        """The policy this retrier applies."""
        return self._policy

    async def call(
        self,
        fn: Callable[[int], Awaitable[T]],
        *,
        retry_on: Callable[[BaseException], bool],
        on_retry: Callable[[RetryEvent], None] | None = None,
    ) -> T:
        """Call ``fn(attempt_number)``; retry when ``retry_on(error)`` is true.

        The last error is re-raised unchanged when attempts run out or it is not retryable.
        """

        # Fast path: most calls succeed at once, and building tenacity's machinery costs
        # more than the rest of a row's own work. Only a retryable failure pays for it.
        try:
            return await fn(1)
        except Exception as exc:
            if self._policy.max_attempts == 1 or not retry_on(exc):
                raise
            first_failure: list[BaseException] = [exc]

        def before_sleep(state: tenacity.RetryCallState) -> None:
            if on_retry is None or state.outcome is None:
                return
            error = state.outcome.exception()
            sleep = state.next_action.sleep if state.next_action is not None else 0.0
            if error is not None:
                on_retry(RetryEvent(state.attempt_number, error, sleep))

        # A fresh AsyncRetrying per call: tenacity keeps per-call state on the object.
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self._policy.max_attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception(retry_on),
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if first_failure:  # attempt 1 already ran: replay its failure to tenacity
                    raise first_failure.pop()
                return await fn(attempt.retry_state.attempt_number)
        raise AssertionError(
            "unreachable: tenacity either returns or re-raises"
        )  # pragma: no cover

    def __repr__(self) -> str:
        p = self._policy
        return (
            f"<Retrier max_attempts={p.max_attempts} "
            f"base={p.backoff_base:g}s cap={p.backoff_cap:g}s>"
        )
