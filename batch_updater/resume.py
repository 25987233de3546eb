"""``--resume``: read earlier reports and find the rows that already succeeded."""

from __future__ import annotations

import re
from array import array
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from itertools import compress, repeat
from operator import add, eq, itemgetter
from pathlib import Path
from typing import Any, Final

from .codec import (
    REPORT_COLUMNS,
    ReportReader,
    Warn,
    iso,
)
from .duplicates import _DuplicateIndex, app_key, app_keys, success_of
from .report import report_location
from .rows import Row
from .rules import digest_number, digest_numbers
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

_TIME: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z", re.A)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
_NO_TIME: Final = 0xFFFF_FFFF  # a success without finished_at: its note says "at ?"
_SPAN: Final = 1 << 31  # ms a slot's time may lie either side of its report's first (24 days)
_SUCCESS: Final = ("succeeded", "skipped")  # statuses that may tell of one (any JSON value)
_MILLIS: Final = tuple(f"{ms:03d}Z" for ms in range(1000))  # a note's time after its second
_MILLI_OF: Final = {text: ms for ms, text in enumerate(_MILLIS)}  # and back: "120Z" -> 120
_EXPECT_SAMPLE: Final = 1 << 16  # bytes of a report read to guess its record count
# What a report's record tells of a success (in this order), and where a record has them.
_COLUMNS: Final = (
    "status",
    "error_message",
    "finished_at",
    "account_id",
    "region",
    "app_id",
    "settings_digest",
)
_TYPED: Final = itemgetter(*(REPORT_COLUMNS.index(name) for name in _COLUMNS))  # of a Record
_SECOND: Final = itemgetter(slice(None, 20))  # 2026-11-26T10:15:00. of ...:00.120Z
_AFTER_SECOND: Final = itemgetter(slice(20, None))  # 120Z of ...:00.120Z
_TENS: Final = 18  # characters up to a time's last digit of seconds: 2026-11-26T10:15:0
_AFTER_TENS: Final = itemgetter(slice(_TENS, None))  # 0.120Z of ...:00.120Z


@cache
def _in_tens() -> dict[str, int]:
    """The rest of a time after :data:`_TENS`, and its milliseconds: 0.120Z -> 120 (made
    when a report is read: 10,000 of them, 1 MB)."""
    return {f"{s}.{ms:03d}Z": 1000 * s + ms for s in range(10) for ms in range(1000)}


def _epoch_ms(text: str) -> int | None:
    """A time as the report writes it (``2026-11-26T10:15:00.120Z``) in epoch
    milliseconds; None for any other text (a note holding it is kept verbatim)."""
    if _TIME.fullmatch(text) is None:
        return None
    try:
        return (datetime.fromisoformat(text) - _EPOCH) // _MS
    except ValueError:
        return None


class _Clock:
    """Times as the report writes them to epoch milliseconds and back, remembering the
    second seen last: a report's times come in runs of the same second, so most cost a
    slice and an int instead of a parse or a format."""

    __slots__ = ("_head", "_second", "_shown", "_shown_head")

    def __init__(self) -> None:
        self._head, self._second = "", 0  # the last second parsed: its text, its ms
        self._shown, self._shown_head = -1, ""  # the last second shown: in s, its text

    def ms(self, text: str) -> int | None:
        """:func:`_epoch_ms` of ``text``."""
        if (
            text[:19] == self._head
            and len(text) == 24  # the length of 2026-11-26T10:15:00.120Z
            and text[19] == "."
            and text[23] == "Z"
            and (milli := text[20:23]).isdigit()
            and milli.isascii()
        ):
            return self._second + int(milli)
        value = _epoch_ms(text)
        if value is not None:
            self._head, self._second = text[:19], value - value % 1000
        return value

    def text(self, ms: int) -> str:
        """The report's own text of epoch milliseconds ``ms``."""
        second, milli = divmod(ms, 1000)
        if second != self._shown:
            shown = iso(_EPOCH + second * 1000 * _MS) or ""
            self._shown, self._shown_head = second, shown[:19]
        return f"{self._shown_head}.{milli:03d}Z"

    def __repr__(self) -> str:
        return f"<_Clock parsed={self._head!r} shown={self._shown_head!r}>"


