"""``--resume``: read earlier reports and find the rows that already succeeded."""

from __future__ import annotations

import re
from array import array
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
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
    iso,
)
from .report import report_location
from .rows import Row
from .storage import LocalFile, Location

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


# -- the index ---------------------------------------------------------------------------

_NO_TIME: Final = -(1 << 63)  # a succeeded record without finished_at: its note says "at ?"
_TIME: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z", re.ASCII
)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
_HEX64: Final = re.compile(r"[0-9a-f]{16}", re.ASCII)
_MASK: Final = 0xFFFF_FFFF_FFFF_FFFF
_SUCCESS: Final = ("succeeded", "skipped")  # statuses that may tell of one (any JSON value)
_EXPECT_SAMPLE: Final = 1 << 16  # bytes of a report read to guess its record count


def _epoch_ms(text: str) -> int | None:
    """A time as the report writes it (``2026-11-26T10:15:00.120Z``) in epoch
    milliseconds; None for any other text (a note holding it is kept verbatim)."""
    if _TIME.fullmatch(text) is None:
        return None
    try:
        return (datetime.fromisoformat(text) - _EPOCH) // _MS
    except ValueError:
        return None


def _time_text(ms: int) -> str:
    """The inverse of :func:`_epoch_ms`: the report's own time text, ``?`` when absent."""
    return "?" if ms == _NO_TIME else iso(_EPOCH + ms * _MS) or "?"


def _keys(account: str, region: str, app_id: str) -> tuple[int, int]:
    """Two independent 64-bit hashes of a row's key (Python's keyed string hash, stable
    within this process): the first never 0, which marks an empty slot."""
    first = hash(f"{account}\x1f{region}\x1f{app_id}") & _MASK
    second = hash(f"{app_id}\x1e{region}\x1e{account}\x1e") & _MASK
    return first or 1, second


def _account(row: Row) -> str:
    # A row's account comes with the input's account columns; "" before them.
    account: str = getattr(row, "account_id", "") or ""
    return account


def _expected_records(locations: Iterable[Location]) -> int:
    """A guess of the records in local reports, to size the table once: the first bytes'
    lines per byte times the file size (a report elsewhere: the table grows as needed)."""
    total = 0
    for location in locations:
        if not isinstance(location, LocalFile):
            continue
        try:
            size = location.path.stat().st_size
            with location.path.open("rb") as handle:
                sample = handle.read(_EXPECT_SAMPLE)
        except OSError:
            continue  # the reader says what is wrong
        lines = sample.count(b"\n")
        if lines and size:
            total += int(size * lines / len(sample) * 1.05) + 16
    return total


class _Succeeded:
    """Rows that succeeded, in flat arrays: an open-addressing table (linear probing, at
    most 70% full) of fixed-size slots, like the input's duplicate index.

    A slot holds two independent 64-bit hashes of the row's key (account_id, region,
    app_id), its 64-bit settings digest, when it succeeded (epoch milliseconds) and where
    (an index into :attr:`names`, the reports named in the notes): 36 bytes, about 52 MB
    for a million succeeded rows. A note that is not "succeeded in <report> at <time as
    the tool writes it>" (a hand-edited report) is kept whole in :attr:`notes`.

    A slot matches a row only when both hashes and the digest match. A wrong match (a
    row skipped that never succeeded) needs two rows whose keys differ to agree on 128
    hash bits and to have the same settings: with Python's keyed SipHash about
    ``2**-128`` per pair of (input row, succeeded record), under ``10**-26`` for a
    million rows against a million records.
    """

    __slots__ = ("_digests", "_firsts", "_seconds", "_size", "_slots", "_sources", "_times")

    LOAD: Final = 0.7

    def __init__(self, expected: int = 1024) -> None:
        self._alloc(max(16, int(expected / self.LOAD) + 1))
        self._size = 0

    def _alloc(self, slots: int) -> None:
        self._firsts = array("Q", bytes(8 * slots))
        self._seconds = array("Q", bytes(8 * slots))
        self._digests = array("Q", bytes(8 * slots))
        self._times = array("q", bytes(8 * slots))
        self._sources = array("I", bytes(4 * slots))
        self._slots = slots

    def _slot(self, first: int, second: int, digest: int) -> int:
        """The slot holding the key, or the empty slot where it would go."""
        firsts, seconds, digests, slots = self._firsts, self._seconds, self._digests, self._slots
        i = (first ^ digest) % slots
        while (f := firsts[i]) and (f != first or seconds[i] != second or digests[i] != digest):
            i = i + 1 if i + 1 < slots else 0
        return i

    def add(self, first: int, second: int, digest: int, when: int, source: int) -> None:
        """Remember a success; a key already held keeps its note (earlier reports win)."""
        i = self._slot(first, second, digest)
        if self._firsts[i]:
            return
        self._firsts[i], self._seconds[i], self._digests[i] = first, second, digest
        self._times[i], self._sources[i] = when, source
        self._size += 1
        if self._size > self.LOAD * self._slots:
            self._grow()

    def find(self, first: int, second: int, digest: int) -> tuple[int, int] | None:
        """(when, source) of a success with this key and digest, or None."""
        i = self._slot(first, second, digest)
        if not self._firsts[i]:
            return None
        return self._times[i], self._sources[i]

    def _grow(self) -> None:
        old = self._firsts, self._seconds, self._digests, self._times, self._sources
        self._alloc(2 * self._slots + 1)
        for j, first in enumerate(old[0]):
            if first:
                second, digest = old[1][j], old[2][j]
                i = self._slot(first, second, digest)
                self._firsts[i], self._seconds[i], self._digests[i] = first, second, digest
                self._times[i], self._sources[i] = old[3][j], old[4][j]

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return f"<_Succeeded rows={self._size} slots={self._slots}>"


