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


def _record(result: RowResult, run_id: str) -> dict[str, Any]:
    return {
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


class ReportWriter:
    """Writes one record per row; ``.jsonl`` paths get JSON lines, anything else CSV.

    Each record is flushed to the operating system as soon as it is written, so a crash
    of this process loses at most the rows still in flight.

    ``replacing=True`` (a run resuming from the report it writes): records go to
    ``<path>.resuming`` until :meth:`commit` (or :meth:`close`) puts that file in the old
    report's place, atomically; until then the old report stays whole.
    """

    __slots__ = ("_csv", "_file", "_jsonl", "_staged", "discarded", "path", "run_id", "written")

    def __init__(
        self, path: Path, *, overwrite: bool = False, run_id: str = "", replacing: bool = False
    ) -> None:
        self.path = path
        self._jsonl = path.suffix.lower() == ".jsonl"
        self._staged = path.with_name(path.name + ".resuming") if replacing else None
        self.discarded = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            target, mode = (
                (self._staged, "w") if self._staged else (path, "w" if overwrite else "x")
            )
            self._file: IO[str] = target.open(mode, encoding="utf-8", newline="")
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
            self._csv.writerow(REPORT_COLUMNS)
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
                )
            )
        else:
            self._file.write(json.dumps(_record(result, self.run_id), ensure_ascii=False) + "\n")
        if result.status in _DURABLE:
            self._file.flush()
        self.written += 1

    def commit(self) -> None:
        """With ``replacing``: sync the records so far and put them in the old report's
        place (its stale summary is removed first). Writing goes on into the same file."""
        if self._staged is None:
            return
        self._sync()
        summary_path(self.path).unlink(missing_ok=True)
        self._staged.replace(self.path)
        self._staged = None

    def close(self) -> None:
        """Flush to disk and close (and :meth:`commit`)."""
        if self._file.closed:
            return
        if self._staged is not None:
            self.commit()
        else:
            self._sync()
        self._file.close()

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
