"""The job: validate every row, then update the valid ones with a pool of async workers.

Data flows one way: the plan (validated rows, in input order) -> triage (rows not to send
get their result at once) -> lanes (one queue per rate domain) -> the sender (breaker,
limiter, call, retries) -> the result sink (report, counts, progress, hook, stop rules).
The stop policy decides when to stop; the run's shutdown reads in one sentence: on a stop
no row is handed out any more, calls in flight get the grace period (none when hurried)
and are then cancelled, and every row not sent is recorded ``not_attempted``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from .accounts import Accounts, AssumeRoleSettings
from .adaptive import AdaptiveRate, RateChange
from .breaker import Breaker, BreakerSettings, BreakerState
from .client import Clients, find_region, make_session
from .config import RunConfig, check_endpoint_environment
from .control import FailureRules, RunControl, StopReason
from .errors import BatchUpdaterError, SetupError
from .lanes import LaneKey, LaneScheduler, lane_name
from .logs import default_logger
from .policy import StopPolicy
from .progress import ProgressSnapshot, tick
from .report import ReportWriter, default_report_path
from .results import RowResult, RunSummary, Status
from .resume import ResumeIndex
from .retry import Retrier, RetryPolicy
from .rows import InputCopy, Rejected, Row, RowPlan, ValidationInterrupted
from .rules import EVERY_ACCOUNT
from .s3 import Location, S3Location, S3Run, to_location
from .sender import MAYBE_APPLIED, Lane, Sender
from .sink import ResultHook, ResultSink

__all__ = ["MAYBE_APPLIED", "RunConfig", "RunControl", "run_batch", "run_batch_sync"]

Source = str | os.PathLike[str] | S3Location | Iterable[Mapping[str, str | None]]
ResumeCommand = Callable[[Location | None], str]
Sleep = Callable[[float], Awaitable[None]]
_EVERY_LINE: Final = 1 << 62  # carry_forward went through the whole plan
_POLL_EVERY: Final = 1024  # rows between two looks at the stop flag in synchronous loops


# The status of a row's result from a Rejected's (or an Outcome's fate).
_FATES: Final = {"invalid": Status.INVALID, "skipped": Status.SKIPPED}


def _rejected(item: Rejected) -> RowResult:
    status = _FATES[item.status]
    return RowResult(
        item.line,
        item.app_id,
        item.region,
        status,
        error_message=item.reason,
        settings_digest=item.digest,
        kept=item.kept,
        account_id=item.account_id,
    )


def _unsent(row: Row, status: Status, message: str) -> RowResult:
    return RowResult(
        row.line,
        row.app_id,
        row.region,
        status,
        error_message=message,
        settings_digest=row.digest,
        kept=row.kept,
        account_id=row.account_id,
    )


class _Triage:
    """Turns each planned row into a row to send, or the final result of a row that is not
    sent (invalid, duplicate, or succeeded in an earlier report)."""

    __slots__ = ("_carried_through", "_lookup", "_note", "resume")

    def __init__(self, resume: ResumeIndex) -> None:
        self.resume = resume
        # No earlier success (no --resume): no lookup per row.
        self._lookup = resume.lookup if len(resume) else None
        self._note = resume.note if len(resume) else None
        # Rows up to this line that earlier reports list as succeeded are already written.
        self._carried_through = 0

    def __call__(self, item: Row | Rejected) -> Row | RowResult | None:
        """A row to send, a final result, or None for a row whose result
        :meth:`carry_forward` already wrote."""
        if isinstance(item, Rejected):
            return _rejected(item)
        if self._lookup is not None and (note := self._lookup(item)) is not None:
            if item.line <= self._carried_through:
                return None
            return _unsent(item, Status.SKIPPED, note)
        return item

    def unsent(  # noqa: PLR0917 (the fields of an Outcome it needs, then what to say)
        self, line: int, fate: str, why: str, done: int, status: Status, message: str
    ) -> tuple[Status, str] | None:
        """:meth:`__call__` for a row of a run that sends nothing, given by the fields of
        its :data:`~batch_updater.rows.Outcome` (``done``: the success noted on its app,
        the resume index being within the plan's apps): the status and message of its
        result (``status`` and ``message`` for a row that would be sent), or None as
        there."""
        if fate:
            return _FATES[fate], why
        if done and self._note is not None:
            if line <= self._carried_through:
                return None
            return Status.SKIPPED, self._note(done)
        return status, message

    def carry_forward(
        self, plan: Iterable[Row | Rejected], sink: ResultSink, policy: StopPolicy
    ) -> None:
        """Before any request, write the rows that earlier reports list as succeeded.

        So the new report holds every earlier success from the start: after a crash at any
        point it alone is enough to resume from (it may even replace the report it resumes
        from). A stop asked for meanwhile ends this early; the rest are written in order.
        """
        lookup = self.resume.lookup
        through = 0
        for n, item in enumerate(plan):
            if n % _POLL_EVERY == 0 and policy.requested:
                break
            if isinstance(item, Row) and (note := lookup(item)) is not None:
                sink.emit(_unsent(item, Status.SKIPPED, note))
            through = item.line
        else:
            through = _EVERY_LINE
            sink.commit()
        self._carried_through = through

    def __repr__(self) -> str:
        return f"<Triage {self.resume!r} carried_through={self._carried_through}>"


def _emit_unsent(
    items: Iterable[Row | Rejected],
    triage: _Triage,
    sink: ResultSink,
    status: Status,
    message: str,
) -> None:
    """Final results for rows that are not sent (dry run, invalid input, stop).

    Synchronous, so it polls the stop flag that signal handlers set: once a stop is asked
    for, dry-run rows still to come are ``not_attempted``, like any unfinished row.
    """
    policy = sink.policy
    for n, item in enumerate(items):
        if n % _POLL_EVERY == 0 and policy.requested and status is Status.DRY_RUN:
            status, message = Status.NOT_ATTEMPTED, policy.not_started()
        triaged = triage(item)
        if triaged is not None:
            sink.emit(
                triaged if isinstance(triaged, RowResult) else _unsent(triaged, status, message)
            )


def _emit_outcomes(
    plan: RowPlan, triage: _Triage, sink: ResultSink, status: Status, message: str
) -> None:
    """:func:`_emit_unsent` of every row of ``plan``, read as outcomes (see
    :meth:`RowPlan.outcomes`): no :class:`Row` or :class:`RowResult` per row."""
    resume = triage.resume
    assert resume.within is plan.apps or not len(resume), "successes noted on the plan's apps"
    policy, unsent, emit = sink.policy, triage.unsent, sink.emit_unsent
    for n, (line, app_id, region, fate, why, digest, kept, account, done) in enumerate(
        plan.outcomes()
    ):
        if n % _POLL_EVERY == 0 and policy.requested and status is Status.DRY_RUN:
            status, message = Status.NOT_ATTEMPTED, policy.not_started()
        result = unsent(line, fate, why, done, status, message)
        if result is not None:
            emit((result[0], line, app_id, region, result[1], digest, kept, account))


class _Lanes:
    """Each rate domain's :class:`Lane` (limiter and breaker, with their log events), made
    when its first row comes."""

    __slots__ = ("_config", "_log", "_rate", "breaker", "lanes")

    def __init__(self, config: RunConfig, rate: float, log: Any) -> None:
        self._config = config
        self._rate = rate  # each lane's --rate (divided among shards when they share lanes)
        self._log = log
        self.breaker = BreakerSettings()
        self.lanes: dict[LaneKey, Lane] = {}

    def get(self, key: LaneKey) -> Lane:
        lane = self.lanes.get(key)
        if lane is None:
            lane = self.lanes[key] = Lane(key, self._limiter(key), self._breaker(key))
        return lane

    @property
    def down(self) -> list[str]:
        return sorted(lane_name(key) for key, lane in self.lanes.items() if lane.breaker.down)

    @property
    def rates(self) -> dict[str, AdaptiveRate]:
        """Each lane's limiter, by lane name (the summary's settled rates)."""
        return {lane_name(key): self.lanes[key].limiter for key in sorted(self.lanes)}

    def _fields(self, key: LaneKey) -> dict[str, str]:
        account, region = key
        return {"region": region, "account_id": account} if account else {"region": region}

    def _limiter(self, key: LaneKey) -> AdaptiveRate:
        log, fields = self._log, self._fields(key)

        def changed(change: RateChange) -> None:
            log.info(
                "rate_changed",
                **fields,
                old_rate=round(change.old_rate, 2),
                new_rate=round(change.new_rate, 2),
                reason=change.reason,
            )

        c = self._config
        return AdaptiveRate(self._rate, c.rate.burst, adaptive=c.rate.adaptive, on_change=changed)

    def _breaker(self, key: LaneKey) -> Breaker:
        log, fields = self._log, self._fields(key)

        def changed(old: BreakerState, new: BreakerState) -> None:
            probing = BreakerState.HALF_OPEN
            if new is probing or (old is probing and new is BreakerState.OPEN):
                return  # a probe going out, or failing: the breaker stays open
            level = log.info if new is BreakerState.CLOSED else log.warning
            level("breaker", **fields, state=str(new), previous=str(old))

        return Breaker(self.breaker, on_change=changed)

    def __repr__(self) -> str:
        return f"<Lanes {[lane_name(key) for key in sorted(self.lanes)]} down={self.down}>"


class _Pool:
    """A reader that routes rows to their lanes, and ``concurrency`` workers that send them."""

    __slots__ = (
        "_failure",
        "_lane_of",
        "_log",
        "_policy",
        "_scheduler",
        "_sender",
        "_sink",
        "_triage",
    )

    def __init__(
        self,
        scheduler: LaneScheduler,
        sender: Sender,
        *,
        lane_of: Callable[[Row], LaneKey],
        triage: _Triage,
        sink: ResultSink,
        policy: StopPolicy,
        log: Any,
    ) -> None:
        self._scheduler = scheduler
        self._sender = sender
        self._lane_of = lane_of  # the plan's (RowPlan.lane_of): one lane per rate domain
        self._triage = triage
        self._sink = sink
        self._policy = policy
        self._log = log
        self._failure: BaseException | None = None

    @property
    def failure(self) -> BaseException | None:
        """An unexpected error that ended the run early (a bug, or the input changed)."""
        return self._failure

    async def run(self, rows: Iterator[Row | Rejected], lanes: _Lanes, config: RunConfig) -> None:
        """Send every row of ``rows``; see the module docstring for how it stops."""
        control, scheduler, sink = self._policy.control, self._scheduler, self._sink
        reader = asyncio.create_task(self._guarded(self._route(rows)))
        workers = [
            asyncio.create_task(self._guarded(self._work(lanes)))
            for _ in range(config.rate.concurrency)
        ]
        # return_exceptions: tasks record their own failures; cancelled ones end quietly.
        everything: asyncio.Future[Any] = asyncio.gather(reader, *workers, return_exceptions=True)
        try:
            stop: asyncio.Future[Any] = asyncio.create_task(control.wait_stop())
            await asyncio.wait({everything, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            scheduler.stop()  # stopping, or done: no row is handed out any more
            if not everything.done():
                hurry: asyncio.Future[Any] = asyncio.create_task(control.wait_hurry())
                await asyncio.wait(
                    {everything, hurry},
                    timeout=config.stop.grace_period,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                hurry.cancel()
        finally:
            # Also reached when the task running the batch is cancelled. Unread rows are
            # recorded first (no await in between, so a second cancel cannot skip them),
            # then each cancelled worker's sender records its row in flight.
            for task in (reader, *workers):
                task.cancel()
            not_started = self._policy.not_started()
            for row in scheduler.drain():
                sink.emit(_unsent(row, Status.NOT_ATTEMPTED, not_started))
            _emit_unsent(rows, self._triage, sink, Status.NOT_ATTEMPTED, not_started)
            cancelled_again = False
            while not everything.done():
                try:
                    await asyncio.wait({everything})
                except asyncio.CancelledError:
                    cancelled_again = True
            if cancelled_again:
                raise asyncio.CancelledError

    async def _guarded(self, work: Awaitable[None]) -> None:
        """Run the reader's or a worker's ``work``; an unexpected error stops the run."""
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
            self._policy.abort(StopReason("internal_error", f"{type(exc).__name__}: {exc}"))

    async def _route(self, rows: Iterator[Row | Rejected]) -> None:
        """Read the plan: rows not to send get their result now, the others go to their lane."""
        triage, scheduler, sink, policy = self._triage, self._scheduler, self._sink, self._policy
        lane_of = self._lane_of
        for n, item in enumerate(rows, start=1):
            triaged = triage(item)
            if isinstance(triaged, Row):
                scheduler.push(lane_of(triaged), triaged)
            elif triaged is not None:
                sink.emit(triaged)
            scheduler.passed(item.line)
            if scheduler.stocked:
                await scheduler.wanted()  # every lane has rows enough: until one is short
            elif n % 256 == 0:
                await asyncio.sleep(0)  # let the workers, and signals, in
            else:
                continue
            if policy.stopping:
                break  # the rows left are recorded as not attempted
        scheduler.close()

    async def _work(self, lanes: _Lanes) -> None:
        scheduler, sender, policy = self._scheduler, self._sender, self._policy
        while not policy.stopping and (taken := await scheduler.take()) is not None:
            key, row = taken
            try:
                await sender.send(lanes.get(key), row)  # its result goes to the sink, always
            finally:
                scheduler.release(key)

    def __repr__(self) -> str:
        return f"<Pool {self._scheduler!r} {self._policy!r}>"


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

    def accounts(self, run_id: str, log: Any) -> Accounts:
        """Credentials per account for the run (roles assumed on first use)."""
        c = self._config
        try:
            settings = AssumeRoleSettings.for_run(
                run_id,
                external_id=c.accounts.external_id,
                session_name=c.accounts.role_session_name,
                duration_seconds=c.accounts.role_duration,
            )
        except ValueError as exc:
            raise SetupError(str(exc)) from None
        return Accounts(
            self.session(),
            settings,
            local=c.local,
            request_timeout=c.retries.request_timeout,
            log=log,
        )

    def own_account(self, log: Any) -> Callable[[], str | None]:
        """A function that finds the base credentials' account (one GetCallerIdentity),
        for validation, which is synchronous: it asks from a thread with its own loop."""

        def find() -> str | None:
            region = self._config.region or self.region() or "us-east-1"

            async def ask() -> str:
                accounts = self.accounts("own-account", log)
                try:
                    return await accounts.own_account(region)
                finally:
                    await accounts.aclose()

            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                return pool.submit(asyncio.run, ask()).result()

        return find

    def region(self) -> str | None:
        # botocore reads AWS_DEFAULT_REGION and the profile; AWS_REGION is the newer name.
        # Before the session exists (a dry run), botocore alone finds it: no aioboto3.
        c = self._config
        found = find_region(c.profile) if self._session is None else self._session.region_name
        return str(found or os.environ.get("AWS_REGION") or "") or None


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
    s3 = S3Run(sdk.session, config.output.checkpoint_interval, log)
    try:
        plan = _validate(await s3.open_input(source), config, sdk, control, log)
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
                s3=s3,
            )
    finally:
        await s3.aclose()


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
    s3: S3Run,
) -> RunSummary:
    resume_reports = await s3.local_reports(config.output.resume)
    triage = _Triage(
        ResumeIndex.load(
            resume_reports,
            warn=lambda m: log.warning("resume_warning", message=m),
            within=plan.apps,
        )
    )
    report_path = config.output.report_path or s3.default_report(
        default_report_path(plan.stem, shard=str(config.shard) if config.shard else None)
    )
    writer_path = await s3.open_report(
        report_path, overwrite=config.output.overwrite, default=config.output.report_path is None
    )
    summary = _new_summary(report_path, plan, config, run_id)
    writer = _open_report(
        writer_path,
        plan,
        config,
        run_id,
        [r if isinstance(r, Path) else r.path for r in resume_reports],
    )
    log.info(
        "run_start",
        rows=plan.total,
        input_rows=plan.input_rows,
        invalid=plan.invalid,
        input_invalid=plan.input_invalid,
        **summary.settings,
    )
    lanes = _Lanes(config, _lane_rate(config, plan), log)
    policy = StopPolicy(
        control,
        FailureRules(
            config.stop.max_failure_rate, config.stop.failure_window, config.stop.max_failures
        ),
        breaker=lanes.breaker,
        log=log,
    )
    sink = ResultSink(
        writer, summary, total=plan.total, policy=policy, log=log, on_result=on_result
    )
    progress = _ProgressReporter(sink, on_progress, log, config)
    try:
        await s3.start(writer, sink.output_failed)  # claims an S3 report's object
        if report_path != (claimed := s3.report_location(report_path)):  # -2, -3...
            report_path = summary.report_path = claimed
            summary.settings["report_path"] = str(claimed)
        if config.dry_run and config.accounts.check_access:
            targets: set[tuple[str, str, str]] = set()
            _emit_unsent(_collect_targets(plan, targets), triage, sink, Status.DRY_RUN, "")
            summary.access_checks = await _check_access(targets, sdk, run_id, log)
        elif config.dry_run:
            _emit_outcomes(plan, triage, sink, Status.DRY_RUN, "")
        elif not plan.ok and not config.skip_invalid:
            message = "not sent: the input has invalid rows (fix them, or use --skip-invalid)"
            _emit_outcomes(plan, triage, sink, Status.NOT_ATTEMPTED, message)
        elif policy.stopping:  # nothing sent when the report already failed
            _emit_outcomes(plan, triage, sink, Status.NOT_ATTEMPTED, policy.not_started())
        else:
            await _run_live(
                plan,
                config=config,
                sdk=sdk,
                sleep=sleep,
                triage=triage,
                lanes=lanes,
                sink=sink,
                policy=policy,
                log=log,
            )
    except asyncio.CancelledError:
        policy.abort(StopReason("cancelled", "the task running the batch was cancelled"))
        raise
    except SetupError as exc:
        policy.halt(StopReason("setup_error", str(exc)))
        if sink.progress.requests == 0:
            # Nothing was sent: leave no report behind, so the same command can run again.
            progress.cancel()
            sink.discard()
            await s3.discard()
        raise
    finally:
        if not sink.discarded:
            progress.close()
            await s3.recheck_input()
            summary.input_problem = _input_problem(plan, report_path, log)
            await s3.close_report(writer, summary)
            sink.finish(
                time.perf_counter() - t0,
                lanes_down=lanes.down,
                rates=lanes.rates,
                resume_command=resume_command,
            )
            await s3.upload_summary(summary)
    # The settings are already in run_start and the summary file.
    log.info("run_end", **{k: v for k, v in summary.to_json().items() if k != "settings"})
    return summary


def _input_problem(plan: RowPlan, report_path: Location, log: Any) -> str | None:
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
) -> Location | Iterable[Mapping[str, str | None]]:
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
    if isinstance(source, str | os.PathLike | S3Location):
        return to_location(source)
    if isinstance(source, Mapping):
        raise SetupError("source: got one row (a mapping); pass a list of rows: [row]")
    if isinstance(source, bytes) or not isinstance(source, Iterable):
        raise SetupError(
            f"source: expected a CSV path (str or Path) or an iterable of rows (mappings), "
            f"got {_kind(source)}"
        )
    return _rows_of(source)


def _collect_targets(
    plan: Iterable[Row | Rejected], targets: set[tuple[str, str, str]]
) -> Iterator[Row | Rejected]:
    """``plan``'s rows, noting each valid row's (account, role, region) in ``targets``."""
    for item in plan:
        if isinstance(item, Row):
            targets.add((item.account_id, item.role_arn, item.region))
        yield item


async def _check_access(
    targets: set[tuple[str, str, str]], sdk: _Sdk, run_id: str, log: Any
) -> list[dict[str, Any]]:
    """``--check-access``: get every account's credentials once (no update is sent)."""
    accounts = sdk.accounts(run_id, log)
    try:
        checks = await accounts.check_access(sorted(targets))
    finally:
        await accounts.aclose()
    out = []
    for check in checks:
        entry = {
            "account_id": check.account_id,
            "role_arn": check.role_arn,
            "ok": check.ok,
            "reason": check.reason,
        }
        (log.info if check.ok else log.error)("access_check", **entry)
        out.append(entry)
    return out


