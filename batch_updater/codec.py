"""The report format, in one place.

Records: the columns and the version that added each, a :class:`RowResult` encoded as a
CSV or JSON line (:class:`RecordEncoder`), a line of either format decoded back to a typed
record (:class:`ReportReader`), the header check for older versions and kept columns, the
torn-last-line rule, and formula defusing for CSV. Summaries: where a report's summary
lives, its atomic write and its reading. The writer (``report.py``), ``--resume`` and
``merge`` all go through here, and through the storage seam (``storage.py``) beneath.

Versions (a header is one version's columns, then any kept input columns):

1. the first release: ``line`` ... ``duration_ms`` (14 columns);
2. ``run_id`` appended;
3. ``account_id`` appended: blank in CSV, null in JSON lines, for a row with no account.

Typed cells: ``line``, ``attempts``, ``http_status`` and ``duration_ms`` are numbers;
they, ``started_at``, ``finished_at`` and ``account_id`` are None when empty. Decoding
gives the same typed values for a CSV line and a JSON line of the same record.

Reading a CSV report of millions of records: it is read a block of whole lines at a
time, and a block without quotes or carriage returns is split at line ends and commas
at once (the csv module reads the rest); readers that need a few columns take their
text (:meth:`ReportReader.cells`, or column by column, :meth:`ReportReader.columns`), and a line
the encoder would write as it is (:func:`as_encoded`) may be copied without a decode
and an encode. Writing the record of a row that was not sent (a dry run's, a skipped
one's): :meth:`RecordEncoder.write_unsent` fills a template that :meth:`RecordEncoder.write`
made, when the cells are plain text.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from itertools import repeat
from operator import attrgetter, itemgetter
from typing import IO, Any, Final, NamedTuple, Protocol, cast

from .errors import InputError
from .results import RowResult, Status, Unsent, unsent_result
from .storage import Location

__all__ = [
    "COLUMNS",
    "REPORT_COLUMNS",
    "SUMMARY_SUFFIX",
    "VERSION",
    "WIDTHS",
    "Column",
    "Record",
    "RecordEncoder",
    "ReportReader",
    "Writable",
    "all_as_encoded",
    "as_encoded",
    "is_jsonl",
    "iso",
    "neutralize",
    "read_json",
    "summary_location",
    "write_json",
]

Warn = Callable[[str], None]


class Column(NamedTuple):
    """A report column: its name, the report version that added it, and its kind."""

    name: str
    since: int
    kind: str  # "int": a number; "optional": text; "text": text, never None


_INT: Final = "int"  # a number, None when empty
_OPTIONAL: Final = "optional"  # text, None when empty
_TEXT: Final = "text"  # text, empty stays ""

COLUMNS: Final = (
    Column("line", 1, _INT),
    Column("app_id", 1, _TEXT),
    Column("region", 1, _TEXT),
    Column("status", 1, _TEXT),
    Column("attempts", 1, _INT),
    Column("error_code", 1, _TEXT),
    Column("http_status", 1, _INT),
    Column("error_message", 1, _TEXT),
    Column("request_id", 1, _TEXT),
    Column("backend_manager_app_id", 1, _TEXT),
    Column("settings_digest", 1, _TEXT),
    Column("started_at", 1, _OPTIONAL),
    Column("finished_at", 1, _OPTIONAL),
    Column("duration_ms", 1, _INT),
    Column("run_id", 2, _TEXT),
    Column("account_id", 3, _OPTIONAL),
)
REPORT_COLUMNS: Final = tuple(c.name for c in COLUMNS)
VERSION: Final = max(c.since for c in COLUMNS)
#: How many columns each version's report has: a header starts with one of these prefixes.
WIDTHS: Final = tuple(
    sum(1 for c in COLUMNS if c.since <= version) for version in range(1, VERSION + 1)
)
_KNOWN: Final = frozenset(REPORT_COLUMNS)
_INDEX: Final = {name: i for i, name in enumerate(REPORT_COLUMNS)}
_INTS: Final = tuple(i for i, c in enumerate(COLUMNS) if c.kind == _INT)
_NULLABLE: Final = tuple(i for i, c in enumerate(COLUMNS) if c.kind != _TEXT)
LINE: Final = _INDEX["line"]
APP_ID: Final = _INDEX["app_id"]
REGION: Final = _INDEX["region"]
STATUS: Final = _INDEX["status"]
ERROR_MESSAGE: Final = _INDEX["error_message"]
SETTINGS_DIGEST: Final = _INDEX["settings_digest"]
FINISHED_AT: Final = _INDEX["finished_at"]
ACCOUNT_ID: Final = _INDEX["account_id"]
_STARTED_AT: Final = _INDEX["started_at"]
_RUN_ID: Final = _INDEX["run_id"]

# A RowResult's fields in column order (the run id is the writer's, not the row's).
_ROW_FIELDS: Final = attrgetter(*(c.name for c in COLUMNS if c.name != "run_id"))
# CSV cells a network or an input fills in: defused when they start like a formula.
_FREE_TEXT_AT: Final = tuple(
    _INDEX[name]
    for name in (
        "app_id",
        "region",
        "error_code",
        "error_message",
        "request_id",
        "backend_manager_app_id",
        "account_id",
    )
)
_FREE_TEXT: Final = itemgetter(*_FREE_TEXT_AT)


def is_jsonl(name: str) -> bool:
    """Whether a report named ``name`` is JSON lines (``.jsonl``); anything else is CSV."""
    return name.lower().endswith(".jsonl")


# -- encoding --------------------------------------------------------------------------

# A spreadsheet runs a cell starting with one of these as a formula; error messages come
# from the network, so the CSV report defuses them with a leading apostrophe (OWASP).
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")
# In "\0".join(cells): each cell that starts like a formula (and, rarely, one holding
# "\0="), and any "\r": a fast test for the rare row that needs a closer look.
_SPECIAL: Final = re.compile("\0[" + re.escape("".join(_FORMULA_START)) + "]|\r")


# write_unsent's test of cells it may write as they are, on "\n" + "\n".join(cells) (and
# a count of its "\n"), written out for speed: no comma, quote, CR or NUL (what the CSV
# writer quotes or may refuse), no cell that starts like a formula.
assert set(_FORMULA_START) == {"=", "+", "-", "@", "\t", "\r"}, "write_unsent tests these"
# The cells of an unsent row's record that vary, marked in the line that makes its
# template: the line, app_id, region, error_message, settings_digest, account_id, then
# one mark per kept column (characters of Unicode's private use area).
_MARK: Final = 0xE000

# In a CSV line without quotes: a cell after the first that starts like a formula.
_FORMULA_AFTER: Final = re.compile("," + "[" + re.escape("".join(_FORMULA_START)) + "]")
_NUMBERS: Final = itemgetter(*_INTS)
_LEADING_ZEROS: Final = tuple(",0" + digit for digit in "0123456789")


def _as_written(numbers: str) -> bool:
    """Whether number cells joined by commas are each empty or as ``str(int)`` writes a
    number of at least 0 (substring tests: faster than a regular expression)."""
    digits = numbers.replace(",", "")
    if digits and not (digits.isascii() and digits.isdigit()):
        return False
    marked = "," + numbers
    return ",0" not in marked or not any(zero in marked for zero in _LEADING_ZEROS)


def as_encoded(line: str, cells: Sequence[str]) -> bool:
    """Whether a CSV record of this version's columns and no others, read as ``line``
    (see :meth:`ReportReader.cells`: one line, no quotes, no carriage return) with
    ``cells``, is the very line :meth:`RecordEncoder.encode_values` writes for its typed
    decode, so it may be copied as it is: no cell to defuse, every number written as
    the encoder writes one."""
    return (
        not line.startswith(_FORMULA_START)
        and _FORMULA_AFTER.search(line) is None
        and _as_written(",".join(_NUMBERS(cells)))
    )


# Each character a formula starts with, and how a line or a cell after a line's first
# starts with it in whole CSV lines without quotes.
_FORMULA_CELLS: Final = tuple((c, ("," + c, "\n" + c)) for c in _FORMULA_START)


def all_as_encoded(text: str, columns: Sequence[Sequence[str]]) -> bool:
    """:func:`as_encoded` of every record of ``text``, whole lines each one such record,
    whose cells are ``columns`` (by column: ``columns[i]`` holds each record's cell
    ``i``), tested all at once (substring tests: faster than a regular expression)."""
    if text.startswith(_FORMULA_START):
        return False
    for char, (after_comma, line_start) in _FORMULA_CELLS:
        if char in text and (after_comma in text or line_start in text):
            return False
    return _as_written(",".join([",".join(columns[i]) for i in _INTS]))


def neutralize(value: object) -> object:
    """Defuse a string cell a spreadsheet would run as a formula (idempotent: a defused
    cell starts with an apostrophe)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _csv_value(value: Any) -> Any:
    """A cell as the CSV report writes it: empty for None, formulas defused."""
    if value is None:
        return ""
    return neutralize(value)


