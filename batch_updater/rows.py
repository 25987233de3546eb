"""Input rows: read the CSV, map its columns, validate every row, find duplicates.

The file is read twice in a streaming fashion (see :class:`RowPlan`): the first pass
validates every row and fills the duplicate index, the second yields what to do with
each row. Memory grows only with the duplicate index, never with the rows themselves.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Final

from .errors import InputError, SetupError

__all__ = [
    "COLUMNS",
    "LoginSettings",
    "Rejected",
    "Row",
    "RowPlan",
    "check_region",
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


def check_region(value: str) -> str | None:
    """Return why ``value`` is not an AWS region name, or None when it looks like one."""
    if _REGION.fullmatch(value):
        return None
    return f"{_shown(value)} is not a region name like us-east-1 or ap-southeast-3"


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
        for name in SETTING_COLUMNS:
            value = getattr(self, name)
            if value is not None:
                out[COLUMNS[name]] = value
        return out

    def digest(self) -> str:
        """A short stable hash of the normalized settings (16 hex characters)."""
        canonical = json.dumps(self.to_api(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Row:
    """A validated input row, ready to send."""

    line: int
    app_id: str
    region: str
    settings: LoginSettings
    digest: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input row that is not sent: ``status`` is ``invalid`` or ``skipped``."""

    line: int
    app_id: str
    region: str
    status: str
    reason: str
    digest: str = ""


# -- reading -------------------------------------------------------------------------

# A valid row is a few hundred bytes. Lines are read with this limit, so a file without
# line ends (a binary file, one giant cell) is refused instead of being read whole.
_MAX_LINE_BYTES: Final = 1 << 20
_CR_HINT: Final = "line ends must be LF or CRLF (CR-only line ends, old Mac style, are not read)"


