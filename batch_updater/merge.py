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

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, Final, NamedTuple

from .codec import (
    ACCOUNT_ID,
    APP_ID,
    LINE,
    REGION,
    STATUS,
    RecordEncoder,
    ReportReader,
    is_jsonl,
    read_json,
    summary_location,
    write_json,
)
from .errors import SetupError
from .report import report_location, summary_path
from .results import Status, exit_code, summary_totals
from .rows import read_csv
from .storage import Location

__all__ = ["MergeError", "MergeResult", "merge_reports"]

Warn = Callable[[str], None]
Target = Path | Location  # a report as given: a local path, or a location

_STATUSES: Final = frozenset(s.value for s in Status)
_SHOWN: Final = 5  # lines named in a check's message
_STAGED: Final = ".tmp"  # the merged report is written here, then moved into place


class MergeError(SetupError):
    """The reports cannot be merged: they overlap, miss input lines, or the output exists.

    A :class:`SetupError`, so the CLI prints it on one line and exits 2.
    """


@dataclass(frozen=True, slots=True)
class MergeResult:
    """What :func:`merge_reports` wrote: totals of the merged report and where it is."""

    output: Target
    summary_path: Target
    rows: int
    counts: Mapping[str, int]
    requests: int
    retries: int
    throttles: int
    elapsed_seconds: float
    exit_code: int
    summaries_missing: tuple[Target, ...]
    warnings: tuple[str, ...]


class _Record(NamedTuple):
    line: int
    source: int  # index of the report it came from
    app_id: Any
    region: Any
    status: str
    account: str  # "" when the row names no account
    text: str  # the record's line in the output, REPORT_COLUMNS only
    extras: dict[str, Any] | None  # columns this version does not know, if any


@dataclass(slots=True)
class _ShardTotals:
    requests: int = 0
    retries: int = 0
    throttles: int = 0
    elapsed_seconds: float = 0.0