def _csv_text(value: object) -> str:
    """A cell that is not a str, an int or None as the CSV writer writes it: a str
    subclass's text (not its ``str()``: an enum's may be its name), a float's ``repr()``,
    anything else's ``str()``."""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def iso(value: datetime | None) -> str | None:
    """A time as the report writes it: UTC, milliseconds, ``Z``."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _LastLine:
    """A file for :func:`csv.writer` that keeps the one line written last.

    The writer ends lines with ``\r\n``, so that it quotes every cell holding a ``\r``
    (with ``\n`` alone it leaves a lone ``\r`` bare, and the line cannot be read back);
    the line is kept with ``\n``, the report's line end.
    """

    __slots__ = ("text",)

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text = text[:-2] + "\n"
        return len(text)


class Writable(Protocol):
    """Where encoded lines go: a text file, a :class:`storage.Sink`."""

    def write(self, text: str, /) -> object: ...


class RecordEncoder:
    """Encodes records as lines of one report: CSV (formulas defused) or JSON lines.

    ``extra_columns`` follow the known columns: the input's kept columns (a row's
    ``kept`` cells), or, in a merged report, columns of a newer version. With ``out``,
    :meth:`write` encodes straight into it, one ``out.write`` call per record.
    """

    __slots__ = (
        "_csv",
        "_direct",
        "_line",
        "_out",
        "_run_id_cell",
        "_templates",
        "extra_columns",
        "jsonl",
        "run_id",
    )

    def __init__(
        self,
        *,
        jsonl: bool,
        run_id: str = "",
        extra_columns: Sequence[str] = (),
        out: Writable | None = None,
    ) -> None:
        self.jsonl = jsonl
        self.run_id = run_id
        self.extra_columns = tuple(extra_columns)
        self._run_id_cell = neutralize(run_id)
        self._line = _LastLine()
        self._csv = csv.writer(self._line, lineterminator="\r\n")
        self._out = out
        # The usual row needs no \r quoting: written by csv itself into out, no detour.
        self._direct = csv.writer(out, lineterminator="\n") if out is not None else None
        # Per status, the template of write_unsent, made on its first call (None: none).
        self._templates: dict[Status, str | None] | None = None

    def header(self) -> str:
        """The report's first line: the CSV header; nothing for JSON lines."""
        if self.jsonl:
            return ""
        self._csv.writerow((*REPORT_COLUMNS, *self.extra_columns))
        return self._line.text

    def _values(self, result: RowResult) -> list[Any]:
        """A row's values in column order: status and times as the report writes them."""
        fields = _ROW_FIELDS(result)
        values = [*fields[:_RUN_ID], self.run_id, *fields[_RUN_ID:]]
        values[STATUS] = fields[STATUS].value
        if fields[_STARTED_AT] is not None:
            values[_STARTED_AT] = iso(fields[_STARTED_AT])
        if fields[FINISHED_AT] is not None:
            values[FINISHED_AT] = iso(fields[FINISHED_AT])
        return values

    def _json(self, values: list[Any], kept: tuple[str, ...]) -> str:
        if not values[ACCOUNT_ID]:
            values[ACCOUNT_ID] = None
        record = dict(zip(REPORT_COLUMNS, values, strict=True))
        if self.extra_columns:
            record.update(zip(self.extra_columns, kept, strict=True))
        return json.dumps(record, ensure_ascii=False) + "\n"

    def _csv_cells(self, values: list[Any], kept: tuple[str, ...]) -> bool:
        """Turn ``values`` into the CSV row's cells (defused, kept cells appended); True
        when a cell holds a ``\r`` (a rare row, for the writer that quotes it)."""
        text = "\0" + "\0".join(_FREE_TEXT(values))
        if self.extra_columns:
            text += "\0" + "\0".join(kept)
        special = _SPECIAL.search(text) is not None
        if special:
            for i in _FREE_TEXT_AT:
                values[i] = neutralize(values[i])
        values[_RUN_ID] = self._run_id_cell
        if self.extra_columns:
            values += map(neutralize, kept) if special else kept
        return special and "\r" in text

    def encode(self, result: RowResult) -> str:
        """One row's record, as a line (with its line end)."""
        values = self._values(result)
        if self.jsonl:
            return self._json(values, result.kept)
        self._csv_cells(values, result.kept)
        self._csv.writerow(values)  # None is written as an empty cell
        return self._line.text

    def write(self, result: RowResult) -> None:
        """Write one row's record into ``out``: the same line :meth:`encode` gives."""
        assert self._out is not None, "an encoder made without out"
        values = self._values(result)
        if self.jsonl:
            self._out.write(self._json(values, result.kept))
        elif self._csv_cells(values, result.kept) or self._direct is None:
            self._csv.writerow(values)
            self._out.write(self._line.text)
        else:
            # The usual record: no cell the CSV writer would quote (a comma, a quote, a
            # line end), so its line is the cells joined; the writer tests each character
            # of each cell against the line end, three times the work.
            line = ",".join(
                [
                    v
                    if v.__class__ is str
                    else ""
                    if v is None
                    else str(v)
                    if v.__class__ is int
                    else _csv_text(v)
                    for v in values
                ]
            )
            if "\r" in line:  # in a cell no test above looks at (the digest, the run id)
                self._csv.writerow(values)  # quoted, as encode() quotes it
                self._out.write(self._line.text)
            elif line.count(",") == len(values) - 1 and '"' not in line and "\n" not in line:
                self._out.write(line + "\n")
            else:
                self._direct.writerow(values)

    def _template(self, status: Status) -> str | None:
        """The line :meth:`write` writes for an unsent row of ``status`` (see
        :meth:`write_unsent`) as a :meth:`str.format` template of the cells that vary;
        None when a mark is found elsewhere in it (a run id holding one)."""
        marks = [chr(_MARK + i) for i in range(6 + len(self.extra_columns))]
        line, app_id, region, message, digest, account, *kept = marks
        out = io.StringIO()
        probe = RecordEncoder(
            jsonl=False, run_id=self.run_id, extra_columns=self.extra_columns, out=out
        )
        # The line's mark stands where its number goes: str() of either is written as is.
        probe.write(
            unsent_result(
                status, cast(int, line), app_id, region, message, digest, tuple(kept), account
            )
        )
        text = out.getvalue().replace("{", "{{").replace("}", "}}")
        for i, mark in enumerate(marks):
            if text.count(mark) != 1:
                return None
            text = text.replace(mark, f"{{{i}}}")
        return text

    def write_unsent(self, unsent: Unsent) -> None:
        """Write the record of a row that was not sent: the line :meth:`write` writes for
        ``unsent_result(*unsent)``. A CSV record whose cells are plain text
        (nothing to quote or defuse) is filled into a template that :meth:`write` made,
        without a :class:`RowResult`; any other goes through :meth:`write`."""
        status, line, app_id, region, message, digest, kept, account = unsent
        templates = self._templates
        if templates is None:
            templates = self._templates = (
                {status: self._template(status) for status in Status}
                if self._out is not None and not self.jsonl
                else {}
            )
        template = templates.get(status)
        if template is not None and len(kept) == len(self.extra_columns):
            text = f"\n{app_id}\n{region}\n{message}\n{digest}\n{account}"
            if kept:
                text += "\n" + "\n".join(kept)
            if (
                "," not in text
                and '"' not in text
                and "\r" not in text
                and "\0" not in text
                and "\n=" not in text
                and "\n+" not in text
                and "\n-" not in text
                and "\n@" not in text
                and "\n\t" not in text
                and text.count("\n") == 5 + len(kept)
            ):
                assert self._out is not None, "templates are made for an encoder with out"
                self._out.write(
                    template.format(line, app_id, region, message, digest, account, *kept)
                )
                return
        self.write(unsent_result(*unsent))

    def encode_values(self, values: Sequence[Any], extras: Mapping[str, Any] | None) -> str:
        """A decoded record's line (see :class:`Record`): ``values`` in column order,
        then ``extras`` for the extra columns (None for those it lacks)."""
        if self.jsonl:
            record = dict(zip(REPORT_COLUMNS, values, strict=True))
            if self.extra_columns:
                got = extras or {}
                record.update((c, got.get(c)) for c in self.extra_columns)
            return json.dumps(record, ensure_ascii=False) + "\n"
        # _csv_value inlined: a merge encodes every cell of a million records here.
        start = _FORMULA_START
        cells = [
            "" if v is None else "'" + v if isinstance(v, str) and v.startswith(start) else v
            for v in values
        ]
        if self.extra_columns:
            got = extras or {}
            cells += (_csv_value(got.get(c)) for c in self.extra_columns)
        self._csv.writerow(cells)
        return self._line.text

    def extend(self, line: str, extras: Mapping[str, Any] | None) -> str:
        """``line``, encoded with no extra columns, with this encoder's extra columns
        appended (None for those ``extras`` lacks)."""
        if not self.extra_columns:
            return line
        got = extras or {}
        if self.jsonl:
            tail = json.dumps({c: got.get(c) for c in self.extra_columns}, ensure_ascii=False)
            return f"{line[:-2]}, {tail[1:]}\n"  # "{...known}\n" + '"extra": ...}'
        self._csv.writerow([_csv_value(got.get(c)) for c in self.extra_columns])
        return f"{line[:-1]},{self._line.text}"

    def __repr__(self) -> str:
        kind = "jsonl" if self.jsonl else "csv"
        return f"<RecordEncoder {kind} run_id={self.run_id!r} extra={self.extra_columns!r}>"


