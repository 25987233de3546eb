"""Records sorted by line in bounded memory: an external merge sort.

Records (tuples whose first item is the int sort key, an input line) are collected until
their estimated size passes a memory budget; then they are sorted and spilled as one run
to a private temporary file, in chunks (a chunk never ends between records of one key).
Reading back merges the runs a batch at a time, one chunk of each run in memory at a time,
and the last run straight from memory: the records of every run up to the smallest last
key among their current chunks, sorted together (see :meth:`SortedSpill.batches`). The
order is stable: records with the same key come in the order added.

All runs share one anonymous temporary file (one file descriptor however many runs),
removed by :meth:`SortedSpill.close` or when the process ends.
"""

from __future__ import annotations

import pickle
import tempfile
from bisect import bisect_right
from collections.abc import Callable, Iterator
from itertools import chain
from operator import itemgetter
from types import TracebackType
from typing import IO, Any, Final

from .errors import SetupError

__all__ = ["Pack", "SortedSpill", "Unpack", "pickled", "unpickled"]

_KEY: Final = itemgetter(0)
_LENGTH: Final = 8  # bytes of the length before each pickled chunk
_CHUNKS_PER_BUDGET: Final = 64  # a run is read back in chunks of budget / 64 bytes
_MIN_CHUNK: Final = 1 << 12

Record = tuple[Any, ...]
#: How a chunk of records is written to the temporary file, and read back.
Pack = Callable[[list[Record]], bytes]
Unpack = Callable[[bytes], list[Record]]


def pickled(records: list[Record]) -> bytes:
    """The default :data:`Pack`: the records pickled."""
    return pickle.dumps(records, pickle.HIGHEST_PROTOCOL)


def unpickled(data: bytes) -> list[Record]:
    """The default :data:`Unpack`."""
    records: list[Record] = pickle.loads(data)  # our own file, written by this process
    return records


class SortedSpill:
    """Collects records, then yields them sorted by their first item.

    ``budget`` bounds the estimated bytes of records held at once (the ``size`` given
    with each); reading back holds one chunk (``budget / 64`` bytes) of each spilled run
    plus the last run. ``runs`` tells how many runs were spilled. ``pack`` and
    ``unpack`` write a chunk and read it back (pickled by default).
    """

    __slots__ = (
        "_file",
        "_held",
        "_pack",
        "_pending",
        "_runs",
        "_unpack",
        "budget",
        "chunk",
        "records",
    )

    def __init__(self, budget: int, pack: Pack = pickled, unpack: Unpack = unpickled) -> None:
        self._pack, self._unpack = pack, unpack
        self.budget = max(1, budget)
        self.chunk = max(_MIN_CHUNK, self.budget // _CHUNKS_PER_BUDGET)
        self._pending: list[Record] = []
        self._held = 0  # estimated bytes in _pending
        self._file: IO[bytes] | None = None
        self._runs: list[list[tuple[int, int]]] = []  # per run: (offset, bytes) of its chunks
        self.records = 0

    @property
    def runs(self) -> int:
        """Runs spilled to the temporary file so far."""
        return len(self._runs)

    def add(self, record: Record, size: int) -> None:
        """Add ``record`` (``size``: its estimated bytes in memory)."""
        self._pending.append(record)
        self.records += 1
        self._held += size
        if self._held > self.budget:
            self._spill()

    def extend(self, records: list[Record], size: int) -> None:
        """Add ``records``, in order (``size``: their estimated bytes in memory)."""
        self._pending += records
        self.records += len(records)
        self._held += size
        if self._held > self.budget:
            self._spill()

    def _per_chunk(self, records: int) -> int:
        """Records in a chunk of a run of ``records`` (their estimated size held)."""
        return max(1, records * self.chunk // max(1, self._held))

    def _spill(self) -> None:
        pending = self._pending
        pending.sort(key=_KEY)
        if self._file is None:
            try:
                # SIM115 ignored: the file outlives this call; close() closes it
                self._file = tempfile.TemporaryFile(prefix="batch-updater-sort-")  # noqa: SIM115
            except OSError as exc:
                raise _error(exc) from None
        handle = self._file
        chunks: list[tuple[int, int]] = []
        try:
            handle.seek(0, 2)
            for part in _chunks(pending, self._per_chunk(len(pending))):
                data = self._pack(part)
                offset = handle.tell()
                handle.write(len(data).to_bytes(_LENGTH, "big"))
                handle.write(data)
                chunks.append((offset, len(data)))
        except OSError as exc:
            raise _error(exc) from None
        self._runs.append(chunks)
        self._pending = []
        self._held = 0

    def _run(self, chunks: list[tuple[int, int]]) -> Iterator[list[Record]]:
        handle = self._file
        assert handle is not None
        for offset, size in chunks:
            try:
                handle.seek(offset + _LENGTH)
                data = handle.read(size)
            except OSError as exc:
                raise _error(exc) from None
            yield self._unpack(data)

    def __iter__(self) -> Iterator[Record]:
        """Every record added, sorted by its first item (stable); once."""
        return chain.from_iterable(self.batches())

    def batches(self) -> Iterator[list[Record]]:
        """Every record added, sorted by its first item (stable), in lists; once.

        Each run is read a chunk at a time. A batch is every record of every run whose
        key is at most the smallest last key among the runs' current chunks, sorted
        (stably, runs in the order spilled): no later chunk holds such a key, as a
        chunk never ends between records of one key. So a batch holds at most about
        one chunk per run.
        """
        pending = self._pending
        pending.sort(key=_KEY)
        last = _chunks(pending, self._per_chunk(len(pending)))
        if not self._runs:
            yield from last
            return
        runs = [self._run(chunks) for chunks in self._runs]
        runs.append(iter(last))
        heads: list[list[Record]] = []
        live: list[Iterator[list[Record]]] = []
        for run in runs:
            if head := next(run, None):
                heads.append(head)
                live.append(run)
        starts = [0] * len(heads)
        while heads:
            limit = min(head[-1][0] for head in heads)
            batch: list[Record] = []
            for i, head in enumerate(heads):
                cut = bisect_right(head, limit, starts[i], key=_KEY)
                batch += head[starts[i] : cut]
                starts[i] = cut
            for i in range(len(heads) - 1, -1, -1):  # refill the chunks used up
                if starts[i] == len(heads[i]):
                    if head := next(live[i], None):
                        heads[i], starts[i] = head, 0
                    else:
                        del heads[i], live[i], starts[i]
            batch.sort(key=_KEY)
            yield batch

    def close(self) -> None:
        """Remove the temporary file."""
        self._pending = []
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> SortedSpill:
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
            f"<SortedSpill records={self.records} runs={len(self._runs)} "
            f"held={self._held}/{self.budget}>"
        )


def _chunks(records: list[Record], size: int) -> list[list[Record]]:
    """Sorted ``records`` in chunks of about ``size``, none ending between two records
    of one key."""
    out: list[list[Record]] = []
    start, end = 0, len(records)
    while start < end:
        cut = min(start + size, end)
        if cut < end:  # take the rest of the last record's key too
            cut = bisect_right(records, records[cut - 1][0], cut, key=_KEY)
        out.append(records[start:cut])
        start = cut
    return out


def _error(exc: OSError) -> SetupError:
    return SetupError(
        f"cannot sort the records in a temporary file in {tempfile.gettempdir()}: "
        f"{exc.strerror or exc} (free some space there, or set TMPDIR to a roomier directory)"
    )
