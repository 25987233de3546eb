"""Input rows: read the CSV, map its columns, validate every row, find duplicates.

The rows are read twice in a streaming fashion (see :class:`RowPlan`): the first pass
reads the input once, validates every row, fills the duplicate index and copies the bytes
it read into a private spool file; the second pass reads that copy and yields what to do
with each row. So the rows sent are exactly the rows validated, whatever happens to the
input file meanwhile, and a pipe is read once. Memory grows only with the duplicate
index, never with the rows themselves.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import re
import stat
import sys
import tempfile
from array import array
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import cache, partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

from .errors import BatchUpdaterError, InputError, SetupError
from .shard import Shard

__all__ = [
    "COLUMNS",
    "InputCopy",
    "LoginSettings",
    "RegionRule",
    "Rejected",
    "Row",
    "RowPlan",
    "check_region",
    "region_rule",
]

# Canonical column name -> the API's own name (accepted as a header alias too).
COLUMNS: Final[Mapping[str, str]] = {
    "app_id": "AppId",
    "region": "Region",
    "identity_pool_id": "AwsCognitoIdentityPoolId",
    "cognito_region": "AwsCognitoRegion",
    "user_pool_id": "AwsUserPoolsId",
    "web_client_id": "AwsUserPoolsWebClientId",
}
SETTING_COLUMNS: Final = ("identity_pool_id", "cognito_region", "user_pool_id", "web_client_id")
_ALIASES: Final[Mapping[str, str]] = {
    **{name.lower(): name for name in COLUMNS},
    **{api.lower(): name for name, api in COLUMNS.items()},
}

# Patterns from botocore's service models (Amplify AppId, Cognito pool and client ids).
# re.ASCII: the models' \w is Java's [a-zA-Z0-9_], not Unicode word characters.
_APP_ID = re.compile(r"d[a-z0-9]+", re.ASCII)
_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}", re.ASCII)
_USER_POOL_ID = re.compile(r"[\w-]+_[0-9a-zA-Z]+", re.ASCII)
_IDENTITY_POOL_ID = re.compile(r"[\w-]+:[0-9a-f-]+", re.ASCII)
_WEB_CLIENT_ID = re.compile(r"[\w+]+", re.ASCII)


# -- regions ----------------------------------------------------------------------------

_UNKNOWN_REGION_HINT: Final = "pass --allow-unknown-region for a region newer than the SDK"
_SHAPE_ONLY_HINT: Final = "pass --allow-unknown-region to check only the shape of region names"


@cache
def _botocore_regions() -> tuple[frozenset[str], str]:
    """(every region of every partition botocore ships, botocore's version), read once.

    Read as plain JSON from botocore's data directory, without botocore's loaders or a
    session (a few milliseconds): ``partitions.json`` (small, botocore 1.28 and later),
    else the partitions of ``endpoints.json``. Pseudo-regions like ``aws-global`` are left
    out. Raises :class:`SetupError` when neither can be read.
    """
    spec = importlib.util.find_spec("botocore")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for name, key in (("partitions.json", "id"), ("endpoints.json", "partition")):
        for location in locations:
            path = Path(location, "data", name)
            try:
                data = json.loads(path.read_bytes())
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                raise SetupError(
                    f"cannot read botocore's region list {path}: {exc}; {_SHAPE_ONLY_HINT}"
                ) from None
            regions: set[str] = set()
            for partition in data.get("partitions", []):
                if not isinstance(partition, dict) or key not in partition:
                    continue
                shape = re.compile(str(partition.get("regionRegex") or "$^"), re.ASCII)
                regions.update(r for r in partition.get("regions", {}) if shape.fullmatch(r))
            return frozenset(regions), importlib.metadata.version("botocore")
    raise SetupError(
        f"cannot find botocore's region list (is botocore installed?); {_SHAPE_ONLY_HINT}"
    )


class RegionRule:
    """Which region names are accepted: those botocore knows (the default), or with
    ``allow_unknown`` also any name shaped like one (a region newer than the SDK).

    ``ok`` is the cheap test of the hot path (set membership, or the shape pattern);
    :meth:`problem` words the refusal. Both follow from ``known`` and ``allow_unknown``.
    With ``allow_unknown`` an unreadable botocore region list is no error: the shape
    check alone applies.
    """

    __slots__ = ("allow_unknown", "known", "ok", "version")

    def __init__(self, allow_unknown: bool = False) -> None:
        try:
            self.known, self.version = _botocore_regions()
        except SetupError:
            if not allow_unknown:
                raise
            self.known, self.version = frozenset(), "(unreadable)"
        self.allow_unknown = allow_unknown
        contains = self.known.__contains__
        self.ok: Callable[[str], bool] = (
            (lambda value: contains(value) or _REGION.fullmatch(value) is not None)
            if allow_unknown
            else contains
        )

    def problem(self, value: str) -> str | None:
        """Why ``value`` is not an accepted region name, or None when it is one."""
        if self.ok(value):
            return None
        if not _REGION.fullmatch(value):
            return f"{_shown(value)} is not a region name like us-east-1 or ap-southeast-3"
        return (
            f"{_shown(value)} is not an AWS region botocore {self.version} knows; "
            f"{_UNKNOWN_REGION_HINT}"
        )

    def __repr__(self) -> str:
        return (
            f"<RegionRule known={len(self.known)} botocore={self.version} "
            f"allow_unknown={self.allow_unknown}>"
        )


@cache
def region_rule(allow_unknown: bool = False) -> RegionRule:
    """The shared :class:`RegionRule` for ``allow_unknown`` (made once per process)."""
    return RegionRule(allow_unknown)


def check_region(value: str, *, allow_unknown: bool = False) -> str | None:
    """Return why ``value`` is not an accepted AWS region name, or None when it is one."""
    return region_rule(allow_unknown).problem(value)


@dataclass(frozen=True, slots=True)
class LoginSettings:
    """The Amazon Cognito login settings requested for one app; None means not sent."""

    identity_pool_id: str | None = None
    cognito_region: str | None = None
    user_pool_id: str | None = None
    web_client_id: str | None = None

    def to_api(self) -> dict[str, str]:
        """The ``LoginAuthConfig`` request member: only the settings that are set."""
        out: dict[str, str] = {}
        if self.identity_pool_id is not None:
            out["AwsCognitoIdentityPoolId"] = self.identity_pool_id
        if self.cognito_region is not None:
            out["AwsCognitoRegion"] = self.cognito_region
        if self.user_pool_id is not None:
            out["AwsUserPoolsId"] = self.user_pool_id
        if self.web_client_id is not None:
            out["AwsUserPoolsWebClientId"] = self.web_client_id
        return out

    def digest(self) -> str:
        """A short stable hash of the normalized settings (16 hex characters)."""
        return _digest(
            self.identity_pool_id or "",
            self.cognito_region or "",
            self.user_pool_id or "",
            self.web_client_id or "",
        )[1]


def _digest(
    identity_pool: str, cognito_region: str, user_pool: str, client: str
) -> tuple[int, str]:
    """(64-bit int, 16 hex characters) of the settings; empty means not sent.

    Unit separators keep the fields apart; no valid value can contain one.
    """
    raw = hashlib.blake2b(
        f"{identity_pool}\x1f{cognito_region}\x1f{user_pool}\x1f{client}".encode(),
        digest_size=8,
    ).digest()
    return int.from_bytes(raw, "big"), raw.hex()


@dataclass(frozen=True, slots=True)
class Row:
    """A validated input row, ready to send."""

    line: int
    app_id: str
    region: str
    settings: LoginSettings
    digest: str
    kept: tuple[str, ...] = ()  # the cells of the kept columns (RunConfig.keep_columns)


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input row that is not sent: ``status`` is ``invalid`` or ``skipped``."""

    line: int
    app_id: str
    region: str
    status: str
    reason: str
    digest: str = ""
    kept: tuple[str, ...] = ()  # the cells of the kept columns (RunConfig.keep_columns)


# -- reading -------------------------------------------------------------------------

# A valid row is a few hundred bytes. Lines are read with this limit, so a file without
# line ends (a binary file, one giant cell) is refused instead of being read whole.
_MAX_LINE_BYTES: Final = 1 << 20
_CHUNK: Final = 1 << 18  # bytes read from the input (and written to the spool) at a time
_CR_HINT: Final = "line ends must be LF or CRLF (CR-only line ends, old Mac style, are not read)"
_UTF16_HINT: Final = "the file looks like UTF-16: save it as UTF-8"
_KEEPABLE: Final = re.compile(r"[\w .-]{1,64}", re.ASCII)  # a name worth suggesting to keep
STDIN: Final = "-"  # the input path that means standard input


def _shown(value: str, limit: int = 60) -> str:
    """``repr(value)`` for a message, cut to about ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit + 2 else f"{text[:limit]}... ({len(value)} characters)"


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
        if len(parts) > 1 and any(part.strip().lower() in _ALIASES for part in parts):
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
        name = _ALIASES.get(key) or kept.get(key)
        if name is None:
            shown = _shown(raw.strip()) if raw.strip() else "an empty name"
            hint = _separator_hint(cells) or (
                _UTF16_HINT if _looks_utf16(",".join(cells)) else None
            )
            if hint is not None:
                raise InputError(
                    path, line, f"unknown column {shown} at position {position}: {hint}"
                )
            accepted = ", ".join(f"{n} (or {a})" for n, a in COLUMNS.items())
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


def _decoded_lines(path: str, raw_lines: Iterable[bytes]) -> Iterator[str]:
    # Decode line by line so an encoding error names its line exactly.
    decoder = codecs.getincrementaldecoder("utf-8")()
    number = 0
    for number, raw in enumerate(raw_lines, start=1):
        if len(raw) > _MAX_LINE_BYTES:
            hint = f"; it holds carriage returns: {_CR_HINT}" if b"\r" in raw else ""
            raise InputError(
                path,
                number,
                f"line longer than {_MAX_LINE_BYTES} bytes: not a CSV of apps and settings "
                f"(a valid row is a few hundred bytes){hint}",
            )
        try:
            text = decoder.decode(raw)
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
        yield text
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise InputError(path, number, f"not valid UTF-8 ({exc.reason} at the end)") from None


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


class _Lines(Protocol):
    def readline(self, size: int = -1, /) -> bytes: ...


def _parse(
    name: str, handle: _Lines, keep: Iterable[str] = (), require: bool = True
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line, {column: cell})`` for each non-blank data row read from ``handle``.

    ``keep`` names extra columns to read too; each must be in the header if ``require``.

    A row whose cell count does not fit the header holds the cells that have a column
    and its problem under the key ``__cells__``.
    """
    raw_lines = iter(partial(handle.readline, _MAX_LINE_BYTES + 1), b"")
    reader = csv.reader(_decoded_lines(name, raw_lines), strict=True)
    header: _Header | None = None
    names: list[str] = []
    named = 0
    next_line = 1
    while True:
        start = next_line
        try:
            cells = next(reader, None)
        except csv.Error as exc:
            raise InputError(name, start, f"broken CSV: {_csv_problem(exc)}") from None
        except OSError as exc:
            raise InputError(name, start, f"cannot read: {exc.strerror or exc}") from None
        if cells is None:
            break
        next_line = reader.line_num + 1
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue  # blank line
        if header is None:
            header = _map_header(name, cells, start, keep, require)
            names, named = header.names, len(header.names)
            continue
        if len(cells) == named:
            yield start, dict(zip(names, cells, strict=True))
            continue
        row = dict(zip(names, cells, strict=False))  # keep what can be read
        if (problem := header.count_problem(cells)) is not None:
            row["__cells__"] = problem
        yield start, row
    if header is None:
        what = "is empty" if next_line == 1 else "has only blank lines"
        raise InputError(name, None, f"the file {what}: a header row is required")


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


@runtime_checkable
class InputCopy(Protocol):
    """An input its reader already copied to a private file (an S3 object, see
    ``s3.S3Input``): a :class:`RowPlan` given one reads that copy in both passes."""

    @property
    def name(self) -> str: ...  # the input's name in messages

    size: int

    def reader(self) -> io.BufferedReader: ...  # a new reader from the copy's start

    def changed(self) -> bool: ...  # whether the original changed since it was copied

    def close(self) -> None: ...


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
    """Reads the spool's first ``size`` bytes at its own offset (``os.pread``)."""

    __slots__ = ("_fd", "_pos", "_size")

    def __init__(self, fd: int, size: int) -> None:
        self._fd, self._size, self._pos = fd, size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer)
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
            name = _ALIASES.get(key.strip().lower()) or kept.get(key.strip().lower())
            if name is None:
                accepted = ", ".join(COLUMNS)
                raise InputError(
                    "<rows>",
                    index + 2,
                    f"unknown column {_shown(key)}; accepted columns: {accepted}",
                )
            out[name] = "" if value is None else str(value)
        yield index + 2, out


