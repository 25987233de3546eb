"""``batch-updater merge``: join the reports of a sharded job into one report and summary.

Each shard of a job (``--shard K/N``) writes its own report, one record per row of that
shard, and ``<report>.summary.json``. :func:`merge_reports` reads them all (CSV or JSON
lines, torn last lines ignored with a warning), checks that no input line is reported twice
(and, given the input, that every input line is reported exactly once), and writes one
report sorted by ``line`` plus its summary, in the tool's own formats.

Records are held in memory, already serialized, until they are sorted: plan on about
400 bytes per row for a CSV output, 700 for JSONL.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, Final, NamedTuple

from .errors import InputError, SetupError
from .report import REPORT_COLUMNS, neutralize, summary_path
from .results import Status, rows_per_second
from .resume import read_report
from .rows import read_csv

__all__ = ["MergeError", "MergeResult", "merge_reports"]

Warn = Callable[[str], None]

# Statuses that leave the exit code at 0, as in RunSummary.exit_code.
_OK: Final = frozenset({Status.SUCCEEDED.value, Status.SKIPPED.value, Status.DRY_RUN.value})
_STATUSES: Final = frozenset(s.value for s in Status)
_KNOWN: Final = frozenset(REPORT_COLUMNS)
# Typed cells: a CSV report writes them as text, a JSONL report as numbers or null.
_INT_COLUMNS: Final = frozenset({"line", "attempts", "http_status", "duration_ms"})
_EMPTY_IS_NULL: Final = _INT_COLUMNS | {"started_at", "finished_at"}
_INTEGER: Final = re.compile(r"-?[0-9]+", re.ASCII)
_LINE: Final = REPORT_COLUMNS.index("line")
_APP_ID: Final = REPORT_COLUMNS.index("app_id")
_REGION: Final = REPORT_COLUMNS.index("region")
_STATUS: Final = REPORT_COLUMNS.index("status")
_SHOWN: Final = 5  # lines named in a check's message
_MAX_HEADER_BYTES: Final = 1 << 16


class MergeError(SetupError):
    """The reports cannot be merged: they overlap, miss input lines, or the output exists.

    A :class:`SetupError`, so the CLI prints it on one line and exits 2.
    """


@dataclass(frozen=True, slots=True)
class MergeResult:
    """What :func:`merge_reports` wrote: totals of the merged report and where it is."""

    output: Path
    summary_path: Path
    rows: int
    counts: Mapping[str, int]
    requests: int
    retries: int
    throttles: int
    elapsed_seconds: float
    exit_code: int
    summaries_missing: tuple[Path, ...]
    warnings: tuple[str, ...]


class _Record(NamedTuple):
    line: int
    source: int  # index of the report it came from
    app_id: Any
    region: Any
    status: str
    text: str  # the record as written to the output, REPORT_COLUMNS only, no line end
    extras: dict[str, Any] | None  # columns this version does not know, if any


class _Format:
    """Serializes records for the output: CSV with defused cells, or JSON lines."""

    __slots__ = ("_buffer", "_writer", "jsonl")

    def __init__(self, output: Path) -> None:
        self.jsonl = output.suffix.lower() == ".jsonl"
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="")

    def _csv(self, cells: Sequence[Any]) -> str:
        buffer = self._buffer
        buffer.seek(0)
        buffer.truncate()
        self._writer.writerow([_csv_value(v) for v in cells])
        return buffer.getvalue()

    def header(self, columns: Sequence[str]) -> str:
        """The report's first line: the CSV header; nothing for JSON lines."""
        return "" if self.jsonl else self._csv(columns) + "\n"

    def record(self, values: Sequence[Any]) -> str:
        """One record's REPORT_COLUMNS values, serialized without line end."""
        if self.jsonl:
            return json.dumps(dict(zip(REPORT_COLUMNS, values, strict=True)), ensure_ascii=False)
        return self._csv(values)

    def line(self, record: _Record, extra_columns: Sequence[str]) -> str:
        """The output line of ``record``, with the columns this version does not know."""
        if not extra_columns:
            return record.text + "\n"
        extras = record.extras or {}
        if self.jsonl:
            tail = json.dumps({c: extras.get(c) for c in extra_columns}, ensure_ascii=False)
            return f"{record.text[:-1]}, {tail[1:]}\n"
        return f"{record.text},{self._csv([extras.get(c) for c in extra_columns])}\n"


@dataclass(slots=True)
class _ShardTotals:
    requests: int = 0
    retries: int = 0
    throttles: int = 0
    elapsed_seconds: float = 0.0


