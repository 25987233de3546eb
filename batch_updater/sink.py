"""Where every row's result goes, exactly once: report, counts, progress, hook, stop rules."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

from .control import StopReason
from .policy import StopPolicy
from .progress import Progress
from .report import ReportWriter, write_summary
from .results import (
    FIRST_INVALID_KEPT,
    RateSource,
    RowResult,
    RunSummary,
    Status,
    Unsent,
    unsent_result,
)
from .s3 import Location

__all__ = ["ResultHook", "ResultSink"]

ResultHook = Callable[[RowResult], None]
ResumeCommand = Callable[[Location | None], str]
#: Records a turn holds for its drain at most; more are written at once (see batched).
HELD_AT_MOST: Final = 1024


class ResultSink:
    """Takes each row's final result: writes it to the report, counts it (summary and
    progress), hands it to the caller's hook and to the stop rules.

    The sender also tells it about each request (:meth:`sent`, :meth:`retried`,
    :meth:`throttled`); :meth:`finish` closes the report and writes the summary.
    """

    __slots__ = ("_defer", "_hook", "_log", "_pending", "_writer", "policy", "progress", "summary")

    def __init__(
        self,
        writer: ReportWriter,
        summary: RunSummary,
        *,
        total: int,
        policy: StopPolicy,
        log: Any,
        on_result: ResultHook | None,
    ) -> None:
        self._writer = writer
        self.summary = summary
        self.progress = Progress(total)
        self.policy = policy
        self._log = log
        self._hook = on_result
        self._defer: Callable[[Callable[[], None]], object] | None = None  # see batched
        self._pending: list[RowResult | Unsent] = []  # records waiting for drain
        if writer.error is not None:  # the report's header could not be written
            self.output_failed(writer.error)

    def emit(self, result: RowResult) -> None:
        """``result`` is final: record it everywhere, then apply the stop rules."""
        writer, summary = self._writer, self.summary
        if self._defer is not None:
            self._hold(result)
        else:
            writer.write(result)
            if writer.error is not None and summary.output_error is None:
                self.output_failed(writer.error)
        self._count(result.status, result.account_id)
        if result.status is Status.INVALID:
            summary.note_invalid(result)
        if summary.results is not None:
            summary.results.append(result)
        if self._hook is not None:
            try:
                self._hook(result)
            except Exception:  # the caller's hook must not cost a row its record
                self._log.exception("on_result_failed", line=result.line, app_id=result.app_id)
        self.policy.record(result)

    def emit_unsent(self, unsent: Unsent) -> None:
        """:meth:`emit` of ``unsent_result(*unsent)``, the final result of a row
        that was not sent, without building it unless a hook, the collected results or
        the summary's first invalid rows take it. A row not sent counts towards no stop
        rule (see :meth:`StopPolicy.record`)."""
        summary, status, account = self.summary, unsent[0], unsent[7]
        if self._hook is not None or summary.results is not None:
            self.emit(unsent_result(*unsent))
            return
        writer = self._writer
        if self._defer is not None:
            self._hold(unsent)
        else:
            writer.write_unsent(unsent)
            if writer.error is not None and summary.output_error is None:
                self.output_failed(writer.error)
        self._count(status, account)
        if status is Status.INVALID and len(summary.first_invalid) < FIRST_INVALID_KEPT:
            summary.note_invalid(unsent_result(*unsent))

    @contextlib.contextmanager
    def batched(self, defer: Callable[[Callable[[], None]], object]) -> Iterator[None]:
        """Within: the records of the rows that end in one turn of the event loop are
        written together, with one flush, by a :meth:`drain` that ``defer`` (the loop's
        ``call_soon``) runs once the turn's callbacks are done; on exit, whatever waits
        is written. Counts, progress, hook and stop rules still take each result at once.
        A turn holds at most :data:`HELD_AT_MOST` records: a stop ends every unread row
        in one turn, and those are written as they come.

        Why: between two requests, the SDK's own code and data barely fit a core's cache;
        formatting and flushing each record between them pushed part of them out (one
        write system call and the report's code per row). A record waits at most for the
        rest of its turn, which never blocks: it reaches the file before the loop next
        waits for the network, as before.
        """
        self._defer = defer
        try:
            yield
        finally:
            self._defer = None
            self.drain()

    def _hold(self, record: RowResult | Unsent) -> None:
        held = len(self._pending)
        if not held:
            assert self._defer is not None, "held only within batched()"
            self._defer(self.drain)
        elif held >= HELD_AT_MOST:
            # A turn that ends a great many rows (a stop: every row not read yet, every
            # row queued for a lane): written as they come, memory stays flat.
            self.drain()
        self._pending.append(record)

    def drain(self) -> None:
        """Write the records that wait for their turn's end (see :meth:`batched`)."""
        if not self._pending:
            return
        records, self._pending = self._pending, []
        writer = self._writer
        try:
            writer.write_all(records)
        except Exception as exc:  # a bug: raised in the loop's callback, only printed
            error = f"cannot write the report {writer.location.name}: {type(exc).__name__}: {exc}"
            self._log.exception("report_write_failed", error=error)
            if self.summary.output_error is None:
                self.output_failed(error)
            return
        if writer.error is not None and self.summary.output_error is None:
            self.output_failed(writer.error)

    def _count(self, status: Status, account: str) -> None:
        """One more final row of ``status`` (of ``account``, when it names one)."""
        summary = self.summary
        summary.counts[status] += 1
        if account:
            by_status = summary.counts_by_account.get(account)
            if by_status is None:
                by_status = summary.counts_by_account[account] = {}
            by_status[status] = by_status.get(status, 0) + 1
        self.progress.record(status)

    def emit_all(self, results: Iterable[RowResult]) -> None:
        for result in results:
            self.emit(result)

    def sent(self) -> None:
        """A request went out."""
        self.progress.requests += 1

    def retried(self) -> None:
        """A row is sent again after a failed attempt."""
        self.progress.retries += 1

    def throttled(self) -> None:
        """The service answered a request with a throttling error."""
        self.progress.throttled += 1

    def output_failed(self, message: str) -> None:
        """The report cannot be written: stop starting rows, as a stop rule does."""
        self.summary.output_error = message
        self.policy.halt(StopReason("output_error", message))

    def commit(self) -> None:
        """Every earlier success is in the new report: it may take the old one's place."""
        self._writer.commit()

    def discard(self) -> None:
        """The run never started: remove the report."""
        self._writer.discard()

    @property
    def discarded(self) -> bool:
        return self._writer.discarded

    def finish(
        self,
        elapsed: float,
        *,
        lanes_down: list[str],
        rates: Mapping[str, RateSource],
        resume_command: ResumeCommand | None,
    ) -> None:
        """Close the report, complete the summary and write it; never raises on a full disk."""
        summary, writer, log, progress = self.summary, self._writer, self._log, self.progress
        summary.requests = progress.requests
        summary.retries = progress.retries
        summary.throttles = progress.throttled
        writer.close()
        if writer.error is not None and summary.output_error is None:  # failed closing
            summary.output_error = writer.error
            log.error("report_write_failed", error=writer.error)
        summary.stop_reason = self.policy.reason
        summary.elapsed_seconds = elapsed
        summary.lanes_down = lanes_down
        summary.rates = rates
        summary.accounts_stopped = dict(sorted(self.policy.accounts_stopped.items()))
        unfinished = summary.counts[Status.NOT_ATTEMPTED] and (
            summary.stop_reason is not None or summary.lanes_down or summary.accounts_stopped
        )
        if resume_command is not None and (writer.error is not None or unfinished):
            summary.resume_command = resume_command(summary.report_path if writer.saved else None)
        if (error := write_summary(summary)) is not None:
            log.error("summary_write_failed", error=error)
        if writer.error is None and writer.written != progress.total:  # pragma: no cover
            log.error("report_incomplete", written=writer.written, rows=progress.total)

    def __repr__(self) -> str:
        return f"<ResultSink {self.progress!r} {self._writer!r}>"
