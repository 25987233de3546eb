"""The per-row report (CSV or JSON lines), written and flushed as each row finishes."""

from __future__ import annotations

import contextlib
import csv
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

from .errors import SetupError
from .results import RowResult, RunSummary, Status

__all__ = ["REPORT_COLUMNS", "ReportWriter", "default_report_path", "write_summary"]

REPORT_COLUMNS: Final = (
    "line",
    "app_id",
    "region",
    "status",
    "attempts",
    "error_code",
    "http_status",
    "error_message",
    "request_id",
    "backend_manager_app_id",
    "settings_digest",
    "started_at",
    "finished_at",
    "duration_ms",
    "run_id",
)


# A spreadsheet runs a cell starting with one of these as a formula; error messages come
# from the network, so the CSV report defuses them with a leading apostrophe (OWASP).
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


# Flushed at once: outcomes of calls, and rows an earlier report saw succeed (a resumed
# run's report must stand alone even after kill -9).
_DURABLE: Final = frozenset({Status.SUCCEEDED, Status.FAILED, Status.SKIPPED})


def neutralize(value: object) -> object:
    """Defuse a string cell a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def default_report_path(
    input_name: str, now: datetime | None = None, *, shard: str | None = None
) -> Path:
    """``reports/<input stem>-<UTC yyyymmddThhmmssZ>.csv`` (``-2``, ``-3``... if taken);
    a shard's name ends in ``-shard-K-of-N``."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = f"{Path(input_name).stem}-{stamp}"
    if shard:
        index, count = shard.split("/")
        base += f"-shard-{index}-of-{count}"
    path = Path("reports") / f"{base}.csv"
    n = 1
    while path.exists():
        n += 1
        path = Path("reports") / f"{base}-{n}.csv"
    return path


def summary_path(report: Path) -> Path:
    """Where the summary of ``report`` goes: ``<report>.summary.json``."""
    return report.with_name(report.name + ".summary.json")


def _record(result: RowResult, run_id: str, kept_columns: tuple[str, ...]) -> dict[str, Any]:
    record = {
        "line": result.line,
        "app_id": result.app_id,
        "region": result.region,
        "status": str(result.status),
        "attempts": result.attempts,
        "error_code": result.error_code,
        "http_status": result.http_status,
        "error_message": result.error_message,
        "request_id": result.request_id,
        "backend_manager_app_id": result.backend_manager_app_id,
        "settings_digest": result.settings_digest,
        "started_at": _iso(result.started_at),
        "finished_at": _iso(result.finished_at),
        "duration_ms": result.duration_ms,
        "run_id": run_id,
    }
    if kept_columns:
        record.update(zip(kept_columns, result.kept, strict=True))
    return record


def _open_report(path: Path, mode: str) -> IO[str]:
    """Open the report file (a seam: tests hand in a file whose disk fills up)."""
    return path.open(mode, encoding="utf-8", newline="")


def _cannot_write(what: str, path: Path, exc: OSError) -> str:
    """The one-line message of a failed write: ``cannot write the report x.csv: ...``."""
    return f"cannot write the {what} {path}: {exc.strerror or exc}"