def merge_reports(
    reports: Sequence[Target],
    output: Target,
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

    given = [Path(p) if isinstance(p, str) else p for p in reports]
    sources = [report_location(p) for p in given]
    output = Path(output) if isinstance(output, str) else output
    target = report_location(output)
    _check_paths(sources, target, overwrite)

    encoder = RecordEncoder(jsonl=is_jsonl(target.name))
    records: list[_Record] = []
    extra_columns: dict[str, None] = {}  # an ordered set
    shard_rows: list[int] = []
    for index, source in enumerate(sources):
        before = len(records)
        _load(
            source, index, encoder=encoder, records=records, extra_columns=extra_columns, warn=note
        )
        shard_rows.append(len(records) - before)
    records.sort(key=lambda r: r.line)
    names = [s.name for s in sources]
    _check_duplicates(records, names)
    if input_path is not None:
        _check_input(records, names, Path(input_path), tuple(extra_columns))

    counts = {s.value: 0 for s in Status}
    by_account: dict[str, dict[str, int]] = {}
    for record in records:
        counts[record.status] += 1
        if record.account:
            tally = by_account.setdefault(record.account, dict.fromkeys(counts, 0))
            tally[record.status] += 1
    code = exit_code(counts)
    totals, shards, missing = _shard_summaries(sources, shard_rows, note)

    columns = tuple(extra_columns)
    _write_report(
        target, RecordEncoder(jsonl=encoder.jsonl, extra_columns=columns), records, overwrite
    )
    summary = {
        **summary_totals(
            report=target.name,
            counts=counts,
            requests=totals.requests,
            retries=totals.retries,
            throttles=totals.throttles,
            elapsed_seconds=totals.elapsed_seconds,
            exit_code=code,
            counts_by_account=by_account,
        ),
        "input": str(input_path) if input_path is not None else None,
        "shards": shards,
        "summaries_missing": [sources[i].name for i in missing],
    }
    summary_file = summary_location(target)
    try:
        write_json(summary_file, summary)
    except OSError as exc:
        raise MergeError(
            f"cannot write the summary {summary_file.name}: {exc.strerror or exc}"
        ) from None
    return MergeResult(
        output=output,
        summary_path=summary_path(output) if isinstance(output, Path) else summary_file,
        rows=len(records),
        counts=counts,
        requests=totals.requests,
        retries=totals.retries,
        throttles=totals.throttles,
        elapsed_seconds=totals.elapsed_seconds,
        exit_code=code,
        summaries_missing=tuple(given[i] for i in missing),
        warnings=tuple(notes),
    )


# -- checks ----------------------------------------------------------------------------


def _exists_message(output: Location) -> str:
    return (
        f"the merged report {output.name} already exists: choose another --output, "
        "or pass --overwrite to replace it"
    )


def _check_paths(sources: list[Location], output: Location, overwrite: bool) -> None:
    """Fail fast, before reading anything: no reports, a report twice, output taken."""
    if not sources:
        raise MergeError("no report to merge: give the report of every shard")
    seen: dict[object, Location] = {}
    for source in sources:
        key = source.key()
        if key in seen:
            raise MergeError(f"the report {source.name} is given twice (also as {seen[key].name})")
        seen[key] = source
    if output.key() in seen:
        raise MergeError(f"the output {output.name} is one of the reports to merge")
    if output.exists() and not overwrite:
        raise MergeError(_exists_message(output))


def _first(values: list[int]) -> str:
    return ", ".join(str(v) for v in values[:_SHOWN])


def _check_duplicates(records: list[_Record], paths: list[str]) -> None:
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
    records: list[_Record], paths: list[str], input_path: Path, kept: tuple[str, ...] = ()
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


def _load(
    source: Location,
    index: int,
    *,
    encoder: RecordEncoder,
    records: list[_Record],
    extra_columns: dict[str, None],
    warn: Warn,
) -> None:
    """Append the records of the report at ``source`` to ``records``."""
    intern = sys.intern
    encode = encoder.encode_values
    for number, (values, extras, _) in enumerate(ReportReader(source, warn), start=1):
        line = values[LINE]
        if isinstance(line, bool) or not isinstance(line, int) or line < 1:
            where = f"{source.name}, record {number}"
            raise MergeError(f"{where}: {_shown(line)} is not an input line number")
        status = values[STATUS]
        if status not in _STATUSES:
            where = f"{source.name}, record {number}"
            raise MergeError(f"{where} (input line {line}): unknown status {_shown(status)}")
        if extras:
            for key in extras:
                extra_columns.setdefault(key)
        region, account = values[REGION], values[ACCOUNT_ID]
        records.append(
            _Record(
                line,
                index,
                values[APP_ID],
                intern(region) if isinstance(region, str) else region,  # few distinct values
                intern(status),
                intern(account) if isinstance(account, str) else "",
                encode(values, None),
                extras or None,
            )
        )


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def _shard_summaries(
    sources: list[Location], shard_rows: list[int], warn: Warn
) -> tuple[_ShardTotals, list[dict[str, Any]], list[int]]:
    """Sum requests, retries and throttles over the shard summaries; the longest elapsed.
    Also: each shard's entry in the merged summary, and which shards have no summary."""
    totals = _ShardTotals()
    shards: list[dict[str, Any]] = []
    missing: list[int] = []
    for index, (source, rows) in enumerate(zip(sources, shard_rows, strict=True)):
        data, problem = _read_summary(summary_location(source))
        if data is None:
            missing.append(index)
            warn(
                f"{source.name}: {problem}; its requests, retries, throttles and time are "
                "not counted"
            )
        else:
            totals.requests += int(data["requests"])
            totals.retries += int(data["retries"])
            totals.throttles += int(data["throttles"])
            totals.elapsed_seconds = max(totals.elapsed_seconds, float(data["elapsed_seconds"]))
            said = data.get("rows")
            if isinstance(said, int) and said != rows:
                warn(
                    f"{source.name}: {rows} record(s), but its summary counts {said} row(s) "
                    "(a report cut short?)"
                )
        shards.append(
            {
                "report": source.name,
                "summary_found": data is not None,
                "rows": rows,
                "run_id": data.get("run_id") if data is not None else None,
            }
        )
    return totals, shards, missing


def _read_summary(location: Location) -> tuple[dict[str, Any] | None, str]:
    """A shard's summary, or None and why it is not usable."""
    try:
        data = read_json(location)
    except FileNotFoundError:
        return None, f"no summary {location.name}"
    except (OSError, ValueError) as exc:
        return None, f"unreadable summary {location.name} ({exc})"
    keys = ("requests", "retries", "throttles", "elapsed_seconds")
    if not isinstance(data, dict) or not all(_number(data.get(k)) for k in keys):
        return None, f"summary {location.name} lacks {', '.join(keys)}"
    return data, ""


# -- writing ---------------------------------------------------------------------------


def _write_report(
    output: Location, encoder: RecordEncoder, records: list[_Record], overwrite: bool
) -> None:
    """Write the merged report beside ``output``, then move it into place; without
    ``overwrite`` never replace a report that appeared meanwhile."""
    try:
        sink = output.create(overwrite=overwrite, staged=_STAGED)
    except OSError as exc:
        raise MergeError(
            f"cannot write the merged report {output.name}: {exc.strerror or exc}"
        ) from None
    try:
        if header := encoder.header():
            sink.write(header)
        write, extend = sink.write, encoder.extend
        for record in records:
            write(extend(record.text, record.extras))
        sink.close()
    except FileExistsError:
        sink.discard()
        raise MergeError(_exists_message(output)) from None
    except OSError as exc:
        sink.discard()
        raise MergeError(
            f"cannot write the merged report {output.name}: {exc.strerror or exc}"
        ) from None