def _lane_rate(config: RunConfig, plan: RowPlan) -> float:
    """Each lane's rate: ``--rate``, divided among the shards only when they share lanes
    (fewer lanes than shards), unless ``--rate-per-shard``."""
    return config.effective_rate if plan.rate_divided else config.rate.rate


def _new_summary(
    report_path: Location, plan: RowPlan, config: RunConfig, run_id: str
) -> RunSummary:
    summary = RunSummary(report_path, run_id=run_id, results=[] if config.collect_results else None)
    summary.settings = {
        **config.describe(),
        "effective_rate": _lane_rate(config, plan),
        "input": plan.source_name,
        "report_path": str(report_path),
        "regions": sorted(plan.regions),
    }
    return summary


def _open_report(
    report_path: Path, plan: RowPlan, config: RunConfig, run_id: str, resume: Iterable[Path]
) -> ReportWriter:
    if plan.path is not None and _same_file(plan.path, report_path):
        raise SetupError(f"--report {report_path} is the input file: choose another path")
    # Resuming into the report resumed from: the new report replaces it once it holds
    # every earlier success (see _Triage.carry_forward), so a crash never loses one.
    in_place = any(_same_file(path, report_path) for path in resume)
    return ReportWriter(
        report_path,
        overwrite=config.output.overwrite,
        run_id=run_id,
        replacing=in_place,
        kept_columns=plan.kept_columns,
        dry_run=config.dry_run,
    )


