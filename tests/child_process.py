"""Waiting for a child process's readiness signal: a line on its stderr, never a fixed sleep."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import time
from collections.abc import Callable
from typing import Any

__all__ = ["HANG_SECONDS", "StderrLines", "event"]

#: Real seconds after which a child that never gives its signal is declared hung. Generous:
#: it only bounds a hang, it is no timing assertion.
HANG_SECONDS = 60.0


def event(line: str) -> dict[str, Any] | None:
    """A JSON log line's fields, or None for any other line."""
    try:
        fields = json.loads(line)
    except ValueError:
        return None
    return fields if isinstance(fields, dict) else None


class StderrLines:
    """Reads a child's stderr line by line (the raw pipe, so nothing is left in a buffer).

    :meth:`wait_for` returns the first line a predicate accepts; :meth:`rest` waits for the
    child to exit and returns everything it wrote to stderr, the lines already read included.
    """

    __slots__ = ("_lines", "_partial", "_proc")

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        self._proc = proc
        self._lines: list[str] = []
        self._partial = b""

    def wait_for(self, accept: Callable[[str], bool], timeout: float = HANG_SECONDS) -> str:
        assert self._proc.stderr is not None
        fd = self._proc.stderr.fileno()
        deadline = time.monotonic() + timeout
        seen = len(self._lines)
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                for line in self._lines[seen:]:
                    if accept(line):
                        return line
                seen = len(self._lines)
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    raise AssertionError(f"no such line from the child in {timeout:g} s")
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError(
                        "the child closed stderr without the line:\n" + "".join(self._lines)
                    )
                *complete, self._partial = (self._partial + chunk).split(b"\n")
                self._lines.extend(line.decode() + "\n" for line in complete)

    def wait_for_event(self, name: str, accept: Callable[[dict[str, Any]], bool] = bool) -> None:
        """Wait for the JSON log event ``name`` whose fields ``accept`` accepts."""

        def matches(line: str) -> bool:
            fields = event(line)
            return fields is not None and fields.get("event") == name and accept(fields)

        self.wait_for(matches)

    def rest(self, timeout: float = HANG_SECONDS) -> str:
        """Wait for the child to exit; all of its stderr."""
        _, err = self._proc.communicate(timeout=timeout)
        return "".join(self._lines) + self._partial.decode() + (err or "")
