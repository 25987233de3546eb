"""Where a report or a summary lives: the storage seam beneath the report codec.

The writer, ``--resume`` and ``merge`` reach reports and summaries only through a
:class:`Location` (read as a stream of bytes, create for appending records, replace
atomically, exists, remove, a name for messages) and the :class:`Sink` that
:meth:`Location.create` returns. :class:`LocalFile` is the local-file implementation;
another (an S3 object) may keep a local spool file as its sink and upload it at
:meth:`Sink.checkpoint`, :meth:`Sink.commit` and :meth:`Sink.close`.

Every failure is an :class:`OSError` whose ``strerror`` (or text) is a human message:
:class:`FileNotFoundError` for a location that does not exist, :class:`FileExistsError`
when an exclusive create or publish finds the location taken. Callers turn these into
their one-line messages (``cannot write the report x.csv: No space left on device``).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import IO, Final, Protocol

__all__ = ["LocalFile", "LocalSink", "Location", "Sink", "location_of", "open_text"]


class Sink(Protocol):
    """A report being written: text appended record by record.

    Until :meth:`commit` a *staged* sink (``Location.create(staged=...)``) leaves what is
    at the location untouched; a sink that is not staged writes in place from the start.
    """

    def write(self, text: str, /) -> object:
        """Append ``text`` (one whole record, or the header): one call per record."""

    def flush(self) -> None:
        """Hand what was written to the operating system: a crash of this process (not
        of the machine) loses none of it."""

    def checkpoint(self) -> None:
        """Make what was written so far durable where it lives now (fsync; an upload of
        the spool). A staged sink stays staged."""

    def commit(self) -> None:
        """A staged sink: make the records so far durable and put them in the location's
        place, atomically; writing goes on into the same sink. Without ``overwrite``
        raises :class:`FileExistsError` if the location was taken meanwhile. A sink that
        is not staged: the same as :meth:`checkpoint`."""

    def close(self, *, publish: bool = True) -> None:
        """:meth:`commit` and close; ``publish=False`` closes without making anything
        more durable or visible (after a failed write)."""

    def discard(self) -> None:
        """Close and remove what this sink wrote (the run never started)."""


class Location(Protocol):
    """Where one report or summary lives."""

    @property
    def name(self) -> str:
        """How messages name it: the path, or the URL."""

    def key(self) -> Hashable:
        """Equal for two locations of the same thing (a resolved path)."""

    def exists(self) -> bool:
        """Whether something is there now."""

    def open_read(self) -> IO[bytes]:
        """Its content as a buffered binary stream (like ``open(path, "rb")``), read line
        by line, never whole."""

    def create(self, *, overwrite: bool = False, staged: str | None = None) -> Sink:
        """A sink that writes here. Without ``overwrite`` an existing location raises
        :class:`FileExistsError` (at once, or at :meth:`Sink.commit` when staged).
        ``staged``: records wait in a side file named ``<name><staged>`` (an
        implementation that spools anyway may ignore the name) until :meth:`Sink.commit`."""

    def replace_with(self, data: bytes) -> None:
        """Put ``data`` here atomically: readers see the old content or the new, whole."""

    def remove(self) -> None:
        """Remove it; nothing there is fine."""

    def beside(self, suffix: str) -> Location:
        """The location named ``<name><suffix>`` next to this one (``.summary.json``)."""


# -- local files -----------------------------------------------------------------------

Opener = Callable[[Path, str], IO[str]]

_TMP: Final = ".tmp"


def open_text(path: Path, mode: str) -> IO[str]:
    """Open a report file as the tool writes it: UTF-8, ``\\n`` line ends untranslated.

    A lone surrogate (a JSON ``\\ud800`` in a service's message, a library caller's cell)
    has no UTF-8: it is written as its escape, ``\\ud800``, which a JSON lines report
    reads back as the character itself; failing would cost the row its record."""
    return path.open(mode, encoding="utf-8", errors="backslashreplace", newline="")


class LocalSink:
    """A local report file being written; see :class:`Sink`."""

    __slots__ = ("_file", "_overwrite", "_staged", "path", "write")

    def __init__(self, path: Path, opener: Opener, *, overwrite: bool, staged: str | None) -> None:
        self.path = path
        self._overwrite = overwrite
        self._staged = path.with_name(path.name + staged) if staged else None
        path.parent.mkdir(parents=True, exist_ok=True)
        if self._staged is not None:
            self._file = opener(self._staged, "w")
        else:
            self._file = opener(path, "w" if overwrite else "x")
        self.write: Callable[[str], object] = self._file.write  # the hot path: no extra call

    def flush(self) -> None:
        self._file.flush()

    def checkpoint(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def commit(self) -> None:
        self.checkpoint()
        if self._staged is not None:
            _publish(self._staged, self.path, overwrite=self._overwrite)
            self._staged = None

    def close(self, *, publish: bool = True) -> None:
        if self._file.closed:
            return
        if not publish:
            with contextlib.suppress(OSError):  # closing flushes again, and fails again
                self._file.close()
            return
        self.commit()
        self._file.close()

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        (self._staged or self.path).unlink(missing_ok=True)

    def __repr__(self) -> str:
        staged = f" staged={str(self._staged)!r}" if self._staged else ""
        state = " closed" if self._file.closed else ""
        return f"<LocalSink {str(self.path)!r}{staged}{state}>"


def _publish(source: Path, target: Path, *, overwrite: bool) -> None:
    """Move ``source`` to ``target``; without ``overwrite``, never replace an existing file."""
    if overwrite:
        os.replace(source, target)
        return
    try:
        os.link(source, target)  # atomic, and fails if target appeared meanwhile
    except FileExistsError:
        raise
    except OSError:  # no hard links on this file system
        if target.exists():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target)) from None
        os.replace(source, target)
    else:
        source.unlink()


class LocalFile:
    """A report or summary in a local file; see :class:`Location`.

    ``opener`` opens the file for writing (a seam: tests hand in a file whose disk fills).
    """

    __slots__ = ("_opener", "path")

    def __init__(self, path: Path, opener: Opener = open_text) -> None:
        self.path = path
        self._opener = opener

    @property
    def name(self) -> str:
        return str(self.path)

    def key(self) -> Hashable:
        return self.path.resolve()

    def exists(self) -> bool:
        return self.path.exists()

    def open_read(self) -> IO[bytes]:
        return self.path.open("rb")

    def create(self, *, overwrite: bool = False, staged: str | None = None) -> LocalSink:
        return LocalSink(self.path, self._opener, overwrite=overwrite, staged=staged)

    def replace_with(self, data: bytes) -> None:
        tmp = self.path.with_name(self.path.name + _TMP)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            tmp.replace(self.path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def beside(self, suffix: str) -> LocalFile:
        return LocalFile(self.path.with_name(self.path.name + suffix), self._opener)

    def __repr__(self) -> str:
        return f"<LocalFile {str(self.path)!r}>"


#: Locations named by a URL, by scheme (``"s3"``): a function of the URL. An
#: implementation registers itself here.
SCHEMES: dict[str, Callable[[str], Location]] = {}


def location_of(target: str | os.PathLike[str] | Location, opener: Opener = open_text) -> Location:
    """The :class:`Location` of a URL of a registered scheme, a local path (its files
    opened for writing with ``opener``), or a location."""
    if isinstance(target, str):
        scheme, sep, _ = target.partition("://")
        if sep and scheme in SCHEMES:
            return SCHEMES[scheme](target)
    if isinstance(target, str | os.PathLike):
        return LocalFile(Path(target), opener)
    return target
