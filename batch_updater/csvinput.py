"""Reading the input: decoding, the header's columns, the private spool copy.

:func:`read_csv` and :func:`read_mappings` yield ``(line, {column: cell})`` for each
row; the cells are validated elsewhere (:mod:`batch_updater.rules`). A file is read a
block of whole lines at a time: a block of plain lines (no quotes, NULs or stray
carriage returns) is split at once, any other line by line (see :func:`_records`). A file is read
through :class:`_Tee`, which copies every byte read into a :class:`_Spool` that the
second pass of :class:`~batch_updater.rows.RowPlan` reads.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
import sys
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

from .errors import InputError, SetupError
from .rules import ALIASES, INPUT_COLUMNS, _shown

__all__ = ["STDIN", "KeyRows", "read_csv", "read_keys", "read_mappings"]

# A valid row is a few hundred bytes. Lines are read with this limit, so a file without
# line ends (a binary file, one giant cell) is refused instead of being read whole.
_MAX_LINE_BYTES: Final = 1 << 20
_CHUNK: Final = 1 << 18  # bytes read from the input (and written to the spool) at a time
_CR_HINT: Final = "line ends must be LF or CRLF (CR-only line ends, old Mac style, are not read)"
_UTF16_HINT: Final = "the file looks like UTF-16: save it as UTF-8"
_KEEPABLE: Final = re.compile(r"[\w .-]{1,64}", re.ASCII)  # a name worth suggesting to keep
STDIN: Final = "-"  # the input path that means standard input


def _looks_utf16(text: str | bytes) -> bool:
    """UTF-16 without a BOM, read as UTF-8: every other byte of ASCII text is NUL."""
    nul = text.count("\x00") if isinstance(text, str) else text.count(b"\x00")
    return len(text) >= 4 and nul * 3 >= len(text)


def _separator_hint(cells: list[str]) -> str | None:
    """A hint when a one-cell header is a header written with another separator."""
    if len(cells) != 1:
        return None
    for sep, name in ((";", "';'"), ("\t", "tab"), ("|", "'|'")):
        parts = cells[0].split(sep)
        if len(parts) > 1 and any(part.strip().lower() in ALIASES for part in parts):
            return f"the file looks like {name}-separated: save it comma-separated"
    return None


class _Header:
    """The header's column names in order, and how wide its rows are.

    ``names`` holds each named cell's column (a kept column under its header name);
    ``width`` counts the empty cells after the last name too (spreadsheets write them),
    which rows may hold as long as they are empty there.
    """

    __slots__ = ("names", "width")

    def __init__(self, names: list[str], width: int) -> None:
        self.names, self.width = names, width

    def __repr__(self) -> str:
        return f"<_Header names={self.names} width={self.width}>"

    def odd_row(self, cells: list[str]) -> dict[str, str]:
        """A row of other than ``len(names)`` cells: the cells that have a column, and
        under ``__cells__`` why the row is invalid (when it is)."""
        row = dict(zip(self.names, cells, strict=False))  # keep what can be read
        if (problem := self.count_problem(cells)) is not None:
            row["__cells__"] = problem
        return row

    def count_problem(self, cells: list[str]) -> str | None:
        """Why a row whose cell count is not ``len(names)`` is invalid, or None."""
        named = len(self.names)
        if named < len(cells) <= self.width:
            for position, cell in enumerate(cells[named:], start=named + 1):
                if cell.strip():
                    return (
                        f"a value at position {position}, where the header has no column "
                        "name (an empty header cell)"
                    )
            return None
        empty = self.width - named
        trailing = f" and {empty} empty cells after them" if empty else ""
        return f"has {len(cells)} cells, the header has {named}{trailing}"


def _map_header(
    path: str, cells: list[str], line: int = 1, keep: Iterable[str] = (), require: bool = True
) -> _Header:
    width = len(cells)
    while len(cells) > 1 and not cells[-1].strip():
        cells = cells[:-1]  # a spreadsheet's empty cells after the last column
    kept = {name.strip().lower(): name.strip() for name in keep}
    names: list[str] = []
    seen: dict[str, int] = {}
    for position, raw in enumerate(cells, start=1):
        key = raw.strip().lower()
        name = ALIASES.get(key) or kept.get(key)
        if name is None:
            shown = _shown(raw.strip()) if raw.strip() else "an empty name"
            hint = _separator_hint(cells) or (
                _UTF16_HINT if _looks_utf16(",".join(cells)) else None
            )
            if hint is not None:
                raise InputError(
                    path, line, f"unknown column {shown} at position {position}: {hint}"
                )
            accepted = ", ".join(f"{n} (or {a})" for n, a in INPUT_COLUMNS.items())
            carry = (
                f"; to carry it into the report, pass --keep-column {raw.strip()}"
                if _KEEPABLE.fullmatch(raw.strip())
                else ""
            )
            raise InputError(
                path,
                line,
                f"unknown column {shown} at position {position}; accepted columns: "
                f"{accepted}{carry}",
            )
        if name in seen:
            raise InputError(
                path,
                line,
                f"column {name!r} appears twice (positions {seen[name]} and {position})",
            )
        seen[name] = position
        names.append(name)
    if "app_id" not in seen:
        raise InputError(path, line, "the header has no app_id (or AppId) column")
    for name in kept.values():
        if require and name not in seen:
            raise InputError(
                path, line, f"the header has no column {_shown(name)} to keep (--keep-column)"
            )
    return _Header(names, width)


def _decoded(path: str, number: int, raw: bytes, decoder: codecs.IncrementalDecoder) -> str:
    """Line ``number`` of the input, ``raw``, as text (a last line without a line end
    through ``decoder``, which keeps an incomplete character for :func:`_decoded_end`):
    the line's error names it exactly."""
    if len(raw) > _MAX_LINE_BYTES:
        hint = f"; it holds carriage returns: {_CR_HINT}" if b"\r" in raw else ""
        raise InputError(
            path,
            number,
            f"line longer than {_MAX_LINE_BYTES} bytes: not a CSV of apps and settings "
            f"(a valid row is a few hundred bytes){hint}",
        )
    try:
        # A whole line leaves the decoder nothing pending: decoded in one call.
        text = raw.decode() if raw[-1:] == b"\n" else decoder.decode(raw)
    except UnicodeDecodeError as exc:
        why = exc.reason
        if number == 1 and (
            raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or _looks_utf16(raw)
        ):
            why = _UTF16_HINT
        raise InputError(
            path, number, f"not valid UTF-8 ({why}, at byte {exc.start + 1} of the line)"
        ) from None
    if number == 1 and text.startswith("\ufeff"):
        text = text[1:]
    return text


