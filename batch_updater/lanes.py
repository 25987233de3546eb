"""Lanes: one queue of rows per rate domain, and a scheduler that feeds workers from them.

AWS limits ``UpdateBackendConfig`` per account and region, so each rate domain (a *lane*;
today a region) has its own limiter. Rows are routed to their lane as they are read, and a
worker always takes its next row from the lane that can send soonest (the earliest free slot
of its limiter), so the job runs at the sum of the lanes' limits whatever the input order: a
file sorted by region no longer leaves every worker waiting on one region's limiter.

No lane may hold every worker: a lane gets at most ``concurrency - (other busy lanes)``
rows at once (in flight, waiting for their slot or in retry backoff), so a slow or throttled
lane leaves a worker to every other lane.

Memory stays flat whatever the order: each lane keeps at most ``memory_rows`` rows in memory
and spills the rest, in order, to a private temporary file (a file sorted by lane makes the
reader run ahead of the slowest lane; re-reading the input by offsets would cost a second
validation of every spilled row, spilling costs one short JSON line).

The reader reads only as far as a lane needs rows: given the line of each lane's last row
(``last_lines``, from validation), it pauses while every lane with rows still to read has
``memory_rows`` rows in hand, and goes on once one of them is down to half that. So rows
spill only when the reader must pass a lane's rows to reach another lane's: a file sorted by
lane, or lanes mixed of which one sends slower than the others. A file of one lane never
spills, nor one of lanes mixed that keep pace with each other. (A lane whose rows left are
all skipped, as duplicates or by ``--resume``, counts as having rows to read until its last
line: until then the reader is not held back.)
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO

from .rows import LoginSettings, Row

__all__ = ["LaneKey", "LaneQueue", "LaneScheduler", "lane_name"]


LaneKey = tuple[str, str]  # (account_id, region); account "" = the base credentials


def lane_name(key: LaneKey) -> str:
    """How a lane is named in logs and the summary: ``us-east-1``, or
    ``111122223333/us-east-1`` for an account's lane."""
    account, region = key
    return f"{account}/{region}" if account else region


def _encode(row: Row) -> str:
    s = row.settings
    fields = [row.line, row.app_id, row.region, row.digest]
    fields += [s.identity_pool_id, s.cognito_region, s.user_pool_id, s.web_client_id]
    fields += [list(row.kept), row.account_id, row.role_arn]
    return json.dumps(fields, separators=(",", ":")) + "\n"


def _decode(text: str) -> Row:
    (line, app_id, region, digest, pool, cognito, user_pool, client, kept, account, role) = (
        json.loads(text)
    )
    settings = LoginSettings(pool, cognito, user_pool, client)
    return Row(line, app_id, region, settings, digest, tuple(kept), account, role)


class LaneQueue:
    """The rows waiting for one lane, first in first out: at most ``memory_rows`` in memory,
    the rest in a temporary file (made on first need, removed by :meth:`close`)."""

    __slots__ = ("_at_end", "_file", "_memory", "_memory_rows", "_read_at", "_spilled")

    def __init__(self, memory_rows: int = 256) -> None:
        if memory_rows < 1:
            raise ValueError(f"memory_rows must be at least 1, got {memory_rows}")
        self._memory: deque[Row] = deque()
        self._memory_rows = memory_rows
        self._file: IO[str] | None = None
        self._spilled = 0  # rows in the file not yet read back
        self._read_at = 0  # where the next spilled row starts
        self._at_end = True  # the file's position is at its end (nothing read since a write)

    def push(self, row: Row) -> None:
        """Add ``row`` at the end."""
        if not self._spilled and len(self._memory) < self._memory_rows:
            self._memory.append(row)
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 - closed by close()
        if not self._at_end:  # a seek flushes and resets the text codec: only after a read
            self._file.seek(0, 2)
            self._at_end = True
        self._file.write(_encode(row))
        self._spilled += 1

    def pop(self) -> Row:
        """Take the first row; IndexError when there is none."""
        if not self._memory and self._spilled:
            self._refill()
        return self._memory.popleft()

    def _refill(self) -> None:
        assert self._file is not None
        self._file.flush()
        self._file.seek(self._read_at)
        self._at_end = False
        for _ in range(min(self._memory_rows, self._spilled)):
            self._memory.append(_decode(self._file.readline()))
            self._spilled -= 1
        self._read_at = self._file.tell()

    def drain(self) -> Iterator[Row]:
        """Take every row, in order."""
        while self:
            yield self.pop()

    @property
    def in_memory(self) -> int:
        """Rows held in memory now."""
        return len(self._memory)

    def close(self) -> None:
        """Remove the spill file; rows still queued are dropped."""
        if self._file is not None:
            self._file.close()
            self._file = None
            self._at_end = True
        self._memory.clear()
        self._spilled = 0
        self._read_at = 0  # a file made later is read from its start

    def __len__(self) -> int:
        return len(self._memory) + self._spilled

    def __repr__(self) -> str:
        return f"<LaneQueue rows={len(self)} in_memory={len(self._memory)}>"


