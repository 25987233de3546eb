"""What a run produces: one :class:`RowResult` per input row and a :class:`RunSummary`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from .control import StopReason

if TYPE_CHECKING:
    from .s3 import S3Location


class RateSource(Protocol):
    """Anything with a live ``rate`` (requests per second): the per-region limiters."""

    @property
    def rate(self) -> float: ...


__all__ = [
    "FIRST_INVALID_KEPT",
    "RowResult",
    "RunSummary",
    "Status",
    "Unsent",
    "exit_code",
    "summary_totals",
    "unsent_result",
]

FIRST_INVALID_KEPT = 5  # invalid rows a summary lists (the report has them all)


class Status(StrEnum):
    """A row's final status, as written in the report."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INVALID = "invalid"
    SKIPPED = "skipped"
    NOT_ATTEMPTED = "not_attempted"
    DRY_RUN = "dry_run"


#: The rows whose outcome took this run's work: sent (succeeded, failed) or, in a dry run,
#: checked. Rates count only these: skipped, invalid and not attempted rows cost nothing.
PROCESSED: Final = frozenset({Status.SUCCEEDED, Status.FAILED, Status.DRY_RUN})


def rows_per_second(counts: Mapping[str, int], elapsed: float) -> float:
    """Rows processed (see :data:`PROCESSED`) per second of ``elapsed``."""
    processed = sum(counts.get(status, 0) for status in PROCESSED)
    return processed / elapsed if elapsed > 0 else 0.0


#: Statuses that make the exit code 1 (see :func:`exit_code`).
_NOT_DONE: Final = (Status.FAILED, Status.INVALID, Status.NOT_ATTEMPTED)


def exit_code(
    counts: Mapping[str, int],
    *,
    stop_reason: StopReason | None = None,
    output_error: str | None = None,
    input_problem: str | None = None,
    access_denied: bool = False,
) -> int:
    """The exit code of a run (or of merged runs) with these row ``counts`` by status.

    0 when every row succeeded, was skipped or was a dry run and the input had rows and did
    not change during the run; 1 otherwise (also when the report or summary could not be
    written); 2 when setup failed after the report was opened; 128 + the signal number
    when a signal stopped the run (130 SIGINT, 143 SIGTERM).
    """
    if stop_reason is not None and stop_reason.signal is not None:
        return 128 + stop_reason.signal
    if stop_reason is not None and stop_reason.kind == "setup_error":
        return 2
    if output_error is not None or (
        stop_reason is not None and stop_reason.kind == "internal_error"
    ):
        return 1  # the report may be incomplete
    if input_problem is not None:
        return 1  # nothing to do, or rows that may not be the file's rows any more
    if access_denied:
        return 1  # --check-access: some account's credentials cannot be had
    return 1 if any(counts.get(s, 0) for s in _NOT_DONE) else 0


def summary_totals(
    *,
    report: str | None,
    counts: Mapping[str, int],
    requests: int,
    retries: int,
    throttles: int,
    elapsed_seconds: float,
    exit_code: int,
    counts_by_account: Mapping[str, Mapping[str, int]],
) -> dict[str, Any]:
    """The totals every summary file starts with (a run's, and a merge's), in order."""
    return {
        "report": report,
        "rows": sum(counts.values()),
        "counts": {str(k): v for k, v in counts.items()},
        "requests": requests,
        "retries": retries,
        "throttles": throttles,
        "elapsed_seconds": round(elapsed_seconds, 3),
        "rows_per_second": round(rows_per_second(counts, elapsed_seconds), 2),
        "exit_code": exit_code,
        "counts_by_account": {
            account: {str(k): v for k, v in by_status.items()}
            for account, by_status in sorted(counts_by_account.items())
        },
    }


@dataclass(frozen=True, slots=True)
class RowResult:
    """The outcome of one input row; one report record."""

    line: int
    app_id: str
    region: str
    status: Status
    attempts: int = 0
    error_code: str = ""
    http_status: int | None = None
    error_message: str = ""
    request_id: str = ""
    backend_manager_app_id: str = ""
    settings_digest: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    kept: tuple[str, ...] = ()  # the input's kept columns (RunConfig.keep_columns)
    account_id: str = ""  # the row's AWS account, "" when the input names none