def _decoded_end(path: str, number: int, decoder: codecs.IncrementalDecoder) -> None:
    """The input ended after line ``number``: no character may be left incomplete."""
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise InputError(path, number, f"not valid UTF-8 ({exc.reason} at the end)") from None


def _decoded_lines(path: str, raw_lines: Iterable[bytes]) -> Iterator[str]:
    """Each of ``raw_lines`` (the input's lines, with their line ends) as text."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    number = 0
    for number, raw in enumerate(raw_lines, start=1):
        yield _decoded(path, number, raw, decoder)
    _decoded_end(path, number, decoder)


def _csv_problem(exc: csv.Error) -> str:
    """The csv module's message, in an operator's words where it is cryptic."""
    text = str(exc)
    if text.startswith("field larger than field limit"):
        limit = csv.field_size_limit()
        return f"a cell is longer than {limit} characters (a valid cell has at most 128)"
    if text == "unexpected end of data":
        return 'a quoted cell is never closed (the file ends before its closing ")'
    if text.startswith("new-line character seen in unquoted field"):
        return f"a carriage return (CR) in the middle of a line: {_CR_HINT}"
    if text.endswith("expected after '\"'"):
        return f'{text} (a " inside a quoted cell is written "")'
    return text


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def _blocks(handle: _Readable, size: int) -> Iterator[bytes]:
    """The input in blocks of whole lines (read ``size`` bytes at a time): each block ends
    with a line feed, but the last when the input does not. A line longer than
    :data:`_MAX_LINE_BYTES` ends the input: its first bytes come as a last block, for the
    reader to refuse it."""
    read = handle.read
    pending = bytearray()  # the start of a line read in earlier blocks
    while block := read(size):
        cut = block.rfind(b"\n") + 1
        if not cut:
            pending += block
            if len(pending) > _MAX_LINE_BYTES:
                yield bytes(pending[: _MAX_LINE_BYTES + 1])
                return
        elif pending:
            pending += block[:cut]
            yield bytes(pending)
            pending = bytearray(block[cut:])
        else:
            yield block[:cut] if cut < len(block) else block
            pending = bytearray(block[cut:])
    if pending:
        yield bytes(pending)


def _raw_lines(block: bytes) -> list[bytes]:
    """A block's lines with their line feeds, each cut after :data:`_MAX_LINE_BYTES` + 1
    bytes (such a line is refused)."""
    lines = [line + b"\n" for line in block.split(b"\n")]
    last = lines.pop()[:-1]
    if last:
        lines.append(last)
    if len(block) > _MAX_LINE_BYTES:
        lines = [line[: _MAX_LINE_BYTES + 1] for line in lines]
    return lines


def _plain_lines(block: bytes, limit: int) -> list[str] | None:
    """The bodies (line ends off) of a block of whole lines that are each one record
    split at commas, as :func:`_records` reads such a line: valid UTF-8 without quotes,
    NULs or carriage returns (but CRLF line ends, all of them), each shorter than the
    csv module's field ``limit``. None for any other block."""
    if b'"' in block or b"\x00" in block or block[-1:] != b"\n":
        return None
    end = "\n"
    if b"\r" in block:
        crlf = block.count(b"\r\n")
        if crlf != block.count(b"\r") or crlf != block.count(b"\n"):
            return None
        end = "\r\n"
    try:
        text = block.decode()
    except UnicodeDecodeError:
        return None
    bodies = text.split(end)
    bodies.pop()  # after the last line end
    if len(text) > limit and max(map(len, bodies)) + len(end) > limit:
        return None
    return bodies