# -- validating ------------------------------------------------------------------------


def _check_pool(
    column: str,
    value: str,
    *,
    pattern: re.Pattern[str],
    shape: str,
    sep: str,
    rule: RegionRule,
    problems: list[str],
) -> str | None:
    if len(value) > 55:
        problems.append(f"{column}: {len(value)} characters, at most 55 allowed")
        return None
    if not pattern.fullmatch(value):
        problems.append(f"{column}: {value!r} does not look like {shape}")
        return None
    prefix = value.split(sep, 1)[0]
    if not _REGION.fullmatch(prefix) and not rule.ok(prefix):
        problems.append(f"{column}: {value!r} must start with its region, like {shape}")
        return None
    if (why := rule.problem(prefix)) is not None:
        problems.append(f"{column}: region {why}")
        return None
    return prefix


def _problems(
    app_id: str,
    region: str,
    values: tuple[str, str, str, str],
    rule: RegionRule,
    problems: list[str],
) -> None:
    """Every problem of a row, worded for the operator (the slow path)."""
    if not app_id:
        problems.append("app_id: empty")
    elif len(app_id) > 20:
        problems.append(f"app_id: {len(app_id)} characters, at most 20 allowed")
    elif not _APP_ID.fullmatch(app_id):
        problems.append(
            f"app_id: {_shown(app_id)} is not an Amplify app id (d followed by a-z, 0-9)"
        )
    if (why := rule.problem(region)) is not None:
        problems.append(f"region: {why}")

    identity_pool, cognito_region, user_pool, client_id = values
    if cognito_region and (why := rule.problem(cognito_region)) is not None:
        problems.append(f"cognito_region: {why}")
        cognito_region = ""

    prefixes: list[tuple[str, str]] = []
    if user_pool:
        prefix = _check_pool(
            "user_pool_id",
            user_pool,
            pattern=_USER_POOL_ID,
            shape="us-east-1_AbC123xyz",
            sep="_",
            rule=rule,
            problems=problems,
        )
        if prefix is not None:
            prefixes.append(("user_pool_id", prefix))
    if identity_pool:
        prefix = _check_pool(
            "identity_pool_id",
            identity_pool,
            pattern=_IDENTITY_POOL_ID,
            shape="us-east-1:0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b",
            sep=":",
            rule=rule,
            problems=problems,
        )
        if prefix is not None:
            prefixes.append(("identity_pool_id", prefix))
    if cognito_region:
        for column, prefix in prefixes:
            if prefix != cognito_region:
                problems.append(
                    f"{column}: region {prefix} differs from cognito_region {cognito_region}"
                )

    if client_id:
        if len(client_id) > 128:
            problems.append(f"web_client_id: {len(client_id)} characters, at most 128 allowed")
        elif not _WEB_CLIENT_ID.fullmatch(client_id):
            # Sensitive value: never echo it, name only what is wrong.
            problems.append("web_client_id: only letters, digits, _ and + are allowed")

    if not any(values):
        problems.append(
            "no settings: give at least one of identity_pool_id, cognito_region, "
            "user_pool_id, web_client_id"
        )


