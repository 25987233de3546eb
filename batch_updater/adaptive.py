"""Adaptive client-side rate: a paced limiter whose rate follows the service's 429s."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

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
    cut: float = 0.85  # a 429 well above the success rate: the rate that works is cut * it...
    deepest_cut: float = 0.5  # ...but at least this fraction of the rate that failed
    step_down: float = 0.97  # one 429 at a rate that worked: this fraction of it
    isolated: int = 10  # a 429 after this many successes since the last one is isolated
    first: int = 3  # a lane's first 429 after this many successes, on pace: a step down
    jitter: float = 0.1  # spacings seen by the client differ from the service's by this much
    restart: float = 1.5  # a 429 with no success rate measured yet: start again from this...
    worked: int = 1  # ...unless this many requests went through at that rate just before it
    confirm: int = 1  # successes paced at a rate before it counts as working...
    settle: float = 0.2  # ...and at least this many seconds' worth of them (a burst hides a lot)
    bisect: float = 0.3  # a raise closes this share of the (log) gap up to the limit...
    precision: float = 0.02  # ...until that gap is this fraction of the rate: then hold
    hold: int = 100  # successes without a 429 before probing above the rate that failed...
    hold_max: int = 800  # ...doubled each time a probe fails where the last one did, to this
    probe: float = 0.01  # first probe step above a forgotten limit, doubled at every step...
    probe_max: float = 0.1  # ...up to this fraction of the rate
    in_use: float = 0.8  # without tickets: raise only while successes reach this much of the rate
    cooldown: float = 0.2  # without tickets: seconds after a change whose answers predate it
    min_rate: float = 0.1  # the rate is never cut below this (or max_rate, if lower)
    report_threshold: float = 0.2  # on_change fires when the rate moved by more than this

    def __post_init__(self) -> None:
        fractions = {
            "cut": self.cut,
            "deepest_cut": self.deepest_cut,
            "step_down": self.step_down,
            "jitter": self.jitter,
            "bisect": self.bisect,
            "in_use": self.in_use,
        }
        for name, value in fractions.items():
            if not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if self.deepest_cut > self.cut:
            raise ValueError("deepest_cut must not be above cut")
        positive = {
            "window": self.window,
            "precision": self.precision,
            "hold": self.hold,
            "restart": self.restart,
            "probe": self.probe,
            "min_rate": self.min_rate,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.samples < 2:
            raise ValueError(f"samples must be at least 2, got {self.samples}")
        if min(self.confirm, self.isolated, self.first) < 1:
            raise ValueError("confirm, isolated and first must be at least 1")
        if self.hold_max < self.hold or self.probe_max < self.probe:
            raise ValueError("hold_max and probe_max must not be below hold and probe")
        if min(self.cooldown, self.report_threshold) < 0:
            raise ValueError("cooldown and report_threshold must be >= 0")


#: A request waiting at least this long for its slot moves up when the rate is raised
#: meanwhile (see AdaptiveRate._slot): at 5/s and below, where waiting out the old slot
#: slows a climb the most. Shorter waits are not worth a task each.
RAISED_WAIT: Final = 0.2

#: How late a wait at the wire may end and still count from its turn, until the lane's first
#: 429 (see AdaptiveRate.leave), at most a quarter of an interval: asyncio's timers end about
#: a millisecond late (the selector waits in whole milliseconds) plus the loop's own delay;
#: traced at 20/s, most waits at the wire ended 1.0-1.3 ms late. With 0.5 ms, each of those
#: moved the pace back by the rest: lanes ran at 19.7/s.
SLACK: Final = 0.002


class AdaptiveRate:
    """A paced :class:`RateLimiter` whose rate follows throttling, never above ``max_rate``.

    Call :meth:`acquire` before every request (retries included), then :meth:`on_success`
    for every answer that is not a 429 (a 404 also passed the service's limiter) or
    :meth:`on_throttle` for a 429, passing the ticket :meth:`acquire` returned, so that each
    answer is judged against the rate and the moment its request was sent (without a
    ticket, answers within ``tuning.cooldown`` seconds of a change count as paced before it,
    and the spacing of requests is not used).

    The control loop (constants in :class:`Tuning`) brackets the service's rate between
    ``ok``, a rate seen working, and ``limit``, a rate known to be too fast:

    * ``limit`` is the lowest rate throttled, or lower: a request refused ``g`` seconds after
      an admitted one shows the service admits fewer than ``(1 + jitter) / g`` per second,
      whatever its burst (but not fewer than the success rate just measured, nor, while the
      rate is too slow to measure over a ``window``, than ``ok``: that is jitter). While
      throttled, the measured success rate is the service's: ``ok`` is at most it and
      ``limit`` at most ``1 + precision`` times it (a bursty service hides a rate too fast);
    * ``ok`` is the highest rate at which ``confirm`` requests in a row, and ``settle``
      seconds' worth, succeeded, or higher: a request admitted ``G`` seconds after the last
      admitted one, with a refusal between, shows a burst-1 service admits ``1 / G``;
    * ``proven`` is the highest rate that held for ``hold`` successes in a row. An isolated
      429 (after ``isolated`` successes) at or below it is jitter, one request that arrived
      early: it steps down ``step_down`` from ``proven``, not from the last step, and is not
      judged by the success rate (then the client's own, lagging a rate just raised).
      429s closer together forget ``proven``: the service's limit may have come down;
    * a lane's first 429, on a request that left after ``first`` successes had come back and
      a whole interval after the last one admitted, steps down ``step_down``: the rate
      worked, and a limit far below it soon shows with a second 429;
    * the rate starts at ``max_rate``. The first 429 of an episode (of requests paced after
      the last cut) falls back to ``ok`` if it is below ``limit``. Otherwise ``ok`` is learned
      again: ``step_down`` times the rate that failed if that rate had worked (after
      ``isolated`` successes, or at a slow rate: jitter or a limit just crossed); ``cut`` times
      the success rate over the last ``window`` seconds, but at least ``deepest_cut`` times
      the rate that failed (workers asleep in backoff make the window read low); only
      ``deepest_cut`` times the success rate if throttled again right after a cut; and
      ``restart`` when nothing has been measured (the start: start again cautiously);
    * a change applies to the very next request, spaced at the new rate from the last one
      (one waiting for its slot is re-paced by a cut, and by a raise if it waits at least
      ``RAISED_WAIT``);
    * a success paced at the current rate (see ``confirm``), while the rate held requests
      back, raises it ``bisect`` of the (logarithmic) way to ``limit``, until the two are
      within ``precision``: a few 429s find the limit, at 2/s as at 200/s;
    * after ``hold`` successes without a 429, ``limit`` is forgotten and the rate probes
      above it in steps of ``probe``, doubling to ``probe_max``: a raised limit is found in
      seconds. A probe failing where the forgotten limit was doubles ``hold``, to
      ``hold_max``.

    ``max_rate == 0`` means unlimited and ``adaptive=False`` a fixed ``max_rate``: neither
    adapts. Time is read only through ``clock`` (the running loop's clock by default).
    """

    __slots__ = (
        "_adaptive",
        "_admitted_at",
        "_changed_at",
        "_changed_ticket",
        "_clock",
        "_cut_ticket",
        "_cuts",
        "_forgotten",
        "_fresh",
        "_held_at",
        "_hold",
        "_issued",
        "_last_sent",
        "_leaving",
        "_limit",
        "_limiter",
        "_lock",
        "_max_rate",
        "_measured",
        "_min_rate",
        "_ok",
        "_on_change",
        "_out",
        "_paced",
        "_previous",
        "_probe",
        "_proven",
        "_quiet",
        "_raised",
        "_refused",
        "_refused_at",
        "_repace",
        "_reported",
        "_sent",
        "_sleep",
        "_steady",
        "_streak",
        "_successes",
        "_throttles",
        "_tuning",
        "_worked_at",
    )

    #: How many of the latest tickets' sending times are kept (older answers carry no spacing).
    SENT_KEPT = 1024

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
        # The same pacing where requests leave for the wire (see leave()).
        self._leaving = RateLimiter(max_rate, burst, clock=clock, sleep=sleep)
        self._clock = clock
        self._sleep = sleep
        self._repace = False  # the rate changed: the next slot is spaced from the last request
        self._raised: asyncio.Future[None] | None = None  # wakes a request waiting for a slot
        self._last_sent = -math.inf
        self._held_at = -math.inf  # when hold() was last called
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
        self._issued = 0
        # Requests given a slot and not answered yet; more if some never are (not sent, no
        # answer): that only keeps _spent_nothing() false.
        self._out = 0
        self._sent: deque[float] = deque(maxlen=self.SENT_KEPT)  # by ticket; nan: not sent
        self._paced: deque[bool] = deque(maxlen=self.SENT_KEPT)  # ...and whether it waited
        self._admitted_at = -math.inf  # when the latest admitted request was sent
        self._refused_at = -math.inf  # ...and the latest refused one
        self._refused = False  # whether any request got a 429
        self._ok = 0.0  # a rate seen working (0: none yet)
        self._limit = math.inf  # a rate known to be too fast, until forgotten
        self._forgotten = math.inf  # the limit forgotten to probe above it
        self._fresh = False  # whether the measured rate covers about one window
        self._previous = self._max_rate  # the rate before the last change
        self._changed_ticket = 0  # tickets up to this were paced before the last change
        self._changed_at = -math.inf
        self._cut_ticket = 0  # ...and up to this before the last cut (the same episode)
        self._hold = tuning.hold
        self._quiet = 0  # successes since the last cut
        self._streak = 0  # successes paced at the current rate
        self._steady = 0  # successes since the rate last changed
        self._proven = 0.0  # the highest rate that held for `hold` successes (0: none)
        self._probe = 0.0  # the last probe step above a forgotten limit (0: not probing)
        self._reported = self._max_rate
        self._cuts = 0
        self._throttles = 0
        self._worked_at = math.inf  # when the lane had its `first` successes, before any 429

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
            self._sent.append(math.nan)  # stays nan if cancelled while waiting
            self._paced.append(False)
            cuts, start = self._cuts, self._clock()
            if self._repace:
                self._restart_pacing()
            await self._slot(ticket)
            if self._cuts != cuts:
                # Cut while waiting for a slot spaced at the old rate: space it anew.
                self._restart_pacing()
                if self._slow_pace():
                    # It then counts as paced at the new rate, as after a raise (_slot),
                    # its success and its 429 alike: after a cautious restart at 1.5/s,
                    # waiting for the next request's answer to count cost 0.7 s (at any
                    # rate, it broke an episode).
                    self._paced_after_change(ticket, cut=True)
                await self._limiter.acquire()
            self._sent[-1] = self._last_sent = now = self._clock()
            self._out += 1
            self._paced[-1] = now > start  # the rate, not the workers, held it back
        return ticket

    async def _slot(self, ticket: int) -> None:
        """Wait for ``ticket``'s slot at the current rate. A raise while it waits at least
        :data:`RAISED_WAIT` (a success of a request sent before it) moves it up to where
        the new rate puts it, and it then counts as paced at that rate: at 2/s, waiting out
        the old slot cost a whole interval for every step of a climb back to the limit."""
        limiter = self._limiter
        wait = limiter.due()
        limiter.take(self._clock())
        if wait <= 0:
            return
        if wait < RAISED_WAIT:
            await self._sleep(wait)
            return
        raised = self._raised = asyncio.get_running_loop().create_future()
        sleeping = asyncio.ensure_future(self._sleep(wait))
        try:
            await asyncio.wait((sleeping, raised), return_when=asyncio.FIRST_COMPLETED)
            woken = not sleeping.done()
        finally:
            self._raised = None
            sleeping.cancel()
        if woken:
            self._restart_pacing()
            self._paced_after_change(ticket)
            await self._slot(ticket)

    async def leave(self, ticket: int) -> None:
        """``ticket``'s request leaves now (its bytes go on the wire next): keep it ``1/rate``
        behind the previous request to leave, and count its spacing from here.

        A slot is taken before the request is built and signed, and what happens between
        the two (signing, the event loop busy with other lanes' answers) delays some requests
        more than others: one delayed a few milliseconds brings the next that much closer
        to it, and a service that admits one request every ``1/rate`` seconds refuses that
        one. Waiting here for what the delay took back keeps the spacing the service sees.
        """
        leaving, clock = self._leaving, self._clock
        if leaving.rate != self._limiter.rate:
            raised = leaving.rate < self._limiter.rate and self._slow_pace(leaving.rate)
            leaving.repace(self._limiter.rate)  # a change applies from the last to leave
            if raised and self._adaptive and leaving.due() > 0:
                # A raise from 5/s or below, and this request, given its slot at the old
                # rate, waits at the wire: it leaves at the new spacing, so its answer
                # judges the new rate. Traced at 5/s: the 429 of a probe's second step was
                # taken for one at the rate below, which had worked: cut 3%.
                self._paced_after_change(ticket)
        # The turn is taken when the request really leaves, not when it starts to wait: a
        # wait that ends late (a busy loop), or several ending together, must not bring the
        # next request closer than 1/rate behind this one. Until the lane's first 429,
        # though, a wait that ended at most SLACK late counts from when it was due:
        # counting each timer's lateness from the departure moved the pace back by as much
        # every time (1.5% at 20/s), a cost worth paying only against a service that has
        # shown it refuses what comes early. No request leaves before its turn, and one
        # that came after it (signed late) is paced from when it left.
        slack = 0.0
        while (wait := leaving.due()) > 0:
            slack = 0.0 if self._refused else self._slack()
            await self._sleep(wait)
        leaving.take(now := clock(), slack=slack)
        if self._adaptive and (index := self._index(ticket)) >= 0:
            self._sent[index] = now

    def hold(self) -> None:
        """Pace the next request from now (see :meth:`RateLimiter.hold`), even if the rate
        changes before it is paced; not after a 429 that spent nothing (see
        :meth:`_spent_nothing`)."""
        if self._spent_nothing():
            return
        self._held_at = now = self._clock()
        self._limiter.hold(now)

    def _spent_nothing(self) -> bool:
        """Whether the last request to leave was refused, with none in flight, at 5/s or
        below: a 429 spends none of the service's tokens, so the next request may follow
        the last one admitted (see _follow_admitted). Traced at the start against 5/s:
        paced from the 429's answer, the first request at the cautious 1.5/s left 0.84 s
        after the last one admitted, too late to show that 1.5/s works."""
        return (
            not self._out and -math.inf < self._admitted_at < self._refused_at and self._slow_pace()
        )

    def _slack(self) -> float:
        """How late a wait at the wire may end and still count from its turn, before the
        lane's first 429: :data:`SLACK`, at most a quarter of an interval (above 125/s)."""
        return min(SLACK, 0.25 / self._limiter.rate) if self._limiter.rate > 0 else SLACK

    def _slow_pace(self, rate: float | None = None) -> bool:
        """At 5/s and below (the current rate, or ``rate``): an interval of
        :data:`RAISED_WAIT` or more, where a request waiting for its slot is moved up (see
        :meth:`_slot`), and where a cut, a raise, a refusal that spent nothing and a
        success after a refusal are judged as such (:meth:`acquire`, :meth:`leave`,
        :meth:`_follow_admitted`, :meth:`on_success`)."""
        return (self._limiter.rate if rate is None else rate) * RAISED_WAIT <= 1

    def _follow_admitted(self) -> None:
        """After a 429 that spent nothing (:meth:`_spent_nothing`): pace the next request
        from when the last admitted one left, and move up one waiting for its slot."""
        if self._spent_nothing():
            self._last_sent, self._held_at = self._admitted_at, -math.inf
            self._leaving.restart(self._limiter.rate, self._admitted_at)
            self._repace = True
            self._wake()

    def on_success(self, ticket: int | None = None) -> None:
        """A request got an answer that was not a 429; ``ticket`` is what acquire returned."""
        if not self._adaptive:
            return
        tuning, now = self._tuning, self._clock()
        self._successes.append(now)
        self._measure(now)
        index = self._index(ticket)
        sent = self._sent[index] if index >= 0 else math.nan
        self._out -= index >= 0
        if sent > self._admitted_at:
            after_refusal = self._refused_at > self._admitted_at
            if after_refusal and sent > self._refused_at:
                # Admitted after a refusal: the service's bucket was empty in between.
                shown = (1 - tuning.jitter) / (sent - self._admitted_at)
                self._ok = max(self._ok, min(shown, self._limit))
            # Spaced from a refused request, not one admitted, it is no evidence for the
            # rate, unless it left within an interval (and the jitter) of the last admitted
            # one: the service admitted two requests that close (a refusal takes nothing
            # from its bucket). So the first request after a restart can show it works.
            spaced = (
                self._slow_pace()
                and (sent - self._admitted_at) * self._limiter.rate <= 1 + tuning.jitter
            )
            self._admitted_at = sent
            if after_refusal and not spaced:
                return
        self._quiet += 1
        if self._quiet == tuning.first and not self._throttles:
            self._worked_at = now  # the rate has worked `first` times: see on_throttle
        self._steady += 1
        rate = self._limiter.rate
        if self._steady >= tuning.hold:
            self._proven = max(self._proven, rate)
        # Judge only the current rate: requests paced at it, while it is in use (not when
        # workers or input are the bottleneck).
        in_use = self._paced[index] if index >= 0 else self._measured >= tuning.in_use * rate
        if rate >= self._max_rate or not in_use or self._before(now, ticket, self._changed_ticket):
            return
        self._streak += 1
        if self._streak < max(tuning.confirm, tuning.settle * rate):
            return
        self._ok = max(self._ok, rate)
        limit = self._limit
        if limit > rate * (1 + tuning.precision):
            if math.isinf(limit):  # probing above a forgotten limit
                self._probe = min(tuning.probe_max, 2 * self._probe or tuning.probe)
                new = rate * (1 + self._probe)
            else:
                new = rate * (limit / rate) ** tuning.bisect
        elif self._quiet >= self._hold:
            self._forgotten, self._limit = limit, math.inf  # held long enough: it may have risen
            self._probe = tuning.probe
            new = rate * (1 + tuning.probe)
        else:
            return
        self._change(min(new, self._max_rate), now, "recovering")

    def on_throttle(self, ticket: int | None = None) -> None:
        """The service answered 429; ``ticket`` is what acquire returned."""
        self._refused = True  # from now on, requests leave exactly 1/rate apart (leave())
        if not self._adaptive:
            return
        tuning, now = self._tuning, self._clock()
        self._throttles += 1
        self._measure(now)
        rate = self._limiter.rate
        index = self._index(ticket)
        sent = self._sent[index] if index >= 0 else math.nan
        self._out -= index >= 0
        # The lane's first 429, on a request that left after `first` successes had come back
        # and a whole interval (less the SLACK a turn may be early by) after the last one
        # admitted: the rate worked until now, and the service's limit is just below it (a
        # burst-1 limit equal to the rate refuses one request in a while, whose spacing the
        # network or the service's own loop shortened). If it is far below, the next 429
        # comes at once and cuts deep.
        gap = sent - self._admitted_at
        first_on_pace = (
            self._throttles == 1
            and sent >= self._worked_at
            and math.isfinite(gap)
            and (gap + self._slack()) * rate >= 1  # before the first 429, a turn may be early
        )
        if sent > self._admitted_at:
            # Refused this soon after an admission: the service admits fewer per second, but
            # not fewer than it just did (or, while the success rate is too slow to measure
            # well, than a rate that worked: a bound below it is jitter).
            floor = max(self._measured, self._ok) if self._slow(rate) else self._measured
            bound = max((1 + tuning.jitter) / (sent - self._admitted_at), floor)
            self._limit = min(self._limit, bound)
            self._refused_at = max(self._refused_at, sent)
        if self._before(now, ticket, self._cut_ticket):
            if rate <= self._limit:
                self._follow_admitted()
                return  # paced before the last cut: that cut already answered it
            failed = rate  # the spacing showed the rate after the cut is still too fast
        else:
            failed = self._previous if self._before(now, ticket, self._changed_ticket) else rate
        isolated = self._quiet >= tuning.isolated
        if not isolated:
            self._proven = 0.0  # 429s in a row: the service's limit may have come down
        # An isolated 429 below a rate that held for `hold` successes is jitter (a request
        # that arrived early), not a lower limit: each would otherwise step the rate down
        # again, and a few of them took it far below the limit.
        proven = self._proven
        self._limit = limit = min(self._limit, max(failed, proven))
        if self._fresh and self._measured > 0 and not isolated:
            # While throttled, the success rate is the service's: at a bursty service, a
            # rate above it may have looked fine for a while. (Not after one 429 that ends a
            # long run of successes: then the success rate is the client's own, and lags
            # behind a rate that was just raised.)
            self._ok = min(self._ok, self._measured)
            self._limit = limit = min(limit, self._measured * (1 + tuning.precision))
        if self._probe and not self._before(now, ticket, self._cut_ticket):
            # A probe above a forgotten limit failed where that limit was: it holds, so
            # hold it longer before the next probe.
            same = limit <= self._forgotten * (1 + 5 * tuning.precision)
            self._hold = min(tuning.hold_max, 2 * self._hold) if same else tuning.hold
        if first_on_pace and failed == rate:
            self._ok = tuning.step_down * failed
        elif not 0 < self._ok < limit:  # the rate thought to work does not: learn it again
            self._ok = min(self._relearn(failed, isolated, proven), tuning.step_down * limit)
        elif isolated and failed <= proven:
            # Jitter at or below a rate that held: one small step from that rate.
            self._ok = min(self._ok, tuning.step_down * proven)
        self._quiet = 0
        self._probe = 0.0
        self._cuts += 1
        self._change(max(self._min_rate, min(self._ok, rate)), now, "throttled")
        self._cut_ticket = self._changed_ticket
        self._follow_admitted()

    def _relearn(self, failed: float, isolated: bool, proven: float) -> float:
        """The rate to fall back to after a 429 at ``failed`` showed ``ok`` does not work."""
        tuning = self._tuning
        measured = self._measured
        worked = max(self._ok, proven)
        near, quiet = failed <= worked * (1 + 2 * tuning.precision), self._quiet
        if near and (isolated or (quiet and self._slow(failed))):
            # A 429 at a rate that worked: step down (from a rate proven to hold).
            ok = tuning.step_down * max(failed, proven)
        elif measured > 0 and isolated:
            ok = max(tuning.cut * min(failed, measured), tuning.deepest_cut * failed)
        elif measured > 0 and not self._slow(failed):  # throttled again at once
            ok = tuning.deepest_cut * min(failed, measured)
        elif measured > 0:  # ...at a slow rate, measured over a long window: step by it
            ok = max(tuning.deepest_cut * failed, min(tuning.step_down * failed, measured))
        elif failed > tuning.restart and quiet >= tuning.worked:
            # Nothing measured yet, but requests at this rate went through before the
            # 429 (a new connection's jitter, a burst used up): halve, not restart.
            ok = tuning.deepest_cut * failed
        elif failed > tuning.restart:  # nothing measured: start again cautiously
            ok = tuning.restart
        else:
            ok = tuning.deepest_cut * failed
        return ok

    def _slow(self, rate: float) -> bool:
        """Whether ``rate`` is too slow for the success rate to be measured over a window."""
        return 2 * rate * self._tuning.window < self._tuning.samples

    def _paced_after_change(self, ticket: int, *, cut: bool = False) -> None:
        """``ticket`` was issued before the last change (``cut``: the last cut) but is
        paced after it: its answer judges the new rate (see :meth:`_before`)."""
        self._changed_ticket = min(self._changed_ticket, ticket - 1)
        if cut:
            self._cut_ticket = min(self._cut_ticket, ticket - 1)

    def _wake(self) -> None:
        """Move up the request waiting for its slot, if it waits :data:`RAISED_WAIT` or
        more (see :meth:`_slot`): its slot may now come sooner."""
        if self._raised is not None and not self._raised.done():
            self._raised.set_result(None)

    def _restart_pacing(self) -> None:
        """Pace from the last request sent (or a hold since) at the current rate, with an
        empty burst.

        The limiter spaces each slot when it reserves the previous one: after a change,
        the next request would still follow the old rate.
        """
        self._limiter.restart(self._limiter.rate, self._last_sent)
        if self._held_at > self._last_sent:  # a hold since: no slot before 1/rate after it
            self._limiter.hold(self._held_at)
        self._repace = False

    def _index(self, ticket: int | None) -> int:
        """Where ``ticket``'s request is in ``_sent`` and ``_paced``; -1: not kept."""
        if ticket is None:
            return -1
        index = len(self._sent) - 1 - (self._issued - ticket)
        return index if 0 <= index < len(self._sent) else -1

    def _before(self, now: float, ticket: int | None, mark: int) -> bool:
        """Whether the request was paced before the change that set ``mark``."""
        if ticket is None:
            return now < self._changed_at + self._tuning.cooldown
        return ticket <= mark

    def _measure(self, now: float) -> None:
        successes, horizon = self._successes, now - self._tuning.window
        while len(successes) > self._tuning.samples and successes[0] <= horizon:
            successes.popleft()
        count = len(successes)
        span = now - successes[0] if successes else 0.0
        if count > 1:
            # Measured at a 429, ``now`` is about one spacing after the last success: count
            # that spacing as the one the 429 took, not as time with no success in it (the
            # rate would read low by one spacing in ``count``); only time beyond it is.
            seen = successes[-1] - successes[0]
            rated = max(seen, span - seen / (count - 1))
            self._measured = (count - 1) / rated if rated > 0 else 0.0
        else:
            self._measured = 0.0
        self._fresh = count >= self._tuning.samples and span <= 3 * self._tuning.window

    def _change(self, rate: float, now: float, reason: Reason) -> None:
        # Requests issued so far were paced at the old rate (one waiting for its slot gets a
        # new one if this is a cut, or a raise and it waits RAISED_WAIT or more: it then
        # counts as paced after the change); the next are paced at the new rate from the
        # last sent.
        self._changed_ticket = self._issued
        self._repace = True
        self._changed_at = now
        self._streak = self._steady = 0
        self._previous = self._limiter.rate
        self._limiter.rate = rate
        if rate > self._previous:
            self._wake()
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
            f" ok={self._ok:.4g}/s limit={self._limit:.4g}/s"
            f" cuts={self._cuts} throttles={self._throttles}>"
        )
