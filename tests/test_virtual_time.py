"""The shared virtual-time loop (tests/virtual_time.py): what the timing tests rely on."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from batch_updater import Status, run_batch
from batch_updater.emulator import EmulatorConfig, EmulatorServer

from . import virtual_time
from .conftest import fast, write_csv
from .virtual_time import VirtualTimeLoop


def test_the_clock_jumps_to_each_timer_exactly_and_in_order() -> None:
    async def scenario() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        woke: list[tuple[str, float]] = []

        async def sleeper(name: str, seconds: float) -> None:
            await asyncio.sleep(seconds)
            woke.append((name, loop.time() - start))

        # A million seconds: on a real clock this test would never end.
        await asyncio.gather(sleeper("long", 1e6), sleeper("short", 0.25), sleeper("mid", 3))
        return woke

    assert virtual_time.run(scenario(), start=1000.0) == [
        ("short", 0.25),
        ("mid", 3.0),
        ("long", 1e6),
    ]


def test_the_clock_starts_where_asked() -> None:
    async def now() -> float:
        return asyncio.get_running_loop().time()

    assert virtual_time.run(now(), start=1000.0) == 1000.0


def test_work_in_an_executor_thread_does_not_move_the_clock() -> None:
    async def scenario() -> tuple[float, list[str]]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        order: list[str] = []
        release = threading.Event()

        def slow_thread() -> None:
            # Real time passes in the thread; a timer due meanwhile must not fire.
            release.wait(0.2)
            order.append("thread done")

        async def timer() -> None:
            await asyncio.sleep(0.001)
            order.append("timer")

        timer_task = asyncio.create_task(timer())
        await loop.run_in_executor(None, slow_thread)
        moved = loop.time() - start
        await asyncio.to_thread(release.wait, 0.05)  # asyncio.to_thread counts too
        await timer_task
        return moved, order

    moved, order = virtual_time.run(scenario())
    assert moved == 0.0
    assert order == ["thread done", "timer"]


def test_http_over_loopback_to_the_emulator_works_on_virtual_time(
    tmp_path: Path, session: Any
) -> None:
    path = write_csv(
        tmp_path / "in.csv",
        "app_id,region,user_pool_id",
        *(f"d{i}abc,us-east-1,us-east-1_AbC123xyz" for i in range(3)),
    )

    async def scenario() -> tuple[list[float], float, list[Status]]:
        loop = asyncio.get_running_loop()
        async with EmulatorServer(EmulatorConfig(latency_ms=2000)) as server:
            start = loop.time()
            config = fast(tmp_path, endpoint_url=server.url, concurrency=1)
            summary = await run_batch(path, config, session=session)
            elapsed = loop.time() - start
            arrivals = [record.time - start for record in server.emulator.requests]
        return arrivals, elapsed, [r.status for r in summary.results or []]

    arrivals, elapsed, statuses = virtual_time.run(scenario())
    assert statuses == [Status.SUCCEEDED] * 3
    # One worker: each request arrives as the previous answer (2 s later) comes back.
    assert arrivals == pytest.approx([0.0, 2.0, 4.0], abs=1e-9)
    assert elapsed == pytest.approx(6.0, abs=1e-9)


@pytest.mark.skipif(sys.platform != "linux", reason="TCP_INFO")
def test_the_clock_waits_for_a_connection_being_set_up_but_not_for_a_quiet_one() -> None:
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    client = socket.create_connection(listener.getsockname())
    served, _ = listener.accept()
    waiting = [socket.socket(), socket.socket()]  # the first fills the backlog of one
    loop = VirtualTimeLoop()
    try:
        for sock in (client, served):
            loop.add_reader(sock.fileno(), lambda: None)
        client.sendall(b"request")  # on loopback: in the peer's queue once send returns
        assert loop.io_on_the_way() is False
        for sock in waiting:
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.connect(listener.getsockname())
        loop.add_writer(waiting[1].fileno(), lambda: None)  # its SYN waits for room
        assert loop.io_on_the_way() is True
    finally:
        loop.close()
        for sock in (client, served, listener, *waiting):
            sock.close()


@pytest.mark.parametrize("with_socket", [False, True], ids=["idle", "socket-open"])
def test_a_loop_with_nothing_to_wait_for_raises_instead_of_hanging(with_socket: bool) -> None:
    async def forever() -> None:
        if with_socket:  # a connection open, but its peer never writes
            await asyncio.open_connection(sock=left)
        await asyncio.get_running_loop().create_future()  # nobody will ever set it

    left, right = socket.socketpair()
    loop = VirtualTimeLoop(stall_seconds=0.05)
    try:
        task = loop.create_task(forever())
        with pytest.raises(RuntimeError, match="virtual time: stalled"):
            loop.run_until_complete(task)
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
    finally:
        loop.close()
        left.close()
        right.close()