def _pool_ok(
    value: str,
    pattern: re.Pattern[str],
    sep: str,
    cognito_region: str,
    region_ok: Callable[[str], bool],
) -> bool:
    """A pool id that is certainly valid: its shape, and a region prefix that matches
    (``cognito_region``, already accepted, or else an accepted region)."""
    if len(value) > 55 or not pattern.fullmatch(value):
        return False
    prefix = value.partition(sep)[0]
    return prefix == cognito_region if cognito_region else region_ok(prefix)


def _fast_ok(values: tuple[str, str, str, str], region_ok: Callable[[str], bool]) -> bool:
    """True when the settings are certainly valid (the common case, checked cheaply)."""
    identity_pool, cognito_region, user_pool, client_id = values
    if cognito_region and not region_ok(cognito_region):
        return False
    if user_pool and not _pool_ok(user_pool, _USER_POOL_ID, "_", cognito_region, region_ok):
        return False
    if identity_pool and not _pool_ok(
        identity_pool, _IDENTITY_POOL_ID, ":", cognito_region, region_ok
    ):
        return False
    if client_id and (len(client_id) > 128 or not _WEB_CLIENT_ID.fullmatch(client_id)):
        return False
    return bool(identity_pool or cognito_region or user_pool or client_id)


# What _check returns for a valid row: app_id, region, settings, digest as int and hex.
_Checked = tuple[str, str, tuple[str, str, str, str], int, str]