class ReportWriter:
    """Writes one record per row; ``.jsonl`` paths get JSON lines, anything else CSV.

    Each record is flushed to the operating system as soon as it is written, so a crash
    of this process loses at most the rows still in flight.

    ``replacing=True`` (a run resuming from the report it writes): records go to
    ``<path>.resuming`` until :meth:`commit` (or :meth:`close`) puts that file in the old
    report's place, atomically; until then the old report stays whole.

    A write that fails once opened (disk full, I/O error) does not raise: ``error`` gets
    the one-line message, the file is closed, later records are dropped, and ``saved``
    tells how many records reached the file before the failure.
    """

    __slots__ = (
        "_csv",
        "_file",
        "_jsonl",
        "_staged",
        "discarded",
        "error",
        "kept_columns",
        "path",
        "run_id",
        "saved",
        "written",
    )

    def __init__(
        self,
        path: Path,
        *,
        overwrite: bool = False,
        run_id: str = "",
        replacing: bool = False,
        kept_columns: tuple[str, ...] = (),
    ) -> None:
        self.path = path
        self.kept_columns = kept_columns  # the input's extra columns, after REPORT_COLUMNS
        self._jsonl = path.suffix.lower() == ".jsonl"
        self._staged = path.with_name(path.name + ".resuming") if replacing else None
        self.discarded = False
        self.written = 0  # records handed to the file
        self.saved = 0  # records known to have reached the file (at the last good flush)
        self.error: str | None = None
        self.run_id = run_id
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            target, mode = (
                (self._staged, "w") if self._staged else (path, "w" if overwrite else "x")
            )
            self._file: IO[str] = _open_report(target, mode)
        except FileExistsError:
            raise SetupError(
                f"the report {path} already exists: choose another --report, "
                "or pass --overwrite to replace it"
            ) from None
        except OSError as exc:
            raise SetupError(_cannot_write("report", path, exc)) from None
        self._csv = None if self._jsonl else csv.writer(self._file, lineterminator="\n")
        if self._csv is not None:
            try:
                self._csv.writerow((*REPORT_COLUMNS, *kept_columns))
                self._file.flush()
            except OSError as exc:
                self._fail(exc)

    def write(self, result: RowResult) -> None:
        """Append one row's record; flush it when it records a call's outcome or a skip.

        Records of rows that were not sent (invalid, not attempted, dry run) are recomputed
        identically by a rerun, so they ride along with the next flush instead of costing a
        system call each.
        """
        if self.error is not None:
            return
        try:
            self._write(result)
        except OSError as exc:
            self._fail(exc)

    def _write(self, result: RowResult) -> None:
        if self._csv is not None:
            r = result
            text: tuple[str, ...] = (
                r.app_id,
                r.region,
                r.error_code,
                r.error_message,
                r.request_id,
            )
            if any(v.startswith(_FORMULA_START) for v in text):
                text = tuple(str(neutralize(v)) for v in text)
            app_id, region, error_code, error_message, request_id = text
            kept = tuple(map(neutralize, r.kept)) if self.kept_columns else ()
            self._csv.writerow(
                (
                    r.line,
                    app_id,
                    region,
                    r.status.value,
                    r.attempts,
                    error_code,
                    "" if r.http_status is None else r.http_status,
                    error_message,
                    request_id,
                    neutralize(r.backend_manager_app_id),
                    r.settings_digest,
                    _iso(r.started_at) or "",
                    _iso(r.finished_at) or "",
                    "" if r.duration_ms is None else r.duration_ms,
                    self.run_id,
                    *kept,
                )
            )
        else:
            record = _record(result, self.run_id, self.kept_columns)
            self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.written += 1
        if result.status in _DURABLE:
            self._file.flush()
            self.saved = self.written

    def flush(self) -> None:
        """Hand every record written so far to the file (an S3 checkpoint reads it); a
        failure sets ``error``."""
        if self.error is None and not self._file.closed:
            try:
                self._file.flush()
            except OSError as exc:
                self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        self.error = _cannot_write("report", self.path, exc)
        with contextlib.suppress(OSError):  # closing flushes again, and fails again
            self._file.close()

    def commit(self) -> None:
        """With ``replacing``: sync the records so far and put them in the old report's
        place (its stale summary is removed first). Writing goes on into the same file.
        A failure sets ``error`` (the old report stays whole)."""
        if self._staged is None or self.error is not None:
            return
        try:
            self._sync()
            summary_path(self.path).unlink(missing_ok=True)
            self._staged.replace(self.path)
        except OSError as exc:
            self._fail(exc)
            return
        self._staged = None
        self.saved = self.written

    def close(self) -> None:
        """Flush to disk and close (and :meth:`commit`); a failure sets ``error`` instead
        of raising."""
        if self._file.closed:
            return
        try:
            if self._staged is not None:
                self.commit()
            else:
                self._sync()
            self._file.close()
        except OSError as exc:
            self._fail(exc)
        if self.error is None:
            self.saved = self.written

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def discard(self) -> None:
        """Close and remove what was written: the run never started."""
        self.discarded = True
        if not self._file.closed:
            self._file.close()
        Path(self._file.name).unlink(missing_ok=True)

    def __enter__(self) -> ReportWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "jsonl" if self._jsonl else "csv"
        state = f" error={self.error!r}" if self.error else ""
        return (
            f"<ReportWriter {kind} {str(self.path)!r} written={self.written} "
            f"saved={self.saved}{state}>"
        )


def write_summary(summary: RunSummary) -> str | None:
    """Write ``<report>.summary.json`` atomically; the one-line error if that failed.

    On failure no ``.tmp`` file is left behind, and ``summary.output_error`` is set (when
    no earlier output failed) before returning.
    """
    if not isinstance(summary.report_path, Path):
        return None  # no report, or one on S3: s3.S3Report uploads its summary
    path = summary_path(summary.report_path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(summary.to_json(), indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        message = _cannot_write("summary", path, exc)
        if summary.output_error is None:
            summary.output_error = message
        return message
    return None