def _shown(value: str, limit: int = 60) -> str:
    """``repr(value)`` for a message, cut to about ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit + 2 else f"{text[:limit]}... ({len(value)} characters)"


def _map_header(path: str, cells: list[str], line: int = 1) -> list[str]:
    names: list[str] = []
    seen: dict[str, int] = {}
    for position, raw in enumerate(cells, start=1):
        key = raw.strip().lower()
        name = _ALIASES.get(key)
        if name is None:
            accepted = ", ".join(f"{n} (or {a})" for n, a in COLUMNS.items())
            shown = _shown(raw.strip()) if raw.strip() else "an empty name"
            raise InputError(
                path,
                line,
                f"unknown column {shown} at position {position}; accepted columns: {accepted}",
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
    return names


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
            if number == 1 and raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                why = "the file looks like UTF-16: save it as UTF-8"
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


def read_csv(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line, {column: cell})`` for each non-blank data row of the CSV at ``path``.

    ``line`` is the physical line the row starts on (the header is line 1).
    """
    name = str(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError(name, None, f"cannot open: {exc.strerror or exc}") from None
    with handle:
        raw_lines = iter(partial(handle.readline, _MAX_LINE_BYTES + 1), b"")
        reader = csv.reader(_decoded_lines(name, raw_lines), strict=True)
        header: list[str] | None = None
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
                header = _map_header(name, cells, start)
                continue
            if len(cells) != len(header):
                yield start, {"__cells__": f"has {len(cells)} cells, the header has {len(header)}"}
                continue
            yield start, dict(zip(header, cells, strict=True))
        if header is None:
            what = "is empty" if next_line == 1 else "has only blank lines"
            raise InputError(name, None, f"the file {what}: a header row is required")


def read_mappings(rows: Iterable[Mapping[str, str | None]]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield rows given as mappings (library use); row *i* is numbered line *i + 2*."""
    for index, mapping in enumerate(rows):
        out: dict[str, str] = {}
        for key, value in mapping.items():
            name = _ALIASES.get(key.strip().lower())
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
    column: str, value: str, *, pattern: re.Pattern[str], shape: str, sep: str, problems: list[str]
) -> str | None:
    if len(value) > 55:
        problems.append(f"{column}: {len(value)} characters, at most 55 allowed")
        return None
    if not pattern.fullmatch(value):
        problems.append(f"{column}: {value!r} does not look like {shape}")
        return None
    prefix = value.split(sep, 1)[0]
    if check_region(prefix) is not None:
        problems.append(f"{column}: {value!r} must start with its region, like {shape}")
        return None
    return prefix


def validate(
    line: int, cells: Mapping[str, str], default_region: str | None
) -> Row | Rejected | None:
    """Validate one row. Returns None when the row needs a region and none is configured."""
    if "__cells__" in cells:
        return Rejected(line, "", "", "invalid", cells["__cells__"])
    app_id = cells.get("app_id", "").strip()
    region = cells.get("region", "").strip() or (default_region or "")
    problems: list[str] = []

    if not app_id:
        problems.append("app_id: empty")
    elif len(app_id) > 20:
        problems.append(f"app_id: {len(app_id)} characters, at most 20 allowed")
    elif not _APP_ID.fullmatch(app_id):
        problems.append(f"app_id: {app_id!r} is not an Amplify app id (d followed by a-z, 0-9)")

    if not region:
        return None
    if (why := check_region(region)) is not None:
        problems.append(f"region: {why}")

    values = {name: cells.get(name, "").strip() for name in SETTING_COLUMNS}
    cognito_region = values["cognito_region"]
    if cognito_region and (why := check_region(cognito_region)) is not None:
        problems.append(f"cognito_region: {why}")
        cognito_region = ""

    prefixes: list[tuple[str, str]] = []
    if user_pool := values["user_pool_id"]:
        prefix = _check_pool(
            "user_pool_id",
            user_pool,
            pattern=_USER_POOL_ID,
            shape="us-east-1_AbC123xyz",
            sep="_",
            problems=problems,
        )
        if prefix is not None:
            prefixes.append(("user_pool_id", prefix))
    if identity_pool := values["identity_pool_id"]:
        prefix = _check_pool(
            "identity_pool_id",
            identity_pool,
            pattern=_IDENTITY_POOL_ID,
            shape="us-east-1:0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b",
            sep=":",
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

    if client_id := values["web_client_id"]:
        if len(client_id) > 128:
            problems.append(f"web_client_id: {len(client_id)} characters, at most 128 allowed")
        elif not _WEB_CLIENT_ID.fullmatch(client_id):
            # Sensitive value: never echo it, name only what is wrong.
            problems.append("web_client_id: only letters, digits, _ and + are allowed")

    if not any(values.values()):
        problems.append(
            "no settings: give at least one of identity_pool_id, cognito_region, "
            "user_pool_id, web_client_id"
        )
    if problems:
        return Rejected(line, app_id, region, "invalid", "; ".join(problems))
    settings = LoginSettings(**{name: value or None for name, value in values.items()})
    return Row(line, app_id, region, settings, settings.digest())


# -- duplicates and the two passes -----------------------------------------------------


class _DuplicateIndex:
    """(region, app_id) -> first line, its digest, and the first line that conflicts."""

    __slots__ = ("_entries", "conflicts")

    def __init__(self) -> None:
        self._entries: dict[str, tuple[int, str, int]] = {}
        self.conflicts = 0

    def add(self, row: Row) -> bool:
        """Record ``row``; True when it is the first for its key."""
        key = f"{row.region} {row.app_id}"
        entry = self._entries.get(key)
        if entry is None:
            self._entries[key] = (row.line, row.digest, 0)
            return True
        first_line, first_digest, conflict = entry
        if not conflict and row.digest != first_digest:
            self._entries[key] = (first_line, first_digest, row.line)
            self.conflicts += 1
        return False

    def classify(self, row: Row) -> Row | Rejected:
        first_line, first_digest, conflict = self._entries[f"{row.region} {row.app_id}"]
        if conflict:
            other = conflict if row.digest == first_digest else first_line
            reason = f"conflicts with line {other} (same region and app_id, other settings)"
            return Rejected(row.line, row.app_id, row.region, "invalid", reason, row.digest)
        if row.line != first_line:
            reason = f"duplicate of line {first_line}"
            return Rejected(row.line, row.app_id, row.region, "skipped", reason, row.digest)
        return row

    def __len__(self) -> int:
        return len(self._entries)


class RowPlan:
    """Validates all rows up front, then yields each row's fate in input order.

    ``source`` is a CSV path or an iterable of mappings (column name -> cell); an iterable
    is materialized into a list because it is read twice. After construction, ``total``,
    ``invalid`` (rows failing validation), ``conflicts`` (keys given twice with different
    settings) and ``regions`` describe the whole input; iterate for the second pass.
    """

    __slots__ = (
        "_default_region",
        "_index",
        "_rows",
        "conflicts",
        "invalid",
        "path",
        "regions",
        "total",
    )

    def __init__(
        self,
        source: Path | Iterable[Mapping[str, str | None]],
        default_region: str | None,
    ) -> None:
        if isinstance(source, Path):
            self.path: Path | None = source
            self._rows: list[Mapping[str, str | None]] | None = None
        else:
            self.path = None
            self._rows = list(source)
        self._default_region = default_region
        self._index = _DuplicateIndex()
        self.total = 0
        self.invalid = 0
        self.conflicts = 0
        self.regions: set[str] = set()
        for _ in self._validated():
            pass
        self.conflicts = self._index.conflicts

    @property
    def ok(self) -> bool:
        """True when no row is invalid (conflicting duplicates included)."""
        return self.invalid == 0 and self.conflicts == 0

    @property
    def source_name(self) -> str:
        """The input's name for messages: its path, or ``<rows>``."""
        return str(self.path) if self.path is not None else "<rows>"

    def _read(self) -> Iterator[tuple[int, dict[str, str]]]:
        if self.path is not None:
            return read_csv(self.path)
        assert self._rows is not None
        return read_mappings(self._rows)

    def _validated(self) -> Iterator[Row | Rejected]:
        first_pass = self.total == 0
        for line, cells in self._read():
            result = validate(line, cells, self._default_region)
            if result is None:
                raise SetupError(
                    f"{self.source_name}, line {line}: no region for this row; add a region "
                    "column, pass --region, or set AWS_REGION / AWS_DEFAULT_REGION or a "
                    "profile region"
                )
            if first_pass:
                self.total += 1
                if isinstance(result, Rejected):
                    self.invalid += 1
                else:
                    self.regions.add(result.region)
                    self._index.add(result)
            yield result

    def __iter__(self) -> Iterator[Row | Rejected]:
        """Second pass: each row, validated again, with duplicates and conflicts resolved."""
        for result in self._validated():
            yield result if isinstance(result, Rejected) else self._index.classify(result)
