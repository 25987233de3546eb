"""``--resume``: read earlier reports and find the rows that already succeeded."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final

from .codec import (
    ACCOUNT_ID,
    APP_ID,
    ERROR_MESSAGE,
    FINISHED_AT,
    REGION,
    SETTINGS_DIGEST,
    STATUS,
    ReportReader,
    Warn,
)
from .report import report_location
from .rows import Row
from .storage import Location

__all__ = ["ResumeIndex", "read_report"]

# A row skipped because an earlier report had it succeeded carries this prefix, so resuming
# from the newest report alone is enough: it is a complete record of the job.
SUCCEEDED_IN: Final = "succeeded in "


def read_report(path: Path | Location, warn: Warn | None = None) -> Iterator[dict[str, Any]]:
    """Yield the records of a CSV or JSON-lines report written by this tool, as written
    (CSV cells as text; see :class:`codec.ReportReader` for typed records).

    A torn last line is ignored, with ``warn(message)`` called. Anything else malformed is
    an :class:`InputError`.
    """
    return ReportReader(report_location(path), warn).raw()


def _account(row: Row) -> str:
    # Row.account_id comes with the account columns of the input; "" before them.
    account: str = getattr(row, "account_id", "")
    return account


class ResumeIndex:
    """(account_id, region, app_id, settings digest) of rows that succeeded in earlier
    reports; a report without the account_id column counts as account ""."""

    __slots__ = ("_done", "reports")

    def __init__(self) -> None:
        self._done: dict[tuple[str, str, str, str], str] = {}
        self.reports: list[str] = []

    @classmethod
    def load(cls, paths: Iterable[Path | Location], warn: Warn | None = None) -> ResumeIndex:
        """Read every report in ``paths``; later reports do not override earlier ones."""
        index = cls()
        done = index._done
        for path in paths:
            reader = ReportReader(report_location(path), warn)
            index.reports.append(reader.name)
            for values, _, _ in reader:
                status = values[STATUS]
                if status == "succeeded":
                    note = f"{SUCCEEDED_IN}{reader.name} at {values[FINISHED_AT] or '?'}"
                elif status == "skipped" and str(values[ERROR_MESSAGE] or "").startswith(
                    SUCCEEDED_IN
                ):
                    note = values[ERROR_MESSAGE]
                else:
                    continue
                key = (
                    str(values[ACCOUNT_ID] or ""),
                    str(values[REGION]),
                    str(values[APP_ID]),
                    str(values[SETTINGS_DIGEST]),
                )
                done.setdefault(key, note)
        return index

    def lookup(self, row: Row) -> str | None:
        """Why ``row`` need not be sent again, or None when it must run."""
        return self._done.get((_account(row), row.region, row.app_id, row.digest))

    def __len__(self) -> int:
        return len(self._done)

    def __repr__(self) -> str:
        return f"<ResumeIndex succeeded={len(self._done)} reports={len(self.reports)}>"
