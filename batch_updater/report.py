"""The per-row report (CSV or JSON lines), written and flushed as each row finishes.

The format is :mod:`codec`'s; where the report lives is a :class:`storage.Location`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Final

from .codec import (
    REPORT_COLUMNS,
    SUMMARY_SUFFIX,
    RecordEncoder,
    is_jsonl,
    neutralize,
    summary_location,
    write_json,
)
from .errors import SetupError
from .results import RowResult, RunSummary, Status, Unsent
from .storage import Location, Sink, location_of, open_text

__all__ = [
    "REPORT_COLUMNS",
    "ReportWriter",
    "default_report_path",
    "neutralize",
    "report_location",
    "summary_path",
    "write_summary",
]

# Flushed at once: outcomes of calls, and rows an earlier report saw succeed (a resumed
# run's report must stand alone even after kill -9).
_DURABLE: Final = frozenset({Status.SUCCEEDED, Status.FAILED, Status.SKIPPED})
_STAGED: Final = ".resuming"  # a report resumed in place waits here until it holds every success


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
    """Where the summary of the local report ``report`` goes: ``<report>.summary.json``."""
    return report.with_name(report.name + SUMMARY_SUFFIX)


def _open_report(path: Path, mode: str) -> IO[str]:
    """Open a local report file (a seam: tests hand in a file whose disk fills up)."""
    return open_text(path, mode)


def _open_local(path: Path, mode: str) -> IO[str]:
    return _open_report(path, mode)  # looked up at each call, so the seam can be replaced


def report_location(target: Path | str | Location) -> Location:
    """The location of a report given as a path, a URL or a location."""
    return location_of(target, _open_local)


def _cannot_write(what: str, name: str, exc: OSError) -> str:
    """The one-line message of a failed write: ``cannot write the report x.csv: ...``."""
    return f"cannot write the {what} {name}: {exc.strerror or exc}"


class ReportWriter:
    """Writes one record per row; ``.jsonl`` reports get JSON lines, anything else CSV.

    Each record is flushed to the operating system as soon as it is written, so a crash
    of this process loses at most the rows still in flight.

    ``replacing=True`` (a run resuming from the report it writes): records are staged
    (locally in ``<path>.resuming``) until :meth:`commit` (or :meth:`close`) puts them in
    the old report's place, atomically; until then the old report stays whole.

    A write that fails once opened (disk full, I/O error) does not raise: ``error`` gets
    the one-line message, the report is closed, later records are dropped, and ``saved``
    tells how many records reached the report before the failure.
    """

    __slots__ = (
        "_closed",
        "_durable",
        "_encoder",
        "_replacing",
        "_sink",
        "_write",
        "_write_unsent",
        "discarded",
        "error",
        "kept_columns",
        "location",
        "path",
        "run_id",
        "saved",
        "written",
    )

    def __init__(
        self,
        path: Path | Location,
        *,
        overwrite: bool = False,
        run_id: str = "",
        replacing: bool = False,
        kept_columns: tuple[str, ...] = (),
        dry_run: bool = False,
    ) -> None:
        self.path = path
        # A dry run sends nothing: a rerun recomputes every record, skips included.
        self._durable = frozenset[Status]() if dry_run else _DURABLE
        self.location = report_location(path)
        self.kept_columns = kept_columns  # the input's extra columns, after REPORT_COLUMNS
        self._replacing = replacing
        self._closed = False
        self.discarded = False
        self.written = 0  # records handed to the report
        self.saved = 0  # records known to have reached it (at the last good flush)
        self.error: str | None = None
        self.run_id = run_id
        try:
            self._sink: Sink = self.location.create(
                overwrite=overwrite or replacing, staged=_STAGED if replacing else None
            )
        except FileExistsError:
            raise SetupError(
                f"the report {self.location.name} already exists: choose another --report, "
                "or pass --overwrite to replace it"
            ) from None
        except OSError as exc:
            raise SetupError(_cannot_write("report", self.location.name, exc)) from None
        self._encoder = RecordEncoder(
            jsonl=is_jsonl(self.location.name),
            run_id=run_id,
            extra_columns=kept_columns,
            out=self._sink,
        )
        self._write = self._encoder.write
        self._write_unsent = self._encoder.write_unsent
        if header := self._encoder.header():
            try:
                self._sink.write(header)
                self._sink.flush()
            except OSError as exc:
                self._fail(exc)

    def write(self, result: RowResult) -> None:
        """Append one row's record; flush it when it records a call's outcome or a skip.

        Records of rows that were not sent (invalid, not attempted, dry run; in a dry run
        skipped rows too) are recomputed identically by a rerun, so they ride along with the
        next flush instead of costing a system call each.
        """
        if self.error is not None:
            return
        try:
            self._write(result)
            self.written += 1
            if result.status in self._durable:
                self._sink.flush()
                self.saved = self.written
        except OSError as exc:
            self._fail(exc)

    def write_unsent(self, unsent: Unsent) -> None:
        """:meth:`write` of ``unsent_result(*unsent)``, the result of a row that was not
        sent, without building it when the encoder needs not (see
        :meth:`RecordEncoder.write_unsent`)."""
        if self.error is not None:
            return
        try:
            self._write_unsent(unsent)
            self.written += 1
            if unsent[0] in self._durable:
                self._sink.flush()
                self.saved = self.written
        except OSError as exc:
            self._fail(exc)

    def write_all(self, records: Iterable[RowResult | Unsent]) -> None:
        """:meth:`write` (a :class:`RowResult`) or :meth:`write_unsent` (an :data:`Unsent`)
        of each of ``records`` in order, with one flush at the end when any of them needs
        one: the records of the rows that ended in one turn of the event loop, one system
        call (see :meth:`ResultSink.batched`)."""
        if self.error is not None:
            return
        write, write_unsent, durable = self._write, self._write_unsent, self._durable
        flush = False
        try:
            for record in records:
                if isinstance(record, RowResult):
                    write(record)
                    flush = flush or record.status in durable
                else:
                    write_unsent(record)
                    flush = flush or record[0] in durable
                self.written += 1
            if flush:
                self._sink.flush()
                self.saved = self.written
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        self.error = _cannot_write("report", self.location.name, exc)
        self._closed = True
        with contextlib.suppress(OSError):  # closing may fail again
            self._sink.close(publish=False)

    def checkpoint(self) -> None:
        """Make the records so far durable where the report lives (a replacing report:
        where it waits); a failure sets ``error``."""
        if self.error is not None or self._closed:
            return
        try:
            self._sink.checkpoint()
        except OSError as exc:
            self._fail(exc)
            return
        self.saved = self.written

    def commit(self) -> None:
        """With ``replacing``: make the records so far durable and put them in the old
        report's place (its stale summary is removed first). Writing goes on into the same
        report. A failure sets ``error`` (the old report stays whole)."""
        if not self._replacing or self.error is not None:
            return
        try:
            summary_location(self.location).remove()
            self._sink.commit()
        except OSError as exc:
            self._fail(exc)
            return
        self._replacing = False
        self.saved = self.written

    def close(self) -> None:
        """Make everything durable and close (and :meth:`commit`); a failure sets
        ``error`` instead of raising."""
        if self._closed:
            return
        if self._replacing:
            self.commit()
            if self.error is not None:
                return
        try:
            self._sink.close()
        except OSError as exc:
            self._fail(exc)
        self._closed = True
        if self.error is None:
            self.saved = self.written

    def discard(self) -> None:
        """Close and remove what was written: the run never started."""
        self.discarded = True
        self._closed = True
        self._sink.discard()

    def __enter__(self) -> ReportWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "jsonl" if self._encoder.jsonl else "csv"
        state = f" error={self.error!r}" if self.error else ""
        return (
            f"<ReportWriter {kind} {self.location.name!r} written={self.written} "
            f"saved={self.saved}{state}>"
        )


def write_summary(summary: RunSummary) -> str | None:
    """Write ``<report>.summary.json`` atomically; the one-line error if that failed.

    On failure nothing half-written is left behind, and ``summary.output_error`` is set
    (when no earlier output failed) before returning.
    """
    if not isinstance(summary.report_path, Path):
        return None  # no report, or one on S3: s3.S3Report uploads its summary
    location = summary_location(report_location(summary.report_path))
    try:
        write_json(location, summary.to_json())
    except OSError as exc:
        message = _cannot_write("summary", location.name, exc)
        if summary.output_error is None:
            summary.output_error = message
        return message
    return None