class _Lines:
    """The input's lines: read a block at a time (:meth:`block`), or one by one as text
    (iterate), the queue holding the rest of a block being read line by line."""

    __slots__ = ("_blocks", "_decoder", "_name", "number", "queue")

    def __init__(self, name: str, handle: _Readable, block_size: int) -> None:
        self._name = name
        self._blocks = _blocks(handle, block_size)
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self.queue: deque[bytes] = deque()
        self.number = 0  # lines read

    def block(self) -> bytes | None:
        """The next block of whole lines; None at the end of the input."""
        block = next(self._blocks, None)
        if block is None:
            _decoded_end(self._name, self.number, self._decoder)
        return block

    def __iter__(self) -> Iterator[str]:
        queue = self.queue
        while True:
            if not queue:
                block = self.block()
                if block is None:
                    return
                queue.extend(_raw_lines(block))
            self.number += 1
            yield _decoded(self._name, self.number, queue.popleft(), self._decoder)

    def __repr__(self) -> str:
        return f"<_Lines {self._name} read={self.number} queued={len(self.queue)}>"


def _records(
    name: str, handle: _Readable, block_size: int = _CHUNK
) -> Iterator[tuple[int, list[str]]]:
    """Each CSV record read from ``handle``, with the line it starts on (see
    :func:`_groups`)."""
    for start, bodies, cells in _groups(name, handle, block_size):
        if bodies is None:
            yield start, cells
            continue
        # One at a time (as _split_bodies, inlined): lists of millions alive at once
        # would make the garbage collector walk them again and again.
        for number, body in enumerate(bodies, start):
            yield number, body.split(",") if body else []  # "": a blank line


