"""Exceptions the library raises. Third-party errors are translated in ``client.py``
(AmplifyBackend) and ``accounts.py`` (STS)."""

from __future__ import annotations

__all__ = ["BatchUpdaterError", "InputError", "SetupError"]


class BatchUpdaterError(Exception):
    """Base class for every error this package raises on purpose."""


class SetupError(BatchUpdaterError):
    """The job cannot start: bad option, unreadable input, no region or no credentials.

    Raised before any call is made. The CLI prints the message on one line and exits 2.
    """


class InputError(SetupError):
    """The input file as a whole cannot be read (bad header, not UTF-8, broken CSV)."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        where = f"{path}, line {line}" if line is not None else path
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line
