"""``--resume``: read earlier reports and find the rows that already succeeded."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from .errors import InputError
from .report import REPORT_COLUMNS
from .rows import Row

__all__ = ["ResumeIndex", "read_report"]

# A row skipped because an earlier report had it succeeded carries this prefix, so resuming
# from the newest report alone is enough: it is a complete record of the job.
SUCCEEDED_IN: Final = "succeeded in "
_FIRST_COLUMNS: Final = 14  # line ... duration_ms: the columns of the first release


def read_report(path: Path, warn: Any = None, name: str | None = None) -> Iterator[dict[str, Any]]:
    """Yield the records of a CSV or JSON-lines report written by this tool.

    A last line without its newline is a torn write (the run was killed mid-row): it is
    ignored, with ``warn(message)`` called. Anything else malformed is an :class:`InputError`.
    ``name`` is the report's name in messages (a local copy's URL), by default its path.
    """
    name = name or str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(name, None, f"cannot read the report: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(name, None, "not a report: not valid UTF-8") from None
    lines = text.split("\n")
    if lines and lines[-1] != "":
        if warn is not None:
            warn(f"{name}, line {len(lines)}: incomplete last line ignored (torn write)")
        lines = lines[:-1]
    lines = lines[:-1] if lines and lines[-1] == "" else lines
    if path.suffix.lower() == ".jsonl":
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(name, number, f"not a JSON report line: {exc.msg}") from None
            if not isinstance(record, dict):
                raise InputError(name, number, "not a JSON report line: not an object")
            yield record
        return
    reader = csv.reader(lines)
    header = next(reader, None)
    # Reports written before a column was appended have a prefix of today's columns;
    # kept input columns (--keep-column) follow today's columns.
    known = len(REPORT_COLUMNS)
    if (
        header is None
        or len(header) < _FIRST_COLUMNS
        or tuple(header[:known]) != REPORT_COLUMNS[: len(header)]
        or (len(header) > known and not all(header[known:]))
    ):
        raise InputError(name, 1, "not a batch-updater report: unexpected header")
    for cells in reader:
        if len(cells) != len(header):
            raise InputError(name, reader.line_num, "not a report line: wrong number of cells")
        yield dict(zip(header, cells, strict=True))


class ResumeIndex:
    """(region, app_id, settings digest) of rows that succeeded in earlier reports."""

    __slots__ = ("_done", "reports")

    def __init__(self) -> None:
        self._done: dict[tuple[str, str, str], str] = {}
        self.reports: list[str] = []

    @classmethod
    def load(
        cls, paths: Iterable[Path], warn: Any = None, names: Mapping[Path, str] | None = None
    ) -> ResumeIndex:
        """Read every report in ``paths``; later reports do not override earlier ones.
        ``names`` gives the name to show of a path (an S3 report's local copy: its URL)."""
        index = cls()
        for local in paths:
            path = (names or {}).get(local, str(local))
            index.reports.append(path)
            for record in read_report(local, warn, path):
                status = record.get("status")
                message = str(record.get("error_message") or "")
                if status == "succeeded":
                    note = f"{SUCCEEDED_IN}{path} at {record.get('finished_at') or '?'}"
                elif status == "skipped" and message.startswith(SUCCEEDED_IN):
                    note = message
                else:
                    continue
                key = (
                    str(record.get("region")),
                    str(record.get("app_id")),
                    str(record.get("settings_digest")),
                )
                index._done.setdefault(key, note)
        return index

    def lookup(self, row: Row) -> str | None:
        """Why ``row`` need not be sent again, or None when it must run."""
        return self._done.get((row.region, row.app_id, row.digest))

    def __len__(self) -> int:
        return len(self._done)

    def __repr__(self) -> str:
        return f"<ResumeIndex succeeded={len(self._done)} reports={len(self.reports)}>"