# -- decoding --------------------------------------------------------------------------


class Record(NamedTuple):
    """One decoded report record.

    ``values`` holds the known columns in :data:`REPORT_COLUMNS` order, typed (see the
    module docstring): None for an empty typed cell or a column the report's version
    lacks. ``extras`` holds the other columns (kept input columns, a newer version's),
    as read, or is None.
    """

    values: list[Any]
    extras: dict[str, Any] | None
    number: int  # the report line it ends on

    def get(self, column: str) -> Any:
        """The value of ``column`` (known or extra), None when absent."""
        index = _INDEX.get(column)
        if index is not None:
            return self.values[index]
        return None if self.extras is None else self.extras.get(column)


_INTEGER: Final = re.compile(r"-?[0-9]+", re.ASCII)
_MAX_LINE: Final = 1 << 22  # characters: a longer line is no report's
_MAX_PENDING: Final = 1 << 22  # characters of a quoted cell that spans lines
_BAD_HEADER: Final = "not a batch-updater report: unexpected header"
_WRONG_WIDTH: Final = "not a report line: wrong number of cells"


def _integer(text: str) -> int | str | None:
    """A CSV number cell typed: an int, None when empty, the text when no number (for the
    caller to refuse, naming it)."""
    if not text:
        return None
    if text.isdecimal() and text.isascii():
        return int(text)
    return int(text) if _INTEGER.fullmatch(text) else text


