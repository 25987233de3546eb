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

Speed: records are handled a block or a batch at a time, with few Python objects each.
A block of such lines is tested at once (:func:`codec.all_as_encoded`) and counted as read;
runs are merged a batch at a time (:meth:`spill.SortedSpill.batches`); a batch is checked
for repeated lines, checked against the input by the start of its lines (the input's key
cells read in batches, :func:`csvinput.read_keys`) and written in one call. Anything else
(a decoded record, a batch that does not match at once) takes the record-by-record path,
which says what is wrong.
"""

from __future__ import annotations

import pickle
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import count, repeat
from operator import itemgetter, lt
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
    all_as_encoded,
    as_encoded,
    is_jsonl,
    read_json,
    summary_location,
    write_json,
)
from .csvinput import KeyRows, read_keys
from .errors import InputError, SetupError
from .report import report_location, summary_path
from .results import Status, exit_code, summary_totals
from .spill import SortedSpill, pickled
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


# A record as sorted (a plain tuple: cheap to spill, see _pack): its line, the index of the
# report it came from, its line in the output (REPORT_COLUMNS only; without its line end),
# and None for a line kept as read (the rest is in its cells), or for a decoded record its
# status, account ("" when none), app_id, region and the columns this version does not
# know.
_Held = tuple[str, str, Any, Any, "dict[str, Any] | None"]
_Record = tuple[int, int, str, _Held | None]
# Of a line kept as read, its cells: what a record is checked on.
_SPLIT: Final = itemgetter(STATUS, ACCOUNT_ID, APP_ID, REGION)
# A line as written starts with these cells: _starting checks a batch by them.
assert (LINE, APP_ID, REGION) == (0, 1, 2), "a record line starts with line, app_id, region"


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
    tally = _Tally()  # counted as read: the counts do not depend on the order
    with SortedSpill(memory_budget, _pack, _unpack) as spill:
        for index, source in enumerate(sources):
            before = spill.records
            _load(
                source,
                index,
                encoder=encoder,
                spill=spill,
                tally=tally,
                extra_columns=extra_columns,
                warn=note,
            )
            shard_rows.append(spill.records - before)
        columns = tuple(extra_columns)
        sink = _create(target, overwrite)
        try:
            # One pass over the records in line order: check, count and write them.
            coverage = None if input_path is None else _Coverage(Path(input_path), names, columns)
            _write(
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

    def see(self, line: int, source: int, lines: list[int], sources: list[int]) -> None:
        """Records of ``lines`` from ``sources``, in line order, after one of ``line``
        from ``source``."""
        for at, came in zip(lines, sources, strict=True):
            if at == line:
                self.count += 1
                self.first = self.first or (at, source, came)
            line, source = at, came

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


def _starting(texts: list[str], lines: list[int], apps: list[str], regions: list[str]) -> bool:
    """Whether each of ``texts`` (lines as read) starts with its line, app and region
    cells (its line and app when ``regions`` are all empty); False when only some are."""
    if not any(regions):
        starts, commas = list(map("{},{},".format, lines, apps)), 2
    elif all(regions):
        starts, commas = list(map("{},{},{},".format, lines, apps, regions)), 3
    else:
        return False
    return "".join(starts).count(",") == commas * len(starts) and all(
        map(str.startswith, texts, starts)
    )


class _Coverage:
    """The reports hold every data line of the input once and no other line; rows that
    were valid name the input's app (and region, when the input gives one).

    Fed the records in line order (:meth:`see_many`, :meth:`see`) while it reads the
    input's key cells alongside (see :func:`csvinput.read_keys`), so it holds a batch of
    input rows at a time. An unreadable input is raised by :meth:`check`.
    """

    __slots__ = (
        "_apps",
        "_batches",
        "_lines",
        "_odd",
        "_pos",
        "_regions",
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
        self._batches: Iterator[KeyRows] = read_keys(
            input_path, ("app_id", "region"), kept, require=False
        )
        self.error: InputError | None = None
        self.missing: list[int] = []
        self.extra: list[int] = []
        self.other: list[str] = []
        self.n_missing = self.n_extra = self.n_other = 0
        # Input rows read and not yet matched from _pos on: lines, app_id, region, and
        # whether the row has a wrong number of cells (its app is not checked).
        self._lines: list[int] = []
        self._apps: list[str] = []
        self._regions: list[str] = []
        self._odd: list[bool] = []
        self._pos = 0

    def _fill(self, count: int) -> int:
        """How many input rows are held from the next on: at least ``count`` unless the
        input ends (or turns out unreadable) first."""
        held = len(self._lines) - self._pos
        if held >= count:
            return held
        if self._pos:
            for column in (self._lines, self._apps, self._regions, self._odd):
                del column[: self._pos]
            self._pos = 0
        while held < count:
            try:
                lines, (apps, regions), odd = next(self._batches)
            except StopIteration:
                break
            except InputError as exc:
                self.error, self._batches = exc, iter(())
                break
            self._lines += lines
            self._apps += apps
            self._regions += regions
            self._odd += odd
            held += len(lines)
        return held

    def _line(self) -> int:
        """The next input row's line; past the end, :attr:`_END`."""
        return self._lines[self._pos] if self._fill(1) else self._END

    def see_many(
        self, lines: list[int], sources: list[int], texts: list[str], helds: list[_Held | None]
    ) -> None:
        """The next records in line order (their ``lines``, ``sources``, ``texts`` and
        ``helds``): at once when they are lines as read of the next input rows' lines, each
        starting with its row's app (and region, when the input gives one), else one by one
        (:meth:`see`)."""
        count = len(lines)
        if self._fill(count) >= count and helds.count(None) == count:
            start, end = self._pos, self._pos + count
            if (
                self._lines[start:end] == lines
                and not any(self._odd[start:end])
                and _starting(texts, lines, self._apps[start:end], self._regions[start:end])
            ):
                self._pos = end
                return
        for line, source, text, held in zip(lines, sources, texts, helds, strict=True):
            self.see(line, source, *_checked(text, held))

    def see(self, line: int, source: int, status: str, app_id: Any, region: Any) -> None:
        """The next record in line order."""
        at = self._line()
        if at < line:
            self._skip(line)
            at = self._line()
        if at != line:
            self.n_extra += 1
            if len(self.extra) < _SHOWN:
                self.extra.append(line)
            return
        pos = self._pos
        self._pos = pos + 1
        if status == Status.INVALID or self._odd[pos]:
            return
        want_app, want_region = self._apps[pos], self._regions[pos]
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
        at = self._line()
        while at < line and at != end:
            self.n_missing += 1
            if len(self.missing) < _SHOWN:
                self.missing.append(at)
            self._pos += 1
            at = self._line()

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
        at = self._lines[self._pos] if self._pos < len(self._lines) else None
        return (
            f"<_Coverage {self.input_path} at_line={at} held={len(self._lines) - self._pos} "
            f"missing={self.n_missing} extra={self.n_extra} other={self.n_other}>"
        )


