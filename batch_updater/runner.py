"""The job: validate every row, then update the valid ones with a pool of async workers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .client import CallError, CallResult, Clients, make_session
from .errors import SetupError
from .limiter import RateLimiter
from .logs import default_logger, mask
from .report import ReportWriter, default_report_path, write_summary
from .results import RowResult, RunSummary, Status
from .retry import Retrier, RetryEvent, RetryPolicy
from .rows import Rejected, Row, RowPlan, check_region

__all__ = ["RunConfig", "run_batch", "run_batch_sync"]

Source = str | Path | Iterable[Mapping[str, str | None]]
ResultHook = Callable[[RowResult], None]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunConfig:
    """Settings of one run. Every field has the CLI's default; see the README's flag table."""

    report_path: Path | None = None
    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    local: bool = False
    rate: float = 10.0
    burst: int = 1
    concurrency: int = 16
    max_attempts: int = 8
    request_timeout: float = 30.0
    backoff_base: float = 0.5
    backoff_cap: float = 20.0
    dry_run: bool = False
    skip_invalid: bool = False
    collect_results: bool = True

    def __post_init__(self) -> None:
        checks = [
            (self.rate >= 0, f"rate must be 0 (unlimited) or more, got {self.rate}"),
            (self.burst >= 1, f"burst must be at least 1, got {self.burst}"),
            (self.concurrency >= 1, f"concurrency must be at least 1, got {self.concurrency}"),
            (self.max_attempts >= 1, f"max attempts must be at least 1, got {self.max_attempts}"),
            (self.request_timeout > 0, "request timeout must be more than 0 seconds"),
            (self.backoff_base >= 0 and self.backoff_cap >= 0, "backoff must not be negative"),
            (not (self.local and self.endpoint_url), "use either --local or --endpoint-url"),
        ]
        for ok, message in checks:
            if not ok:
                raise SetupError(message)
        if self.region is not None and (why := check_region(self.region)) is not None:
            raise SetupError(f"--region: {why}")

    def describe(self) -> dict[str, Any]:
        """The settings as written to the summary and the run_start log event."""
        out = asdict(self)
        out["report_path"] = str(self.report_path) if self.report_path else None
        del out["collect_results"]
        return out


class _Stats:
    __slots__ = ("requests", "retries", "throttles")

    def __init__(self) -> None:
        self.requests = 0
        self.retries = 0
        self.throttles = 0


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
    )


def _unsent(row: Row, status: Status, message: str) -> RowResult:
    return RowResult(
        row.line,
        row.app_id,
        row.region,
        status,
        error_message=message,
        settings_digest=row.digest,
    )


class _Job:
    """One run's moving parts: the report, counters, clients, limiters and retrier."""

    __slots__ = ("_log", "_on_result", "_stats", "_summary", "_writer", "config")

    def __init__(
        self,
        config: RunConfig,
        writer: ReportWriter,
        summary: RunSummary,
        log: Any,
        on_result: ResultHook | None,
    ) -> None:
        self.config = config
        self._writer = writer
        self._summary = summary
        self._log = log
        self._on_result = on_result
        self._stats = _Stats()

    def emit(self, result: RowResult) -> None:
        self._writer.write(result)
        self._summary.counts[result.status] += 1
        if self._summary.results is not None:
            self._summary.results.append(result)
        if self._on_result is not None:
            self._on_result(result)

    def finish_stats(self) -> None:
        self._summary.requests = self._stats.requests
        self._summary.retries = self._stats.retries
        self._summary.throttles = self._stats.throttles

    async def run_calls(self, plan: RowPlan, clients: Clients, sleep: Sleep) -> None:
        config = self.config
        sender = _Sender(
            clients,
            {r: RateLimiter(config.rate, config.burst) for r in plan.regions},
            Retrier(
                RetryPolicy(config.max_attempts, config.backoff_base, config.backoff_cap),
                sleep=sleep,
            ),
            self._stats,
            self._log,
        )
        queue: asyncio.Queue[Row | None] = asyncio.Queue(maxsize=config.concurrency * 2)
        workers = [
            asyncio.create_task(self._worker(queue, sender)) for _ in range(config.concurrency)
        ]
        try:
            for item in plan:
                if isinstance(item, Rejected):
                    self.emit(_rejected(item))
                else:
                    await queue.put(item)
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()

    async def _worker(self, queue: asyncio.Queue[Row | None], sender: _Sender) -> None:
        while (row := await queue.get()) is not None:
            self.emit(await sender.send(row))