def merge_reports(
    reports: Sequence[Path],
    output: Path,
    *,
    input_path: Path | None = None,
    overwrite: bool = False,
    warn: Warn | None = None,
) -> MergeResult:
    """Merge shard ``reports`` into ``output`` (JSONL if it ends in ``.jsonl``, else CSV).

    Writes ``output`` sorted by ``line`` and ``<output>.summary.json``; returns their totals.
    ``warn(message)`` hears about torn last lines and missing shard summaries (also kept in
    :attr:`MergeResult.warnings`). Raises :class:`MergeError` when a line is reported twice,
    when ``input_path`` is given and its data lines and the reported lines differ, or when
    ``output`` exists and ``overwrite`` is false; :class:`InputError` for an unreadable
    report or input. All checks are made before anything is written.
    """
    notes: list[str] = []

    def note(message: str) -> None:
        notes.append(message)
        if warn is not None:
            warn(message)

    paths = [Path(p) for p in reports]
    output = Path(output)
    _check_paths(paths, output, overwrite)

    form = _Format(output)
    records: list[_Record] = []
    extra_columns: dict[str, None] = {}  # an ordered set
    shard_rows: list[int] = []
    for index, path in enumerate(paths):
        before = len(records)
        _load(path, index, form=form, records=records, extra_columns=extra_columns, warn=note)
        shard_rows.append(len(records) - before)
    records.sort(key=lambda r: r.line)
    _check_duplicates(records, paths)
    if input_path is not None:
        _check_input(records, paths, Path(input_path), tuple(extra_columns))

    counts = {s.value: 0 for s in Status}
    for record in records:
        counts[record.status] += 1
    exit_code = 1 if any(n for status, n in counts.items() if status not in _OK) else 0
    totals, shards, missing = _shard_summaries(paths, shard_rows, note)

    _write_report(output, form, records, tuple(extra_columns), overwrite)
    rows = len(records)
    elapsed = totals.elapsed_seconds
    summary = {
        "report": str(output),
        "rows": rows,
        "counts": counts,
        "requests": totals.requests,
        "retries": totals.retries,
        "throttles": totals.throttles,
        "elapsed_seconds": round(elapsed, 3),
        "rows_per_second": round(rows_per_second(counts, elapsed), 2),
        "exit_code": exit_code,
        "input": str(input_path) if input_path is not None else None,
        "shards": shards,
        "summaries_missing": [str(p) for p in missing],
    }
    summary_file = summary_path(output)
    _write_json(summary_file, summary)
    return MergeResult(
        output=output,
        summary_path=summary_file,
        rows=rows,
        counts=counts,
        requests=totals.requests,
        retries=totals.retries,
        throttles=totals.throttles,
        elapsed_seconds=elapsed,
        exit_code=exit_code,
        summaries_missing=tuple(missing),
        warnings=tuple(notes),
    )


# -- checks ----------------------------------------------------------------------------


def _exists_message(output: Path) -> str:
    return (
        f"the merged report {output} already exists: choose another --output, "
        "or pass --overwrite to replace it"
    )


def _check_paths(paths: list[Path], output: Path, overwrite: bool) -> None:
    """Fail fast, before reading anything: no reports, a report twice, output taken."""
    if not paths:
        raise MergeError("no report to merge: give the report of every shard")
    seen: dict[Path, Path] = {}
    for path in paths:
        key = path.resolve()
        if key in seen:
            raise MergeError(f"the report {path} is given twice (also as {seen[key]})")
        seen[key] = path
    if output.resolve() in seen:
        raise MergeError(f"the output {output} is one of the reports to merge")
    if output.exists() and not overwrite:
        raise MergeError(_exists_message(output))


def _first(values: list[int]) -> str:
    return ", ".join(str(v) for v in values[:_SHOWN])


def _check_duplicates(records: list[_Record], paths: list[Path]) -> None:
    """Every line once across all reports (``records`` sorted by line)."""
    first: tuple[_Record, _Record] | None = None
    count = 0
    for before, after in pairwise(records):
        if before.line == after.line:
            count += 1
            first = first or (before, after)
    if first is None:
        return
    a, b = (paths[r.source] for r in first)
    where = f"twice in {a}" if a == b else f"in both {a} and {b}"
    more = f" ({count} repeated records in all)" if count > 1 else ""
    raise MergeError(
        f"line {first[0].line} is reported {where}{more}: each input line must be in "
        "exactly one shard report"
    )