def _validate(
    source: Path | InputCopy | Iterable[Mapping[str, str | None]],
    config: RunConfig,
    sdk: _Sdk,
    control: RunControl,
    log: Any,
) -> RowPlan:
    """The first pass over the input; a signal during it stops it (nothing sent yet)."""
    log.debug("validation_started")  # from here on, a stop request ends validation cleanly
    try:
        plan = RowPlan(
            source,
            config.region or sdk.region,
            shard=config.shard,
            interrupted=lambda: control.stopping,
            keep=config.output.keep_columns,
            allow_unknown_region=config.allow_unknown_region,
            role_template=config.accounts.role_arn_template,
            own_account=EVERY_ACCOUNT if config.local else sdk.own_account(log),
            # Lanes matter to a run that sends, and to a sharded dry run's split of the rows.
            sends=not config.dry_run,
            warn=lambda message: log.warning("own_account_unknown", message=message),
        )
    except ValidationInterrupted as exc:
        reason = control.reason
        exc.signal = reason.signal if reason is not None else None
        raise
    if plan.own_lane:  # why the lanes of rows without an account are named by one
        log.info(
            "own_account_lanes",
            account_id=plan.own_lane,
            message=f"rows without an account_id share the lanes of account {plan.own_lane} "
            "(the caller's own): one rate limit per region",
        )
    return plan