def _groups(
    name: str, handle: _Readable, block_size: int = _CHUNK
) -> Iterator[tuple[int, list[str] | None, list[str]]]:
    """The CSV records read from ``handle``: ``(start, bodies, cells)``, ``start`` the
    line the first starts on. A block of plain lines comes whole as its lines' ``bodies``
    (line ends off; each one record, split at commas; ``cells`` empty), any other record
    alone as its ``cells`` (``bodies`` None).

    A line without quotes or NULs, shorter than the csv module's field limit and with
    no carriage return but one before its line feed, is one record: its text split at
    commas (the usual row: what the csv module would read, without its cost). A block
    of such lines after the first line is split as a whole (:func:`_plain_lines`). Any
    other record is read by the csv module (strict), as many lines as it takes.
    """
    source = _Lines(name, handle, block_size)
    queue, line_by_line = source.queue, iter(source)
    pushed: list[str] = []  # the line the csv module reads first

    def for_csv() -> Iterator[str]:
        while True:
            if pushed:
                yield pushed.pop()
            elif (text := next(line_by_line, None)) is not None:
                yield text
            else:
                return

    reader = csv.reader(for_csv(), strict=True)
    limit = csv.field_size_limit()
    while True:
        start = source.number + 1
        try:
            if not queue:
                block = source.block()
                if block is None:
                    return
                if start > 1 and (bodies := _plain_lines(block, limit)) is not None:
                    source.number = start + len(bodies) - 1
                    yield start, bodies, []
                    continue
                queue.extend(_raw_lines(block))
            text = next(line_by_line)
            # The line's end (LF, or CRLF as a spreadsheet saves) off, for the test below.
            body = text[:-2] if text[-2:] == "\r\n" else text[:-1] if text[-1:] == "\n" else text
            if "\r" not in body and '"' not in body and "\x00" not in body and len(text) <= limit:
                yield start, None, body.split(",") if body else []  # the csv module's blank line
                continue
            pushed.append(text)
            cells = next(reader)
        except csv.Error as exc:
            raise InputError(name, start, f"broken CSV: {_csv_problem(exc)}") from None
        except OSError as exc:
            raise InputError(name, start, f"cannot read: {exc.strerror or exc}") from None
        yield start, None, cells


def _blank(cells: list[str]) -> bool:
    """Whether a record is a blank line (no cells, or one of spaces): not a row."""
    return not cells or (len(cells) == 1 and not cells[0].strip())


def _no_header(name: str, seen: bool) -> InputError:
    what = "has only blank lines" if seen else "is empty"
    return InputError(name, None, f"the file {what}: a header row is required")


def _parse(
    name: str, handle: _Readable, keep: Iterable[str] = (), require: bool = True
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line, {column: cell})`` for each non-blank data row read from ``handle``.

    ``keep`` names extra columns to read too; each must be in the header if ``require``.

    A row whose cell count does not fit the header holds the cells that have a column
    and its problem under the key ``__cells__`` (see :meth:`_Header.odd_row`).
    """
    header: _Header | None = None
    names: list[str] = []
    named = 0
    seen = False  # any line at all
    for start, cells in _records(name, handle):
        seen = True
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue  # _blank, inlined: once per row of millions
        if header is None:
            header = _map_header(name, cells, start, keep, require)
            names, named = header.names, len(header.names)
            continue
        if len(cells) == named:
            yield start, dict(zip(names, cells, strict=True))
            continue
        yield start, header.odd_row(cells)
    if header is None:
        raise _no_header(name, seen)


def _open_input(path: Path) -> io.FileIO:
    """The input's raw file; ``-`` is standard input (binary, left open when closed)."""
    if str(path) == STDIN:
        return io.FileIO(sys.stdin.fileno(), "rb", closefd=False)
    try:
        return io.FileIO(path, "rb")
    except OSError as exc:
        raise InputError(str(path), None, f"cannot open: {exc.strerror or exc}") from None