def _keys(account: object, region: object, app_id: object, digest: object) -> tuple[int, int]:
    """The table key of a success: its app's key (:func:`~batch_updater.duplicates.app_key`,
    what the input's duplicate index keys on) and its settings digest as a number
    (:func:`~batch_updater.rules.digest_number`); the first is never 0, which marks an
    empty slot."""
    return app_key(region, app_id, account), digest_number(str(digest))


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
            total += int(size * lines / len(sample) * 1.02) + 16
    return total


def _told(
    status: object, message: object, finished_at: object, report: str
) -> tuple[str, str, str | None] | None:
    """What a record tells of a success, as (report name, time text, the note itself or
    None for "succeeded in <name> at <time>"): a ``succeeded`` record of ``report``, or a
    ``skipped`` one whose message is an earlier report's note; None for any other."""
    if status == "succeeded":
        return report, str(finished_at or "?"), None
    if status == "skipped" and isinstance(message, str) and message.startswith(SUCCEEDED_IN):
        name, _, time = message[len(SUCCEEDED_IN) :].rpartition(" at ")
        return name, time, message
    return None


class _Succeeded:
    """Successes in flat arrays: an open-addressing table (linear probing, at most 75%
    full) of 24-byte slots, like the input's duplicate index: the key (the app's 64-bit
    key and the settings digest's 64 bits, see :func:`_keys`), when it succeeded
    (milliseconds from its report's base time) and where (see :class:`ResumeIndex`).
    About 32 bytes per success, 34 MB for a million.
    """

    __slots__ = ("_firsts", "_limit", "_seconds", "_size", "_slots", "_sources", "_times")

    LOAD: Final = 0.75

    def __init__(self, expected: int = 1024) -> None:
        self._alloc(max(16, int(expected / self.LOAD) + 1))
        self._size = 0

    def _alloc(self, slots: int) -> None:
        self._firsts = array("Q", bytes(8 * slots))
        self._seconds = array("Q", bytes(8 * slots))
        self._times = array("I", bytes(4 * slots))
        self._sources = array("I", bytes(4 * slots))
        self._slots = slots
        self._limit = int(self.LOAD * slots)  # successes it holds before it grows

    def _slot(self, first: int, second: int) -> int:
        """The slot holding the key, or the empty slot where it would go."""
        firsts, seconds, slots = self._firsts, self._seconds, self._slots
        i = first % slots
        while (f := firsts[i]) and (f != first or seconds[i] != second):
            i = i + 1 if i + 1 < slots else 0
        return i

    def add(self, first: int, second: int, when: int, source: int) -> bool:
        """Remember a success; a key already held keeps its note (earlier reports win).
        True when remembered."""
        firsts, seconds, slots = self._firsts, self._seconds, self._slots
        i = first % slots  # _slot(), inlined: once per success of reports of millions
        while f := firsts[i]:
            if f == first and seconds[i] == second:
                return False
            i = i + 1 if i + 1 < slots else 0
        firsts[i] = first
        seconds[i] = second
        self._times[i] = when
        self._sources[i] = source
        self._size += 1
        if self._size > self._limit:
            self._grow()
        return True

    def add_all(self, firsts: list[int], seconds: list[int], whens: list[int], source: int) -> int:
        """:meth:`add` of each success (keys ``firsts`` and ``seconds``, ``whens`` one per
        success, all of ``source``), in order; how many were remembered."""
        return sum(map(self.add, firsts, seconds, whens, repeat(source)))

    def _grow(self) -> None:
        firsts, seconds, times, sources = self._firsts, self._seconds, self._times, self._sources
        self._alloc(2 * self._slots + 1)
        for j, first in enumerate(firsts):
            if first:
                i = self._slot(first, seconds[j])
                self._firsts[i], self._seconds[i] = first, seconds[j]
                self._times[i], self._sources[i] = times[j], sources[j]

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return f"<_Succeeded rows={self._size} slots={self._slots}>"