class _ProgressReporter:
    """Gives progress snapshots to the caller's hook and/or ``progress`` log events."""

    __slots__ = ("_log", "_progress", "_sinks", "_ticker")

    def __init__(
        self,
        sink: ResultSink,
        on_progress: Callable[[ProgressSnapshot], None] | None,
        log: Any,
        config: RunConfig,
    ) -> None:
        self._progress, self._log = sink.progress, log
        self._sinks = [on_progress] if on_progress is not None else []
        if config.progress_log:
            self._sinks.append(lambda snap: log.info("progress", **snap.as_event()))
        self._ticker = (
            asyncio.create_task(tick(self._progress, self.report, config.progress_interval))
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
            self.report(self._progress.snapshot())


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


async def _run_live(
    plan: RowPlan,
    *,
    config: RunConfig,
    sdk: _Sdk,
    sleep: Sleep,
    triage: _Triage,
    lanes: _Lanes,
    sink: ResultSink,
    policy: StopPolicy,
    log: Any,
) -> None:
    rows = iter(plan)
    async with contextlib.AsyncExitStack() as stack:
        endpoint_url = config.endpoint_url
        try:
            if config.local:
                from .emulator import (  # noqa: PLC0415 - only for --local
                    EmulatorConfig,
                    EmulatorServer,
                )

                # No record per request: a --local run of millions of rows stays flat.
                local = EmulatorServer(EmulatorConfig(keep_records=False))
                server = await stack.enter_async_context(local)
                endpoint_url = server.url
            clients = await stack.enter_async_context(
                Clients(
                    sdk.session(),
                    endpoint_url=endpoint_url,
                    max_pool_connections=config.rate.concurrency,
                    request_timeout=config.retries.request_timeout,
                    accounts=sdk.accounts(sink.summary.run_id, log),
                    paced=config.rate.rate > 0,
                )
            )
            if plan.regions:
                await clients.check_credentials()
                await clients.open(plan.regions)
        except SetupError:
            raise  # nothing was sent: run_batch leaves no report behind
        except BaseException:
            # Stopped or broken before any call: the report still lists every row.
            _emit_unsent(rows, triage, sink, Status.NOT_ATTEMPTED, "not started: setup failed")
            raise
        if len(triage.resume) > 0:
            triage.carry_forward(plan, sink, policy)
        sender = Sender(
            clients,
            lanes.lanes,
            Retrier(
                RetryPolicy(
                    config.retries.max_attempts,
                    config.retries.backoff_base,
                    config.retries.backoff_cap,
                ),
                sleep=sleep,
            ),
            sink=sink,
            policy=policy,
            log=log,
        )
        # Each worker takes its next row from the lane that can send soonest.
        scheduler = LaneScheduler(
            (),
            lambda key: lanes.get(key).limiter.due(),
            config.rate.concurrency,
            memory_rows=max(64, 2 * config.rate.concurrency),
            last_lines=plan.last_lines,
        )
        pool = _Pool(
            scheduler,
            sender,
            lane_of=plan.lane_of,
            triage=triage,
            sink=sink,
            policy=policy,
            log=log,
        )
        with sink.batched(asyncio.get_running_loop().call_soon):
            await pool.run(rows, lanes, config)
        if pool.failure is not None:
            raise pool.failure


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
    calls get ``config.stop.grace_period`` seconds), the second stops at once.

    The handlers are plain ``signal`` handlers, not the loop's: they set the stop flag at
    once, so even synchronous work (validation, a dry run's report) sees it.
    """
    control = RunControl()
    previous: dict[signal.Signals, Any] = {}

    def handler(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        control.stop(StopReason("signal", f"received {name}", signum))

    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread: no handlers
            previous[signum] = signal.signal(signum, handler)
    try:
        return await run_batch(source, config, control=control, **kwargs)
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
