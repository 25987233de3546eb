"""The job: validate every row, then update the valid ones with a pool of async workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .adaptive import AdaptiveRate, RateChange
from .breaker import ENDPOINT_UNREACHABLE, Admission, Breaker, BreakerSettings, BreakerState
from .client import CallError, CallResult, Clients, make_session
from .config import RunConfig, check_endpoint_environment
from .control import FailureRules, RunControl, StopReason
from .errors import BatchUpdaterError, SetupError
from .lanes import LaneScheduler
from .logs import default_logger, mask
from .progress import Progress, ProgressSnapshot, tick
from .report import ReportWriter, default_report_path, write_summary
from .results import RowResult, RunSummary, Status
from .resume import ResumeIndex
from .retry import Retrier, RetryEvent, RetryPolicy
from .rows import Rejected, Row, RowPlan, ValidationInterrupted

__all__ = ["RunConfig", "RunControl", "run_batch", "run_batch_sync"]

Source = str | os.PathLike[str] | Iterable[Mapping[str, str | None]]
MAYBE_APPLIED = (
    "[an attempt's outcome is unknown (no answer, an unreadable answer, or a gateway "
    "timeout): the update may have been applied; re-running the row is safe]"
)
ResultHook = Callable[[RowResult], None]
ResumeCommand = Callable[[Path | None], str]
Sleep = Callable[[float], Awaitable[None]]


class _Stats:
    __slots__ = ("requests", "retries", "throttles")

    def __init__(self) -> None:
        self.requests = 0
        self.retries = 0
        self.throttles = 0


class _RowState:
    """What a worker knows about the row it is sending, for when it gets cancelled."""

    __slots__ = ("attempts", "in_flight", "last_error", "maybe_applied", "started_at")

    def __init__(self) -> None:
        self.attempts = 0  # requests sent
        self.in_flight = False  # a request is out, its answer not yet in
        self.last_error: CallError | None = None
        self.maybe_applied = False  # some attempt was sent and never answered
        self.started_at: datetime | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def _rejected(item: Rejected) -> RowResult:
    status = Status.INVALID if item.status == "invalid" else Status.SKIPPED
    return RowResult(
        item.line,
        item.app_id,
        item.region,
        status,
        error_message=item.reason,
        settings_digest=item.digest,
        kept=item.kept,
    )


def _unsent(row: Row, status: Status, message: str, attempts: int = 0) -> RowResult:
    return RowResult(
        row.line,
        row.app_id,
        row.region,
        status,
        attempts=attempts,
        error_message=message,
        settings_digest=row.digest,
        kept=row.kept,
    )


class _Job:
    """One run: turns each planned row into exactly one report record."""

    __slots__ = (
        "_breaker_settings",
        "_breakers",
        "_carried_through",
        "_control",
        "_failure",
        "_log",
        "_on_result",
        "_resume",
        "_rules",
        "_stats",
        "_summary",
        "_writer",
        "config",
        "progress",
    )

    def __init__(
        self,
        config: RunConfig,
        *,
        writer: ReportWriter,
        summary: RunSummary,
        log: Any,
        on_result: ResultHook | None,
        control: RunControl,
        resume: ResumeIndex,
        total: int,
    ) -> None:
        self.config = config
        self._writer = writer
        self._summary = summary
        self._log = log
        self._on_result = on_result
        self._control = control
        self._resume = resume
        self._stats = _Stats()
        self.progress = Progress(total, throttled=lambda: self._stats.throttles)
        self._rules = FailureRules(
            config.max_failure_rate, config.failure_window, config.max_failures
        )
        self._failure: BaseException | None = None
        # Rows up to this line that earlier reports list as succeeded are already written.
        self._carried_through = 0
        self._breaker_settings = BreakerSettings()
        self._breakers: dict[str, Breaker] = {}  # per region (lane), made by run_calls

    def emit(self, result: RowResult) -> None:
        writer = self._writer
        writer.write(result)
        if writer.error is not None and self._summary.output_error is None:
            self.output_failed(writer.error)
        self._summary.counts[result.status] += 1
        if result.status is Status.INVALID:
            self._summary.note_invalid(result)
        self.progress.record(result.status)
        if self._summary.results is not None:
            self._summary.results.append(result)
        if self._on_result is not None:
            try:
                self._on_result(result)
            except Exception:  # the caller's hook must not cost a row its record
                self._log.exception("on_result_failed", line=result.line, app_id=result.app_id)
        if result.status in (Status.SUCCEEDED, Status.FAILED):
            reason = self._rules.record(result.status is Status.FAILED, result.error_code)
            if reason is not None and not self._control.stopping:
                self._log.error("run_stopping", reason=reason.kind, message=reason.message)
                self._control.halt(reason)

    def output_failed(self, message: str) -> None:
        """The report cannot be written: stop starting rows, as a stop rule does."""
        self._summary.output_error = message
        self._log.error("run_stopping", reason="output_error", message=message)
        self._control.halt(StopReason("output_error", message))

    def triage(self, item: Row | Rejected) -> Row | RowResult | None:
        """A row to send, the final result of a row that is not sent, or None for a row
        whose result :meth:`carry_forward` already wrote."""
        if isinstance(item, Rejected):
            return _rejected(item)
        if (note := self._resume.lookup(item)) is not None:
            if item.line <= self._carried_through:
                return None
            return _unsent(item, Status.SKIPPED, note)
        return item

    def carry_forward(self, plan: Iterable[Row | Rejected]) -> None:
        """Before any request, write the rows that earlier reports list as succeeded.

        So the new report holds every earlier success from the start: after a crash at any
        point it alone is enough to resume from (it may even replace the report it resumes
        from). A stop asked for meanwhile ends this early; the rest are written in order.
        """
        control, lookup = self._control, self._resume.lookup
        through = 0
        for n, item in enumerate(plan):
            if n % 1024 == 0 and control.requested:
                break
            if isinstance(item, Row) and (note := lookup(item)) is not None:
                self.emit(_unsent(item, Status.SKIPPED, note))
            through = item.line
        else:
            through = _EVERY_LINE
            # Every earlier success is in the new report: it may take the old one's place.
            self._writer.commit()
        self._carried_through = through

    def emit_unsent(self, items: Iterable[Row | Rejected], status: Status, message: str) -> None:
        """Final results for rows that are not sent (dry run, invalid input, stop).

        Synchronous, so it polls the stop flag that signal handlers set: once a stop is
        asked for, dry-run rows still to come are ``not_attempted``, like any unfinished row.
        """
        control = self._control
        for n, item in enumerate(items):
            if n % 1024 == 0 and control.requested and status is Status.DRY_RUN:
                status, message = Status.NOT_ATTEMPTED, self._not_started()
            triaged = self.triage(item)
            if triaged is not None:
                self.emit(
                    triaged if isinstance(triaged, RowResult) else _unsent(triaged, status, message)
                )

    @property
    def requests_sent(self) -> int:
        """Requests sent so far."""
        return self._stats.requests

    @property
    def resume(self) -> ResumeIndex:
        """The earlier reports' successes."""
        return self._resume

    def finish_stats(self) -> None:
        self._summary.requests = self._stats.requests
        self._summary.retries = self._stats.retries
        self._summary.throttles = self._stats.throttles

    def finish(self, elapsed: float, resume_command: ResumeCommand | None) -> None:
        """Close the report, complete the summary and write it; never raises on a full disk."""
        summary, writer, log = self._summary, self._writer, self._log
        self.finish_stats()
        writer.close()
        if writer.error is not None and summary.output_error is None:  # failed closing
            summary.output_error = writer.error
            log.error("report_write_failed", error=writer.error)
        # A signal seen only as a request (the loop was busy writing a dry run) counts too.
        summary.stop_reason = self._control.reason or self._control.requested_reason
        summary.elapsed_seconds = elapsed
        summary.lanes_down = sorted(lane for lane, b in self._breakers.items() if b.down)
        unfinished = summary.counts[Status.NOT_ATTEMPTED] and (
            summary.stop_reason is not None or summary.lanes_down
        )
        if resume_command is not None and (writer.error is not None or unfinished):
            summary.resume_command = resume_command(summary.report_path if writer.saved else None)
        if (error := write_summary(summary)) is not None:
            log.error("summary_write_failed", error=error)
        if writer.error is None and writer.written != self.progress.total:  # pragma: no cover
            log.error("report_incomplete", written=writer.written, rows=self.progress.total)

    def _limiter(self, region: str) -> AdaptiveRate:
        log = self._log

        def changed(change: RateChange) -> None:
            log.info(
                "rate_changed",
                region=region,
                old_rate=round(change.old_rate, 2),
                new_rate=round(change.new_rate, 2),
                reason=change.reason,
            )

        config = self.config
        return AdaptiveRate(
            config.effective_rate, config.burst, adaptive=config.adaptive, on_change=changed
        )

    def _breaker(self, region: str) -> Breaker:
        log = self._log

        def changed(old: BreakerState, new: BreakerState) -> None:
            probing = BreakerState.HALF_OPEN
            if new is probing or (old is probing and new is BreakerState.OPEN):
                return  # a probe going out, or failing: the breaker stays open
            level = log.info if new is BreakerState.CLOSED else log.warning
            level("breaker", region=region, state=str(new), previous=str(old))

        return Breaker(self._breaker_settings, on_change=changed)

    def _not_started(self) -> str:
        reason = self._control.reason
        if reason is None:
            return "not started"
        if reason.kind == ENDPOINT_UNREACHABLE:
            return f"not sent: {_unreachable_note(self._breaker_settings)}"
        return f"not started: run stopped ({reason.kind})"

    @property
    def failure(self) -> BaseException | None:
        """An unexpected error that ended the run early (a bug, or the input changed)."""
        return self._failure

    async def run_calls(
        self, plan: Iterator[Row | Rejected], clients: Clients, sleep: Sleep, regions: set[str]
    ) -> None:
        config, control = self.config, self._control
        limiters = {r: self._limiter(r) for r in sorted(regions)}
        self._summary.rates = limiters
        self._breakers = {r: self._breaker(r) for r in sorted(regions)}
        sender = _Sender(
            clients,
            limiters,
            self._breakers,
            Retrier(
                RetryPolicy(config.max_attempts, config.backoff_base, config.backoff_cap),
                sleep=sleep,
            ),
            stats=self._stats,
            log=self._log,
        )
        # One lane per rate domain (a region): a reader routes each row to its lane, and
        # each worker takes its next row from the lane that can send soonest.
        lanes = LaneScheduler(
            limiters,
            lambda lane: limiters[lane].due(),
            config.concurrency,
            memory_rows=max(64, 2 * config.concurrency),
        )
        reader = asyncio.create_task(self._guarded(self._route(plan, lanes)))
        workers = [
            asyncio.create_task(self._guarded(self._work(lanes, sender)))
            for _ in range(config.concurrency)
        ]
        # return_exceptions: tasks record their own failures; cancelled ones end quietly.
        everything: asyncio.Future[Any] = asyncio.gather(reader, *workers, return_exceptions=True)
        try:
            stop: asyncio.Future[Any] = asyncio.create_task(control.wait_stop())
            await asyncio.wait({everything, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            lanes.stop()  # stopping, or done: no row is handed out any more
            if not everything.done():
                # Stopping: workers start no new row; calls in flight get the grace period,
                # then are cancelled.
                hurry: asyncio.Future[Any] = asyncio.create_task(control.wait_hurry())
                await asyncio.wait(
                    {everything, hurry},
                    timeout=config.grace_period,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                hurry.cancel()
        finally:
            # Also reached when the task running the batch is cancelled. Unread rows are
            # recorded first (no await in between, so a second cancel cannot skip them),
            # then each cancelled worker records its row in flight.
            for task in (reader, *workers):
                task.cancel()
            self.emit_unsent(lanes.drain(), Status.NOT_ATTEMPTED, self._not_started())
            self.emit_unsent(plan, Status.NOT_ATTEMPTED, self._not_started())
            cancelled_again = False
            while not everything.done():
                try:
                    await asyncio.wait({everything})
                except asyncio.CancelledError:
                    cancelled_again = True
            if cancelled_again:
                raise asyncio.CancelledError

    async def _guarded(self, work: Awaitable[None]) -> None:
        """Run a reader's or worker's ``work``; an unexpected error stops the run."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A bug, a failing disk or an input changed under us: stop everything, loudly.
            if self._failure is None:
                self._failure = exc
                if isinstance(exc, BatchUpdaterError):  # e.g. the input changed: no traceback
                    self._log.error("run_failed", error=str(exc))
                else:
                    self._log.exception("run_failed", error=f"{type(exc).__name__}: {exc}")
            self._control.stop_now(StopReason("internal_error", f"{type(exc).__name__}: {exc}"))

    async def _route(self, rows: Iterator[Row | Rejected], lanes: LaneScheduler) -> None:
        """Read the plan: rows not to send get their record now, the others go to their lane."""
        control = self._control
        for n, item in enumerate(rows, start=1):
            triaged = self.triage(item)
            if isinstance(triaged, Row):
                lanes.push(triaged.region, triaged)
            elif triaged is not None:
                self.emit(triaged)
            if n % 256 == 0:
                await asyncio.sleep(0)  # let the workers, and signals, in
                if control.stopping:
                    break  # the rows left are recorded as not attempted
        lanes.close()

    async def _work(self, lanes: LaneScheduler, sender: _Sender) -> None:
        control = self._control
        while not control.stopping and (taken := await lanes.take()) is not None:
            lane, row = taken
            if control.stopping:  # asked while this worker waited for a row
                lanes.release(lane)
                self.emit(_unsent(row, Status.NOT_ATTEMPTED, self._not_started()))
                return
            state = _RowState()
            try:
                result = await sender.send(row, state, control)
            except asyncio.CancelledError:
                if state.in_flight or state.maybe_applied:
                    message = (
                        f"cancelled while attempt {state.attempts} was in flight: the update "
                        "may or may not have been applied; re-running the row is safe"
                    )
                elif state.attempts:
                    message = f"cancelled after {state.attempts} attempts, none applied"
                else:
                    message = self._not_started()
                self.emit(_unsent(row, Status.NOT_ATTEMPTED, message, state.attempts))
                raise
            finally:
                lanes.release(lane)
            self.emit(result)


_EVERY_LINE = 1 << 62  # carry_forward went through the whole plan


class _Stopped(Exception):
    """Raised inside an attempt that must not be sent because the run is stopping; the
    argument says what the row was waiting for (a not_attempted row's message)."""


class _Unreachable(Exception):
    """Raised inside an attempt that must not be sent because its lane is down."""


def _unreachable_note(settings: BreakerSettings) -> str:
    """The message of a row not sent (or not finished) because its lane is down."""
    return f"{settings.unreachable()}; re-running the row is safe"


_STOPPED_BEFORE_SENDING = "not started: the run was stopped while the row waited for the rate limit"
_STOPPED_AT_BREAKER = (
    "not started: the run was stopped while the row waited for the endpoint to be reachable"
)


async def _admit_unless_stopped(breaker: Breaker, control: RunControl) -> Admission | None:
    """:meth:`Breaker.admit`, or :class:`_Stopped` as soon as the run is told to stop: a row
    waiting for an open breaker must not hold a stopping run for its grace period."""
    admit = asyncio.ensure_future(breaker.admit())
    stop = asyncio.ensure_future(control.wait_stop())
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
    if admission is not None and control.stopping:
        breaker.release(admission)
        raise _Stopped(_STOPPED_AT_BREAKER)
    return admission  # None: the lane is down, which says more than the stop it caused


class _Sender:
    """Sends one row: rate limiter, call, retries; turns the outcome into a RowResult."""

    __slots__ = ("_breakers", "_clients", "_debug", "_limiters", "_log", "_retrier", "_stats")

    def __init__(
        self,
        clients: Clients,
        limiters: Mapping[str, AdaptiveRate],
        breakers: Mapping[str, Breaker],
        retrier: Retrier,
        *,
        stats: _Stats,
        log: Any,
    ) -> None:
        self._clients = clients
        self._limiters = limiters
        self._breakers = breakers
        self._retrier = retrier
        self._stats = stats
        self._log = log
        # Per-row debug events cost nothing when debug is off: not even their arguments.
        enabled = getattr(log, "is_enabled_for", None)
        self._debug = enabled(logging.DEBUG) if callable(enabled) else True

    async def send(self, row: Row, state: _RowState, control: RunControl) -> RowResult:
        stats, log = self._stats, self._log

        async def attempt(_number: int) -> CallResult:
            return await self._attempt(row, state, control)

        def on_retry(event: RetryEvent) -> None:
            stats.retries += 1
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

        state.started_at = _now()
        t0 = time.perf_counter()

        def finished(status: Status, **fields: Any) -> RowResult:
            return RowResult(
                row.line,
                row.app_id,
                row.region,
                status,
                attempts=state.attempts,
                settings_digest=row.digest,
                started_at=state.started_at,
                finished_at=_now(),
                duration_ms=round((time.perf_counter() - t0) * 1000),
                kept=row.kept,
                **fields,
            )

        def failed(exc: CallError, note: str = "") -> RowResult:
            message = f"{exc.message} {MAYBE_APPLIED}" if state.maybe_applied else exc.message
            log.warning(
                "row_failed",
                app_id=row.app_id,
                line=row.line,
                region=row.region,
                attempts=state.attempts,
                error_code=exc.code,
                http_status=exc.http_status,
                error_message=message + note,
            )
            return finished(
                Status.FAILED,
                error_code=exc.code,
                http_status=exc.http_status,
                error_message=message + note,
                request_id=exc.request_id,
            )

        try:
            result = await self._retrier.call(
                attempt,
                retry_on=lambda e: isinstance(e, CallError) and e.retryable,
                on_retry=on_retry,
            )
        except _Stopped as stopped:
            if state.last_error is None:
                return finished(Status.NOT_ATTEMPTED, error_message=str(stopped))
            # Stopped before a retry: the last answer stands.
            return failed(state.last_error, " (no retry: the run was stopped)")
        except _Unreachable:
            return self._unreachable(row, state, control, finished)
        except CallError as exc:
            return failed(exc)
        except Exception as exc:  # a bug must not lose the row: report it and go on
            log.exception("row_error", app_id=row.app_id, line=row.line)
            return finished(
                Status.FAILED,
                error_code="InternalError",
                error_message=f"{type(exc).__name__}: {exc}",
            )
        if self._debug:
            client_id = row.settings.web_client_id
            log.debug(
                "row_succeeded",
                app_id=row.app_id,
                line=row.line,
                attempts=state.attempts,
                web_client_id=mask(client_id) if client_id else None,
            )
        return finished(
            Status.SUCCEEDED,
            http_status=result.http_status,
            request_id=result.request_id,
            backend_manager_app_id=result.backend_manager_app_id,
        )

    async def _attempt(self, row: Row, state: _RowState, control: RunControl) -> CallResult:
        """One attempt of ``row``: waits for the lane's breaker and limiter, then sends.

        A transport failure that opens the lane's breaker (or comes while it is open) does
        not end the attempt: the row waits for the breaker like the lane's other rows, so
        rows do not spend their attempts against an unreachable endpoint.
        """
        clients, limiter, breaker, stats = (
            self._clients,
            self._limiters[row.region],
            self._breakers[row.region],
            self._stats,
        )
        while True:  # more than once only while the lane's breaker is not closed
            admission = (
                Admission.SEND
                if breaker.state is BreakerState.CLOSED
                else await _admit_unless_stopped(breaker, control)
            )
            if admission is None:
                raise _Unreachable
            try:
                ticket = await limiter.acquire()
            except BaseException:
                breaker.release(admission)
                raise
            if control.stopping:
                # Waited in the limiter while the run was told to stop: do not send.
                breaker.release(admission)
                raise _Stopped(_STOPPED_BEFORE_SENDING)
            if not breaker.admits(admission):
                continue  # the breaker opened meanwhile: wait for it, do not send
            state.attempts += 1
            stats.requests += 1
            state.in_flight = True
            try:
                result = await clients.update(row)
            except CallError as exc:
                state.in_flight = False
                state.last_error = exc
                state.maybe_applied |= exc.maybe_applied
                if exc.throttled:
                    stats.throttles += 1
                    limiter.on_throttle(ticket)
                elif exc.http_status is not None:
                    limiter.on_success(ticket)  # answered: it passed the service's limit
                if exc.answered:
                    breaker.answered()
                elif not exc.transport:
                    breaker.release(admission)  # not sent: says nothing of the endpoint
                elif breaker.unanswered(admission):
                    # Opened, or still open: this failure does not cost the row an
                    # attempt; it waits for the breaker like the lane's other rows.
                    continue
                raise
            except BaseException:
                breaker.release(admission)
                raise
            state.in_flight = False
            breaker.answered()
            limiter.on_success(ticket)
            return result

    def _unreachable(
        self,
        row: Row,
        state: _RowState,
        control: RunControl,
        finished: Callable[..., RowResult],
    ) -> RowResult:
        """The row's lane is down: the row is not sent (again); once every lane is down,
        the run stops."""
        breakers = self._breakers
        settings = breakers[row.region].settings
        note = _unreachable_note(settings)
        if state.maybe_applied:
            note = f"{note} {MAYBE_APPLIED}"
        if control.reason is None and all(b.down for b in breakers.values()):
            regions = ", ".join(breakers)
            reason = StopReason(
                ENDPOINT_UNREACHABLE,
                f"{settings.unreachable()}, in every region ({regions}): "
                "check the endpoint and the network, then resume",
            )
            self._log.error("run_stopping", reason=reason.kind, message=reason.message)
            control.halt(reason)
        return finished(
            Status.NOT_ATTEMPTED,
            error_message=note if state.attempts else f"not sent: {note}",
            error_code=state.last_error.code if state.last_error is not None else "",
        )


class _Sdk:
    """The aioboto3 Session, made only when needed: a dry run never imports the SDK."""

    __slots__ = ("_config", "_session")

    def __init__(self, config: RunConfig, session: Any) -> None:
        self._config = config
        self._session = session

    def session(self) -> Any:
        if self._session is None:
            c = self._config
            self._session = make_session(c.profile, c.region, local=c.local)
        return self._session

    def region(self) -> str | None:
        # botocore reads AWS_DEFAULT_REGION and the profile; AWS_REGION is the newer name.
        return str(self.session().region_name or os.environ.get("AWS_REGION") or "") or None


async def run_batch(
    source: Source,
    config: RunConfig | None = None,
    *,
    session: Any = None,
    on_result: ResultHook | None = None,
    logger: Any = None,
    control: RunControl | None = None,
    on_progress: Callable[[ProgressSnapshot], None] | None = None,
    sleep: Sleep = asyncio.sleep,
    resume_command: ResumeCommand | None = None,
) -> RunSummary:
    """Validate ``source`` (a CSV path or rows as mappings), update every valid row, report.

    Returns the run's :class:`RunSummary` (with per-row results unless
    ``config.collect_results`` is false). ``session`` is an aioboto3 Session to use instead
    of one from the standard credential chain; ``on_result`` is called with each row's
    result as soon as it is final; ``control`` lets the caller stop the run early;
    ``on_progress`` gets a :class:`ProgressSnapshot` every ``config.progress_interval``
    seconds and at the end (``config.progress_log`` logs them as ``progress`` events);
    ``sleep`` is the backoff sleep (a testing seam); ``resume_command(report)`` builds the
    command that finishes a stopped run (``report`` is None when the report holds nothing
    to resume from), stored as ``summary.resume_command``. ``control`` serves one run only.

    Raises :class:`SetupError` before any call when the job cannot start, including
    arguments of the wrong type (the message names the argument). If the report cannot be
    written mid-run, the run stops as for a stop rule and ``summary.output_error`` says
    why; if the summary file cannot be written, ``summary.output_error`` says so too.
    If the task running the batch is cancelled, the report and summary are completed
    (unfinished rows ``not_attempted``) and ``CancelledError`` is re-raised.
    """
    source = _check_arguments(
        source,
        config=config,
        session=session,
        logger=logger,
        on_result=on_result,
        control=control,
        on_progress=on_progress,
    )
    config = config or RunConfig()
    control = control or RunControl()
    control.claim()
    run_id = config.run_id or uuid.uuid4().hex[:12]
    log = (logger if logger is not None else default_logger()).bind(run_id=run_id)
    t0 = time.perf_counter()
    if config.endpoint_url is None and not config.local:
        check_endpoint_environment(config.allow_insecure_endpoint)
    sdk = _Sdk(config, session)
    plan = _validate(source, config, sdk, control, log)
    with plan:  # removes the plan's private copy of the input, whatever happens
        return await _run_plan(
            plan,
            config,
            sdk,
            control,
            log,
            run_id=run_id,
            t0=t0,
            on_result=on_result,
            on_progress=on_progress,
            sleep=sleep,
            resume_command=resume_command,
        )


async def _run_plan(
    plan: RowPlan,
    config: RunConfig,
    sdk: _Sdk,
    control: RunControl,
    log: Any,
    *,
    run_id: str,
    t0: float,
    on_result: ResultHook | None,
    on_progress: Callable[[ProgressSnapshot], None] | None,
    sleep: Sleep,
    resume_command: ResumeCommand | None,
) -> RunSummary:
    resume = ResumeIndex.load(
        config.resume, warn=lambda m: log.warning("resume_warning", message=m)
    )
    report_path = config.report_path or default_report_path(
        plan.stem,
        shard=str(config.shard) if config.shard else None,
    )
    summary = _new_summary(report_path, plan, config, run_id)
    writer = _open_report(report_path, plan, config, run_id)
    log.info(
        "run_start",
        rows=plan.total,
        input_rows=plan.input_rows,
        invalid=plan.invalid,
        input_invalid=plan.input_invalid,
        **summary.settings,
    )
    job = _Job(
        config,
        writer=writer,
        summary=summary,
        log=log,
        on_result=on_result,
        control=control,
        resume=resume,
        total=plan.total,
    )
    if writer.error is not None:  # the report's header could not be written
        job.output_failed(writer.error)
    progress = _ProgressReporter(job, on_progress, log, config)
    try:
        if config.dry_run:
            job.emit_unsent(plan, Status.DRY_RUN, "")
        elif not plan.ok and not config.skip_invalid:
            message = "not sent: the input has invalid rows (fix them, or use --skip-invalid)"
            job.emit_unsent(plan, Status.NOT_ATTEMPTED, message)
        elif control.stopping:  # nothing sent when the report already failed
            job.emit_unsent(plan, Status.NOT_ATTEMPTED, job._not_started())
        else:
            await _run_live(job, plan, sdk, sleep)
            if job.failure is not None:
                raise job.failure
    except asyncio.CancelledError:
        control.stop_now(StopReason("cancelled", "the task running the batch was cancelled"))
        raise
    except SetupError as exc:
        control.halt(StopReason("setup_error", str(exc)))
        if job.requests_sent == 0:
            # Nothing was sent: leave no report behind, so the same command can run again.
            progress.cancel()
            writer.discard()
        raise
    finally:
        if not writer.discarded:
            progress.close()
            summary.input_problem = _input_problem(plan, report_path, log)
            job.finish(time.perf_counter() - t0, resume_command)
    # The settings are already in run_start and the summary file.
    log.info("run_end", **{k: v for k, v in summary.to_json().items() if k != "settings"})
    return summary


def _input_problem(plan: RowPlan, report_path: Path, log: Any) -> str | None:
    """Why the input makes this run no success although its rows may be: it has no rows,
    or it changed during the run (the run used the rows of its private copy)."""
    if plan.input_rows == 0:
        what = "has a header but no rows" if plan.path is not None else "has no rows"
        return f"{plan.source_name} {what}: nothing to do"
    if not plan.input_changed():
        return None
    message = (
        f"the input changed during the run; this run used the {plan.input_rows} rows it "
        "validated at the start (a private copy): check the file, then rerun with "
        f"--resume {report_path}"
    )
    log.warning("input_changed", input=plan.source_name, message=message)
    return message


def _kind(value: object) -> str:
    """``str 'nope'``: a wrong argument's type and (shortened) value, for error messages."""
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def _rows_of(rows: Iterable[object]) -> Iterator[Mapping[str, str | None]]:
    for n, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise SetupError(
                f"source: row {n} is a {_kind(row)}, not a mapping of column name to cell"
            )
        yield row


def _check_arguments(
    source: object,
    *,
    config: object,
    session: object,
    logger: object,
    on_result: object,
    control: object,
    on_progress: object,
) -> Path | Iterable[Mapping[str, str | None]]:
    """Refuse arguments of the wrong type with a message naming the argument; returns the
    source as a Path (``str`` and ``os.PathLike`` accepted) or as checked rows."""
    checks = (
        (
            config is None or isinstance(config, RunConfig),
            "config",
            "a RunConfig (for a dict d: RunConfig(**d))",
            config,
        ),
        (
            session is None or callable(getattr(session, "client", None)),
            "session",
            "an aioboto3.Session",
            session,
        ),
        (
            logger is None or callable(getattr(logger, "bind", None)),
            "logger",
            "a structlog-style logger (with bind())",
            logger,
        ),
        (on_result is None or callable(on_result), "on_result", "a function", on_result),
        (on_progress is None or callable(on_progress), "on_progress", "a function", on_progress),
        (control is None or isinstance(control, RunControl), "control", "a RunControl", control),
    )
    for ok, name, expected, value in checks:
        if not ok:
            raise SetupError(f"{name}: expected {expected}, got {_kind(value)}")
    if isinstance(source, str | os.PathLike):
        return Path(source)
    if isinstance(source, Mapping):
        raise SetupError("source: got one row (a mapping); pass a list of rows: [row]")
    if isinstance(source, bytes) or not isinstance(source, Iterable):
        raise SetupError(
            f"source: expected a CSV path (str or Path) or an iterable of rows (mappings), "
            f"got {_kind(source)}"
        )
    return _rows_of(source)


def _new_summary(report_path: Path, plan: RowPlan, config: RunConfig, run_id: str) -> RunSummary:
    summary = RunSummary(report_path, run_id=run_id, results=[] if config.collect_results else None)
    summary.settings = {
        **config.describe(),
        "input": plan.source_name,
        "report_path": str(report_path),
        "regions": sorted(plan.regions),
    }
    return summary


def _open_report(report_path: Path, plan: RowPlan, config: RunConfig, run_id: str) -> ReportWriter:
    if plan.path is not None and _same_file(plan.path, report_path):
        raise SetupError(f"--report {report_path} is the input file: choose another path")
    # Resuming into the report resumed from: the new report replaces it once it holds
    # every earlier success (see _Job.carry_forward), so a crash never loses one.
    in_place = any(_same_file(path, report_path) for path in config.resume)
    return ReportWriter(
        report_path,
        overwrite=config.overwrite,
        run_id=run_id,
        replacing=in_place,
        kept_columns=plan.kept_columns,
        dry_run=config.dry_run,
    )


def _validate(
    source: Source, config: RunConfig, sdk: _Sdk, control: RunControl, log: Any
) -> RowPlan:
    """The first pass over the input; a signal during it stops it (nothing sent yet)."""
    log.debug("validation_started")  # from here on, a stop request ends validation cleanly
    try:
        return RowPlan(
            Path(source) if isinstance(source, str | os.PathLike) else source,
            config.region or sdk.region,
            shard=config.shard,
            interrupted=lambda: control.requested,
            keep=config.keep_columns,
            allow_unknown_region=config.allow_unknown_region,
        )
    except ValidationInterrupted as exc:
        reason = control.requested_reason or control.reason
        exc.signal = reason.signal if reason is not None else None
        raise


class _ProgressReporter:
    """Gives progress snapshots to the caller's hook and/or ``progress`` log events."""

    __slots__ = ("_job", "_log", "_sinks", "_ticker")

    def __init__(
        self,
        job: _Job,
        on_progress: Callable[[ProgressSnapshot], None] | None,
        log: Any,
        config: RunConfig,
    ) -> None:
        self._job, self._log = job, log
        self._sinks = [on_progress] if on_progress is not None else []
        if config.progress_log:
            self._sinks.append(lambda snap: log.info("progress", **snap.as_event()))
        self._ticker = (
            asyncio.create_task(tick(job.progress, self.report, config.progress_interval))
            if self._sinks
            else None
        )

    def report(self, snap: ProgressSnapshot) -> None:
        for sink in self._sinks:
            try:
                sink(snap)
            except Exception:  # a progress display must never cost the report
                self._log.exception("on_progress_failed")

    def cancel(self) -> None:
        """Stop the ticker without a last report (the run never started)."""
        if self._ticker is not None:
            self._ticker.cancel()

    def close(self) -> None:
        """Stop the ticker and report the final numbers."""
        if self._ticker is not None:
            self._ticker.cancel()
        if self._sinks:
            self.report(self._job.progress.snapshot())


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


async def _run_live(job: _Job, plan: RowPlan, sdk: _Sdk, sleep: Sleep) -> None:
    config = job.config
    rows = iter(plan)
    async with contextlib.AsyncExitStack() as stack:
        endpoint_url = config.endpoint_url
        try:
            if config.local:
                from .emulator import EmulatorServer  # noqa: PLC0415 - only for --local

                server = await stack.enter_async_context(EmulatorServer())
                endpoint_url = server.url
            clients = await stack.enter_async_context(
                Clients(
                    sdk.session(),
                    endpoint_url=endpoint_url,
                    max_pool_connections=config.concurrency,
                    request_timeout=config.request_timeout,
                )
            )
            if plan.regions:
                await clients.check_credentials()
                await clients.open(plan.regions)
        except SetupError:
            raise  # nothing was sent: run_batch leaves no report behind
        except BaseException:
            # Stopped or broken before any call: the report still lists every row.
            job.emit_unsent(rows, Status.NOT_ATTEMPTED, "not started: setup failed")
            raise
        if not config.dry_run and len(job.resume) > 0:
            job.carry_forward(plan)
        await job.run_calls(rows, clients, sleep, plan.regions)


def run_batch_sync(
    source: Source,
    config: RunConfig | None = None,
    *,
    session: Any = None,
    on_result: ResultHook | None = None,
    logger: Any = None,
) -> RunSummary:
    """:func:`run_batch` for scripts: runs it in a new event loop.

    Inside a running event loop (async code, Jupyter), use ``await run_batch(...)``:
    this raises :class:`RuntimeError` saying so.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "run_batch_sync() cannot run inside a running event loop: "
            "use `await run_batch(...)` instead"
        )
    return asyncio.run(
        run_batch(source, config, session=session, on_result=on_result, logger=logger)
    )


async def run_batch_with_signals(source: Source, config: RunConfig, **kwargs: Any) -> RunSummary:
    """:func:`run_batch` with SIGINT/SIGTERM handlers: the first stops gracefully (in-flight
    calls get ``config.grace_period`` seconds), the second stops at once.

    The handlers are plain ``signal`` handlers, not the loop's: they set the stop flag at
    once, so even synchronous work (validation, a dry run's report) sees it.
    """
    control = RunControl()
    loop = asyncio.get_running_loop()
    previous: dict[signal.Signals, Any] = {}

    def handler(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        control.request(loop, StopReason("signal", f"received {name}", signum))

    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread: no handlers
            previous[signum] = signal.signal(signum, handler)
    try:
        return await run_batch(source, config, control=control, **kwargs)
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