class ResumeIndex:
    """Rows that succeeded in earlier reports: their app (account_id, region, app_id),
    settings digest and the note a skipped row gets, "succeeded in <report> at <time>".

    Held in fixed-size slots (:class:`_Succeeded`), not strings. A slot's source is
    ``2 * i`` for the i-th report name of the notes, its time in milliseconds from that
    name's base time (a note whose time is absent says "at ?"), or ``2 * i + 1`` for the
    i-th note kept whole: one not in the tool's own words (a hand-edited report), or with
    a time more than 24 days from the first of its report. Several reports make one
    index; a row in more than one keeps the note of the first report that has it.

    A run's index is made ``within`` its input's apps (``RowPlan.apps``, the duplicate
    index): each success is noted on its app's slot there (8 bytes), and only when a row
    of the input has that app with those settings; the plan's second pass finds it in
    the slot it reads anyway (an Outcome carries it, see :meth:`note`).

    A slot matches a row when its app's key (the 64-bit hash the input's duplicate index
    keys on: within a run, an app is its key) and its settings digest (all 64 bits, the
    number itself) both match. A wrong match (a row skipped that never succeeded) needs
    another app with the same settings whose key collides with the row's: with Python's
    keyed SipHash about ``2**-64`` per pair, under ``10**-7`` for a million rows against a
    million successes (the duplicate index takes the same chance of taking two apps for
    one).
    """

    __slots__ = (
        "_bases",
        "_clock",
        "_index",
        "_note_from",
        "_note_head",
        "_note_second",
        "_note_source",
        "_note_to",
        "_note_zero",
        "_noted",
        "_strings",
        "_table",
        "reports",
        "within",
    )

    # The key hashes (a seam: tests force collisions).
    hashes: Callable[[object, object, object, object], tuple[int, int]] = staticmethod(_keys)

    def __init__(self, expected: int = 1024, within: _DuplicateIndex | None = None) -> None:
        # Within an input's apps (RowPlan.apps) a success is noted on its app, and only
        # when a row of the input has that app with those settings: no table of its own.
        self.within = within
        self._table = _Succeeded(expected if within is None else 0)
        self._noted = 0  # successes held (in the table, or noted within)
        self._strings: list[str] = []  # report names of notes, and notes kept whole
        self._index: dict[str, int] = {}  # the index of each in _strings
        self._bases: list[int | None] = []  # per string: its report's base time (ms)
        self._clock = _Clock()
        # The note of the last second looked up, up to its milliseconds: rows that
        # succeeded in the same second of the same report share it.
        self._note_head, self._note_second, self._note_source = "", -1, -1
        # The same second as words noted within the input's apps (see note()): those in
        # [_note_from, _note_to), their milliseconds the word less _note_zero.
        self._note_from = self._note_to = self._note_zero = 0
        self.reports: list[str] = []

    @classmethod
    def load(
        cls,
        paths: Iterable[Path | Location],
        warn: Warn | None = None,
        *,
        within: _DuplicateIndex | None = None,
    ) -> ResumeIndex:
        """Read every report in ``paths``; later reports do not override earlier ones.
        ``within``: the input's apps, to note the successes on (see the class)."""
        locations = [report_location(p) for p in paths]
        index = cls(_expected_records(locations) if within is None else 0, within)
        for location in locations:
            reader = ReportReader(location, warn)
            report = reader.name
            index.reports.append(report)
            if reader.jsonl:
                index._note_each(report, (_TYPED(values) for values, _, _ in reader))
                continue
            # The text of the few columns needed, a block of records at a time.
            for columns in reader.columns(_COLUMNS):
                if not index._note_block(report, columns):
                    index._note_each(report, zip(*columns, strict=True))
        return index

    def _note_block(self, report: str, columns: tuple[list[str], ...]) -> bool:
        """Note the successes among a block of records of the CSV ``report`` (the text of
        their :data:`_COLUMNS`, column by column) at once, with loops in C: when none is
        ``skipped``, and each success is written as the tool writes it (an app without
        an account or every one with one, the digest's 16 hex characters, the time to
        the millisecond within 24 days of the report's first). False (nothing noted)
        when not so: :meth:`_note_each` notes them."""
        if self.hashes is not _keys:  # a test's hashes: only by the general path
            return False
        status, _, finished, account, region, app_id, digest = columns
        n = status.count("succeeded")
        if n != len(status):  # only successes: else the few, when no record is skipped
            if not n or "skipped" in status:
                return not n and "skipped" not in status
            chosen = list(map(eq, status, repeat("succeeded")))
            finished, account, region, app_id, digest = (
                list(compress(cells, chosen)) for cells in columns[2:]
            )
        firsts = app_keys(region, app_id, account)
        seconds = digest_numbers(digest)
        if firsts is None or seconds is None:
            return False
        placed = self._times_of(report, finished)
        if placed is None:
            return False
        source, whens = placed
        if self.within is None:
            self._noted += self._table.add_all(firsts, seconds, whens, source)
        else:
            self._noted += self.within.note_successes(firsts, seconds, whens, source)
        return True

    def _times_of(self, report: str, times: list[str]) -> tuple[int, list[int]] | None:
        """The source and times (see the class) of successes of ``report`` that finished
        at ``times`` (its text of each), as :meth:`_place` gives them; None when one is not
        to the millisecond as the report writes it, or not within 24 days of the report's
        first success (its note is kept whole), or when the report's name is empty."""
        source, _ = self._place(report, times[0] or "?", None)  # as _told(): sets the base
        base = self._bases[source >> 1]
        if source & 1 or base is None:
            return None
        n, clock = len(times), self._clock
        joined, head = "".join(times), times[0][:_TENS]
        if len(joined) == 24 * n and all(joined[at::24] == head[at] * n for at in range(_TENS)):
            # The usual case: all within the ten seconds of the first (its text up to them
            # is the same, and read), each the rest (0.120Z of ...:00.120Z) of its own.
            into = list(map(_in_tens().get, map(_AFTER_TENS, times)))
            ms = clock.ms(head + "0.000Z")
            if None in into or ms is None:
                return None
            whens = list(map(add, into, repeat(ms - base)))
            return (source, whens) if min(whens) >= 0 and max(whens) < _NO_TIME else None
        millis = list(map(_MILLI_OF.get, map(_AFTER_SECOND, times)))  # 120 of ...:00.120Z
        if None in millis:
            return None
        seconds = list(map(_SECOND, times))
        at: dict[str, int] = {}  # per second (2026-11-26T10:15:00.): the time of its .000
        for second in dict.fromkeys(seconds):  # a few: a block's records end in a few
            ms = clock.ms(second + "000Z")
            if ms is None or ms < base or ms + 999 - base >= _NO_TIME:
                return None
            at[second] = ms - base
        return source, list(map(add, map(at.__getitem__, seconds), millis))

    def _note_each(self, report: str, records: Iterable[tuple[Any, ...]]) -> None:
        """Note the successes among ``records`` of ``report``, each the values of
        :data:`_COLUMNS` (text, or a JSON-lines report's values), one by one."""
        # The loop of add(), unrolled: it runs once per record of reports of millions.
        place, hashes = self._place, self.hashes
        remember = self._table.add if self.within is None else self.within.note_success
        keys = hashes is _keys  # the default: its two parts called here, not through it
        noted = 0
        # A success of this report in the second placed last (its text up to the
        # milliseconds, its source and time less them): placed here, not by _place.
        head, own, base = "", 0, 0
        for status, message, finished_at, account, region, app_id, digest in records:
            if (
                status == "succeeded"
                and type(finished_at) is str
                and finished_at[:20] == head  # 2026-11-26T10:15:00. of 10:15:00.120Z
                and (milli := _MILLI_OF.get(finished_at[20:])) is not None
                and 0 <= (when := base + milli) < _NO_TIME
            ):
                source = own
            else:
                if status not in _SUCCESS:
                    continue
                told = _told(status, message, finished_at, report)
                if told is None:
                    continue
                source, when = place(*told)
                if told[2] is None and not source & 1 and when != _NO_TIME:
                    head, own, base = finished_at[:20], source, when - int(finished_at[20:23])
            if keys and type(digest) is str:  # a CSV report's text: _keys() inlined
                first, second = app_key(region, app_id, account), digest_number(digest)
            else:  # app_key() formats any JSON value as str() does
                first, second = hashes(account or "", region, app_id, digest)
            noted += remember(first, second, when, source)
        self._noted += noted

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
        told = _told(status, message, finished_at, report)
        if told is not None:
            source, when = self._place(*told)
            first, second = self.hashes(account, region, app_id, digest)
            self._remember(first, second, when, source)

    def _remember(self, first: int, second: int, when: int, source: int) -> None:
        """Keep a success (``when`` and ``source``, see the class) of the key (``first``,
        ``second``): in the table, or noted within the input's apps."""
        if self.within is None:
            self._noted += self._table.add(first, second, when, source)
        else:
            self._noted += self.within.note_success(first, second, when, source)

    def _place(self, name: str, time: str, note: str | None) -> tuple[int, int]:
        """A slot's (source, when) for a note that names ``name`` and ``time`` (``note``
        itself, or None for "succeeded in <name> at <time>")."""
        if name:
            i = self._index.get(name)
            if i is None:
                i = self._intern(name)
            if time == "?":
                return 2 * i, _NO_TIME
            ms = self._clock.ms(time)
            if ms is not None:
                base = self._bases[i]
                if base is None:
                    base = self._bases[i] = ms - _SPAN
                if 0 <= ms - base < _NO_TIME:
                    return 2 * i, ms - base
        if note is None:
            note = f"{SUCCEEDED_IN}{name} at {time}"
        return 2 * self._intern(note) + 1, 0  # kept as it is

    def _intern(self, text: str) -> int:
        i = self._index.get(text)
        if i is None:
            i = self._index[text] = len(self._strings)
            self._strings.append(text)
            self._bases.append(None)
        return i

    def lookup(self, row: Row) -> str | None:
        """Why ``row`` need not be sent again, or None when it must run."""
        return self.find(row.account_id, row.region, row.app_id, row.digest)

    def find(self, account: str, region: str, app_id: str, digest: str) -> str | None:
        """:meth:`lookup` of the row with these cells (``account`` "" for none)."""
        return self.find_key(*self.hashes(account, region, app_id, digest))

    def find_key(self, first: int, second: int) -> str | None:
        """:meth:`find` of a row by its key as :meth:`hashes` gives it: its app's key and
        its digest's number."""
        if self.within is not None:
            done = self.within.success(first, second)
            return self.note(done) if done else None
        table = self._table  # _Succeeded.find(), inlined: once per input row
        firsts, seconds, slots = table._firsts, table._seconds, table._slots
        i = first % slots
        while (f := firsts[i]) != first or seconds[i] != second:
            if not f:
                return None
            i = i + 1 if i + 1 < slots else 0
        return self._note(table._times[i], table._sources[i])

    def note(self, done: int) -> str:
        """The note of a success noted within the input's apps (an Outcome carries it)."""
        if self._note_from <= done < self._note_to:  # the second of the note made last
            return self._note_head + _MILLIS[done - self._note_zero]
        when, source = success_of(done)
        note = self._note(when, source)
        base = self._bases[source >> 1]
        if not source & 1 and when != _NO_TIME and base is not None:
            # The words of this second (of this source, never _NO_TIME): its milliseconds
            # 0-999 are the word less the word of its first, which may lie below when 0.
            word = (source + 1) << 32
            zero = word + self._note_second * 1000 - base
            self._note_from, self._note_to = max(zero, word), min(zero + 1000, word + _NO_TIME)
            self._note_zero = zero
        return note

    def _note(self, when: int, source: int) -> str:
        """The note of a success: "succeeded in <report> at <time>", or a note kept."""
        i = source >> 1
        if source & 1:
            return self._strings[i]
        base = self._bases[i]
        if when == _NO_TIME or base is None:
            return f"{SUCCEEDED_IN}{self._strings[i]} at ?"
        ms = base + when
        second = ms // 1000
        if second != self._note_second or source != self._note_source:  # a new second
            shown = self._clock.text(ms)  # ...T09:00:01.123Z: kept up to the "."
            self._note_head = f"{SUCCEEDED_IN}{self._strings[i]} at {shown[:-4]}"
            self._note_second, self._note_source = second, source
            self._note_from = self._note_to = 0  # note() sets them anew
        return f"{self._note_head}{ms % 1000:03d}Z"

    def __len__(self) -> int:
        """Successes held (within the input's apps: those a row of it may skip)."""
        return self._noted

    def __repr__(self) -> str:
        return (
            f"<ResumeIndex succeeded={len(self)} reports={len(self.reports)} "
            f"notes={len(self._strings)} table={self._table!r}>"
        )