class ResumeIndex:
    """Rows that succeeded in earlier reports: (account_id, region, app_id, settings
    digest) and the note a skipped row gets, "succeeded in <report> at <time>".

    Held in fixed-size slots (see :class:`_Succeeded`), not strings: about 52 bytes per
    succeeded row. Several reports make one index; a row in more than one keeps the note
    of the first report that has it.
    """

    __slots__ = ("_index", "_strings", "_table", "_unmatchable", "reports")

    # The key hashes (a seam: tests force collisions).
    hashes: Callable[[str, str, str], tuple[int, int]] = staticmethod(_keys)

    def __init__(self, expected: int = 1024) -> None:
        self._table = _Succeeded(expected)
        # Report names of notes, and notes kept whole: a slot's source is 2 * the index
        # of its report's name, or 2 * the index of its note + 1.
        self._strings: list[str] = []
        self._index: dict[str, int] = {}
        self._unmatchable = 0  # successes whose digest no input row can have
        self.reports: list[str] = []

    @classmethod
    def load(cls, paths: Iterable[Path | Location], warn: Warn | None = None) -> ResumeIndex:
        """Read every report in ``paths``; later reports do not override earlier ones."""
        locations = [report_location(p) for p in paths]
        index = cls(_expected_records(locations))
        add = index.add
        for location in locations:
            reader = ReportReader(location, warn)
            name = reader.name
            index.reports.append(name)
            for values, _, _ in reader:
                status = values[STATUS]
                if status not in _SUCCESS:
                    continue
                add(
                    status,
                    message=str(values[ERROR_MESSAGE] or ""),
                    finished_at=str(values[FINISHED_AT] or ""),
                    account=str(values[ACCOUNT_ID] or ""),
                    region=str(values[REGION]),
                    app_id=str(values[APP_ID]),
                    digest=str(values[SETTINGS_DIGEST]),
                    report=name,
                )
        return index

    def add(
        self,
        status: str,
        *,
        message: str,
        finished_at: str,
        account: str,
        region: str,
        app_id: str,
        digest: str,
        report: str,
    ) -> None:
        """Remember one record of ``report`` if it tells of a success: ``succeeded``, or
        ``skipped`` because an earlier report had it succeeded."""
        if status == "succeeded":
            name, time = report, finished_at or "?"
            note = f"{SUCCEEDED_IN}{report} at {time}"
        elif status == "skipped" and message.startswith(SUCCEEDED_IN):
            name, _, time = message[len(SUCCEEDED_IN) :].rpartition(" at ")
            note = message
        else:
            return
        if _HEX64.fullmatch(digest) is None:
            self._unmatchable += 1  # no row's digest looks like this: never a match
            return
        when = _NO_TIME if time == "?" else _epoch_ms(time)
        if when is None or not name:  # not in the tool's own words: kept as it is
            source, when = self._intern(note) * 2 + 1, _NO_TIME
        else:
            source = self._intern(name) * 2
        first, second = self.hashes(account, region, app_id)
        self._table.add(first, second, int(digest, 16), when, source)

    def _intern(self, text: str) -> int:
        index = self._index.get(text)
        if index is None:
            index = self._index[text] = len(self._strings)
            self._strings.append(text)
        return index

    def lookup(self, row: Row) -> str | None:
        """Why ``row`` need not be sent again, or None when it must run."""
        first, second = self.hashes(_account(row), row.region, row.app_id)
        found = self._table.find(first, second, int(row.digest, 16))
        if found is None:
            return None
        when, source = found
        text = self._strings[source >> 1]
        if source & 1:
            return text
        return f"{SUCCEEDED_IN}{text} at {_time_text(when)}"

    def __len__(self) -> int:
        return len(self._table) + self._unmatchable

    def __repr__(self) -> str:
        return (
            f"<ResumeIndex succeeded={len(self)} reports={len(self.reports)} "
            f"notes={len(self._strings)} table={self._table!r}>"
        )