def _check(
    line: int, cells: Mapping[str, str], default_region: str | None, rule: RegionRule
) -> _Checked | Rejected | None:
    """Validate one row without building objects; None when it has no region at all."""
    get = cells.get
    app_id = get("app_id", "").strip()
    region = get("region", "").strip() or (default_region or "")
    if "__cells__" in cells:  # the cells that have a column, and why the row is invalid
        return Rejected(line, app_id, region, "invalid", cells["__cells__"])
    if not region:
        return None
    values = (
        get("identity_pool_id", "").strip(),
        get("cognito_region", "").strip(),
        get("user_pool_id", "").strip(),
        get("web_client_id", "").strip(),
    )
    region_ok = rule.ok
    if not (
        len(app_id) <= 20
        and _APP_ID.fullmatch(app_id)
        and region_ok(region)
        and _fast_ok(values, region_ok)
    ):
        problems: list[str] = []
        _problems(app_id, region, values, rule, problems)
        if problems:
            return Rejected(line, app_id, region, "invalid", "; ".join(problems))
    number, hexdigest = _digest(*values)
    return app_id, region, values, number, hexdigest


def validate(
    line: int,
    cells: Mapping[str, str],
    default_region: str | None,
    rule: RegionRule | None = None,
    keep: tuple[str, ...] = (),
) -> Row | Rejected | None:
    """Validate one row. Returns None when the row needs a region and none is configured.

    ``rule`` decides which region names are accepted (default: those botocore knows);
    ``keep`` names the columns whose cells the result carries along (``kept``).
    """
    checked = _check(line, cells, default_region, rule or region_rule())
    kept = tuple(cells.get(name, "") for name in keep) if keep else ()
    if checked is None:
        return None
    if isinstance(checked, Rejected):
        return replace(checked, kept=kept) if kept else checked
    app_id, region, values, _, hexdigest = checked
    identity_pool, cognito_region, user_pool, client_id = values
    settings = LoginSettings(
        identity_pool or None, cognito_region or None, user_pool or None, client_id or None
    )
    return Row(line, app_id, region, settings, hexdigest, kept)


