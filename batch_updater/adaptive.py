"""Adaptive client-side rate: a paced limiter whose rate follows the service's 429s."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .limiter import Clock, RateLimiter, Sleep, loop_time

__all__ = ["AdaptiveRate", "RateChange", "Reason", "Tuning"]

Reason = Literal["throttled", "recovering"]


@dataclass(frozen=True, slots=True)
class RateChange:
    """The allowed rate moved by more than the reporting threshold since the last report."""

    old_rate: float
    new_rate: float
    reason: Reason


@dataclass(frozen=True, slots=True)
class Tuning:
    """The constants of :class:`AdaptiveRate`; rates are requests per second."""

    window: float = 1.0  # seconds of successes behind the measured success rate...
    samples: int = 20  # ...but at least this many successes, or low rates are too noisy
    cut: float = 0.85  # a 429 sets the rate to cut * min(rate, measured)...
    deepest_cut: float = 0.5  # ...but never below this fraction of the rate, per episode
    recover: float = 0.2  # each success closes this share of the gap to the return target
    recover_to: float = 0.95  # return target: this fraction of the success rate that worked
    probe: float = 0.0004  # growth per success above it (2% per 50 successes)...
    probe_doubling: float = 100.0  # ...doubling every this many successes since the cut...
    probe_max: float = 0.02  # ...up to this much per success
    in_use: float = 0.8  # grow only while successes reach this fraction of the rate
    cooldown: float = 0.2  # without tickets: seconds after a cut whose 429s are the same episode
    min_rate: float = 0.1  # the rate is never cut below this (or max_rate, if lower)
    report_threshold: float = 0.2  # on_change fires when the rate moved by more than this

    def __post_init__(self) -> None:
        fractions = {
            "cut": self.cut,
            "deepest_cut": self.deepest_cut,
            "recover": self.recover,
            "recover_to": self.recover_to,
            "in_use": self.in_use,
        }
        for name, value in fractions.items():
            if not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if self.deepest_cut > self.cut:
            raise ValueError("deepest_cut must not be above cut")
        for name, value in {
            "window": self.window,
            "probe_doubling": self.probe_doubling,
            "min_rate": self.min_rate,
        }.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.samples < 2:
            raise ValueError(f"samples must be at least 2, got {self.samples}")
        if min(self.probe, self.probe_max, self.cooldown, self.report_threshold) < 0:
            raise ValueError("probe, probe_max, cooldown and report_threshold must be >= 0")


class AdaptiveRate:
    """A paced :class:`RateLimiter` whose rate follows throttling, never above ``max_rate``.

    Call :meth:`acquire` before every request (retries included), then :meth:`on_success`
    for every answer that is not a 429 (a 404 also passed the service's limiter) or
    :meth:`on_throttle` for a 429, passing the ticket :meth:`acquire` returned: 429s of
    requests paced before the last cut then count as the same episode (without a ticket,
    those within ``tuning.cooldown`` seconds of the cut do).

    The control loop (constants in :class:`Tuning`):

    * ``measured``: the success rate over the last ``window`` seconds;
    * the first 429 of an episode sets ``level = min(rate, measured)`` and cuts the rate to
      ``cut * level``, at most down to ``deepest_cut * rate``;
    * each success paced after the cut, while the rate is in use, closes ``recover`` of the
      gap to ``recover_to * level`` (a fast return to what worked), and
    * probes above it: ``rate *= 1 + probe * 2 ** (successes since the cut / probe_doubling)``.

    ``max_rate == 0`` means unlimited and ``adaptive=False`` a fixed ``max_rate``: neither
    adapts. Time is read only through ``clock`` (the running loop's clock by default).
    """

    __slots__ = (
        "_adaptive",
        "_clock",
        "_cut_at",
        "_cut_ticket",
        "_cuts",
        "_issued",
        "_level",
        "_limiter",
        "_lock",
        "_max_rate",
        "_measured",
        "_min_rate",
        "_on_change",
        "_reported",
        "_streak",
        "_successes",
        "_throttles",
        "_tuning",
    )

    def __init__(
        self,
        max_rate: float,
        burst: int = 1,
        *,
        clock: Clock = loop_time,
        sleep: Sleep = asyncio.sleep,
        on_change: Callable[[RateChange], None] | None = None,
        adaptive: bool = True,
        tuning: Tuning | None = None,
    ) -> None:
        if not max_rate >= 0:
            raise ValueError(f"max_rate must be 0 (unlimited) or more, got {max_rate}")
        self._limiter = RateLimiter(max_rate, burst, clock=clock, sleep=sleep)
        self._clock = clock
        self._on_change = on_change
        self._tuning = tuning = tuning or Tuning()
        self._max_rate = float(max_rate)
        self._adaptive = adaptive and max_rate > 0
        self._min_rate = min(tuning.min_rate, self._max_rate)
        # Slots are reserved one at a time: otherwise every waiting worker would hold a slot
        # paced at the old rate, and a cut would only take effect after all of them.
        self._lock = asyncio.Lock()
        self._successes: deque[float] = deque()
        self._measured = 0.0
        self._level = self._max_rate  # the success rate that last worked
        self._issued = 0
        self._cut_ticket = 0
        self._cut_at = -math.inf
        self._streak = 0  # successes paced after the last cut
        self._reported = self._max_rate
        self._cuts = 0
        self._throttles = 0

    @property
    def rate(self) -> float:
        """The rate allowed now, requests per second; 0 means unlimited."""
        return self._limiter.rate

    @property
    def max_rate(self) -> float:
        """The ceiling (the user's ``--rate``); 0 means unlimited."""
        return self._max_rate

    @property
    def adaptive(self) -> bool:
        """Whether the rate follows feedback (false for a fixed or unlimited rate)."""
        return self._adaptive

    @property
    def measured(self) -> float:
        """Successes per second over the last window, as of the last feedback."""
        return self._measured

    def due(self) -> float:
        """Seconds until the next request may be sent (see :meth:`RateLimiter.due`)."""
        return self._limiter.due()

    async def acquire(self) -> int:
        """Wait until one more request may be sent; return its ticket for the feedback."""
        if not self._adaptive:
            self._issued += 1
            await self._limiter.acquire()
            return self._issued
        async with self._lock:
            self._issued += 1
            ticket = self._issued
            await self._limiter.acquire()
        return ticket

    def on_success(self, ticket: int | None = None) -> None:
        """A request got an answer that was not a 429; ``ticket`` is what acquire returned."""
        if not self._adaptive:
            return
        tuning, now = self._tuning, self._clock()
        self._successes.append(now)
        self._measure(now)
        rate = self._limiter.rate
        # Grow only on evidence about the current rate: requests paced after the last cut,
        # while that rate is in use (not when workers or input are the bottleneck).
        if (
            rate >= self._max_rate
            or self._before_cut(now, ticket)
            or self._measured < tuning.in_use * rate
        ):
            return
        self._streak += 1
        target = tuning.recover_to * self._level
        if rate < target:
            rate += (target - rate) * tuning.recover
        speed = tuning.probe * 2.0 ** (self._streak / tuning.probe_doubling)
        rate *= 1.0 + min(speed, tuning.probe_max)
        self._set(min(rate, self._max_rate), "recovering")

    def on_throttle(self, ticket: int | None = None) -> None:
        """The service answered 429; ``ticket`` is what acquire returned."""
        if not self._adaptive:
            return
        tuning, now = self._tuning, self._clock()
        self._throttles += 1
        self._measure(now)
        if self._before_cut(now, ticket):
            return  # paced before the last cut: that cut already answered it
        rate = self._limiter.rate
        level = min(rate, self._measured) if self._measured > 0 else rate
        # A window with workers sleeping in backoff under-measures: bound the cut.
        self._level = max(level, rate * tuning.deepest_cut / tuning.cut)
        self._cut_at = now
        # The reservation after the one in progress is still spaced at the old rate.
        self._cut_ticket = self._issued + 1
        self._streak = 0
        self._cuts += 1
        self._set(max(self._min_rate, self._level * tuning.cut), "throttled")

    def _before_cut(self, now: float, ticket: int | None) -> bool:
        if ticket is None:
            return now < self._cut_at + self._tuning.cooldown
        return ticket <= self._cut_ticket

    def _measure(self, now: float) -> None:
        successes, horizon = self._successes, now - self._tuning.window
        while len(successes) > self._tuning.samples and successes[0] <= horizon:
            successes.popleft()
        span = now - successes[0] if successes else 0.0
        self._measured = (len(successes) - 1) / span if span > 0 else 0.0

    def _set(self, rate: float, reason: Reason) -> None:
        self._limiter.rate = rate
        if abs(rate - self._reported) > self._tuning.report_threshold * self._reported:
            change = RateChange(self._reported, rate, reason)
            self._reported = rate
            if self._on_change is not None:
                self._on_change(change)

    def __repr__(self) -> str:
        if not self._adaptive:
            return f"<AdaptiveRate fixed {self._limiter!r}>"
        return (
            f"<AdaptiveRate rate={self.rate:.4g}/s max={self._max_rate:g}/s"
            f" burst={self._limiter.burst} measured={self._measured:.4g}/s"
            f" level={self._level:.4g}/s cuts={self._cuts} throttles={self._throttles}>"
        )