# -- reading ---------------------------------------------------------------------------


def _load(
    source: Location,
    index: int,
    *,
    encoder: RecordEncoder,
    spill: SortedSpill,
    tally: _Tally,
    extra_columns: dict[str, None],
    warn: Warn,
) -> None:
    """Add the records of the report at ``source`` to ``spill``, and count them.

    A CSV record of this version's columns, on one line as the encoder would write it,
    is kept as read (see :func:`codec.as_encoded`; a block of such lines is tested and
    added at once); any other is decoded and encoded.
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
            tally=tally,
            extra_columns=extra_columns,
        )

    if reader.jsonl or encoder.jsonl:
        for number, record in enumerate(reader, start=1):
            decoded(record, number)
        return
    add, typed = spill.add, reader.typed
    current: bool | None = None  # whether the report has this version's columns, no others
    width = 0  # cells of a record
    number = 0  # records read
    for at, text, bodies, cells in reader.groups():
        if current is None:
            current = reader.header == REPORT_COLUMNS
            width = len(reader.header or ())
        if bodies is not None and current:
            if (read := _as_read(text or "", cells)) is not None:
                lines, statuses, accounts = read
                records = list(zip(lines, repeat(index), bodies, repeat(None), strict=False))
                spill.extend(records, _HELD_LINE * len(records) + len(text or ""))
                tally.add(statuses, accounts)
                number += len(records)
                continue
            for ends, body, start in zip(count(at), bodies, range(0, len(cells), width)):
                number += 1  # one by one, a line each
                one = cells[start : start + width]
                line = one[LINE]
                if (
                    one[STATUS] in _STATUSES
                    and line.isdecimal()
                    and line.isascii()
                    and line[0] != "0"
                    and as_encoded(body, one)
                ):
                    add((int(line), index, body, None), _HELD_LINE + len(body))
                    tally.add((one[STATUS],), (one[ACCOUNT_ID],))
                else:
                    decoded(typed(one, ends), number)
            continue
        for ends, start in zip(count(at), range(0, len(cells), width)):  # a line each, or one
            number += 1
            decoded(typed(cells[start : start + width], ends), number)


def _as_read(text: str, cells: list[str]) -> tuple[list[int], list[str], list[str]] | None:
    """Of a block of plain lines of this version's columns (``text``, their ``cells`` one
    after another): their lines, statuses and accounts, when every record may be kept as
    read (see :func:`_load`); else None."""
    width = len(REPORT_COLUMNS)
    columns = [cells[i::width] for i in range(width)]
    lines = columns[LINE]
    if (
        not _STATUSES.issuperset(columns[STATUS])
        or "" in lines
        or "0" in lines
        or not all_as_encoded(text, columns)
    ):
        return None
    return list(map(int, lines)), columns[STATUS], columns[ACCOUNT_ID]


def _add_decoded(
    record: Record,
    number: int,
    *,
    source: Location,
    index: int,
    encoder: RecordEncoder,
    spill: SortedSpill,
    tally: _Tally,
    extra_columns: dict[str, None],
) -> None:
    """Add a decoded record (the ``number``-th of ``source``), encoded in this version, and
    count it."""
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
    text = encoder.encode_values(values, None)[:-1]  # held without its line end
    intern = sys.intern
    held: _Held = (
        intern(status),
        intern(account) if isinstance(account, str) else "",
        values[APP_ID],
        intern(region) if isinstance(region, str) else region,  # few distinct values
        extras or None,
    )
    spill.add((line, index, text, held), size + len(text))
    tally.add((held[0],), (held[1],))


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

    def add(self, statuses: Sequence[str], accounts: Sequence[str]) -> None:
        """Count records of ``statuses`` and ``accounts`` ("" for none)."""
        counts = self.counts
        for status, many in Counter(statuses).items():
            counts[status] += many
        self.rows += len(statuses)
        if any(accounts):
            by_account = self.by_account
            for (account, status), many in Counter(zip(accounts, statuses, strict=True)).items():
                if account:
                    per = by_account.get(account)
                    if per is None:
                        per = by_account[account] = dict.fromkeys(counts, 0)
                    per[status] += many

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
    records: SortedSpill,
    names: list[str],
    coverage: _Coverage | None,
) -> None:
    """Write the ``records`` (in line order, a batch at a time) to ``sink``, checking them
    on the way: raises :class:`MergeError` at the end when a line is reported twice or
    the input differs."""
    duplicates = _Duplicates(names)
    last_line = last_source = 0
    extend = encoder.extend if encoder.extra_columns else None
    try:
        if header := encoder.header():
            sink.write(header)
        for batch in records.batches():
            lines, sources = list(map(_LINE_OF, batch)), list(map(_SOURCE_OF, batch))
            texts = list(map(_TEXT_OF, batch))
            if lines[0] == last_line or not all(map(lt, lines, lines[1:])):
                duplicates.see(last_line, last_source, lines, sources)
            last_line, last_source = lines[-1], sources[-1]
            if coverage is not None:
                coverage.see_many(lines, sources, texts, list(map(_HELD_OF, batch)))
            if extend is None:
                sink.write("\n".join(texts) + "\n")
            else:
                sink.write("".join(map(extend, (t + "\n" for t in texts), map(_extras, batch))))
    except OSError as exc:
        raise _cannot_write(output, exc) from None
    duplicates.check()
    if coverage is not None:
        coverage.check()


_LINE_OF: Final = itemgetter(0)
_SOURCE_OF: Final = itemgetter(1)
_TEXT_OF: Final = itemgetter(2)
_HELD_OF: Final = itemgetter(3)


def _pack(records: list[_Record]) -> bytes:
    """A chunk of records for the temporary file: when all are lines as read, their
    lines, sources and texts (one string: far fewer objects to pickle), else pickled."""
    if list(map(_HELD_OF, records)).count(None) == len(records):
        lines, sources = list(map(_LINE_OF, records)), list(map(_SOURCE_OF, records))
        texts = "\n".join(map(_TEXT_OF, records))  # a line as read has no line end
        return pickle.dumps((lines, sources, texts), pickle.HIGHEST_PROTOCOL)
    return pickled(records)


def _unpack(data: bytes) -> list[_Record]:
    """A chunk written by :func:`_pack`, read back."""
    got = pickle.loads(data)  # our own file, written by this process
    if isinstance(got, tuple):
        lines, sources, texts = got
        return list(zip(lines, sources, texts.split("\n"), repeat(None), strict=False))
    records: list[_Record] = got
    return records


def _extras(record: _Record) -> dict[str, Any] | None:
    """A record's extra columns (None for none)."""
    held = record[3]
    return None if held is None else held[4]


def _checked(text: str, held: _Held | None) -> tuple[str, Any, Any]:
    """Of a record: its status, app_id and region."""
    if held is None:  # a line as read: one line of cells, no quotes
        status, _, app_id, region = _SPLIT(text.split(","))
        return status, app_id, region
    return held[0], held[2], held[3]


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