# -- duplicates and the two passes -----------------------------------------------------


class ValidationInterrupted(BatchUpdaterError):
    """A stop was asked for while the input was being validated; nothing was sent."""

    def __init__(self, source: str, line: int) -> None:
        super().__init__(f"{source}: stopped while validating line {line}; nothing was sent")
        self.signal: int | None = None  # set by the runner from the stop request


class _DuplicateIndex:
    """(region, app_id) -> first line, settings digest and row count, in flat arrays.

    An open-addressing table (linear probing, at most 70% full) of 64-bit key hashes
    (Python's string hash, stable within the process that reads both passes), 32-bit line
    numbers, 64-bit digests and 32-bit counts of later rows with the key: 24 bytes a slot,
    about 34 MB for a million distinct apps when sized from the expected row count up
    front. Conflicts (rare) live in a small dict.
    """

    __slots__ = ("_conflicts", "_digests", "_keys", "_lines", "_repeats", "_size", "_slots")

    LOAD: Final = 0.7

    def __init__(self, expected: int = 1024) -> None:
        self._alloc(max(16, int(expected / self.LOAD) + 1))
        self._size = 0
        self._conflicts: dict[int, int] = {}  # key hash -> first line whose settings differ

    def _alloc(self, slots: int) -> None:
        self._keys = array("Q", bytes(8 * slots))
        self._lines = array("I", bytes(4 * slots))
        self._digests = array("Q", bytes(8 * slots))
        self._repeats = array("I", bytes(4 * slots))  # rows after the first, per key
        self._slots = slots

    @staticmethod
    def key(region: str, app_id: str) -> int:
        """The table key of (region, app_id); never 0, which marks an empty slot."""
        return (hash(f"{region} {app_id}") & 0xFFFF_FFFF_FFFF_FFFF) or 1

    def _slot(self, key: int) -> int:
        keys, slots = self._keys, self._slots
        i = key % slots
        while (k := keys[i]) and k != key:
            i = i + 1 if i + 1 < slots else 0
        return i

    def add(self, key: int, line: int, digest: int) -> bool:
        """Record a row; True when it is the first for its key."""
        i = self._slot(key)
        if self._keys[i]:
            self._repeats[i] += 1
            if digest != self._digests[i] and key not in self._conflicts:
                self._conflicts[key] = line
            return False
        self._keys[i], self._lines[i], self._digests[i] = key, line, digest
        self._size += 1
        if self._size > self.LOAD * self._slots:
            self._grow()
        return True

    def _grow(self) -> None:
        keys, lines, digests, repeats = self._keys, self._lines, self._digests, self._repeats
        self._alloc(2 * self._slots + 1)
        for j, key in enumerate(keys):
            if key:
                i = self._slot(key)
                self._keys[i], self._lines[i], self._digests[i] = key, lines[j], digests[j]
                self._repeats[i] = repeats[j]

    @property
    def conflicts(self) -> int:
        """Keys given more than once with different settings."""
        return len(self._conflicts)

    def conflicting_rows(self, among: Container[int] | None = None) -> int:
        """Rows whose key has conflicting settings (every one of them is invalid), over
        all conflicting keys or only those in ``among``."""
        repeats, slot = self._repeats, self._slot
        return sum(
            repeats[slot(key)] + 1 for key in self._conflicts if among is None or key in among
        )

    def classify(self, row: Row) -> Row | Rejected:
        """``row`` itself when it is to be sent, else why not."""
        key = self.key(row.region, row.app_id)
        i = self._slot(key)  # pass 2 reads the rows pass 1 added: the key is there
        first_line = self._lines[i]
        if conflict := self._conflicts.get(key):
            same_as_first = int(row.digest, 16) == self._digests[i]
            other = conflict if same_as_first else first_line
            reason = f"conflicts with line {other} (same region and app_id, other settings)"
            return Rejected(
                row.line, row.app_id, row.region, "invalid", reason, row.digest, row.kept
            )
        if row.line != first_line:
            reason = f"duplicate of line {first_line}"
            return Rejected(
                row.line, row.app_id, row.region, "skipped", reason, row.digest, row.kept
            )
        return row

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return (
            f"<_DuplicateIndex keys={self._size} slots={self._slots} "
            f"conflicts={len(self._conflicts)}>"
        )