_Pick = Callable[[list[str]], Any]


class _Shape(NamedTuple):
    """How :meth:`ReportReader._csv_rows` gives records: what it yields for a block of
    plain lines (its name, text, lines before it, width, pick), returning its lines, and
    for one record (the
    line it ends on, its line as written or None, its cells, pick)."""

    block: Callable[[str, str, int, int, _Pick], Generator[Any, None, int]]
    record: Callable[[int, str | None, list[str], _Pick], Any]


class ReportReader:
    """The records of one report (CSV or JSON lines) written by any version of the tool.

    Reads as a stream, line by line. A last line without its line end (for CSV: a last
    record that ends inside a quoted cell or without a line end) is a torn write, the
    run was killed mid-row: it is ignored, with ``warn(message)`` called. Anything else
    malformed is an :class:`InputError` naming the report and line.

    Iterate for typed :class:`Record` s; :meth:`raw` gives the records as written (CSV
    cells as text). A CSV report's ``header`` is known once iteration has begun.
    """

    __slots__ = ("_known", "_number", "_typer", "_warn", "header", "jsonl", "location", "name")

    def __init__(self, location: Location, warn: Warn | None = None) -> None:
        self.location = location
        self.name = location.name
        self.jsonl = is_jsonl(self.name)
        self._warn = warn
        self.header: tuple[str, ...] | None = None
        self._known = 0  # how many of the header's columns are known ones
        self._typer: Callable[[list[str], int], Record] = _unread
        self._number = 0  # the line read last

    def _open(self) -> IO[str]:
        """The report as text: UTF-8 (a BOM, as a spreadsheet saves one, skipped), lines
        ending at ``\n`` untranslated."""
        try:
            stream: IO[bytes] = self.location.open_read()
        except OSError as exc:
            raise InputError(self.name, None, f"cannot read the report: {_why(exc)}") from None
        return io.TextIOWrapper(stream, encoding="utf-8-sig", newline="\n")

    def _lines(self) -> Iterator[str]:
        """The report's lines (JSON lines), each with its ``\n``, counted in ``_number``;
        a last line without one is torn."""
        name = self.name
        number = 0
        try:
            with self._open() as text:
                readline = text.readline
                while line := readline(_MAX_LINE):
                    number += 1
                    self._number = number
                    if not line.endswith("\n"):
                        if len(line) == _MAX_LINE:
                            raise InputError(name, number, "not a report line: too long")
                        self._torn(number)
                        return
                    yield line
        except OSError as exc:
            raise InputError(name, None, f"cannot read the report: {_why(exc)}") from None
        except UnicodeDecodeError:
            raise InputError(name, None, "not a report: not valid UTF-8") from None

    def _torn(self, number: int) -> None:
        if self._warn is not None:
            self._warn(f"{self.name}, line {number}: incomplete last line ignored (torn write)")

    def _csv_rows(self, shape: _Shape, columns: tuple[str, ...] = ()) -> Iterator[Any]:
        """Each CSV record once the header is checked: the line it ends on, its line as
        written (with its ``\n``) when it came through the fast path, else None, the
        text of ``columns`` (see :meth:`cells`), and its cells.

        The fast path: a whole line without quotes or carriage returns is one record,
        its cells split at commas. Any other line (a quoted cell, perhaps over several
        lines; a CRLF line end) is read by the csv module, whole records at a time (a
        record ends at a line end outside quotes; one still open at the end is torn).
        Both give the same cells; ``line`` is None for the second. Shaped :data:`_COLUMNS`,
        the text of ``columns`` alone, column by column (a plain block's records
        together); shaped :data:`_GROUPS`, as :meth:`groups` gives them.
        """
        name = self.name
        width = 0  # the header's cells; 0 until the header is read
        pick: Callable[[list[str]], Any] = _no_cells
        pending: list[str] = []
        quotes = size = first = number = 0
        try:
            for block in _text_blocks(self._open()):
                if width and not pending and _plain_block(block):  # records of a line each
                    number += yield from shape.block(name, block, number, width, pick)
                    continue
                for line in _split_lines(block):
                    number += 1
                    whole = line[-1] == "\n"
                    if not whole:
                        if len(line) == _MAX_LINE:
                            raise InputError(name, number, "not a report line: too long")
                    elif width and not pending and '"' not in line and "\r" not in line:
                        cells = line.split(",")  # the usual case: a record on one line
                        cells[-1] = cells[-1][:-1]
                        if len(cells) != width:
                            raise InputError(name, number, _WRONG_WIDTH)
                        yield shape.record(number, line, cells, pick)
                        continue
                    if not pending:
                        first = number
                    pending.append(line)
                    size += len(line)
                    quotes += line.count('"')
                    if whole and not quotes & 1:
                        for at, cells in self._parsed(pending, first):
                            if not width:
                                self._check_header(cells)
                                width = len(cells)
                                pick = self._picking(columns, shape)
                            elif len(cells) != width:
                                raise InputError(name, at, _WRONG_WIDTH)
                            else:
                                yield shape.record(at, None, cells, pick)
                        pending.clear()
                        quotes = size = 0
                    elif size > _MAX_PENDING:
                        raise InputError(name, first, "not a report line: a quoted cell never ends")
        except OSError as exc:
            raise InputError(name, None, f"cannot read the report: {_why(exc)}") from None
        except UnicodeDecodeError:
            raise InputError(name, None, "not a report: not valid UTF-8") from None
        if pending:
            self._torn(first)
        if not width:
            self._check_header(None)

    def _parsed(self, lines: list[str], first: int) -> Iterator[tuple[int, list[str]]]:
        """The records of ``lines`` (whole records, the first on line ``first``) as the
        csv module reads them, each with the line it ends on."""
        reader = csv.reader(lines)
        try:
            for cells in reader:
                yield first - 1 + reader.line_num, cells
        except csv.Error as exc:
            where = first - 1 + reader.line_num
            raise InputError(self.name, where, f"not a report line: {exc}") from None

    def _check_header(self, header: list[str] | None) -> None:
        """One version's columns, then distinct names of other columns."""
        if header is None:
            raise InputError(self.name, 1, _BAD_HEADER)
        known = 0
        for got, want in zip(header, REPORT_COLUMNS, strict=False):
            if got != want:
                break
            known += 1
        others = header[known:]
        if (
            known not in WIDTHS
            or not all(others)
            or _KNOWN.intersection(others)
            or len(set(others)) != len(others)
        ):
            raise InputError(self.name, 1, _BAD_HEADER)
        self.header = tuple(header)
        self._known = known
        self._typer = self._typing()

    def _json_objects(self) -> Iterator[tuple[int, dict[str, Any]]]:
        loads = json.loads
        for line in self._lines():
            if not line.strip():
                continue
            try:
                record = loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(
                    self.name, self._number, f"not a JSON report line: {exc.msg}"
                ) from None
            if not isinstance(record, dict):
                raise InputError(self.name, self._number, "not a JSON report line: not an object")
            yield self._number, record

    def raw(self) -> Iterator[dict[str, Any]]:
        """The records as written: CSV cells as text under the header's names, JSON
        objects as parsed."""
        if self.jsonl:
            for _, record in self._json_objects():
                yield record
            return
        header: tuple[str, ...] = ()
        for _, _, _, cells in self._csv_rows(_RECORDS):
            if not header:
                header = self.header or ()
            yield dict(zip(header, cells, strict=True))

    def cells(self, columns: Sequence[str]) -> Iterator[tuple[int, str | None, Any, list[str]]]:
        """A CSV report's records as text, for readers that need a few columns.

        Per record: the line it ends on; its line as written (with its line end) when it
        is one line without quotes or carriage returns, else None; the text of each of
        ``columns`` (known columns; one this report's version lacks reads ""), as a
        tuple; and all its cells, for :meth:`typed`.
        """
        if self.jsonl:
            raise ValueError(f"{self.name}: a JSON-lines report has no CSV cells")
        return self._csv_rows(_RECORDS, tuple(columns))

    def columns(self, columns: Sequence[str]) -> Iterator[tuple[list[str], ...]]:
        """:meth:`cells` with the text of ``columns`` alone, column by column, for readers
        of millions: per block of plain lines (see :meth:`groups`), each column's cells of
        its records in one list; per any other record, lists of one."""
        if self.jsonl:
            raise ValueError(f"{self.name}: a JSON-lines report has no CSV cells")
        return self._csv_rows(_COLUMNS, tuple(columns))

    def groups(self) -> Iterator[tuple[int, str | None, list[str] | None, list[str]]]:
        """A CSV report's records in groups, for readers of millions that copy lines.

        Per group: the line its first record ends on; its text as written (whole lines,
        each with its line end) and the lines' bodies (line ends off) when its records are
        each one line without quotes or carriage returns, else None and None; the
        records' cells one after another, each record as wide as the header (a slice of
        one record's for :meth:`typed`). A block of such lines is one group; any other
        record is a group of its own.
        """
        if self.jsonl:
            raise ValueError(f"{self.name}: a JSON-lines report has no CSV cells")
        return self._csv_rows(_GROUPS)

    def typed(self, cells: list[str], number: int) -> Record:
        """The typed :class:`Record` of a CSV record's ``cells`` (from :meth:`cells`),
        ending on line ``number``; ``cells`` may be reused for its values."""
        return self._typer(cells, number)

    def _typing(self) -> Callable[[list[str], int], Record]:
        """Once the header is read: what turns a record's cells into a typed record."""
        known = self._known
        others = (self.header or ())[known:]
        ints = tuple(i for i in _INTS if i < known)
        optional = tuple(i for i in _NULLABLE if i < known and i not in _INTS)
        missing: list[None] = [None] * (len(REPORT_COLUMNS) - known)

        def typed(cells: list[str], number: int) -> Record:
            values: list[Any] = cells[:known] if others else cells
            for i in ints:  # _integer, its common cases inlined (once per cell of millions)
                text = values[i]
                if text.isdecimal() and text.isascii():
                    values[i] = int(text)
                else:
                    values[i] = _integer(text) if text else None
            for i in optional:
                if not values[i]:
                    values[i] = None
            if missing:
                values += missing
            extras = dict(zip(others, cells[known:], strict=True)) if others else None
            return Record(values, extras, number)

        return typed

    def _picking(self, columns: tuple[str, ...], shape: _Shape) -> Callable[[list[str]], Any]:
        """Once the header is read: what picks the text of ``columns`` from a record's
        cells, as a tuple (for :data:`_COLUMNS`: from the cells of records one after
        another, a list per column)."""
        header = self.header or ()
        at = {name: i for i, name in enumerate(header[: self._known])}
        where = [at.get(name, -1) for name in columns]
        if shape is _COLUMNS:
            return _transposer(where, len(header))
        if not columns:
            return _no_cells
        if -1 in where or len(where) == 1:  # a column of a later version (or just one)
            return lambda cells: tuple("" if i < 0 else cells[i] for i in where)
        return itemgetter(*where)

    def __iter__(self) -> Iterator[Record]:
        if self.jsonl:
            return self._json_records()
        return self._csv_records()

    def _json_records(self) -> Iterator[Record]:
        known = _KNOWN
        for number, raw in self._json_objects():
            values = [raw.get(column) for column in REPORT_COLUMNS]
            for i in _NULLABLE:
                if values[i] == "":
                    values[i] = None
            extras = None
            if not known.issuperset(raw):
                extras = {k: v for k, v in raw.items() if k not in known}
            yield Record(values, extras, number)

    def _csv_records(self) -> Iterator[Record]:
        for number, _, _, cells in self._csv_rows(_RECORDS):
            yield self._typer(cells, number)


