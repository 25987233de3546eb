"""An asyncio event loop on virtual time, for every test that is about time.

``loop.time()`` is a virtual clock. When the loop has nothing to do but wait for a timer,
the clock jumps to that timer instead of sleeping, so a minute of rate limiting, backoff or
grace period takes milliseconds and every run sees the same times, however busy the machine.

Real I/O still works: the emulator and botocore talk real HTTP over loopback sockets on this
loop. While a socket is registered, the clock only jumps once no socket is ready, after a
short real pause in which bytes already sent over loopback arrive (on Linux they are normally
readable as soon as ``send`` returns; the pause covers a loaded machine). With no socket
registered (a pure simulation), the clock jumps at once. Work in executor threads
(``getaddrinfo``, ``asyncio.to_thread``) is waited for in real time, without moving the
clock, so a thread that is merely slow never makes a timeout fire. A loop with neither a
timer nor I/O nor a thread to wait for is stuck: after ``stall_seconds`` of real time it
raises ``RuntimeError`` instead of hanging the suite.

Use :func:`run` from a plain (not ``async``) test::

    def test_grace_period(tmp_path):
        async def scenario() -> None:
            ...
        run(scenario())
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from typing import Any, TypeVar

__all__ = ["STALL_SECONDS", "VirtualTimeLoop", "run"]

T = TypeVar("T")

#: Real seconds to wait for loopback I/O before the clock jumps to the next timer.
SETTLE_SECONDS = 0.003
#: Real seconds with neither I/O nor a timer after which the test is declared stuck.
STALL_SECONDS = 60.0


class _VirtualClockSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """A selector that moves a virtual clock instead of blocking for a timer."""

    def __init__(self, start: float, threads_busy: Callable[[], bool], stall: float) -> None:
        super().__init__()
        self.now = start
        self._threads_busy = threads_busy
        self._stall = stall
        self._own = 0  # what the loop itself registers (its self-pipe)

    def mark_own(self) -> None:
        """Call once the loop is built: what is registered now is the loop's, not I/O."""
        self._own = len(self.get_map())

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready: list[tuple[selectors.SelectorKey, int]] = super().select(0)
        if ready or timeout == 0:
            return ready
        if self._threads_busy():
            # An executor thread will wake the loop through its self-pipe: wait in real
            # time, and do not move the clock meanwhile.
            return super().select(1.0)  # type: ignore[no-any-return]
        if len(self.get_map()) > self._own:
            # Sockets are open: let bytes already sent over loopback arrive.
            ready = super().select(SETTLE_SECONDS)
            if ready:
                return ready
        if timeout is None:
            # Nothing is scheduled: only I/O or another thread can wake the loop.
            ready = super().select(self._stall)
            if not ready:
                raise RuntimeError(
                    f"virtual time: stalled, no I/O and no timer for {self._stall:g} s"
                )
            return ready
        self.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` is virtual: waiting for a timer costs no real time."""

    def __init__(self, start: float | None = None, stall_seconds: float = STALL_SECONDS) -> None:
        self._in_threads = 0
        self._virtual = _VirtualClockSelector(
            time.monotonic() if start is None else start,
            lambda: self._in_threads > 0,
            stall_seconds,
        )
        super().__init__(self._virtual)
        self._virtual.mark_own()

    def time(self) -> float:
        return float(self._virtual.now)

    def run_in_executor(  # type: ignore[override]
        self, executor: Executor | None, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        future = super().run_in_executor(executor, func, *args)
        self._in_threads += 1

        def done(_: asyncio.Future[T]) -> None:
            self._in_threads -= 1

        future.add_done_callback(done)
        return future


def run(main: Coroutine[Any, Any, T], *, start: float | None = None) -> T:
    """Run ``main`` to completion on a new :class:`VirtualTimeLoop` (like ``asyncio.run``)."""
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(start)) as runner:
        return runner.run(main)
