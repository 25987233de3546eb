"""A circuit breaker per lane (a rate domain: today a region): an outage is recognised quickly.

The rule (constants in :class:`BreakerSettings`):

* **closed**: requests flow. Each transport failure (connection refused or reset, a
  timeout: no answer at all) counts; any answer, even a 5xx or a 429, proves the endpoint
  reachable and resets the count. ``open_after`` transport failures in a row, with no answer
  between them, open the breaker.
* **open**: nothing is sent on the lane; rows wait (their retry attempts are not spent).
  Every ``probe_every`` seconds one request goes out as a probe (**half-open**).
* **half-open**: one probe in flight, the other rows still wait. Any answer to it closes
  the breaker and the waiting rows resume; a transport failure opens it again.
* **down**: a probe failed after the breaker had been open for ``down_after`` seconds. It is
  final for the run: rows of the lane are not sent (``not_attempted``, re-running is safe),
  and the run stops once every lane is down.

So an endpoint that refuses connections from the start costs about ``open_after`` requests
(plus those already on their way) and one probe every ``probe_every`` seconds, and the lane
is down after ``down_after`` seconds; an outage shorter than that is ridden out.

The runner calls :meth:`Breaker.admit` before each request (and :meth:`Breaker.admits` once
the rate limiter let it go), then reports the outcome with :meth:`Breaker.answered`,
:meth:`Breaker.unanswered` or :meth:`Breaker.release`. Time is read only through the
injected ``clock``, and waits go through the injected ``sleep``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Final

from .limiter import Clock, Sleep, loop_time

__all__ = ["ENDPOINT_UNREACHABLE", "Admission", "Breaker", "BreakerSettings", "BreakerState"]

#: The stop reason kind of a run stopped because every lane is down.
ENDPOINT_UNREACHABLE: Final = "endpoint_unreachable"


class BreakerState(StrEnum):
    """Where a lane's breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    DOWN = "down"


class Admission(Enum):
    """What :meth:`Breaker.admit` allows: an ordinary request, or the one probe."""

    SEND = "send"
    PROBE = "probe"


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """The constants of :class:`Breaker`; seconds."""

    open_after: int = 5  # transport failures in a row, no answer between them: open
    probe_every: float = 2.0  # while open: one probe this often
    down_after: float = 20.0  # open this long and the probe failed: the lane is down

    def __post_init__(self) -> None:
        if self.open_after < 1:
            raise ValueError(f"open_after must be at least 1, got {self.open_after}")
        if not self.probe_every > 0:
            raise ValueError(f"probe_every must be positive, got {self.probe_every}")
        if not self.down_after >= 0:
            raise ValueError(f"down_after must be 0 or more, got {self.down_after}")

    def unreachable(self) -> str:
        """What a lane that is down saw, for messages."""
        return (
            "the endpoint was unreachable: only transport failures (connection refused or "
            f"reset, timeouts) and no answer for {self.down_after:g} s"
        )


class Breaker:
    """The circuit breaker of one lane; see the module docstring for the rule."""

    __slots__ = (
        "_changed",
        "_clock",
        "_failures",
        "_on_change",
        "_opened_at",
        "_probe_at",
        "_settings",
        "_sleep",
        "_state",
        "probes",
    )

    def __init__(
        self,
        settings: BreakerSettings | None = None,
        *,
        clock: Clock = loop_time,
        sleep: Sleep = asyncio.sleep,
        on_change: Callable[[BreakerState, BreakerState], None] | None = None,
    ) -> None:
        self._settings = settings or BreakerSettings()
        self._clock = clock
        self._sleep = sleep
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0  # transport failures since the last answer
        self._opened_at = 0.0
        self._probe_at = 0.0
        self._changed = asyncio.Event()  # set (and replaced) on every change of state
        self.probes = 0  # probes sent

    @property
    def settings(self) -> BreakerSettings:
        """The constants this breaker applies."""
        return self._settings

    @property
    def state(self) -> BreakerState:
        """The breaker's state now."""
        return self._state

    @property
    def down(self) -> bool:
        """True once the lane is declared down (final)."""
        return self._state is BreakerState.DOWN

    async def admit(self) -> Admission | None:
        """Wait until a request may go on this lane; None: the lane is down, send nothing.

        While the breaker is open, the first caller after a probe is due gets
        :attr:`Admission.PROBE`; everyone else waits for the probe's outcome.
        """
        while True:
            state = self._state
            if state is BreakerState.CLOSED:
                return Admission.SEND
            if state is BreakerState.DOWN:
                return None
            changed = self._changed
            if state is BreakerState.OPEN:
                wait = self._probe_at - self._clock()
                if wait <= 0:
                    self.probes += 1
                    self._set(BreakerState.HALF_OPEN)
                    return Admission.PROBE
                await self._wait(changed, wait)
            else:  # half-open: the probe's outcome decides
                await changed.wait()

    def admits(self, admission: Admission) -> bool:
        """Whether ``admission`` still holds (the breaker may have opened while its row
        waited for the rate limiter); False: call :meth:`admit` again."""
        if admission is Admission.PROBE:
            return self._state is BreakerState.HALF_OPEN
        return self._state is BreakerState.CLOSED

    def answered(self) -> None:
        """A request got an answer, whatever it said: the endpoint is reachable."""
        self._failures = 0
        if self._state is not BreakerState.CLOSED and self._state is not BreakerState.DOWN:
            self._set(BreakerState.CLOSED)

    def unanswered(self, admission: Admission) -> bool:
        """A request sent with ``admission`` got no answer (a transport failure).

        Returns True when the breaker is not closed now: the caller should :meth:`admit`
        again (and wait) rather than spend a retry against an unreachable endpoint.
        """
        state, now = self._state, self._clock()
        if state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self._settings.open_after:
                self._open(now)
                return True
            return False
        if state is BreakerState.HALF_OPEN and admission is Admission.PROBE:
            if now - self._opened_at >= self._settings.down_after:
                self._set(BreakerState.DOWN)
            else:
                self._probe_at = now + self._settings.probe_every
                self._set(BreakerState.OPEN)
        return True

    def release(self, admission: Admission) -> None:
        """``admission`` was not used, or its request's outcome says nothing about the
        endpoint (not sent, cancelled): a probe is handed to the next waiting row."""
        if admission is Admission.PROBE and self._state is BreakerState.HALF_OPEN:
            self._probe_at = self._clock()
            self._set(BreakerState.OPEN)

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._probe_at = now + self._settings.probe_every
        self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        old, self._state = self._state, state
        self._changed.set()
        self._changed = asyncio.Event()
        if self._on_change is not None:
            self._on_change(old, state)

    async def _wait(self, changed: asyncio.Event, seconds: float) -> None:
        """Until ``changed`` is set or ``seconds`` have passed, whichever comes first."""
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        waiter = asyncio.ensure_future(changed.wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waiter.cancel()

    def __repr__(self) -> str:
        s = self._settings
        detail = f"failures={self._failures}/{s.open_after}"
        if self._state in (BreakerState.OPEN, BreakerState.HALF_OPEN):
            now = self._clock()
            detail += (
                f" open_for={now - self._opened_at:.1f}s/{s.down_after:g}s"
                f" probe_in={max(0.0, self._probe_at - now):.1f}s"
            )
        return f"<Breaker {self._state} {detail} probes={self.probes}>"