def _shown(value: object, limit: int = 30) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_input(
    records: list[_Record], paths: list[Path], input_path: Path, kept: tuple[str, ...] = ()
) -> None:
    """The reports hold every data line of the input once and no other line; rows that
    were valid name the input's app (and region, when the input gives one)."""
    missing: list[int] = []
    extra: list[int] = []
    other: list[str] = []
    n_missing = n_extra = n_other = 0
    i, n = 0, len(records)
    # The reports' extra columns may be input columns kept with --keep-column.
    for line, cells in read_csv(input_path, kept, require=False):
        while i < n and records[i].line < line:
            n_extra += 1
            if len(extra) < _SHOWN:
                extra.append(records[i].line)
            i += 1
        if i < n and records[i].line == line:
            record = records[i]
            i += 1
            if record.status == Status.INVALID or "__cells__" in cells:
                continue
            app_id = cells.get("app_id", "").strip()
            region = cells.get("region", "").strip()
            got = record.app_id, record.region
            if got[0] != app_id or (region and got[1] != region):
                n_other += 1
                if len(other) < 2:
                    other.append(
                        f"line {line} in {paths[record.source]}: {_shown(got[0])} "
                        f"{_shown(got[1])}, the input has {_shown(app_id)} {_shown(region)}"
                    )
        else:
            n_missing += 1
            if len(missing) < _SHOWN:
                missing.append(line)
    for record in records[i:]:
        n_extra += 1
        if len(extra) < _SHOWN:
            extra.append(record.line)
    problems: list[str] = []
    if n_missing:
        problems.append(
            f"{n_missing} input line(s) in no report (first: {_first(missing)}; "
            "a shard report missing or cut short?)"
        )
    if n_extra:
        problems.append(f"{n_extra} reported line(s) not in the input (first: {_first(extra)})")
    if n_other:
        problems.append(
            f"{n_other} record(s) for another app than the input's ({'; '.join(other)})"
        )
    if problems:
        raise MergeError(f"the reports do not match the input {input_path}: " + "; ".join(problems))


# -- reading ---------------------------------------------------------------------------


