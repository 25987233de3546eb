"""An asyncio event loop on virtual time, for every test that is about time.

``loop.time()`` is a virtual clock. When the loop has nothing to do but wait for a timer,
the clock jumps to that timer instead of sleeping, so a minute of rate limiting, backoff or
grace period takes milliseconds and every run sees the same times, however busy the machine.

Real I/O still works: the emulator and botocore talk real HTTP over loopback sockets on this
loop. The clock only jumps once no socket is ready and no byte is on its way between two of
the loop's own TCP sockets: on Linux, loopback bytes are normally readable as soon as
``send`` returns, but on a loaded machine the kernel may deliver them a little later, so the
loop compares each socket's bytes sent with its peer's bytes received (``TCP_INFO``) and
waits, in real time, until they agree. A connection still being set up counts as I/O on its
way too, and after a socket is closed the loop pauses briefly for its FIN. With no socket
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
import socket
import struct
import sys
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from typing import Any, TypeVar

__all__ = ["STALL_SECONDS", "VirtualTimeLoop", "run"]

T = TypeVar("T")

#: Real seconds to wait for loopback I/O (a FIN, bytes where ``TCP_INFO`` cannot tell) before
#: the clock jumps to the next timer.
SETTLE_SECONDS = 0.003
#: Real seconds between two looks at bytes on their way over loopback.
POLL_SECONDS = 0.0005
#: Real seconds with neither I/O nor a timer after which the test is declared stuck.
STALL_SECONDS = 60.0

# struct tcp_info (linux/tcp.h): state, bytes received, bytes sent, bytes retransmitted.
_TCP_INFO = getattr(socket, "TCP_INFO", None) if sys.platform == "linux" else None
_TCP_INFO_SIZE = 216
_SYN_SENT, _SYN_RECV = 2, 3
_TCP_FAMILIES = (socket.AF_INET, socket.AF_INET6)


class _VirtualClockSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """A selector that moves a virtual clock instead of blocking for a timer."""

    def __init__(self, start: float, threads_busy: Callable[[], bool], stall: float) -> None:
        super().__init__()
        self.now = start
        self._threads_busy = threads_busy
        self._stall = stall
        self._own = 0  # what the loop itself registers (its self-pipe)
        self._registered = 0  # at the last select: fewer now means a socket was closed
        self._ends: dict[int, tuple[int, Any, Any] | None] = {}  # fd -> see _end

    def mark_own(self) -> None:
        """Call once the loop is built: what is registered now is the loop's, not I/O."""
        self._own = len(self.get_map())

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        key: selectors.SelectorKey = super().unregister(fileobj)
        self._ends.pop(key.fd, None)  # the fd may be reused for another socket
        return key

    def _end(self, fd: int) -> tuple[int, Any, Any] | None:
        """(family, name, peer) of a TCP socket (peer None: listening or connecting); None
        for anything else. Kept once connected: the three never change for that fd."""
        if fd in self._ends:
            return self._ends[fd]
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            self._ends[fd] = None  # not a socket (a pipe)
            return None
        try:
            if sock.type != socket.SOCK_STREAM or sock.family not in _TCP_FAMILIES:
                self._ends[fd] = None
                return None
            name = sock.getsockname()
            try:
                peer = sock.getpeername()
            except OSError:  # listening, or connecting: look again next time
                return (sock.family, name, None)
        except OSError:
            return None
        else:
            self._ends[fd] = end = (sock.family, name, peer)
            return end
        finally:
            sock.detach()

    def on_the_way(self) -> bool | None:
        """Whether bytes (or a handshake) are on their way between two registered sockets;
        None when this system cannot tell."""
        if _TCP_INFO is None:
            return None
        ends: dict[Any, tuple[Any, int, int]] = {}  # name -> (peer, bytes sent, received)
        for fd in list(self.get_map()):
            end = self._end(fd)
            if end is None:
                continue
            family, name, peer = end
            sock = socket.socket(family, socket.SOCK_STREAM, 0, fd)
            try:
                info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_SIZE)
            except OSError:
                continue
            finally:
                sock.detach()
            if len(info) < _TCP_INFO_SIZE:
                return None  # an old kernel
            if info[0] in (_SYN_SENT, _SYN_RECV):
                return True  # a connection being set up
            if peer is None:
                continue
            received = struct.unpack_from("Q", info, 128)[0]
            sent, resent = struct.unpack_from("QQ", info, 200)
            ends[name] = (peer, sent - resent, received)
        for name, (peer, sent, _) in ends.items():
            other = ends.get(peer)
            if other is not None and other[0] == name and sent > other[2]:
                return True
        return False

    def _settle(self) -> list[tuple[selectors.SelectorKey, int]]:
        """Wait (real time) for loopback I/O already on its way; [] once there is none."""
        registered, closed = len(self.get_map()), len(self.get_map()) < self._registered
        self._registered = registered
        if registered <= self._own:
            return []
        if closed:
            ready: list[tuple[selectors.SelectorKey, int]] = super().select(SETTLE_SECONDS)
            if ready:
                return ready
        waited = 0.0
        while (on_the_way := self.on_the_way()) and waited < self._stall:
            ready = super().select(POLL_SECONDS)
            if ready:
                return ready
            waited += POLL_SECONDS
        if on_the_way is None:  # cannot tell: a short pause instead
            return super().select(SETTLE_SECONDS)  # type: ignore[no-any-return]
        return []

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready: list[tuple[selectors.SelectorKey, int]] = super().select(0)
        if ready or timeout == 0:
            return ready
        if self._threads_busy():
            # An executor thread will wake the loop through its self-pipe: wait in real
            # time, and do not move the clock meanwhile.
            return super().select(1.0)  # type: ignore[no-any-return]
        ready = self._settle()
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

    def io_on_the_way(self) -> bool | None:
        """Whether the clock would wait for loopback I/O now (None: this system cannot tell)."""
        return self._virtual.on_the_way()

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