def read_csv(
    path: Path, keep: Iterable[str] = (), *, require: bool = True
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line, {column: cell})`` for each non-blank data row of the CSV at ``path``.

    ``line`` is the physical line the row starts on (the header is line 1); ``keep``
    names extra columns to read (see ``RunConfig.keep_columns``), each of which must be
    in the header if ``require``.
    """
    with io.BufferedReader(_open_input(path), _CHUNK) as handle:
        yield from _parse(str(path), handle, keep, require)


#: A batch of :func:`read_keys`: the rows' lines, the stripped text of each column asked
#: for ("" when a row or the header lacks it), and whether each row has a wrong number
#: of cells (``__cells__`` in :func:`read_csv`'s row).
KeyRows = tuple[list[int], tuple[list[str], ...], list[bool]]


def read_keys(
    path: Path, columns: tuple[str, ...], keep: Iterable[str] = (), *, require: bool = True
) -> Iterator[KeyRows]:
    """The rows :func:`read_csv` reads from ``path``, with just the stripped text of
    ``columns``, in batches (a block of plain lines at once, for readers of millions)."""
    with io.BufferedReader(_open_input(path), _CHUNK) as handle:
        yield from _keys(str(path), handle, columns, keep, require=require)


def _keys(
    name: str,
    handle: _Readable,
    columns: tuple[str, ...],
    keep: Iterable[str] = (),
    *,
    require: bool = True,
    block_size: int = _CHUNK,
) -> Iterator[KeyRows]:
    """:func:`read_keys` of what ``handle`` reads (see :func:`_parse`)."""
    header: _Header | None = None
    names: list[str] = []
    at: list[int | None] = []
    seen = False  # any line at all
    for start, bodies, one in _groups(name, handle, block_size):
        seen = True
        width = len(names)
        if (
            header is not None
            and bodies is not None
            and width > 1
            and set(map(str.count, bodies, repeat(","))) == {width - 1}
        ):  # no blank line, no odd row: all cells in one list (few objects), by column
            cells = ",".join(bodies).split(",")
            count = len(bodies)
            yield (
                list(range(start, start + count)),
                tuple([""] * count if i is None else _stripped(cells[i::width]) for i in at),
                [False] * count,
            )
            continue
        lines: list[int] = []
        values: tuple[list[str], ...] = tuple([] for _ in columns)
        odd: list[bool] = []
        batch = [(start, one)] if bodies is None else _split_bodies(start, bodies)
        for number, cells in batch:
            if _blank(cells):
                continue
            if header is None:
                header = _map_header(name, cells, number, keep, require)
                names = header.names
                at = [names.index(c) if c in names else None for c in columns]
                continue
            row = (
                dict(zip(names, cells, strict=True))
                if len(cells) == len(names)
                else header.odd_row(cells)
            )
            lines.append(number)
            for column, got in zip(columns, values, strict=True):
                got.append(row.get(column, "").strip())
            odd.append("__cells__" in row)
        if lines:
            yield lines, values, odd
    if header is None:
        raise _no_header(name, seen)


def _stripped(cells: list[str]) -> list[str]:
    """``cells``, each stripped (one test of them all first: usually none needs it)."""
    joined = ",".join(cells)
    if not joined or joined.split(None, 1) == [joined]:  # no whitespace at all
        return cells
    return list(map(str.strip, cells))


def _split_bodies(start: int, bodies: list[str]) -> list[tuple[int, list[str]]]:
    """A plain block's records, each with its line: its body split at commas ("": a
    blank line)."""
    return [(n, body.split(",") if body else []) for n, body in enumerate(bodies, start)]


class _Spool:
    """A private copy of the input, written while pass 1 reads it; pass 2 reads the copy.

    An anonymous temporary file in the system temp directory (never visible by name
    where the OS allows, and gone when closed or when the process ends).
    """

    __slots__ = ("_file", "size")

    def __init__(self) -> None:
        try:
            # SIM115 ignored: the spool outlives this call; close() closes it
            self._file = tempfile.TemporaryFile(prefix="batch-updater-input-")  # noqa: SIM115
        except OSError as exc:
            raise self._error(exc) from None
        self.size = 0

    @staticmethod
    def _error(exc: OSError) -> SetupError:
        return SetupError(
            f"cannot keep a private copy of the input in {tempfile.gettempdir()}: "
            f"{exc.strerror or exc} (free some space there, or set TMPDIR to a roomier "
            "directory); nothing was sent"
        )

    def write(self, data: memoryview) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            raise self._error(exc) from None
        self.size += len(data)

    def finish(self) -> None:
        """Flush what pass 1 read to the file."""
        try:
            self._file.flush()
        except OSError as exc:
            raise self._error(exc) from None

    def reader(self) -> io.BufferedReader:
        """A new reader from the copy's start (each has its own position)."""
        return io.BufferedReader(_SpoolReader(self._file.fileno(), self.size), _CHUNK)

    def close(self) -> None:
        self._file.close()

    def __repr__(self) -> str:
        state = "closed" if self._file.closed else "open"
        return f"<_Spool {state} size={self.size}>"