def _csv_header(path: Path) -> list[str] | None:
    """The first line of a CSV report, parsed; None when it cannot be read here."""
    try:
        with path.open("rb") as handle:
            first = handle.readline(_MAX_HEADER_BYTES)
        text = first.decode("utf-8").rstrip("\r\n")
        return next(csv.reader([text]), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None  # read_report says what is wrong


def _newer(header: list[str]) -> bool:
    """A newer version's header: REPORT_COLUMNS followed by columns unknown here.

    (:func:`read_report` itself reads older headers, prefixes of REPORT_COLUMNS.)
    """
    known = len(REPORT_COLUMNS)
    return (
        len(header) > known
        and tuple(header[:known]) == REPORT_COLUMNS
        and all(header[known:])
        and len(set(header)) == len(header)
    )


def _read_csv_other_version(path: Path, header: list[str], warn: Warn) -> Iterator[dict[str, Any]]:
    """:func:`read_report` for a CSV report with columns this version does not know."""
    name = str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise InputError(name, None, f"cannot read the report: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(name, None, "not a report: not valid UTF-8") from None
    lines = text.split("\n")
    if lines and lines[-1] != "":
        warn(f"{name}, line {len(lines)}: incomplete last line ignored (torn write)")
        lines = lines[:-1]
    lines = lines[:-1] if lines and lines[-1] == "" else lines
    reader = csv.reader(lines)
    next(reader, None)  # the header, checked by the caller
    for cells in reader:
        if len(cells) != len(header):
            raise InputError(name, reader.line_num, "not a report line: wrong number of cells")
        yield dict(zip(header, cells, strict=True))


def _records(path: Path, warn: Warn) -> tuple[Iterator[dict[str, Any]], bool]:
    """The raw records of a report, and whether they come from CSV (text cells)."""
    if path.suffix.lower() == ".jsonl":
        return read_report(path, warn), False
    header = _csv_header(path)
    if header is not None and _newer(header):
        return _read_csv_other_version(path, header, warn), True
    return read_report(path, warn), True


def _cell(column: str, value: str) -> Any:
    """A CSV cell as the JSONL report types it: numbers as int, empty times as null."""
    if value == "" and column in _EMPTY_IS_NULL:
        return None
    if column in _INT_COLUMNS and _INTEGER.fullmatch(value):
        return int(value)
    return value


def _load(
    path: Path,
    source: int,
    *,
    form: _Format,
    records: list[_Record],
    extra_columns: dict[str, None],
    warn: Warn,
) -> None:
    """Append the records of the report at ``path`` to ``records``."""
    raw_records, from_csv = _records(path, warn)
    intern = sys.intern
    for number, raw in enumerate(raw_records, start=1):
        where = f"{path}, record {number}"
        if from_csv:
            values = tuple(
                _cell(column, raw[column]) if column in raw else None for column in REPORT_COLUMNS
            )
        else:
            values = tuple(raw.get(column) for column in REPORT_COLUMNS)
        line = values[_LINE]
        if isinstance(line, bool) or not isinstance(line, int) or line < 1:
            raise MergeError(f"{where}: {_shown(line)} is not an input line number")
        status = values[_STATUS]
        if status not in _STATUSES:
            raise MergeError(f"{where} (input line {line}): unknown status {_shown(status)}")
        region = values[_REGION]
        extras: dict[str, Any] | None = None
        if not _KNOWN.issuperset(raw):
            extras = {k: v for k, v in raw.items() if k not in _KNOWN}
            for key in extras:
                extra_columns.setdefault(key)
        records.append(
            _Record(
                line,
                source,
                values[_APP_ID],
                intern(region) if isinstance(region, str) else region,  # few distinct values
                intern(status),
                form.record(values),
                extras or None,
            )
        )


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def _shard_summaries(
    paths: list[Path], shard_rows: list[int], warn: Warn
) -> tuple[_ShardTotals, list[dict[str, Any]], list[Path]]:
    """Sum requests, retries and throttles over the shard summaries; the longest elapsed."""
    totals = _ShardTotals()
    shards: list[dict[str, Any]] = []
    missing: list[Path] = []
    for path, rows in zip(paths, shard_rows, strict=True):
        data, problem = _read_summary(summary_path(path))
        if data is None:
            missing.append(path)
            warn(f"{path}: {problem}; its requests, retries, throttles and time are not counted")
        else:
            totals.requests += int(data["requests"])
            totals.retries += int(data["retries"])
            totals.throttles += int(data["throttles"])
            totals.elapsed_seconds = max(totals.elapsed_seconds, float(data["elapsed_seconds"]))
            said = data.get("rows")
            if isinstance(said, int) and said != rows:
                warn(
                    f"{path}: {rows} record(s), but its summary counts {said} row(s) "
                    "(a report cut short?)"
                )
        shards.append(
            {
                "report": str(path),
                "summary_found": data is not None,
                "rows": rows,
                "run_id": data.get("run_id") if data is not None else None,
            }
        )
    return totals, shards, missing


def _read_summary(path: Path) -> tuple[dict[str, Any] | None, str]:
    """A shard's summary, or None and why it is not usable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"no summary {path}"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"unreadable summary {path} ({exc})"
    keys = ("requests", "retries", "throttles", "elapsed_seconds")
    if not isinstance(data, dict) or not all(_number(data.get(k)) for k in keys):
        return None, f"summary {path} lacks {', '.join(keys)}"
    return data, ""


# -- writing ---------------------------------------------------------------------------


def _csv_value(value: Any) -> Any:
    """A cell as the tool writes it: empty for null, formulas defused (idempotent, so
    cells read from a CSV report, already defused, stay as they were)."""
    if value is None:
        return ""
    return neutralize(value)


def _write_report(
    output: Path,
    form: _Format,
    records: list[_Record],
    extra_columns: tuple[str, ...],
    overwrite: bool,
) -> None:
    """Write the merged report next to ``output``, then move it into place."""
    tmp = output.with_name(output.name + ".tmp")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w", encoding="utf-8", newline="") as handle:
            handle.write(form.header(REPORT_COLUMNS + extra_columns))
            line = form.line
            handle.writelines(line(r, extra_columns) for r in records)
            handle.flush()
            os.fsync(handle.fileno())
        _publish(tmp, output, overwrite)
    except OSError as exc:
        raise MergeError(
            f"cannot write the merged report {output}: {exc.strerror or exc}"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _publish(tmp: Path, output: Path, overwrite: bool) -> None:
    """Move ``tmp`` to ``output``; without ``overwrite``, never replace an existing file."""
    if overwrite:
        os.replace(tmp, output)
        return
    try:
        os.link(tmp, output)  # atomic, and fails if output appeared meanwhile
    except FileExistsError:
        raise MergeError(_exists_message(output)) from None
    except OSError:  # no hard links on this file system
        if output.exists():
            raise MergeError(_exists_message(output)) from None
        os.replace(tmp, output)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write a summary atomically, as :func:`report.write_summary` does."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise MergeError(f"cannot write the summary {path}: {exc.strerror or exc}") from None