_BLOCK: Final = 1 << 15  # characters of a report read at a time (a few hundred lines)


def _text_blocks(opened: IO[str]) -> Iterator[str]:
    """The text of ``opened`` (closed at the end) in blocks of whole lines: each ends with
    a ``\n`` but the last, when the text does not. A line of :data:`_MAX_LINE`
    characters or more is not waited for: its first characters end the text (refused)."""
    with opened as text:
        read = text.read
        rest = ""
        while chunk := read(_BLOCK):
            data = rest + chunk if rest else chunk
            cut = data.rfind("\n") + 1
            if cut:
                yield data[:cut] if cut < len(data) else data
                rest = data[cut:]
            elif len(data) >= _MAX_LINE:
                yield data[:_MAX_LINE]
                return
            else:
                rest = data
        if rest:
            yield rest


def _plain_block(block: str) -> bool:
    """Whether every line of ``block`` is whole, shorter than :data:`_MAX_LINE` and
    one record split at commas: no quotes, no carriage returns."""
    return block[-1:] == "\n" and len(block) < _MAX_LINE and '"' not in block and "\r" not in block


def _split_records(
    name: str, block: str, number: int, width: int, pick: Callable[[list[str]], Any]
) -> Generator[tuple[int, str, Any, list[str]], None, int]:
    """What :meth:`ReportReader._csv_rows` yields for each line of a :func:`_plain_block`
    whose first line is line ``number + 1``; returns its lines."""
    bodies = block.split("\n")
    bodies.pop()  # "" after the last line end
    for at, body in enumerate(bodies, number + 1):
        cells = body.split(",")
        if len(cells) != width:
            raise InputError(name, at, _WRONG_WIDTH)
        yield at, body + "\n", pick(cells), cells
    return len(bodies)


