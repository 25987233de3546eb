"""Rate limiting (GCRA): the client's paced limiter per region, and the emulator's admission."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final

__all__ = ["RateLimiter"]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

#: Seconds of float error forgiven to a request that arrives exactly on schedule: without it,
#: ``now`` summed from intervals (``t + 0.1 + 0.1 + 0.1``) may fall a hair short of its slot.
ON_SCHEDULE: Final = 1e-9


def loop_time() -> float:
    """The running event loop's clock: the default clock of the limiters."""
    return asyncio.get_running_loop().time()


class RateLimiter:
    """Paced limiter (GCRA): at most ``rate * t + burst`` acquisitions in any ``t`` seconds.

    With ``burst=1`` acquisitions are evenly spaced ``1 / rate`` apart. :meth:`acquire`
    reserves the next free slot at once and sleeps until it, so waiters are served in arrival
    order without a lock or a polling loop; :meth:`try_acquire` takes the slot only if it is
    due now (a server refusing what comes too early). ``rate <= 0`` means unlimited.

    Time is read only through ``clock`` (the running loop's clock by default), and waits go
    through ``sleep``, so tests can drive both.
    """

    __slots__ = ("_burst", "_clock", "_interval", "_rate", "_sleep", "_tat")

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Clock = loop_time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self._clock = clock
        self._sleep = sleep
        self._burst = burst
        self._tat = float("-inf")  # theoretical arrival time of the next request
        self._rate = 0.0
        self._interval = 0.0
        self.rate = rate

    @property
    def rate(self) -> float:
        """Allowed requests per second; 0 means unlimited."""
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        self._rate = max(0.0, float(value))
        self._interval = 1.0 / self._rate if self._rate > 0 else 0.0

    def repace(self, rate: float) -> None:
        """Change the rate and space the slots already owed at the new rate (setting
        :attr:`rate` leaves the next slot where the old rate put it): with burst 1, the
        next slot comes one new interval after the last one taken."""
        interval = self._interval
        self.rate = rate
        if self._tat > float("-inf") and interval > 0:
            owed = max(1.0, (self._tat - self._clock()) / interval)  # slots taken ahead
            self._tat += owed * (self._interval - interval)

    def restart(self, rate: float, last: float) -> None:
        """Change the rate and pace as if the last request had left at ``last``, none
        since, with an empty burst: the next slot comes ``1/rate`` after it."""
        self.rate = rate
        if self._rate > 0:
            self._tat = last + self._burst * self._interval

    @property
    def burst(self) -> int:
        """How many requests may go back to back after an idle period."""
        return self._burst

    def _due(self, now: float) -> float:
        """Seconds from ``now`` until the next slot is due; 0 or less: it is due now."""
        # max(): an idle limiter banks no more than the burst.
        return max(self._tat, now) - (self._burst - 1) * self._interval - now

    def due(self) -> float:
        """Seconds until the next request may be sent: 0 or less means now (always 0 when
        unlimited). What a scheduler compares lanes by; it takes no slot."""
        if self._rate <= 0:
            return 0.0
        return self._due(self._clock())

    def _take(self, now: float) -> None:
        self._tat = max(self._tat, now) + self._interval

    async def acquire(self) -> None:
        """Wait until one more request may be sent."""
        if self._rate <= 0:
            return
        now = self._clock()
        wait = self._due(now)
        self._take(now)
        if wait > 0:
            await self._sleep(wait)

    def take(self, now: float, *, slack: float = 0.0) -> None:
        """Take the next slot, for a request that goes now: paced from ``now``, or from the
        slot's due time when that was at most ``slack`` earlier (a timer that ended late)."""
        if self._rate > 0:
            self._tat = max(self._tat, now - slack) + self._interval

    def hold(self, now: float) -> None:
        """No slot before ``now + 1/rate``: pace the next request from a request that left
        late (its slot was earlier than it could go)."""
        if self._rate > 0:
            self._tat = max(self._tat, now + self._interval)

    def try_acquire(self, now: float) -> bool:
        """Take the next slot if it is due at ``now``; never waits. False: too early, not taken.

        Requests arriving exactly on schedule (within :data:`ON_SCHEDULE`) are admitted.
        """
        if self._rate <= 0:
            return True
        if self._due(now) > ON_SCHEDULE:
            return False
        self._take(now)
        return True

    def __repr__(self) -> str:
        if self._rate <= 0:
            return "<RateLimiter unlimited>"
        backlog = max(0.0, self._tat - self._clock()) if self._tat > float("-inf") else 0.0
        return f"<RateLimiter rate={self._rate:g}/s burst={self._burst} backlog={backlog:.3f}s>"
