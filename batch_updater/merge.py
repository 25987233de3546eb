"""``batch-updater merge``: join the reports of a sharded job into one report and summary.

Each shard of a job (``--shard K/N``) writes its own report, one record per row of that
shard, and ``<report>.summary.json``. :func:`merge_reports` reads them all (CSV or JSON
lines, torn last lines ignored with a warning), checks that no input line is reported twice
(and, given the input, that every input line is reported exactly once), and writes one
report sorted by ``line`` plus its summary, in the tool's own formats.

Memory stays bounded whatever the size of the job: records are sorted in runs of at most
``memory_budget`` bytes (:data:`MEMORY_BUDGET` by default) spilled to a temporary file, then
merged (see :mod:`spill`); the checks against the input walk the merged records and the
input side by side. So a merge needs free space in the temporary directory about the size
of the reports. A CSV record already in this version's form is carried as the line read
(no decode and encode per record; see :func:`codec.as_encoded`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any, Final

from .codec import (
    ACCOUNT_ID,
    APP_ID,
    LINE,
    REGION,
    REPORT_COLUMNS,
    STATUS,
    Record,
    RecordEncoder,
    ReportReader,
    as_encoded,
    is_jsonl,
    read_json,
    summary_location,
    write_json,
)
from .errors import InputError, SetupError
from .report import report_location, summary_path
from .results import Status, exit_code, summary_totals
from .rows import read_csv
from .spill import SortedSpill
from .storage import Location, Sink

__all__ = ["MergeError", "MergeResult", "merge_reports"]

Warn = Callable[[str], None]
Target = Path | str | Location  # a report as given: a local path, or a location

_STATUSES: Final = frozenset(s.value for s in Status)
_SHOWN: Final = 5  # lines named in a check's message
_STAGED: Final = ".tmp"  # the merged report is written here, then moved into place
#: Bytes of records a merge holds in memory before it spills a sorted run to disk.
MEMORY_BUDGET: Final = 32 << 20
_HELD: Final = 240  # bytes a held record takes besides its text (tuple, ints, strings)
_HELD_LINE: Final = 150  # the same for a line kept as read (a tuple, an int, a str)


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


# A record as sorted (a plain tuple: pickled fast when a run is spilled): its line, the
# index of the report it came from, its line in the output (REPORT_COLUMNS only), and
# None for a line kept as read (the rest is in its cells), or for a decoded record its
# status, account ("" when none), app_id, region and the columns this version does not
# know.
_Held = tuple[str, str, Any, Any, "dict[str, Any] | None"]
_Record = tuple[int, int, str, _Held | None]
# Of a record: the cells of a line kept as read; the text of what a record is checked on.
_SPLIT: Final = itemgetter(STATUS, ACCOUNT_ID, APP_ID, REGION)
_PICKED: Final = ("line", "status")


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
    input_path: Path | str | None = None,
    overwrite: bool = False,
    warn: Warn | None = None,
    memory_budget: int = MEMORY_BUDGET,
) -> MergeResult:
    """Merge shard ``reports`` into ``output`` (JSONL if it ends in ``.jsonl``, else CSV).

    Writes ``output`` sorted by ``line`` and ``<output>.summary.json``; returns their totals.
    ``warn(message)`` hears about torn last lines and missing shard summaries (also kept in
    :attr:`MergeResult.warnings`). Raises :class:`MergeError` when a line is reported twice,
    when ``input_path`` is given and its data lines and the reported lines differ, or when
    ``output`` exists and ``overwrite`` is false; :class:`InputError` for an unreadable
    report or input. All checks are made before the report is published (it is written
    beside ``output`` and moved into place). ``memory_budget``: bytes of records held in
    memory at once (see :class:`spill.SortedSpill`).
    """
    notes: list[str] = []

    def note(message: str) -> None:
        notes.append(message)
        if warn is not None:
            warn(message)

    for target in (*reports, output, input_path):
        if isinstance(target, str) and "://" in target:
            raise MergeError(
                f"{target} is not a local file: merge_reports reads and writes local files;"
                " for S3 use batch_updater.s3.merge_on_s3 (or the batch-updater merge command)"
            )
    given = [Path(p) if isinstance(p, str) else p for p in reports]
    sources = [report_location(p) for p in given]
    output = Path(output) if isinstance(output, str) else output
    target = report_location(output)
    _check_paths(sources, target, overwrite)
    names = [s.name for s in sources]

    encoder = RecordEncoder(jsonl=is_jsonl(target.name))
    extra_columns: dict[str, None] = {}  # an ordered set
    shard_rows: list[int] = []
    with SortedSpill(memory_budget) as spill:
        for index, source in enumerate(sources):
            before = spill.records
            _load(
                source, index, encoder=encoder, spill=spill, extra_columns=extra_columns, warn=note
            )
            shard_rows.append(spill.records - before)
        columns = tuple(extra_columns)
        sink = _create(target, overwrite)
        try:
            # One pass over the records in line order: check, count and write them.
            coverage = None if input_path is None else _Coverage(Path(input_path), names, columns)
            tally = _write(
                sink,
                target,
                RecordEncoder(jsonl=encoder.jsonl, extra_columns=columns),
                records=spill,
                names=names,
                coverage=coverage,
            )
            totals, shards, missing = _shard_summaries(sources, shard_rows, note)
        except BaseException:
            sink.discard()
            raise
    _publish(sink, target)
    counts, by_account, rows = tally.counts, tally.by_account, tally.rows
    code = exit_code(counts)
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
        rows=rows,
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


def _shown(value: object, limit: int = 30) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Duplicates:
    """Every line once across all reports: records seen in line order."""

    __slots__ = ("count", "first", "names")

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.first: tuple[int, int, int] | None = None  # line, source, source: the first
        self.count = 0

    def check(self) -> None:
        if self.first is None:
            return
        line, one, two = self.first
        a, b = self.names[one], self.names[two]
        where = f"twice in {a}" if a == b else f"in both {a} and {b}"
        more = f" ({self.count} repeated records in all)" if self.count > 1 else ""
        raise MergeError(
            f"line {line} is reported {where}{more}: each input line must be in "
            "exactly one shard report"
        )

    def __repr__(self) -> str:
        return f"<_Duplicates repeated={self.count} first={self.first}>"


class _Coverage:
    """The reports hold every data line of the input once and no other line; rows that
    were valid name the input's app (and region, when the input gives one).

    Fed the records in line order (:meth:`see`) while it reads the input alongside, so it
    holds one input row at a time. An unreadable input is raised by :meth:`check`.
    """

    __slots__ = (
        "_cells",
        "_input",
        "_line",
        "error",
        "extra",
        "input_path",
        "missing",
        "n_extra",
        "n_missing",
        "n_other",
        "names",
        "other",
    )

    _END: Final = 1 << 62  # past every line: the input is read to its end

    def __init__(self, input_path: Path, names: list[str], kept: tuple[str, ...]) -> None:
        self.input_path, self.names = input_path, names
        # The reports' extra columns may be input columns kept with --keep-column.
        self._input: Iterator[tuple[int, dict[str, str]]] = read_csv(
            input_path, kept, require=False
        )
        self.error: InputError | None = None
        self.missing: list[int] = []
        self.extra: list[int] = []
        self.other: list[str] = []
        self.n_missing = self.n_extra = self.n_other = 0
        self._line: int = 0
        self._cells: dict[str, str] = {}
        self._next()

    def _next(self) -> None:
        try:
            self._line, self._cells = next(self._input)
        except StopIteration:
            self._line, self._cells = self._END, {}
        except InputError as exc:
            self.error, self._line, self._cells = exc, self._END, {}

    def see(self, line: int, source: int, status: str, app_id: Any, region: Any) -> None:
        """The next record in line order."""
        if self._line < line:
            self._skip(line)
        if self._line != line:
            self.n_extra += 1
            if len(self.extra) < _SHOWN:
                self.extra.append(line)
            return
        cells = self._cells
        self._next()
        if status == Status.INVALID or "__cells__" in cells:
            return
        want_app = cells.get("app_id", "").strip()
        want_region = cells.get("region", "").strip()
        if app_id != want_app or (want_region and region != want_region):
            self.n_other += 1
            if len(self.other) < 2:
                self.other.append(
                    f"line {line} in {self.names[source]}: {_shown(app_id)} "
                    f"{_shown(region)}, the input has {_shown(want_app)} {_shown(want_region)}"
                )

    def _skip(self, line: int) -> None:
        """Input lines before ``line`` are in no report."""
        end = self._END
        while self._line < line and self._line != end:
            self.n_missing += 1
            if len(self.missing) < _SHOWN:
                self.missing.append(self._line)
            self._next()

    def check(self) -> None:
        """After the last record: raise what does not match."""
        self._skip(self._END)  # the rest of the input is in no report
        if self.error is not None:
            raise self.error
        problems: list[str] = []
        if self.n_missing:
            problems.append(
                f"{self.n_missing} input line(s) in no report (first: {_first(self.missing)}; "
                "a shard report missing or cut short?)"
            )
        if self.n_extra:
            problems.append(
                f"{self.n_extra} reported line(s) not in the input (first: {_first(self.extra)})"
            )
        if self.n_other:
            problems.append(
                f"{self.n_other} record(s) for another app than the input's "
                f"({'; '.join(self.other)})"
            )
        if problems:
            raise MergeError(
                f"the reports do not match the input {self.input_path}: " + "; ".join(problems)
            )

    def __repr__(self) -> str:
        return (
            f"<_Coverage {self.input_path} at_line={self._line} missing={self.n_missing} "
            f"extra={self.n_extra} other={self.n_other}>"
        )


# -- reading ---------------------------------------------------------------------------


def _load(
    source: Location,
    index: int,
    *,
    encoder: RecordEncoder,
    spill: SortedSpill,
    extra_columns: dict[str, None],
    warn: Warn,
) -> None:
    """Add the records of the report at ``source`` to ``spill``.

    A CSV record of this version's columns, on one line as the encoder would write it,
    is kept as read (see :func:`codec.as_encoded`); any other is decoded and encoded.
    """
    reader = ReportReader(source, warn)

    def decoded(record: Record, number: int) -> None:
        _add_decoded(
            record,
            number,
            source=source,
            index=index,
            encoder=encoder,
            spill=spill,
            extra_columns=extra_columns,
        )

    if reader.jsonl or encoder.jsonl:
        for number, record in enumerate(reader, start=1):
            decoded(record, number)
        return
    add, typed = spill.add, reader.typed
    current: bool | None = None  # whether the report has this version's columns, no others
    for number, (at, text, picked, cells) in enumerate(reader.cells(_PICKED), start=1):
        if text is not None:
            if current is None:
                current = reader.header == REPORT_COLUMNS
            line, status = picked
            if (
                current
                and status in _STATUSES
                and line.isdecimal()
                and line.isascii()
                and line[0] != "0"
                and as_encoded(text, cells)
            ):
                add((int(line), index, text, None), _HELD_LINE + len(text))
                continue
        decoded(typed(cells, at), number)


def _add_decoded(
    record: Record,
    number: int,
    *,
    source: Location,
    index: int,
    encoder: RecordEncoder,
    spill: SortedSpill,
    extra_columns: dict[str, None],
) -> None:
    """Add a decoded record (the ``number``-th of ``source``), encoded in this version."""
    values, extras, _ = record
    line = values[LINE]
    if isinstance(line, bool) or not isinstance(line, int) or line < 1:
        where = f"{source.name}, record {number}"
        raise MergeError(f"{where}: {_shown(line)} is not an input line number")
    status = values[STATUS]
    if status not in _STATUSES:
        where = f"{source.name}, record {number}"
        raise MergeError(f"{where} (input line {line}): unknown status {_shown(status)}")
    size = _HELD
    if extras:
        for key in extras:
            extra_columns.setdefault(key)
        size += 100 * len(extras)
    region, account = values[REGION], values[ACCOUNT_ID]
    text = encoder.encode_values(values, None)
    intern = sys.intern
    held: _Held = (
        intern(status),
        intern(account) if isinstance(account, str) else "",
        values[APP_ID],
        intern(region) if isinstance(region, str) else region,  # few distinct values
        extras or None,
    )
    spill.add((line, index, text, held), size + len(text))


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


class _Tally:
    """Counts of the merged records: by status, and by status per account."""

    __slots__ = ("by_account", "counts", "rows")

    def __init__(self) -> None:
        self.counts = {s.value: 0 for s in Status}
        self.by_account: dict[str, dict[str, int]] = {}
        self.rows = 0

    def __repr__(self) -> str:
        return f"<_Tally rows={self.rows} accounts={len(self.by_account)}>"


def _cannot_write(output: Location, exc: OSError) -> MergeError:
    return MergeError(f"cannot write the merged report {output.name}: {exc.strerror or exc}")


def _create(output: Location, overwrite: bool) -> Sink:
    """The merged report's sink: written beside ``output``, moved into place at the end."""
    try:
        return output.create(overwrite=overwrite, staged=_STAGED)
    except OSError as exc:
        raise _cannot_write(output, exc) from None