def _split_lines(block: str) -> list[str]:
    """A block's lines, each with its ``\n`` (the last may have none), as
    ``readline(_MAX_LINE)`` reads them: a longer line comes in pieces of that many."""
    lines = [line + "\n" for line in block.split("\n")]
    last = lines.pop()[:-1]
    if last:
        lines.append(last)
    if len(block) >= _MAX_LINE:
        lines = [
            line[at : at + _MAX_LINE] for line in lines for at in range(0, len(line), _MAX_LINE)
        ]
    return lines


def _grouped_block(
    name: str, block: str, number: int, width: int, pick: _Pick
) -> Generator[tuple[int, str, list[str], list[str]], None, int]:
    """What :meth:`ReportReader.groups` gives for a :func:`_plain_block` whose first line
    is line ``number + 1``: its lines' bodies, and all their cells in one list (a few
    objects, not one per line); returns its lines."""
    bodies = block[:-1].split("\n")
    yield number + 1, block, bodies, _block_cells(name, block, bodies, number, width)
    return len(bodies)


def _block_cells(name: str, block: str, bodies: list[str], number: int, width: int) -> list[str]:
    """The cells of a :func:`_plain_block`'s records (its lines' ``bodies``, the first
    line ``number + 1``) one after another, each record ``width`` wide."""
    if set(map(str.count, bodies, repeat(","))) != {width - 1}:
        at = next(at for at, body in enumerate(bodies, number + 1) if body.count(",") != width - 1)
        raise InputError(name, at, _WRONG_WIDTH)
    return block[:-1].replace("\n", ",").split(",")


