"""Client-side rate limiting: a paced limiter per region, shared by all workers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["RateLimiter"]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def loop_time() -> float:
    """The running event loop's clock: the default clock of the limiters."""
    return asyncio.get_running_loop().time()


class RateLimiter:
    """Paced limiter (GCRA): at most ``rate * t + burst`` acquisitions in any ``t`` seconds.

    With ``burst=1`` acquisitions are evenly spaced ``1 / rate`` apart. Each caller reserves
    the next free slot at once and sleeps until it, so waiters are served in arrival order
    without a lock or a polling loop. ``rate <= 0`` means unlimited.

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

    @property
    def burst(self) -> int:
        """How many requests may go back to back after an idle period."""
        return self._burst

    def _reserve(self) -> float:
        """Take the next slot; return how long to wait for it (0 if it is now)."""
        now = self._clock()
        tat = max(self._tat, now)
        self._tat = tat + self._interval
        return tat - (self._burst - 1) * self._interval - now

    async def acquire(self) -> None:
        """Wait until one more request may be sent."""
        if self._rate <= 0:
            return
        delay = self._reserve()
        if delay > 0:
            await self._sleep(delay)

    def __repr__(self) -> str:
        if self._rate <= 0:
            return "<RateLimiter unlimited>"
        backlog = max(0.0, self._tat - self._clock()) if self._tat > float("-inf") else 0.0
        return f"<RateLimiter rate={self._rate:g}/s burst={self._burst} backlog={backlog:.3f}s>"
