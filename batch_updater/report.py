"""The per-row report (CSV or JSON lines), written and flushed as each row finishes."""

from __future__ import annotations

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


class ReportWriter:
    """Writes one record per row; ``.jsonl`` paths get JSON lines, anything else CSV.

    Each record is flushed to the operating system as soon as it is written, so a crash
    of this process loses at most the rows still in flight.
    """

    __slots__ = ("_csv", "_file", "_jsonl", "kept_columns", "path", "run_id", "written")

    def __init__(
        self,
        path: Path,
        *,
        overwrite: bool = False,
        run_id: str = "",
        kept_columns: tuple[str, ...] = (),
    ) -> None:
        self.path = path
        self.kept_columns = kept_columns  # the input's extra columns, after REPORT_COLUMNS
        self._jsonl = path.suffix.lower() == ".jsonl"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file: IO[str] = path.open("w" if overwrite else "x", encoding="utf-8", newline="")
        except FileExistsError:
            raise SetupError(
                f"the report {path} already exists: choose another --report, "
                "or pass --overwrite to replace it"
            ) from None
        except OSError as exc:
            raise SetupError(f"cannot write the report {path}: {exc.strerror or exc}") from None
        self.written = 0
        self.run_id = run_id
        self._csv = None if self._jsonl else csv.writer(self._file, lineterminator="\n")
        if self._csv is not None:
            self._csv.writerow((*REPORT_COLUMNS, *kept_columns))
            self._file.flush()

    def write(self, result: RowResult) -> None:
        """Append one row's record; flush it when it records a call's outcome or a skip.

        Records of rows that were not sent (invalid, not attempted, dry run) are recomputed
        identically by a rerun, so they ride along with the next flush instead of costing a
        system call each.
        """
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
        if result.status in _DURABLE:
            self._file.flush()
        self.written += 1

    def close(self) -> None:
        """Flush to disk and close."""
        if self._file.closed:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def __enter__(self) -> ReportWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "jsonl" if self._jsonl else "csv"
        return f"<ReportWriter {kind} {str(self.path)!r} written={self.written}>"


def write_summary(summary: RunSummary) -> Path | None:
    """Write ``<report>.summary.json`` atomically; returns its path."""
    if summary.report_path is None:
        return None
    path = summary_path(summary.report_path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(summary.to_json(), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