def _write(
    sink: Sink,
    output: Location,
    encoder: RecordEncoder,
    *,
    records: Iterable[_Record],
    names: list[str],
    coverage: _Coverage | None,
) -> _Tally:
    """Write ``records`` (in line order) to ``sink``, checking them on the way: raises
    :class:`MergeError` at the end when a line is reported twice or the input differs."""
    tally = _Tally()
    counts, by_account = tally.counts, tally.by_account
    duplicates = _Duplicates(names)
    see = coverage.see if coverage is not None else None
    last_line = last_source = 0
    try:
        if header := encoder.header():
            sink.write(header)
        write, extend = sink.write, encoder.extend
        for line, source, text, held in records:
            if line == last_line:
                duplicates.count += 1
                duplicates.first = duplicates.first or (line, last_source, source)
            last_line, last_source = line, source
            if held is None:  # a line as read: one line of cells, no quotes
                status, account, app_id, region = _SPLIT(text[:-1].split(","))
                extras = None
            else:
                status, account, app_id, region, extras = held
            if see is not None:
                see(line, source, status, app_id, region)
            counts[status] += 1
            if account:
                per = by_account.get(account)
                if per is None:
                    per = by_account[account] = dict.fromkeys(counts, 0)
                per[status] += 1
            write(extend(text, extras))
    except OSError as exc:
        raise _cannot_write(output, exc) from None
    tally.rows = sum(counts.values())
    duplicates.check()
    if coverage is not None:
        coverage.check()
    return tally


def _publish(sink: Sink, output: Location) -> None:
    """Move the merged report into place; without ``overwrite`` never replace a report
    that appeared meanwhile."""
    try:
        sink.close()
    except FileExistsError:
        sink.discard()
        raise MergeError(_exists_message(output)) from None
    except OSError as exc:
        sink.discard()
        raise _cannot_write(output, exc) from None