class LaneScheduler:
    """Hands each worker its next row from the lane that can send soonest.

    The reader calls :meth:`push` for each row and :meth:`close` when the input is done;
    workers call :meth:`take` (None: nothing more for them) and :meth:`release` once the row
    is final.
    ``due(lane)`` is how many seconds until the lane's limiter has a free slot (0 or less:
    now); among lanes with rows waiting and room for one more row, the smallest wins (ties:
    the lane with fewer rows out). :meth:`stop` hands out nothing more; :meth:`drain` gives
    back every row not handed out.

    ``last_lines``: the input line of each lane's last row, if known. The reader then calls
    :meth:`passed` with the line of each row it reads and, while :attr:`stocked`, awaits
    :meth:`wanted` before it reads on. Without it (or once a lane it does not name shows
    up) the reader is never held back.
    """

    __slots__ = (
        "_ahead",
        "_busy",
        "_changed",
        "_closed",
        "_concurrency",
        "_due",
        "_ends",
        "_memory_rows",
        "_out",
        "_queues",
        "_short",
        "_stopped",
        "_wanted",
    )

    def __init__(
        self,
        lanes: Iterable[LaneKey],
        due: Callable[[LaneKey], float],
        concurrency: int,
        *,
        memory_rows: int = 256,
        last_lines: Mapping[LaneKey, int] | None = None,
    ) -> None:
        self._memory_rows = memory_rows
        self._queues = {lane: LaneQueue(memory_rows) for lane in lanes}
        self._out = dict.fromkeys(self._queues, 0)  # rows handed out and not yet released
        self._busy = 0  # lanes with rows waiting or out (kept as they change: no scan per row)
        self._due = due
        self._concurrency = concurrency
        self._changed = asyncio.Event()
        self._closed = False
        self._stopped = False
        # The reader's pace (see last_lines): the lanes with rows still to read, the line
        # after which each has none, and those of them short of rows (fewer than
        # memory_rows; back in once down to half). None: the reader is never held back.
        self._ahead: set[LaneKey] | None = None
        self._ends: dict[int, list[LaneKey]] = {}
        if last_lines is not None:
            self._ahead = set(last_lines)
            for lane, line in last_lines.items():
                self._ends.setdefault(line, []).append(lane)
        self._short: set[LaneKey] = set(self._ahead or ())
        self._wanted = asyncio.Event()

    def push(self, lane: LaneKey, row: Row) -> None:
        """Queue ``row`` for ``lane``."""
        queue = self._queues.get(lane)
        if queue is None:  # a lane first seen now
            queue = self._queues[lane] = LaneQueue(self._memory_rows)
            self._out[lane] = 0
        if not queue and not self._out[lane]:
            self._busy += 1
        queue.push(row)
        if self._ahead is not None:
            if lane not in self._ahead:  # not named by last_lines: never hold the reader back
                self._ahead = None
            elif len(queue) >= self._memory_rows:
                self._short.discard(lane)
        self._changed.set()

    def passed(self, line: int) -> None:
        """The reader has read input line ``line``: the lanes whose last row it was have
        no more rows to read."""
        if (ended := self._ends.pop(line, None)) is not None and self._ahead is not None:
            for lane in ended:
                self._ahead.discard(lane)
                self._short.discard(lane)

    @property
    def stocked(self) -> bool:
        """True when reading on is no use now: every lane with rows still to read has
        enough of them in hand (see ``last_lines``)."""
        return bool(self._ahead) and not self._short and not self._stopped

    async def wanted(self) -> None:
        """Wait until a lane with rows still to read is short of them, or until stopped."""
        while self.stocked:
            self._wanted.clear()
            await self._wanted.wait()

    def close(self) -> None:
        """No more rows will be pushed."""
        self._closed = True
        self._changed.set()

    def stop(self) -> None:
        """Hand out no more rows: :meth:`take` returns None from now on."""
        self._stopped = True
        self._changed.set()
        self._wanted.set()

    def release(self, lane: LaneKey) -> None:
        """A row of ``lane`` that :meth:`take` handed out is final."""
        out = self._out[lane] = self._out[lane] - 1
        if not out and not self._queues[lane]:
            self._busy -= 1
        self._changed.set()

    def _note_taken(self, lane: LaneKey, left: int) -> None:
        """A row of ``lane`` was taken and ``left`` wait: down to half of what a lane keeps
        in memory, with rows still to read, the lane is short and the reader reads on."""
        ahead, short = self._ahead, self._short
        if ahead and left <= self._memory_rows // 2 and lane in ahead and lane not in short:
            short.add(lane)
            self._wanted.set()

    def _pick(self) -> LaneKey | None:
        queues, out = self._queues, self._out
        cap = max(1, self._concurrency - (self._busy - 1))  # one worker left for every other lane
        best: tuple[float, int] | None = None
        chosen = None
        for lane, queue in queues.items():
            if queue and (taken := out[lane]) < cap:
                rank = (max(0.0, self._due(lane)), taken)
                if best is None or rank < best:
                    best, chosen = rank, lane
                    if rank == (0.0, 0):
                        break  # due now, none out: no lane ranks before it (ties: the first)
        return chosen

    async def take(self) -> tuple[LaneKey, Row] | None:
        """The next (lane, row) to send, or None once stopped, or once every row is out."""
        while not self._stopped:
            lane = self._pick()
            if lane is not None:
                self._out[lane] += 1
                queue = self._queues[lane]
                row = queue.pop()
                self._note_taken(lane, len(queue))
                return lane, row
            if self._closed and not any(self._queues.values()):
                return None
            self._changed.clear()
            await self._changed.wait()
        return None

    def drain(self) -> Iterator[Row]:
        """Every row not handed out (then the spill files are removed)."""
        for queue in self._queues.values():
            yield from queue.drain()
            queue.close()
        self._busy = sum(1 for out in self._out.values() if out)

    @property
    def queued(self) -> int:
        """Rows waiting in every lane."""
        return sum(len(queue) for queue in self._queues.values())

    def __repr__(self) -> str:
        lanes = ", ".join(
            f"{lane_name(lane)}={len(q)}/{self._out[lane]}" for lane, q in self._queues.items()
        )
        state = "stopped" if self._stopped else "closed" if self._closed else "reading"
        return f"<LaneScheduler {state} queued/out: {lanes}>"
