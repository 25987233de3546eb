"""Duplicate rows: the same app given twice, with the same or other settings."""

from __future__ import annotations

from array import array
from collections.abc import Container, Iterator
from itertools import repeat
from operator import and_
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from .rows import Rejected, Row

__all__ = ["_DuplicateIndex", "app_key", "app_keys", "duplicate_of", "success_of"]


def app_key(region: object, app_id: object, account: object = "") -> int:
    """The key of the app (account, region, app_id) within this process: a 64-bit hash
    (Python's keyed SipHash of its text), never 0, which marks an empty slot. The same app
    id in two accounts is two apps. The duplicate index and ``--resume`` both key on it."""
    text = f"{account} {region} {app_id}" if account else f"{region} {app_id}"
    return (hash(text) & _MASK) or 1


_MASK: Final = 0xFFFF_FFFF_FFFF_FFFF  # a hash as 64 bits


def app_keys(regions: list[str], app_ids: list[str], accounts: list[str]) -> list[int] | None:
    """:func:`app_key` of each app (cells of text), when none names an account or each
    does, else None (as when a key is 0): for a block of a report's records at once
    (loops in C)."""
    texts: Iterator[str]
    if accounts.count("") == len(accounts):
        texts = map(" ".join, zip(regions, app_ids, strict=True))
    elif "" not in accounts:
        texts = map(" ".join, zip(accounts, regions, app_ids, strict=True))
    else:
        return None
    keys = list(map(and_, map(hash, texts), repeat(_MASK)))
    return None if 0 in keys else keys


def success_of(done: int) -> tuple[int, int]:
    """(when, source) of a success noted on an app (``_DuplicateIndex.note_success``),
    from the word :meth:`_DuplicateIndex.first` gives (not 0)."""
    return done & 0xFFFF_FFFF, (done >> 32) - 1


def duplicate_of(first_line: int) -> str:
    """Why a row given again with the same settings is skipped."""
    return f"duplicate of line {first_line}"


class _DuplicateIndex:
    """(account, region, app_id) -> first line, settings digest and row count, in flat arrays.

    An open-addressing table (linear probing, at most 70% full) of 64-bit key hashes
    (Python's string hash, stable within the process that reads both passes), 32-bit line
    numbers, 64-bit digests and 32-bit counts of later rows with the key: 24 bytes a slot,
    about 34 MB for a million distinct apps when sized from the expected row count up
    front. Conflicts (rare) live in a small dict. With ``--resume``, each app may also
    hold a success of an earlier report (:meth:`note_success`): 8 bytes more a slot.
    """

    __slots__ = (
        "_conflicts",
        "_digests",
        "_done",
        "_keys",
        "_lines",
        "_repeats",
        "_size",
        "_slots",
    )

    LOAD: Final = 0.7

    def __init__(self, expected: int = 1024) -> None:
        self._done: array[int] | None = None  # per slot: a success noted, 0 for none
        self._alloc(max(16, int(expected / self.LOAD) + 1))
        self._size = 0
        self._conflicts: dict[int, int] = {}  # key hash -> first line whose settings differ

    def _alloc(self, slots: int) -> None:
        self._keys = array("Q", bytes(8 * slots))
        self._lines = array("I", bytes(4 * slots))
        self._digests = array("Q", bytes(8 * slots))
        self._repeats = array("I", bytes(4 * slots))  # rows after the first, per key
        if self._done is not None:
            self._done = array("Q", bytes(8 * slots))
        self._slots = slots

    key = staticmethod(app_key)

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
        done = self._done
        self._alloc(2 * self._slots + 1)
        for j, key in enumerate(keys):
            if key:
                i = self._slot(key)
                self._keys[i], self._lines[i], self._digests[i] = key, lines[j], digests[j]
                self._repeats[i] = repeats[j]
                if done is not None and self._done is not None:
                    self._done[i] = done[j]

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

    def first(self, key: int) -> tuple[int, int, int, int]:
        """(first line, its settings digest, first line whose settings differ or 0, the
        success noted for it or 0) of a key pass 1 added. With no conflict every row of
        the key has that digest."""
        keys, slots = self._keys, self._slots
        i = key % slots  # _slot(), inlined: once per row of the second pass
        while keys[i] != key:  # pass 2 reads the rows pass 1 added: the key is there
            i = i + 1 if i + 1 < slots else 0
        done = self._done
        return (
            self._lines[i],
            self._digests[i],
            self._conflicts.get(key, 0),
            0 if done is None else done[i],
        )

    def note_success(self, key: int, digest: int, when: int, source: int) -> bool:
        """Note a success of an earlier report (``when`` and ``source``, 32 bits each: see
        ``ResumeIndex``) on the app ``key`` when the input has it with settings
        ``digest``; an app keeps the first noted. True when noted."""
        noted = self._done
        if noted is None:
            noted = self._done = array("Q", bytes(8 * self._slots))
        keys, slots = self._keys, self._slots
        i = key % slots  # _slot(), inlined: once per success of reports of millions
        while (k := keys[i]) and k != key:
            i = i + 1 if i + 1 < slots else 0
        if not k or self._digests[i] != digest or noted[i]:
            return False
        noted[i] = (source + 1) << 32 | when
        return True

    def note_successes(
        self, keys: list[int], digests: list[int], whens: list[int], source: int
    ) -> int:
        """:meth:`note_success` of each success (``keys``, ``digests`` and ``whens`` one
        per success, all of ``source``), in order; how many were noted."""
        noted = self._done
        if noted is None:
            noted = self._done = array("Q", bytes(8 * self._slots))
        held, held_digests, slots = self._keys, self._digests, self._slots
        word, count = (source + 1) << 32, 0
        for key, digest, when in zip(keys, digests, whens, strict=True):
            i = key % slots  # note_success(), inlined: once per success of millions
            while (k := held[i]) and k != key:
                i = i + 1 if i + 1 < slots else 0
            if k and held_digests[i] == digest and not noted[i]:
                noted[i] = word | when
                count += 1
        return count

    def success(self, key: int, digest: int) -> int:
        """The success noted on the app ``key`` with settings ``digest``, or 0."""
        if self._done is None:
            return 0
        i = self._slot(key)
        if self._keys[i] != key or self._digests[i] != digest:
            return 0
        return self._done[i]

    def classify(self, row: Row) -> Row | Rejected:
        """``row`` itself when it is to be sent, else why not."""
        key = self.key(row.region, row.app_id, row.account_id)
        first_line, first_digest, conflict, _ = self.first(key)
        if conflict:
            same_as_first = int(row.digest, 16) == first_digest
            other = conflict if same_as_first else first_line
            same = "account, region and app_id" if row.account_id else "region and app_id"
            return row.rejected(
                "invalid", f"conflicts with line {other} (same {same}, other settings)"
            )
        if row.line != first_line:
            return row.rejected("skipped", duplicate_of(first_line))
        return row

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        noted = "-" if self._done is None else len(self._done) - self._done.count(0)
        return (
            f"<_DuplicateIndex keys={self._size} slots={self._slots} "
            f"conflicts={len(self._conflicts)} successes={noted}>"
        )