def _block_columns(
    name: str, block: str, number: int, width: int, pick: _Pick
) -> Generator[Any, None, int]:
    """What :meth:`ReportReader.columns` gives for a :func:`_plain_block` whose first line
    is line ``number + 1``: ``pick`` of its records' cells one after another; returns its
    lines.

    Split once, at commas and at line ends marked by a comma before them: each line's
    first cell but the first line's then starts with its ``\n``, and so does a last,
    empty cell. Every line is ``width`` cells wide when there are ``lines * width + 1``
    cells and ``lines`` line ends among each ``width``-th cell (a cell holds at most
    one, at its start); the marks are then cut off.
    """
    marked = block.replace("\n", ",\n")
    lines = len(marked) - len(block)  # a comma more for each
    cells = marked.split(",")
    starts = cells[width::width]  # each line's first cell, from the second line's
    if len(cells) != lines * width + 1 or "".join(starts).count("\n") != lines:
        _block_cells(name, block, block[:-1].split("\n"), number, width)  # names the line
        raise AssertionError("a line of the wrong width was not found")  # pragma: no cover
    cells[width::width] = map(_AFTER_MARK, starts)
    cells.pop()  # the last line's end
    yield pick(cells)
    return lines


_AFTER_MARK: Final = itemgetter(slice(1, None))  # a line's first cell, its mark cut off