class _Sender:
    """Sends one row: rate limiter, call, retries; turns the outcome into a RowResult."""

    __slots__ = ("_clients", "_limiters", "_log", "_retrier", "_stats")

    def __init__(
        self,
        clients: Clients,
        limiters: dict[str, RateLimiter],
        retrier: Retrier,
        stats: _Stats,
        log: Any,
    ) -> None:
        self._clients = clients
        self._limiters = limiters
        self._retrier = retrier
        self._stats = stats
        self._log = log

    async def send(self, row: Row) -> RowResult:
        clients, limiter, stats, log = (
            self._clients,
            self._limiters[row.region],
            self._stats,
            self._log,
        )
        attempts = 0

        async def attempt(number: int) -> CallResult:
            nonlocal attempts
            attempts = number
            await limiter.acquire()
            stats.requests += 1
            try:
                return await clients.update(row)
            except CallError as exc:
                if exc.throttled:
                    stats.throttles += 1
                raise

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

        started_at = _now()
        t0 = time.perf_counter()
        try:
            result = await self._retrier.call(
                attempt,
                retry_on=lambda e: isinstance(e, CallError) and e.retryable,
                on_retry=on_retry,
            )
        except CallError as exc:
            log.warning(
                "row_failed",
                app_id=row.app_id,
                line=row.line,
                region=row.region,
                attempts=attempts,
                error_code=exc.code,
                http_status=exc.http_status,
                error_message=exc.message,
            )
            return RowResult(
                row.line,
                row.app_id,
                row.region,
                Status.FAILED,
                attempts=attempts,
                error_code=exc.code,
                http_status=exc.http_status,
                error_message=exc.message,
                request_id=exc.request_id,
                settings_digest=row.digest,
                started_at=started_at,
                finished_at=_now(),
                duration_ms=round((time.perf_counter() - t0) * 1000),
            )
        except Exception as exc:  # a bug must not lose the row: report it and go on
            log.exception("row_error", app_id=row.app_id, line=row.line)
            return RowResult(
                row.line,
                row.app_id,
                row.region,
                Status.FAILED,
                attempts=attempts,
                error_code="InternalError",
                error_message=f"{type(exc).__name__}: {exc}",
                settings_digest=row.digest,
                started_at=started_at,
                finished_at=_now(),
                duration_ms=round((time.perf_counter() - t0) * 1000),
            )
        web_client_id = row.settings.web_client_id
        log.debug(
            "row_succeeded",
            app_id=row.app_id,
            line=row.line,
            attempts=attempts,
            web_client_id=mask(web_client_id) if web_client_id else None,
        )
        return RowResult(
            row.line,
            row.app_id,
            row.region,
            Status.SUCCEEDED,
            attempts=attempts,
            http_status=result.http_status,
            request_id=result.request_id,
            backend_manager_app_id=result.backend_manager_app_id,
            settings_digest=row.digest,
            started_at=started_at,
            finished_at=_now(),
            duration_ms=round((time.perf_counter() - t0) * 1000),
        )


async def run_batch(
    source: Source,
    config: RunConfig | None = None,
    *,
    session: Any = None,
    on_result: ResultHook | None = None,
    logger: Any = None,
    sleep: Sleep = asyncio.sleep,
) -> RunSummary:
    """Validate ``source`` (a CSV path or rows as mappings), update every valid row, report.

    Returns the run's :class:`RunSummary` (with per-row results unless
    ``config.collect_results`` is false). ``session`` is an aioboto3 Session to use instead
    of one from the standard credential chain; ``on_result`` is called with each row's
    result as soon as it is final; ``sleep`` is the backoff sleep (a testing seam).
    Raises :class:`SetupError` before any call when the job cannot start.
    """
    config = config or RunConfig()
    log = logger if logger is not None else default_logger()
    t0 = time.perf_counter()
    if session is None:
        session = make_session(config.profile, config.region, local=config.local)
    default_region = config.region or session.region_name
    if isinstance(source, str):
        source = Path(source)
    plan = RowPlan(source, default_region)
    report_path = config.report_path or default_report_path(plan.path.name if plan.path else "rows")
    summary = RunSummary(report_path, results=[] if config.collect_results else None)
    summary.settings = {
        **config.describe(),
        "input": plan.source_name,
        "report_path": str(report_path),
        "regions": sorted(plan.regions),
    }
    log.info("run_start", rows=plan.total, invalid=plan.invalid, **summary.settings)

    with ReportWriter(report_path) as writer:
        job = _Job(config, writer, summary, log, on_result)
        if config.dry_run:
            for item in plan:
                job.emit(
                    _rejected(item)
                    if isinstance(item, Rejected)
                    else _unsent(item, Status.DRY_RUN, "")
                )
        elif not plan.ok and not config.skip_invalid:
            message = "not sent: the input has invalid rows (fix them, or use --skip-invalid)"
            for item in plan:
                job.emit(
                    _rejected(item)
                    if isinstance(item, Rejected)
                    else _unsent(item, Status.NOT_ATTEMPTED, message)
                )
        else:
            async with contextlib.AsyncExitStack() as stack:
                endpoint_url = config.endpoint_url
                if config.local:
                    from .emulator import EmulatorServer  # noqa: PLC0415 - only for --local

                    server = await stack.enter_async_context(EmulatorServer())
                    endpoint_url = server.url
                clients = await stack.enter_async_context(
                    Clients(
                        session,
                        endpoint_url=endpoint_url,
                        max_pool_connections=config.concurrency,
                        request_timeout=config.request_timeout,
                    )
                )
                if plan.regions:
                    await clients.check_credentials()
                    await clients.open(plan.regions)
                await job.run_calls(plan, clients, sleep)
        job.finish_stats()
    summary.elapsed_seconds = time.perf_counter() - t0
    write_summary(summary)
    log.info("run_end", **summary.to_json())
    return summary


def run_batch_sync(
    source: Source,
    config: RunConfig | None = None,
    *,
    session: Any = None,
    on_result: ResultHook | None = None,
    logger: Any = None,
) -> RunSummary:
    """:func:`run_batch` for scripts: runs it in a new event loop."""
    return asyncio.run(
        run_batch(source, config, session=session, on_result=on_result, logger=logger)
    )