#: A row that was not sent, as its report record's cells: what :func:`unsent_result` takes,
#: in its order (status, line, app_id, region, message, digest, kept, account). A plain
#: tuple, so the report path passes one row's cells without building an object per row.
Unsent = tuple["Status", int, str, str, str, str, tuple[str, ...], str]


def unsent_result(  # noqa: PLR0917 (a report record's fields, in column order)
    status: Status,
    line: int,
    app_id: str,
    region: str,
    message: str,
    digest: str,
    kept: tuple[str, ...],
    account: str,
) -> RowResult:
    """The result of a row that was not sent (dry run, invalid, skipped, not attempted):
    no attempt, no call's fields."""
    return RowResult(
        line,
        app_id,
        region,
        status,
        error_message=message,
        settings_digest=digest,
        kept=kept,
        account_id=account,
    )


@dataclass(slots=True)
class RunSummary:
    """Totals of a finished run, written beside the report as ``<report>.summary.json``."""

    report_path: Path | S3Location | None
    run_id: str = ""
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(Status, 0))
    requests: int = 0
    retries: int = 0
    throttles: int = 0
    elapsed_seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    results: list[RowResult] | None = None
    stop_reason: StopReason | None = None
    rates: Mapping[str, RateSource] = field(default_factory=dict)
    resume_command: str | None = None
    input_problem: str | None = None  # the input has no rows, or changed during the run
    first_invalid: list[RowResult] = field(default_factory=list)  # in input order, see note_invalid

    def note_invalid(self, result: RowResult) -> None:
        """Keep ``result`` if it is among the first :data:`FIRST_INVALID_KEPT` invalid rows."""
        if len(self.first_invalid) < FIRST_INVALID_KEPT:
            self.first_invalid.append(result)

    output_error: str | None = None  # the report or summary could not be written
    lanes_down: list[str] = field(default_factory=list)  # rate domains found unreachable
    # {account_id: {status: n}} for rows that name an account; empty when none does
    counts_by_account: dict[str, dict[str, int]] = field(default_factory=dict)
    accounts_stopped: dict[str, str] = field(default_factory=dict)  # account -> why
    access_checks: list[dict[str, Any]] | None = None  # --check-access: one entry an account

    @property
    def rows(self) -> int:
        """Rows in the input."""
        return sum(self.counts.values())

    @property
    def rows_per_second(self) -> float:
        """Rows this run sent (or checked, in a dry run) per second of wall time."""
        return rows_per_second(self.counts, self.elapsed_seconds)

    @property
    def exit_code(self) -> int:
        """See :func:`exit_code`."""
        return exit_code(
            self.counts,
            stop_reason=self.stop_reason,
            output_error=self.output_error,
            input_problem=self.input_problem,
            access_denied=any(not c["ok"] for c in self.access_checks or ()),
        )

    def to_json(self) -> dict[str, Any]:
        """The summary file's content."""
        return {
            "run_id": self.run_id,
            **summary_totals(
                report=str(self.report_path) if self.report_path else None,
                counts=self.counts,
                requests=self.requests,
                retries=self.retries,
                throttles=self.throttles,
                elapsed_seconds=self.elapsed_seconds,
                exit_code=self.exit_code,
                counts_by_account=self.counts_by_account,
            ),
            "rate_per_region": {region: round(r.rate, 2) for region, r in self.rates.items()},
            "stopped": (
                {"reason": self.stop_reason.kind, "message": self.stop_reason.message}
                if self.stop_reason
                else None
            ),
            "resume_command": self.resume_command,
            "input_problem": self.input_problem,
            "first_invalid": [
                {"line": r.line, "error_message": r.error_message} for r in self.first_invalid
            ],
            "output_error": self.output_error,
            "lanes_down": self.lanes_down,
            "accounts_stopped": self.accounts_stopped,
            **({"access_checks": self.access_checks} if self.access_checks is not None else {}),
            "settings": self.settings,
        }