class _Tee(io.RawIOBase):
    """Reads the input and copies every byte read into the spool."""

    __slots__ = ("_source", "_spool")

    def __init__(self, source: io.FileIO, spool: _Spool) -> None:
        self._source, self._spool = source, spool

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        n = self._source.readinto(buffer) or 0
        if n:
            self._spool.write(memoryview(buffer)[:n])
        return n


class _SpoolReader(io.RawIOBase):
    """Reads a descriptor's first ``size`` bytes at its own offset (``os.pread``): the
    spool's, or a local copy's (see ``s3``)."""

    __slots__ = ("_fd", "_pos", "_size")

    def __init__(self, fd: int, size: int) -> None:
        self._fd, self._size, self._pos = fd, size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        data = os.pread(self._fd, min(len(view), self._size - self._pos), self._pos)
        n = len(data)
        view[:n] = data
        self._pos += n
        return n


def read_mappings(
    rows: Iterable[Mapping[str, str | None]], keep: Iterable[str] = ()
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield rows given as mappings (library use); row *i* is numbered line *i + 2*."""
    kept = {name.strip().lower(): name.strip() for name in keep}
    for index, mapping in enumerate(rows):
        out: dict[str, str] = {}
        for key, value in mapping.items():
            if not isinstance(key, str):  # csv.DictReader files extra cells under None
                raise InputError(
                    "<rows>", index + 2, "the row has more cells than the header has columns"
                )
            name = ALIASES.get(key.strip().lower()) or kept.get(key.strip().lower())
            if name is None:
                accepted = ", ".join(INPUT_COLUMNS)
                raise InputError(
                    "<rows>",
                    index + 2,
                    f"unknown column {_shown(key)}; accepted columns: {accepted}",
                )
            out[name] = "" if value is None else str(value)
        yield index + 2, out


def _identity(info: os.stat_result) -> tuple[int, int, int, int]:
    """What tells that a file changed: device, inode, size, modification time."""
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


def _expected_rows(sample: bytes, size: int) -> int:
    """A guess of the row count, to size the duplicate index once: the sample's lines per
    byte times the file size (a pipe has no size: the index grows as needed)."""
    lines = sample.count(b"\n")
    return int(size * lines / len(sample) * 1.05) + 16 if lines and size else 1024