def _transposer(where: list[int], width: int) -> _Pick:
    """What picks, from the cells of records ``width`` wide one after another, the cells
    of the columns at ``where`` (-1: a column the report lacks, all ""), a list each."""

    def pick(cells: list[str]) -> tuple[list[str], ...]:
        return tuple(cells[i::width] if i >= 0 else [""] * (len(cells) // width) for i in where)

    return pick


# One by one (see cells()); the text of some columns, column by column (columns()); groups().
_RECORDS: Final = _Shape(
    # PLW0108 ignored: the name is looked up at each call (a test counts the calls)
    lambda name, block, number, width, pick: _split_records(  # noqa: PLW0108
        name, block, number, width, pick
    ),
    lambda at, line, cells, pick: (at, line, pick(cells), cells),
)
_COLUMNS: Final = _Shape(_block_columns, lambda at, line, cells, pick: pick(cells))
_GROUPS: Final = _Shape(
    _grouped_block,
    lambda at, line, cells, pick: (at, line, None if line is None else [line[:-1]], cells),
)


def _no_cells(cells: list[str]) -> tuple[()]:
    return ()


def _unread(cells: list[str], number: int) -> Record:
    raise AssertionError("a record typed before its report's header was read")


def _why(exc: OSError) -> str:
    return str(exc.strerror or exc)


# -- summaries -------------------------------------------------------------------------

SUMMARY_SUFFIX: Final = ".summary.json"


def summary_location(report: Location) -> Location:
    """Where the summary of ``report`` lives: ``<report>.summary.json`` beside it."""
    return report.beside(SUMMARY_SUFFIX)


def write_json(location: Location, data: Mapping[str, Any]) -> None:
    """Write a summary atomically (readers see the old one or the new one, whole); raises
    :class:`OSError` (nothing half-written is left behind)."""
    location.replace_with((json.dumps(data, indent=2) + "\n").encode("utf-8"))


def read_json(location: Location) -> Any:
    """A summary's content; :class:`OSError` (``FileNotFoundError`` when there is none)
    or :class:`ValueError` (not UTF-8 JSON) when it cannot be read."""
    with location.open_read() as stream:
        return json.load(stream)