DefaultRegion = str | Callable[[], str | None] | None


class RowPlan:
    """Validates all rows up front, then yields each row's fate in input order.

    ``source`` is a CSV path (``-`` for standard input), an :class:`InputCopy`, or an
    iterable of mappings (column name -> cell); an iterable is materialized into a list
    because it is read twice. A file is read once: the first pass copies its bytes into
    a private spool file that the second pass reads, so later changes to the file change
    nothing here (:meth:`input_changed` tells whether there were any). ``default_region`` is the
    region of rows without one, or a function that finds it (called only if such a row
    exists). ``allow_unknown_region`` accepts region names botocore does not know (see
    :class:`RegionRule`); ``keep`` names extra columns to read. After construction,
    ``total`` (rows this plan yields), ``invalid`` (those of them that are invalid, rows
    of conflicting duplicates included: the report's count), ``input_rows`` and
    ``input_invalid`` (the same over the whole input, whichever shard), ``conflicts``
    (keys given twice with different settings) and ``regions`` describe the input;
    iterate for the second pass. :meth:`close` (or ``with``) removes the spool.
    """

    __slots__ = (
        "_copy",
        "_default_region",
        "_identity",
        "_index",
        "_interrupted",
        "_keep",
        "_resolve_region",
        "_rows",
        "_rule",
        "_spool",
        "input_invalid",
        "input_rows",
        "invalid",
        "path",
        "regions",
        "shard",
        "total",
    )

    def __init__(
        self,
        source: Path | InputCopy | Iterable[Mapping[str, str | None]],
        default_region: DefaultRegion,
        *,
        shard: Shard | None = None,
        interrupted: Callable[[], bool] | None = None,
        allow_unknown_region: bool = False,
        keep: Iterable[str] = (),
    ) -> None:
        self._rule = region_rule(allow_unknown_region)
        self._copy: InputCopy | None = None
        if isinstance(source, Path):
            self.path: Path | None = source
            self._rows: list[Mapping[str, str | None]] | None = None
        elif isinstance(source, InputCopy):
            self.path, self._rows, self._copy = None, None, source
        else:
            self.path = None
            self._rows = list(source)
        if callable(default_region):
            self._default_region: str | None = None
            self._resolve_region: Callable[[], str | None] | None = default_region
        else:
            self._default_region = default_region
            self._resolve_region = None
        self.shard = shard
        self._interrupted = interrupted
        self._keep = tuple(name.strip() for name in keep)
        self._spool: _Spool | InputCopy | None = None
        self._identity: tuple[int, int, int, int] | None = None
        self._index = _DuplicateIndex()
        self.total = 0  # rows this plan yields (this shard's, when sharded)
        self.input_rows = 0  # rows in the whole input
        self.invalid = 0  # invalid rows this plan yields (conflicting duplicates included)
        self.input_invalid = 0  # invalid rows in the whole input, whichever shard
        self.regions: set[str] = set()
        try:
            self._first_pass()
        except BaseException:
            self.close()
            raise

    @property
    def conflicts(self) -> int:
        """How many (region, app_id) keys appear with different settings."""
        return self._index.conflicts

    @property
    def ok(self) -> bool:
        """True when no row of the whole input is invalid (conflicting duplicates
        included), so every shard of a sharded job agrees."""
        return self.input_invalid == 0

    @property
    def source_name(self) -> str:
        """The input's name for messages: its path, ``<stdin>`` or ``<rows>``."""
        if self._copy is not None:
            return self._copy.name
        if self.path is None:
            return "<rows>"
        return "<stdin>" if str(self.path) == STDIN else str(self.path)

    @property
    def kept_columns(self) -> tuple[str, ...]:
        """The extra columns each row carries into the report, in ``keep`` order."""
        return self._keep

    @property
    def stem(self) -> str:
        """The input's name in a default report name: the file's name, stdin or rows."""
        if self._copy is not None:
            return self._copy.name.rsplit("/", 1)[-1]
        if self.path is None:
            return "rows"
        return "stdin" if str(self.path) == STDIN else self.path.name

    def input_changed(self) -> bool:
        """True when the input file is no longer the one the first pass read (another
        size, modification time or inode, or gone). Only a regular file is checked."""
        if self._copy is not None:
            return self._copy.changed()
        if self._identity is None or self.path is None:
            return False
        try:
            if str(self.path) == STDIN:  # a file given as standard input: the same file
                return _identity(os.fstat(sys.stdin.fileno())) != self._identity
            return _identity(os.stat(self.path)) != self._identity
        except OSError:
            return True

    def close(self) -> None:
        """Remove the private copy of the input; the plan cannot be iterated after."""
        if self._spool is not None:
            self._spool.close()

    def __enter__(self) -> RowPlan:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<RowPlan {self.source_name} rows={self.input_rows} mine={self.total} "
            f"invalid={self.invalid} conflicts={self.conflicts} spool={self._spool!r}>"
        )

    def _no_region(self, line: int, cells: Mapping[str, str]) -> _Checked | Rejected:
        if self._resolve_region is not None:
            self._default_region, self._resolve_region = self._resolve_region(), None
            checked = _check(line, cells, self._default_region, self._rule)
            if checked is not None:
                return checked
        raise SetupError(
            f"{self.source_name}, line {line}: no region for this row; add a region "
            "column, pass --region, or set AWS_REGION / AWS_DEFAULT_REGION or a "
            "profile region"
        )

    def _first_pass(self) -> None:
        if self._copy is not None:
            self._spool = self._copy  # read by the second pass, closed with the plan
            with self._copy.reader() as reader:
                sample = reader.peek(_CHUNK)
                self._index = _DuplicateIndex(_expected_rows(sample, self._copy.size))
                self._scan(_parse(self.source_name, reader, self._keep))
            return
        if self.path is None:
            assert self._rows is not None
            self._index = _DuplicateIndex(len(self._rows))
            self._scan(read_mappings(self._rows, self._keep))
            return
        name = self.source_name
        with _open_input(self.path) as raw:
            info = os.fstat(raw.fileno())
            if stat.S_ISREG(info.st_mode):
                self._identity = _identity(info)
            self._spool = spool = _Spool()
            reader = io.BufferedReader(_Tee(raw, spool), _CHUNK)
            try:
                sample = reader.peek(_CHUNK)
            except OSError as exc:
                raise InputError(name, None, f"cannot read: {exc.strerror or exc}") from None
            self._index = _DuplicateIndex(_expected_rows(sample, info.st_size))
            self._scan(_parse(name, reader, self._keep))
            spool.finish()

    def _scan(self, rows: Iterable[tuple[int, dict[str, str]]]) -> None:
        index, regions, shard, rule = self._index, self.regions, self.shard, self._rule
        key = index.key
        total = invalid = mine = mine_invalid = 0
        mine_repeated: set[int] = set()  # keys of this shard given more than once
        interrupted = self._interrupted
        for line, cells in rows:
            total += 1
            if interrupted is not None and total % 4096 == 0 and interrupted():
                raise ValidationInterrupted(self.source_name, line)
            checked = _check(line, cells, self._default_region, rule)
            if checked is None:
                checked = self._no_region(line, cells)
            if isinstance(checked, Rejected):
                invalid += 1
                if shard is None or shard.owns(checked.region, checked.app_id):
                    mine += 1
                    mine_invalid += 1
                continue
            app_id, region, _, number, _ = checked
            is_mine = shard is None or shard.owns(region, app_id)
            if is_mine:
                mine += 1
                regions.add(region)
            # Duplicates are found over the whole input: they hash to the same shard anyway.
            k = key(region, app_id)
            if not index.add(k, line, number) and is_mine and shard is not None:
                mine_repeated.add(k)
        # Every row of a key given with different settings is invalid (see classify).
        conflicting = index.conflicting_rows()
        if shard is not None:
            mine_invalid += index.conflicting_rows(mine_repeated)
        else:
            mine_invalid += conflicting
        self.input_rows, self.input_invalid = total, invalid + conflicting
        self.total, self.invalid = mine, mine_invalid

    def _read(self) -> Iterator[tuple[int, dict[str, str]]]:
        if self._spool is None:
            assert self._rows is not None
            yield from read_mappings(self._rows, self._keep)
            return
        with self._spool.reader() as handle:
            yield from _parse(self.source_name, handle, self._keep)

    def __iter__(self) -> Iterator[Row | Rejected]:
        """Second pass: each row of this plan (its shard's), validated again, with
        duplicates and conflicts resolved."""
        classify, shard, rule, keep = self._index.classify, self.shard, self._rule, self._keep
        for line, cells in self._read():
            result = validate(line, cells, self._default_region, rule, keep)
            assert result is not None, "pass 1 found the region of every row"
            if shard is not None and not shard.owns(result.region, result.app_id):
                continue
            yield result if isinstance(result, Rejected) else classify(result)


def _identity(info: os.stat_result) -> tuple[int, int, int, int]:
    """What tells that a file changed: device, inode, size, modification time."""
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


def _expected_rows(sample: bytes, size: int) -> int:
    """A guess of the row count, to size the duplicate index once: the sample's lines per
    byte times the file size (a pipe has no size: the index grows as needed)."""
    lines = sample.count(b"\n")
    return int(size * lines / len(sample) * 1.05) + 16 if lines and size else 1024
