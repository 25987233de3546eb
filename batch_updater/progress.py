"""Progress: counts as rows finish, a snapshot on demand, a live bar or periodic events."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, TextIO

from .results import PROCESSED, Status

__all__ = ["BarStream", "Progress", "ProgressSnapshot", "render_bar", "terminal_columns", "tick"]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    """Where a run stands."""

    done: int  # rows with a final outcome, not attempted ones excepted
    total: int
    elapsed_seconds: float
    rows_per_second: float  # rows sent (or checked, in a dry run) per second
    eta_seconds: float | None  # None until a rate is known
    failed: int
    throttled: int
    not_attempted: int = 0  # rows the run will not send (it stopped, or invalid input)

    def as_event(self) -> dict[str, Any]:
        """The fields of a ``progress`` log event."""
        out = asdict(self)
        out["elapsed_seconds"] = round(self.elapsed_seconds, 1)
        out["rows_per_second"] = round(self.rows_per_second, 1)
        out["eta_seconds"] = None if self.eta_seconds is None else round(self.eta_seconds)
        return out


class Progress:
    """Where a run stands: rows finished and requests sent; time is read only through
    ``clock``.

    ``done`` counts rows with a final outcome; rows ``not_attempted`` are counted apart
    (after a stop they are not progress), and the rate counts only rows the run processed
    (:data:`~batch_updater.results.PROCESSED`: sent, or checked in a dry run).
    ``requests``, ``retries`` and ``throttled`` count requests as they are sent.
    """

    __slots__ = (
        "_clock",
        "_processed",
        "_start",
        "done",
        "failed",
        "not_attempted",
        "requests",
        "retries",
        "throttled",
        "total",
    )

    def __init__(self, total: int, *, clock: Clock = time.monotonic) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.not_attempted = 0
        self.requests = 0  # requests sent, retries included
        self.retries = 0  # rows sent again after a failed attempt
        self.throttled = 0  # requests the service answered with a throttling error
        self._processed = 0
        self._clock = clock
        self._start = clock()

    def record(self, status: Status) -> None:
        """One more row is final."""
        if status is Status.NOT_ATTEMPTED:
            self.not_attempted += 1
            return
        self.done += 1
        if status in PROCESSED:
            self._processed += 1
        if status is Status.FAILED:
            self.failed += 1

    def snapshot(self) -> ProgressSnapshot:
        """The counts now, with rate and ETA."""
        elapsed = max(0.0, self._clock() - self._start)
        rate = self._processed / elapsed if elapsed > 0 else 0.0
        left = max(0, self.total - self.done - self.not_attempted)
        eta = left / rate if rate > 0 else (0.0 if left == 0 else None)
        return ProgressSnapshot(
            self.done,
            self.total,
            elapsed,
            rate,
            eta,
            self.failed,
            self.throttled,
            self.not_attempted,
        )

    def __repr__(self) -> str:
        return (
            f"<Progress {self.done}/{self.total} failed={self.failed} "
            f"not_attempted={self.not_attempted}>"
        )


def _clock_text(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


_BAR_WIDTH = 24  # the widest bar, in characters between the brackets
_NARROWEST_BAR = 5  # below this the bar is left out and only the numbers are shown
_DEFAULT_COLUMNS = 80  # when the terminal does not say how wide it is


def render_bar(snap: ProgressSnapshot, columns: int = _DEFAULT_COLUMNS) -> str:
    """``[#####...] 1234/5000  24% 153.2 rows/s ETA 0:25 failed 3 throttled 12``, then
    ``not attempted N`` once rows will not be sent.

    At most ``columns - 1`` characters (a line filling the last column would wrap on some
    terminals): the bar narrows first, then is left out, then the numbers are cut.
    """
    share = snap.done / snap.total if snap.total else 1.0
    numbers = (
        f"{snap.done}/{snap.total} {share:4.0%} {snap.rows_per_second:.1f} rows/s "
        f"ETA {_clock_text(snap.eta_seconds)} failed {snap.failed} throttled {snap.throttled}"
    )
    if snap.not_attempted:
        numbers += f" not attempted {snap.not_attempted}"
    room = columns - 1 - len(numbers) - 3  # brackets and a space
    if room < _NARROWEST_BAR:
        return numbers[: max(0, columns - 1)]
    width = min(_BAR_WIDTH, room)
    filled = round(width * share)
    return f"[{'#' * filled}{'.' * (width - filled)}] {numbers}"


def terminal_columns(stream: TextIO) -> int:
    """How wide the terminal behind ``stream`` is (80 when it does not say)."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return _DEFAULT_COLUMNS
    return columns or _DEFAULT_COLUMNS  # a fresh pseudo-terminal reports 0


class BarStream:
    """A text stream (stderr) that keeps one live bar on its last line.

    Log lines written through it clear the bar, appear above it, and the bar is drawn
    again, so the two never garble each other. The bar is fitted to the terminal's width
    at each redraw: a bar that wrapped would leave its first part behind on every redraw.
    """

    __slots__ = ("__weakref__", "_bar", "_stream")  # structlog keeps a weak reference

    _CLEAR = "\r\x1b[K"

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._bar = ""

    def write(self, text: str) -> int:
        """Write ``text`` above the bar."""
        if self._bar:
            self._stream.write(self._CLEAR)
        self._stream.write(text)
        if self._bar and text.endswith("\n"):
            self._stream.write(self._bar)
        return len(text)

    def flush(self) -> None:
        """Flush the underlying stream."""
        self._stream.flush()

    def isatty(self) -> bool:
        """Whether the underlying stream is a terminal."""
        return self._stream.isatty()

    def show(self, snap: ProgressSnapshot) -> None:
        """Draw (or redraw) the bar."""
        self._bar = render_bar(snap, terminal_columns(self._stream))
        self._stream.write(self._CLEAR + self._bar)
        self._stream.flush()

    def clear(self) -> None:
        """Remove the bar for good."""
        if self._bar:
            self._stream.write(self._CLEAR)
            self._stream.flush()
        self._bar = ""


async def tick(
    progress: Progress,
    sink: Callable[[ProgressSnapshot], None],
    interval: float,
    *,
    sleep: Sleep = asyncio.sleep,
) -> None:
    """Give ``sink`` a snapshot every ``interval`` seconds, until cancelled."""
    while True:
        await sleep(interval)
        sink(progress.snapshot())
