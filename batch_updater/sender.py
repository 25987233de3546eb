"""Sending one row: its lane's breaker and rate limiter, the call, retries, its result.

:class:`Sender` turns a row into exactly one :class:`RowResult` and gives it to the
:class:`~batch_updater.sink.ResultSink`, whatever happens: an answer, retries spent, a stop,
a lane found down, or the worker's task cancelled (the row is then ``not_attempted``, with
a message saying whether an attempt was in flight).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final

from .adaptive import AdaptiveRate
from .breaker import ENDPOINT_UNREACHABLE, Admission, Breaker, BreakerState
from .client import CallError, CallResult, Clients
from .control import StopReason
from .lanes import LaneKey, lane_name
from .logs import mask
from .policy import StopPolicy, unreachable_note
from .results import RowResult, Status
from .retry import Retrier, RetryEvent
from .rows import Row
from .sink import ResultSink

__all__ = ["MAYBE_APPLIED", "Lane", "Sender"]

MAYBE_APPLIED: Final = (
    "[an attempt's outcome is unknown (no answer, an unreadable answer, or a gateway "
    "timeout): the update may have been applied; re-running the row is safe]"
)
_STOPPED_BEFORE_SENDING: Final = (
    "not started: the run was stopped while the row waited for the rate limit"
)
_NO_RETRY: Final = " (no retry: the run was stopped)"  # the last answer stands
_STOPPED_AT_BREAKER: Final = (
    "not started: the run was stopped while the row waited for the endpoint to be reachable"
)


class Lane:
    """One rate domain, (account, region): its rate limiter and its circuit breaker.

    A lane's first :attr:`ALONE` requests go alone, each sent only once the one before it
    is answered, and pacing then starts from that answer (a lane without a rate limit does
    not wait). The first call is slow (a new connection, the client's first use), so a
    second request paced right behind it would reach the service right after it, and a
    service that admits one request every ``1/rate`` seconds would refuse it. And until a
    lane has answers, its rate is a guess: paced at a ``--rate`` far above the service's
    limit, every request sent before the first 429 comes back is refused too.
    """

    __slots__ = ("_busy", "_left", "_turn", "breaker", "key", "limiter", "paced")

    #: How many of a lane's first requests go one at a time.
    ALONE: Final = 3

    def __init__(self, key: LaneKey, limiter: AdaptiveRate, breaker: Breaker) -> None:
        self.key = key
        self.limiter = limiter
        self.breaker = breaker
        self.paced = limiter.max_rate > 0  # an unlimited lane (--rate 0) never waits
        self._left = self.ALONE if self.paced else 0  # requests still to go alone
        self._busy = False  # one of them is out
        self._turn = asyncio.Event()  # set when it is answered

    async def alone(self) -> bool:
        """True when this request goes alone (call :meth:`answered` once it is answered);
        while one is out, the lane's next requests wait here for its answer."""
        while self._left and self._busy:
            await self._turn.wait()
        if not self._left:
            return False
        self._busy = True
        return True

    def answered(self) -> None:
        """A request that went alone is answered (or gave up): pace the next from now."""
        self.limiter.hold()
        self._busy = False
        self._left -= 1
        self._turn.set()
        self._turn = asyncio.Event()

    def unanswered(self) -> None:
        """A request that went alone got no answer (a transport failure): the lane's next
        requests stop going alone, and its circuit breaker judges the endpoint instead (one
        timeout at a time would take ``ALONE`` timeouts to notice an outage)."""
        self._left = min(self._left, 1)  # answered() takes the last one

    def __repr__(self) -> str:
        state = f"{self._left} to go alone" if self._left else "open"
        return f"<Lane {lane_name(self.key)} {state} {self.limiter!r} {self.breaker!r}>"


def now() -> datetime:
    return datetime.now(UTC)


class _Stopped(Exception):
    """Raised inside an attempt that must not be sent because the run is stopping; the
    argument says what the row was waiting for (a not_attempted row's message)."""


class _Unreachable(Exception):
    """Raised inside an attempt that must not be sent because its lane is down."""


class _AccountStopped(Exception):
    """Raised inside an attempt that must not be sent because its account is stopped; the
    argument says why (the not_attempted row's message)."""


class _Attempts:
    """What the sender knows of one row's attempts (its own, never shared)."""

    __slots__ = ("count", "in_flight", "last_error", "maybe_applied", "started_at", "t0")

    def __init__(self) -> None:
        self.count = 0  # requests sent
        self.in_flight = False  # a request is out, its answer not yet in
        self.last_error: CallError | None = None
        self.maybe_applied = False  # some attempt was sent and never answered
        self.started_at = now()
        self.t0 = time.perf_counter()

    def cancelled_note(self, not_started: str) -> str:
        if self.in_flight or self.maybe_applied:
            return (
                f"cancelled while attempt {self.count} was in flight: the update may or may "
                "not have been applied; re-running the row is safe"
            )
        if self.count:
            return f"cancelled after {self.count} attempts, none applied"
        return not_started


async def _admit_unless_stopped(breaker: Breaker, policy: StopPolicy) -> Admission | None:
    """:meth:`Breaker.admit`, or :class:`_Stopped` as soon as the run is told to stop: a row
    waiting for an open breaker must not hold a stopping run for its grace period."""
    admit = asyncio.ensure_future(breaker.admit())
    stop = asyncio.ensure_future(policy.control.wait_stop())
    try:
        await asyncio.wait({admit, stop}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # cancelled: a probe this row was given goes to the next row
        if admit.done() and not admit.cancelled() and (given := admit.result()) is not None:
            breaker.release(given)
        raise
    finally:
        stop.cancel()
        admit.cancel()  # no effect once done
    if not admit.done():
        raise _Stopped(_STOPPED_AT_BREAKER)  # the stop came first
    admission = admit.result()
    if admission is not None and policy.stopping:
        breaker.release(admission)
        raise _Stopped(_STOPPED_AT_BREAKER)
    return admission  # None: the lane is down, which says more than the stop it caused


class Sender:
    """Sends rows and gives each one's result to the sink (see the module docstring)."""

    __slots__ = ("_clients", "_debug", "_lanes", "_log", "_policy", "_retrier", "_sink")

    def __init__(
        self,
        clients: Clients,
        lanes: Mapping[LaneKey, Lane],
        retrier: Retrier,
        *,
        sink: ResultSink,
        policy: StopPolicy,
        log: Any,
    ) -> None:
        self._clients = clients
        self._lanes = lanes
        self._retrier = retrier
        self._sink = sink
        self._policy = policy
        self._log = log
        # Per-row debug events cost nothing when debug is off: not even their arguments.
        enabled = getattr(log, "is_enabled_for", None)
        self._debug = enabled(logging.DEBUG) if callable(enabled) else True

    async def send(self, lane: Lane, row: Row) -> None:
        """Send ``row`` on ``lane``; its result goes to the sink, even when cancelled."""
        attempts = _Attempts()
        try:
            result = await self._send(lane, row, attempts)
        except asyncio.CancelledError:
            note = attempts.cancelled_note(self._policy.not_started())
            self._sink.emit(_result(row, attempts, Status.NOT_ATTEMPTED, note, timed=False))
            raise
        self._sink.emit(result)

    async def _send(self, lane: Lane, row: Row, attempts: _Attempts) -> RowResult:
        if self._policy.stopping:  # asked while the row waited for a worker
            note = self._policy.not_started()
            return _result(row, attempts, Status.NOT_ATTEMPTED, note, timed=False)
        if (why := self._policy.account_note(row.account_id)) is not None:
            return _result(row, attempts, Status.NOT_ATTEMPTED, f"not sent: {why}", timed=False)
        log, sink = self._log, self._sink

        async def attempt(_number: int) -> CallResult:
            return await self._attempt(lane, row, attempts)

        def on_retry(event: RetryEvent) -> None:
            sink.retried()
            code = event.error.code if isinstance(event.error, CallError) else "Error"
            log.info(
                "retry",
                app_id=row.app_id,
                line=row.line,
                region=row.region,
                attempt=event.attempt,
                error_code=code,
                sleep_seconds=round(event.sleep, 3),
            )

        try:
            result = await self._retrier.call(
                attempt,
                retry_on=lambda e: isinstance(e, CallError) and e.retryable,
                on_retry=on_retry,
            )
        except _Stopped as stopped:
            if attempts.last_error is None:
                return _result(row, attempts, Status.NOT_ATTEMPTED, str(stopped))
            # Stopped before a retry: the last answer stands.
            return self._failed(row, attempts, attempts.last_error, _NO_RETRY)
        except _Unreachable:
            return self._unreachable(lane, row, attempts)
        except _AccountStopped as stopped:
            return _result(row, attempts, Status.NOT_ATTEMPTED, str(stopped))
        except CallError as exc:
            if exc.account_fatal:
                self._policy.stop_account(exc.account_id or row.account_id, exc.message)
                if not exc.answered:  # refused before sending (the role): not attempted
                    return _result(row, attempts, Status.NOT_ATTEMPTED, f"not sent: {exc.message}")
            return self._failed(row, attempts, exc)
        except Exception as exc:  # a bug must not lose the row: report it and go on
            log.exception("row_error", app_id=row.app_id, line=row.line)
            return _result(
                row,
                attempts,
                Status.FAILED,
                f"{type(exc).__name__}: {exc}",
                error_code="InternalError",
            )
        if self._debug:
            client_id = row.settings.web_client_id
            log.debug(
                "row_succeeded",
                app_id=row.app_id,
                line=row.line,
                attempts=attempts.count,
                web_client_id=mask(client_id) if client_id else None,
            )
        return _result(
            row,
            attempts,
            Status.SUCCEEDED,
            http_status=result.http_status,
            request_id=result.request_id,
            backend_manager_app_id=result.backend_manager_app_id,
        )

    def _failed(self, row: Row, attempts: _Attempts, exc: CallError, note: str = "") -> RowResult:
        message = f"{exc.message} {MAYBE_APPLIED}" if attempts.maybe_applied else exc.message
        self._log.warning(
            "row_failed",
            app_id=row.app_id,
            line=row.line,
            region=row.region,
            attempts=attempts.count,
            error_code=exc.code,
            http_status=exc.http_status,
            error_message=message + note,
        )
        return _result(
            row,
            attempts,
            Status.FAILED,
            message + note,
            error_code=exc.code,
            http_status=exc.http_status,
            request_id=exc.request_id,
        )

    async def _attempt(self, lane: Lane, row: Row, attempts: _Attempts) -> CallResult:
        """One attempt of ``row``: waits for the lane's breaker and limiter, then sends.

        A transport failure that opens the lane's breaker (or comes while it is open) does
        not end the attempt: the row waits for the breaker like the lane's other rows, so
        rows do not spend their attempts against an unreachable endpoint.
        """
        clients, limiter, breaker, sink, policy = (
            self._clients,
            lane.limiter,
            lane.breaker,
            self._sink,
            self._policy,
        )
        while True:  # more than once only while the lane's breaker is not closed
            admission = (
                Admission.SEND
                if breaker.state is BreakerState.CLOSED
                else await _admit_unless_stopped(breaker, policy)
            )
            if admission is None:
                raise _Unreachable
            alone = False
            try:
                await clients.ready(row)  # client and credentials first: then pacing
                alone = await lane.alone()
                ticket = await limiter.acquire()
            except BaseException:
                if alone:
                    lane.answered()
                breaker.release(admission)
                raise
            try:
                if policy.stopping:
                    # Waited in the limiter while the run was told to stop: do not send.
                    breaker.release(admission)
                    raise _Stopped(_STOPPED_BEFORE_SENDING)
                if (why := policy.account_note(row.account_id)) is not None:
                    breaker.release(admission)  # its account was stopped meanwhile
                    raise _AccountStopped(f"not sent: {why}")
                if not breaker.admits(admission):
                    continue  # the breaker opened meanwhile: wait for it, do not send
                attempts.count += 1
                sink.sent()
                attempts.in_flight = True
                try:
                    leave = partial(limiter.leave, ticket) if lane.paced else None
                    result = await clients.update(row, leave)
                except CallError as exc:
                    attempts.in_flight = False
                    if alone and exc.transport:
                        lane.unanswered()
                    if self._failed_attempt(exc, attempts, lane, admission, ticket):
                        continue  # the lane's breaker is open: wait for it like its other rows
                    raise
                except BaseException:
                    breaker.release(admission)
                    raise
                attempts.in_flight = False
                breaker.answered()
                limiter.on_success(ticket)
                return result
            finally:
                if alone:
                    lane.answered()

    def _failed_attempt(
        self, exc: CallError, attempts: _Attempts, lane: Lane, admission: Admission, ticket: int
    ) -> bool:
        """Record a failed attempt with the limiter and the breaker; True when it opened the
        breaker (or came while it was open): then it does not cost the row an attempt."""
        limiter, breaker = lane.limiter, lane.breaker
        attempts.last_error = exc
        attempts.maybe_applied |= exc.maybe_applied
        if exc.throttled:
            self._sink.throttled()
            limiter.on_throttle(ticket)
        elif exc.http_status is not None:
            limiter.on_success(ticket)  # answered: it passed the service's limit
        if exc.answered:
            breaker.answered()
        elif not exc.transport:
            breaker.release(admission)  # not sent: says nothing of the endpoint
        else:
            return breaker.unanswered(admission)
        return False

    def _unreachable(self, lane: Lane, row: Row, attempts: _Attempts) -> RowResult:
        """The row's lane is down: the row is not sent (again); once every lane is down,
        the run stops."""
        settings = lane.breaker.settings
        note = unreachable_note(settings)
        if attempts.maybe_applied:
            note = f"{note} {MAYBE_APPLIED}"
        lanes = self._lanes
        if all(other.breaker.down for other in lanes.values()):
            self._policy.halt(
                StopReason(
                    ENDPOINT_UNREACHABLE,
                    f"{settings.unreachable()}, in every region "
                    f"({', '.join(lane_name(key) for key in lanes)}): "
                    "check the endpoint and the network, then resume",
                )
            )
        last = attempts.last_error
        return _result(
            row,
            attempts,
            Status.NOT_ATTEMPTED,
            note if attempts.count else f"not sent: {note}",
            error_code=last.code if last is not None else "",
        )


def _result(
    row: Row,
    attempts: _Attempts,
    status: Status,
    error_message: str = "",
    *,
    timed: bool = True,
    **fields: Any,
) -> RowResult:
    """The row's result; ``timed``: with its start, end and duration (a cancelled row's
    record has none)."""
    return RowResult(
        row.line,
        row.app_id,
        row.region,
        status,
        attempts=attempts.count,
        error_message=error_message,
        settings_digest=row.digest,
        account_id=row.account_id,
        started_at=attempts.started_at if timed else None,
        finished_at=now() if timed else None,
        duration_ms=round((time.perf_counter() - attempts.t0) * 1000) if timed else None,
        kept=row.kept,
        **fields,
    )
