"""Input and reports on S3: ``s3://bucket/key`` wherever a path is accepted.

The only module that talks to S3 (aiobotocore's client, through the run's aioboto3
session: the base credentials and the standard settings, ``AWS_ENDPOINT_URL_S3`` among
them). Every S3 error is translated here, at :meth:`S3Store._error`, into one line that
names the bucket and key and says what to fix.

- :class:`S3Location` parses ``s3://bucket/key`` (a key ending in ``/`` is a prefix).
- :class:`S3Input` reads the input object as one version (HEAD for its ETag and version
  id, then a GET pinned to them) into a private file; :class:`~batch_updater.rows.RowPlan`
  reads that copy in both passes, and :meth:`S3Input.recheck` tells whether the object
  changed during the run.
- :class:`S3Report` keeps the report's records in a local spool file (the
  :class:`~batch_updater.report.ReportWriter` writes it as it writes a local report),
  uploads the file at every checkpoint interval and at the end, then the summary object
  ``<report>.summary.json``. The first upload claims the key with a conditional put
  (``If-None-Match: *``), so an existing report is never overwritten without
  ``--overwrite``; it happens before the first row is sent.
- :func:`fetch_reports` copies reports (``--resume``, ``merge`` inputs, prefixes
  expanded) to private local files, read through the storage seam as
  :class:`FetchedObject` locations named by their URL.
- :class:`S3Run` is all the runner calls (a no-op when no path is on S3);
  :func:`merge_on_s3` is ``merge`` with S3 reports, input or output.

The storage seam (``storage.Location``) is synchronous, so S3 objects are never read or
written through it directly: they are copied to local files first and uploaded after,
with aiobotocore, on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from .codec import SUMMARY_SUFFIX
from .csvinput import _SpoolReader
from .errors import SetupError
from .storage import LocalFile

if TYPE_CHECKING:
    from botocore.exceptions import ClientError

    from .merge import MergeResult
    from .results import RunSummary

__all__ = [
    "FetchedObject",
    "Location",
    "S3Error",
    "S3Input",
    "S3Location",
    "S3NotFound",
    "S3Report",
    "S3Run",
    "S3Store",
    "fetch_reports",
    "is_s3",
    "merge_on_s3",
    "to_location",
]

SCHEME: Final = "s3://"
_CHUNK: Final = 1 << 18  # bytes per read when copying an object to a local file
_FETCH_TRIES: Final = 3  # HEAD+GET rounds when the object changes between the two


class S3Error(SetupError):
    """An S3 request failed; the message names the bucket and key and what to fix."""


class S3NotFound(S3Error):
    """No object at the key (the bucket exists)."""


@dataclass(frozen=True, slots=True)
class S3Location:
    """``s3://bucket/key``; a key that is empty or ends in ``/`` is a prefix."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, text: str) -> S3Location:
        """``s3://bucket/key`` as a location, or a :class:`SetupError` saying why not."""
        if not text.startswith(SCHEME):
            raise SetupError(f"{text[:200]!r} is not an S3 URL (s3://bucket/key)")
        bucket, _, key = text[len(SCHEME) :].partition("/")
        if not bucket or "\\" in bucket or not 3 <= len(bucket) <= 63:
            raise SetupError(
                f"{text[:200]}: no valid bucket name (3 to 63 characters) after s3://; "
                "write s3://bucket/key"
            )
        return cls(bucket, key)

    @property
    def is_prefix(self) -> bool:
        return self.key == "" or self.key.endswith("/")

    @property
    def name(self) -> str:
        """The key's last part: ``apps.csv`` of ``s3://b/jobs/apps.csv``."""
        return self.key.rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    @property
    def prefix(self) -> str:
        """The key up to its last ``/`` (included): the object's "folder"."""
        return self.key[: self.key.rfind("/") + 1]

    def with_name(self, name: str) -> S3Location:
        """The object of that name beside this one."""
        return S3Location(self.bucket, self.prefix + name)

    def summary(self) -> S3Location:
        """Where this report's summary goes: ``<report>.summary.json``."""
        return S3Location(self.bucket, self.key + SUMMARY_SUFFIX)

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}"


Location = Path | S3Location  # where an input or a report is: a local path or an S3 object
_Rows = TypeVar("_Rows")


def is_s3(value: object) -> bool:
    """True for an :class:`S3Location` or a string starting with ``s3://``."""
    return isinstance(value, S3Location) or (isinstance(value, str) and value.startswith(SCHEME))


def to_location(value: str | os.PathLike[str] | S3Location) -> Location:
    """A path as given on the command line or to :class:`RunConfig`: ``s3://...`` is an
    :class:`S3Location`, anything else a :class:`~pathlib.Path`."""
    if isinstance(value, S3Location):
        return value
    if isinstance(value, str) and value.startswith(SCHEME):
        return S3Location.parse(value)
    return Path(value)


# -- the one boundary ------------------------------------------------------------------

_NOT_FOUND: Final = frozenset({"404", "NoSuchKey", "NotFound"})
_DENIED: Final = frozenset({"403", "AccessDenied", "AllAccessDisabled", "Forbidden"})
_EXPIRED: Final = frozenset(
    {"ExpiredToken", "ExpiredTokenException", "TokenRefreshRequired", "RequestExpired"}
)
_BAD_KEYS: Final = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"})
_CHANGED: Final = frozenset({"PreconditionFailed", "412"})
# A conditional put racing another write to the same key (S3 answers 409 to one of them).
_RACED: Final = frozenset({"ConditionalRequestConflict", "409"})


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code") or "")


class _Exists(Exception):
    """The conditional put found an object at the key (``If-None-Match: *``)."""


class _Changed(Exception):
    """The object is no longer the version read before (``If-Match``)."""


class S3Store:
    """An S3 client of the run's session; an async context manager.

    ``requests`` counts the requests sent (a test and benchmark aid).
    """

    __slots__ = ("_client", "_session", "_stack", "requests")

    def __init__(self, session: Any) -> None:
        self._session = session
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self.requests = 0

    async def __aenter__(self) -> S3Store:
        from aiobotocore.config import AioConfig  # noqa: PLC0415 - the SDK only when S3 is used

        stack = contextlib.AsyncExitStack()
        # The bucket's region: botocore follows S3's redirect to it when the session's
        # region is another one; us-east-1 when the session has none.
        region = self._session.region_name or os.environ.get("AWS_REGION") or "us-east-1"
        config = AioConfig(
            retries={"mode": "standard", "max_attempts": 5},
            connect_timeout=10,
            read_timeout=60,
        )
        self._client = await stack.enter_async_context(
            self._session.client("s3", region_name=region, config=config)
        )
        self._stack = stack
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None

    def __repr__(self) -> str:
        state = "open" if self._stack is not None else "closed"
        return f"<S3Store {state} requests={self.requests}>"

    async def _call(self, what: str, location: S3Location, call: Awaitable[Any]) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415 - lazy SDK

        self.requests += 1
        try:
            return await call
        except ClientError as exc:
            code = _code(exc)
            if what == "put" and code in _CHANGED | _RACED:
                raise _Exists from None
            if what == "get" and code in _CHANGED:
                raise _Changed from None
            if code in _NOT_FOUND and what in ("head", "get"):
                raise await self._missing(location) from None
            raise self._error(what, location, exc) from None
        except (BotoCoreError, OSError) as exc:
            raise self._error(what, location, exc) from None

    async def _missing(self, location: S3Location) -> S3Error:
        """The error for a key that is not there: no bucket, a prefix, or no object."""
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415 - lazy SDK

        try:
            self.requests += 1
            await self._client.head_bucket(Bucket=location.bucket)
        except ClientError as exc:
            if _code(exc) in (*_NOT_FOUND, "NoSuchBucket"):
                return self._no_bucket(location)
        except (BotoCoreError, OSError):
            pass
        if not location.is_prefix:
            self.requests += 1
            with contextlib.suppress(ClientError, BotoCoreError, OSError):
                listed = await self._client.list_objects_v2(
                    Bucket=location.bucket, Prefix=location.key + "/", MaxKeys=1
                )
                if listed.get("KeyCount", 0):
                    return self._prefix(location)
        return S3NotFound(f"{location}: no such object; check the key (S3 keys are case-sensitive)")

    @staticmethod
    def _no_bucket(location: S3Location) -> S3Error:
        return S3Error(
            f"{location}: no such bucket {location.bucket!r}; check its name, or create it "
            "first (and AWS_ENDPOINT_URL_S3 if you use an S3-compatible service)"
        )

    @staticmethod
    def _prefix(location: S3Location) -> S3Error:
        return S3Error(
            f"{location} is a prefix (a folder), not an object: name one object under it"
        )

    def _error(self, what: str, location: S3Location, exc: BaseException) -> S3Error:
        """The one translation of an S3 failure into a one-line message."""
        from botocore.exceptions import (  # noqa: PLC0415 - lazy SDK
            ClientError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        doing = {
            "head": "read",
            "get": "read",
            "put": "write",
            "delete": "delete",
            "list": "list",
        }.get(what, what)
        if isinstance(exc, ClientError):
            code = _code(exc)
            message = str(exc.response.get("Error", {}).get("Message") or code)
            if code == "NoSuchBucket":
                return self._no_bucket(location)
            if code in _DENIED:
                return S3Error(
                    f"cannot {doing} {location}: access denied; the credentials need "
                    f"s3:{_ACTIONS[what]} on arn:aws:s3:::{location.bucket}/"
                    f"{location.key if what != 'list' else location.key + '*'}"
                )
            if code in _EXPIRED:
                return S3Error(
                    f"cannot {doing} {location}: the credentials expired ({code}); "
                    "refresh them (aws sso login, new session token) and run again"
                )
            if code in _BAD_KEYS:
                return S3Error(
                    f"cannot {doing} {location}: the credentials are not accepted ({code}); "
                    "check the access key, secret key and session token"
                )
            return S3Error(f"cannot {doing} {location}: {code}: {message}")
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return S3Error(
                f"cannot {doing} {location}: no AWS credentials; set AWS_PROFILE or "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or give the task a role"
            )
        return S3Error(f"cannot {doing} {location}: {exc}")

    # -- requests ----------------------------------------------------------------------

    async def head(self, location: S3Location) -> dict[str, Any]:
        """The object's metadata (``ETag``, ``VersionId``, ``ContentLength``)."""
        if location.is_prefix:
            raise self._prefix(location)
        head: dict[str, Any] = await self._call(
            "head", location, self._client.head_object(Bucket=location.bucket, Key=location.key)
        )
        return head

    async def exists(self, location: S3Location) -> bool:
        """Whether an object is at ``location`` (a missing bucket is an error)."""
        try:
            await self.head(location)
        except S3NotFound:
            return False
        return True

    async def download(self, location: S3Location, into: io.RawIOBase | Any) -> dict[str, Any]:
        """Copy one version of the object into the binary file ``into``; its HEAD.

        The GET is pinned to the ETag (and version id, in a versioned bucket) that HEAD
        saw; if the object is replaced in between, the copy starts over.
        """
        from aiohttp import ClientError as AiohttpError  # noqa: PLC0415 - lazy SDK
        from botocore.exceptions import BotoCoreError  # noqa: PLC0415 - lazy SDK

        for _ in range(_FETCH_TRIES):
            head = await self.head(location)
            pinned: dict[str, Any] = {"IfMatch": head["ETag"]}
            if head.get("VersionId") and head["VersionId"] != "null":
                pinned["VersionId"] = head["VersionId"]
            into.seek(0)
            into.truncate()
            try:
                answer = await self._call(
                    "get",
                    location,
                    self._client.get_object(Bucket=location.bucket, Key=location.key, **pinned),
                )
                body = answer["Body"]
                async with body:  # releases the connection
                    async for chunk in body.iter_chunks(_CHUNK):
                        into.write(chunk)
            except _Changed:
                continue
            except (TimeoutError, BotoCoreError, OSError, AiohttpError) as exc:
                if isinstance(exc, OSError) and not isinstance(exc, ConnectionError):
                    raise SetupError(
                        f"cannot copy {location} to {tempfile.gettempdir()}: "
                        f"{exc.strerror or exc} (free some space there, or set TMPDIR)"
                    ) from None
                raise self._error("get", location, exc) from None
            into.flush()
            return head
        raise S3Error(f"{location} keeps changing while it is read; try again when it is stable")

    async def put_file(self, location: S3Location, path: Path, size: int, *, create: bool) -> str:
        """Upload the first ``size`` bytes of the file at ``path``; its new ETag.

        ``create``: only if no object is at the key (``If-None-Match: *``); raises
        :class:`_Exists` when one is.
        """
        extra = {"IfNoneMatch": "*"} if create else {}
        with _Slice(path, size) as body:
            answer = await self._call(
                "put",
                location,
                self._client.put_object(
                    Bucket=location.bucket,
                    Key=location.key,
                    Body=body,
                    ContentLength=size,
                    ContentType=_content_type(location),
                    **extra,
                ),
            )
        return str(answer.get("ETag", ""))

    async def put_bytes(self, location: S3Location, data: bytes, *, create: bool = False) -> None:
        """Upload ``data``; ``create`` as for :meth:`put_file`."""
        extra = {"IfNoneMatch": "*"} if create else {}
        await self._call(
            "put",
            location,
            self._client.put_object(
                Bucket=location.bucket,
                Key=location.key,
                Body=data,
                ContentType=_content_type(location),
                **extra,
            ),
        )

    async def delete(self, location: S3Location) -> None:
        await self._call(
            "delete",
            location,
            self._client.delete_object(Bucket=location.bucket, Key=location.key),
        )

    async def list_reports(self, prefix: S3Location) -> list[S3Location]:
        """Every report (``.csv``, ``.jsonl``) under ``prefix``, in key order."""
        from .config import REPORT_SUFFIXES  # noqa: PLC0415 - config imports this module

        found: list[S3Location] = []
        token: dict[str, str] = {}
        while True:
            page = await self._call(
                "list",
                prefix,
                self._client.list_objects_v2(Bucket=prefix.bucket, Prefix=prefix.key, **token),
            )
            for item in page.get("Contents", ()):
                key = str(item["Key"])
                if key.lower().endswith(REPORT_SUFFIXES):
                    found.append(S3Location(prefix.bucket, key))
            if not page.get("IsTruncated"):
                return sorted(found, key=lambda loc: loc.key)
            token = {"ContinuationToken": page["NextContinuationToken"]}


_ACTIONS: Final = {
    "head": "GetObject",
    "get": "GetObject",
    "put": "PutObject",
    "delete": "DeleteObject",
    "list": "ListBucket",
}


def _content_type(location: S3Location) -> str:
    name = location.key.lower()
    if name.endswith(".jsonl"):
        return "application/x-ndjson"
    if name.endswith(".json"):
        return "application/json"
    return "text/csv; charset=utf-8"


class _Slice(_SpoolReader):
    """The first ``size`` bytes of a file, read at its own offset (``os.pread``), seekable:
    the body of an upload while the writer appends behind it."""

    __slots__ = ()

    def __init__(self, path: Path, size: int) -> None:
        super().__init__(os.open(path, os.O_RDONLY), size)

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, min(self._size, base + offset))
        return self._pos

    def __len__(self) -> int:
        return self._size

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


# -- input -----------------------------------------------------------------------------


class S3Input:
    """The input object, copied once to a private file that both validation passes read.

    The hook :class:`~batch_updater.rows.RowPlan` takes as its source (see
    ``rows.InputCopy``): ``name``, ``size``, :meth:`reader`, :meth:`changed`,
    :meth:`close`.
    """

    __slots__ = ("_changed", "_file", "etag", "location", "size", "version_id")

    def __init__(self, location: S3Location) -> None:
        self.location = location
        self.etag = ""
        self.version_id: str | None = None
        self.size = 0
        self._changed = False
        try:
            # SIM115 ignored: the copy outlives this call; close() closes it
            self._file = tempfile.TemporaryFile(prefix="batch-updater-input-")  # noqa: SIM115
        except OSError as exc:
            raise SetupError(
                f"cannot keep a private copy of {location} in {tempfile.gettempdir()}: "
                f"{exc.strerror or exc} (set TMPDIR to a roomier directory); nothing was sent"
            ) from None

    @classmethod
    async def fetch(cls, store: S3Store, location: S3Location) -> S3Input:
        """Copy one version of the object at ``location``."""
        copy = cls(location)
        try:
            head = await store.download(location, copy._file)
        except BaseException:
            copy.close()
            raise
        copy.etag = str(head["ETag"])
        version = head.get("VersionId")
        copy.version_id = str(version) if version and version != "null" else None
        copy.size = copy._file.tell()
        return copy

    @property
    def name(self) -> str:
        return str(self.location)

    def reader(self) -> io.BufferedReader:
        """A new reader from the copy's start."""
        return io.BufferedReader(_SpoolReader(self._file.fileno(), self.size), _CHUNK)

    async def recheck(self, store: S3Store) -> bool:
        """Ask S3 whether the object is still the version copied; a missing object or a
        failed request counts as changed (the run cannot tell it is not)."""
        try:
            head = await store.head(self.location)
        except S3Error:
            self._changed = True
        else:
            version = head.get("VersionId")
            self._changed = head.get("ETag") != self.etag or (
                self.version_id is not None and version != self.version_id
            )
        return self._changed

    def changed(self) -> bool:
        """What the last :meth:`recheck` found."""
        return self._changed

    def close(self) -> None:
        self._file.close()

    def __repr__(self) -> str:
        return (
            f"<S3Input {self.location} etag={self.etag} size={self.size} changed={self._changed}>"
        )


# -- reports read (--resume, merge) ----------------------------------------------------


class FetchedObject(LocalFile):
    """A local copy of an S3 object, read through the storage seam under its URL (so
    messages and resume notes name the object, not the copy)."""

    __slots__ = ("url",)

    def __init__(self, path: Path, url: str) -> None:
        super().__init__(path)
        self.url = url

    @property
    def name(self) -> str:
        return self.url

    def key(self) -> Hashable:
        return self.url

    def beside(self, suffix: str) -> FetchedObject:
        return FetchedObject(self.path.with_name(self.path.name + suffix), self.url + suffix)

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"<FetchedObject {self.url} at {str(self.path)!r}>"


class LocalCopies:
    """Private local copies of S3 reports (and their summaries, when there are any), in a
    temporary directory removed by :meth:`close`. ``names`` maps each copy to its URL."""

    __slots__ = ("_dir", "names")

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="batch-updater-reports-"))
        self.names: dict[Path, str] = {}

    def path_for(self, location: S3Location) -> Path:
        n = len(self.names)
        folder = self._dir / str(n)
        folder.mkdir()
        return folder / location.name

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"<LocalCopies {self._dir} reports={len(self.names)}>"


async def expand(store: S3Store, locations: Iterable[Location]) -> list[Location]:
    """Each location, with an S3 prefix replaced by the reports under it (key order)."""
    out: list[Location] = []
    for location in locations:
        if isinstance(location, S3Location) and location.is_prefix:
            found = await store.list_reports(location)
            if not found:
                raise S3Error(f"{location}: no report (.csv or .jsonl) under this prefix")
            out.extend(found)
        else:
            out.append(location)
    return out


async def fetch_reports(
    store: S3Store, locations: Sequence[Location], copies: LocalCopies, *, summaries: bool
) -> list[Path | FetchedObject]:
    """Local paths of ``locations`` (prefixes expanded): S3 objects are copied into
    ``copies`` (with ``<report>.summary.json`` beside each when ``summaries`` and it
    exists); local paths are kept as they are."""
    out: list[Path | FetchedObject] = []
    for location in await expand(store, locations):
        if isinstance(location, Path):
            out.append(location)
            continue
        path = copies.path_for(location)
        with path.open("wb") as handle:
            await store.download(location, handle)
        if summaries:
            summary = location.summary()
            if await store.exists(summary):
                with path.with_name(path.name + SUMMARY_SUFFIX).open("wb") as handle:
                    await store.download(summary, handle)
        copies.names[path] = str(location)
        out.append(FetchedObject(path, str(location)))
    return out


# -- the report ------------------------------------------------------------------------


class Flushable(Protocol):
    """What a checkpoint needs of the report writer: every record written in the file."""

    def checkpoint(self) -> None: ...


class S3Report:
    """A report object written from a local spool file: uploaded at each checkpoint
    (every ``interval`` seconds, when records were added), at the end, then its summary.

    :meth:`claim` (before the first row is sent) makes the object with a conditional put,
    so an existing one is refused unless ``overwrite``; :meth:`start` runs checkpoints;
    :meth:`finish` uploads the last records (a failure goes to ``error``, the spool file
    is kept and named in it); :meth:`upload_summary` writes ``<report>.summary.json``.
    """

    __slots__ = (
        "_claimed",
        "_dir",
        "_sleep",
        "_stale_summary",
        "_task",
        "_uploaded",
        "_uploading",
        "_writer",
        "checkpoints",
        "error",
        "interval",
        "local",
        "location",
        "log",
        "on_error",
        "store",
    )

    def __init__(
        self,
        store: S3Store,
        location: S3Location,
        interval: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        log: Any = None,
    ) -> None:
        self.store = store
        self.log = log  # a structlog logger: a report_uploaded event per upload
        self.location = location
        self.interval = interval
        self._dir = Path(tempfile.mkdtemp(prefix="batch-updater-report-"))
        self.local = self._dir / location.name  # the spool: the writer's file
        self._writer: Flushable | None = None
        self._task: asyncio.Task[None] | None = None
        self._sleep = sleep  # the clock of the checkpoints (a testing seam)
        self._uploading = False
        self._stale_summary = False  # resuming in place: the old summary goes first
        self._uploaded: tuple[int, int] | None = None  # (inode, bytes) of the spool in S3
        self._claimed = False  # this run made the object (discard removes it)
        self.checkpoints = 0
        self.error: str | None = None
        self.on_error: Callable[[str], None] | None = None

    def __repr__(self) -> str:
        state = "running" if self._task is not None and not self._task.done() else "idle"
        return (
            f"<S3Report {self.location} {state} uploaded={self._uploaded} "
            f"checkpoints={self.checkpoints} error={self.error!r}>"
        )

    async def claim(self, *, overwrite: bool, pick_name: bool = False) -> None:
        """Upload the spool as it is (the report's header) to make the object, before any
        row is sent; with ``overwrite``, an old report's summary is removed (it would say
        the new report is complete).

        Refused when an object is there, unless ``overwrite``; with ``pick_name`` (a
        default name) the next free name ``-2``, ``-3``... is taken instead.
        """
        if self._writer is not None:
            self._writer.checkpoint()
        size = self.local.stat().st_size
        n = 1
        base = self.location
        while True:
            try:
                await self.store.put_file(self.location, self.local, size, create=not overwrite)
            except _Exists:
                if not pick_name:
                    raise SetupError(
                        f"the report {self.location} already exists: choose another --report, "
                        "or pass --overwrite to replace it"
                    ) from None
                n += 1
                stem, suffix = PurePosixPath(base.name).stem, PurePosixPath(base.name).suffix
                self.location = base.with_name(f"{stem}-{n}{suffix}")
                continue
            self._uploaded, self._claimed = (self.local.stat().st_ino, size), True
            if overwrite:
                await self.store.delete(self.location.summary())
            return

    def adopt(self, copy: Path) -> None:
        """Resuming into this very report: the spool starts as the local copy of the
        object (a hard link to it: the writer sees the two as one file and replaces it
        once the new report holds every earlier success); nothing to upload until then."""
        try:
            os.link(copy, self.local)
        except OSError:  # another file system: write beside the copy
            self.local = copy
        info = self.local.stat()
        self._uploaded = (info.st_ino, info.st_size)
        self._stale_summary = True

    async def start(
        self,
        writer: Flushable,
        on_error: Callable[[str], None] | None = None,
        *,
        overwrite: bool = False,
        pick_name: bool = False,
    ) -> None:
        """Claim the object (unless adopted), then upload at every checkpoint; ``on_error``
        hears of a failed upload (the run stops, as when a local report fails)."""
        self._writer, self.on_error = writer, on_error
        if self._uploaded is None:
            await self.claim(overwrite=overwrite, pick_name=pick_name)
        self._task = asyncio.create_task(self._checkpoints(), name=f"checkpoints {self.location}")

    async def _checkpoints(self) -> None:
        while True:
            await self._sleep(self.interval)
            self._uploading = True
            try:
                await self.checkpoint()
            finally:
                self._uploading = False
            if self._task is None:  # finish() or discard() is waiting for this upload
                return

    async def checkpoint(self) -> bool:
        """Upload the records written so far, if any were added; True when it did."""
        if self._writer is not None:
            try:
                self._writer.checkpoint()  # sets the writer's error on failure, never raises
            except OSError:  # pragma: no cover - a writer that raises after all
                return False
        try:
            info = self.local.stat()
        except OSError:
            return False
        # The same bytes of the same file (a report resumed in place is another file
        # once the writer put it in the old one's place) are in S3 already.
        if (info.st_ino, info.st_size) == self._uploaded:
            return False
        size = info.st_size
        try:
            if self._stale_summary:  # before anything replaces the report it describes
                await self.store.delete(self.location.summary())
                self._stale_summary = False
                info = self.local.stat()
                size = info.st_size
            await self.store.put_file(self.location, self.local, size, create=False)
        except S3Error as exc:
            self.error = f"{exc}; the report so far is kept at {self.local}"
            if self.on_error is not None:
                self.on_error(self.error)
            return False
        self._uploaded = (info.st_ino, size)
        self.checkpoints += 1
        self.error = None  # a later upload made up for an earlier failure
        if self.log is not None:
            self.log.info("report_uploaded", report=str(self.location), bytes=size)
        return True

    async def finish(self) -> str | None:
        """Stop the checkpoints (one in flight completes) and upload the last records;
        the one-line error if that failed."""
        await self._stop_checkpoints()
        self._writer = None  # closed by now
        self.on_error = None  # the run is over: the error is returned
        await self.checkpoint()
        if self.error is None and self._uploaded is None:  # pragma: no cover - claimed first
            self.error = f"the report {self.location} was never uploaded"
        return self.error

    async def upload_summary(self, summary: RunSummary) -> str | None:
        """Write ``<report>.summary.json`` (last: its presence says the report is
        complete); the one-line error if that failed (also set on the summary)."""
        if self.error is None:
            data = (json.dumps(summary.to_json(), indent=2) + "\n").encode()
            try:
                await self.store.put_bytes(self.location.summary(), data)
            except S3Error as exc:
                message = str(exc)
                if summary.output_error is None:
                    summary.output_error = message
                return message
            self.discard_local()
            return None
        return self.error

    async def _stop_checkpoints(self) -> None:
        """Cancel the checkpoint task while it waits; an upload in flight completes first
        (so no older upload can land after the last one)."""
        task, self._task = self._task, None
        if task is None:
            return
        if not self._uploading:
            task.cancel()
        await asyncio.wait([task])

    async def discard(self) -> None:
        """The run never started: remove the claimed object and the spool."""
        await self._stop_checkpoints()
        if self._claimed:
            with contextlib.suppress(S3Error):
                await self.store.delete(self.location)
        self.discard_local()

    def discard_local(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


# -- the S3 side of one run ------------------------------------------------------------


class S3Run:
    """What a run does on S3, behind a few calls the runner makes whatever its paths: with
    no S3 location among them, each call is a no-op and no client is made.

    Order of calls: :meth:`open_input` (the input), :meth:`local_reports` (``--resume``),
    :meth:`open_report` (before the first row), :meth:`start` (checkpoints),
    :meth:`recheck_input`, :meth:`close_report` (the last upload, before the summary is
    composed), :meth:`upload_summary`; :meth:`discard` when the run never started;
    :meth:`aclose` always.
    """

    __slots__ = (
        "_copies",
        "_input",
        "_make_session",
        "_stack",
        "_start",
        "_store",
        "checkpoint_interval",
        "log",
        "report",
    )

    def __init__(
        self, make_session: Callable[[], Any], checkpoint_interval: float = 60.0, log: Any = None
    ) -> None:
        self.log = log
        self._make_session = make_session
        self.checkpoint_interval = checkpoint_interval
        self._stack = contextlib.AsyncExitStack()
        self._store: S3Store | None = None
        self._copies: LocalCopies | None = None
        self._input: S3Input | None = None
        self.report: S3Report | None = None
        self._start: dict[str, bool] = {}

    def __repr__(self) -> str:
        return f"<S3Run store={self._store!r} input={self._input!r} report={self.report!r}>"

    async def store(self) -> S3Store:
        if self._store is None:
            self._store = await self._stack.enter_async_context(S3Store(self._make_session()))
        return self._store

    async def open_input(self, source: Location | _Rows) -> Path | S3Input | _Rows:
        """An :class:`S3Input` (a private copy of one version) for an S3 location; any
        other source as it is."""
        if not isinstance(source, S3Location):
            return source
        if source.is_prefix:
            raise S3Error(f"{source} is a prefix (a folder), not an object: name the CSV")
        self._input = await S3Input.fetch(await self.store(), source)
        return self._input

    @property
    def input_location(self) -> S3Location | None:
        return self._input.location if self._input is not None else None

    async def local_reports(self, locations: Sequence[Location]) -> list[Path | FetchedObject]:
        """The reports at ``locations``, readable locally: S3 prefixes expanded, objects
        copied (each copy named by its URL)."""
        if not any(isinstance(loc, S3Location) for loc in locations):
            return [loc for loc in locations if isinstance(loc, Path)]
        if self._copies is None:
            self._copies = LocalCopies()
            self._stack.callback(self._copies.close)
        return await fetch_reports(await self.store(), locations, self._copies, summaries=False)

    def default_report(self, local_default: Path) -> Location:
        """Where the report goes by default: beside an S3 input, under its prefix's
        ``reports/``, with the name a local default would get; else ``local_default``."""
        if self._input is None:
            return local_default
        loc = self._input.location
        return S3Location(loc.bucket, f"{loc.prefix}reports/{local_default.name}")

    async def open_report(self, location: Location, *, overwrite: bool, default: bool) -> Path:
        """The path the report writer writes: the location itself when local; for an S3
        object a local spool, after the object was claimed (refused when it exists and
        not ``overwrite``; a ``default`` name moves on to ``-2``, ``-3``...). Resuming
        into the report resumed from, the spool is the copy of that report."""
        if not isinstance(location, S3Location):
            return location
        if location.is_prefix:
            raise S3Error(f"--report {location} is a prefix: name the report object (.csv)")
        if self._input is not None and location == self._input.location:
            raise SetupError(f"--report {location} is the input object: choose another key")
        report = S3Report(await self.store(), location, self.checkpoint_interval, log=self.log)
        in_place = next(
            (
                path
                for path, name in (self._copies.names if self._copies else {}).items()
                if name == str(location)
            ),
            None,
        )
        if in_place is not None:
            report.adopt(in_place)
        self._start = {"overwrite": overwrite, "pick_name": default}
        self.report = report
        return report.local

    async def start(self, writer: Flushable, on_error: Callable[[str], None]) -> None:
        """Once the writer has opened the spool (and written the header): claim the
        object, then checkpoint. Raises :class:`SetupError` when the report exists."""
        if self.report is not None:
            await self.report.start(writer, on_error, **self._start)

    def report_location(self, given: Location) -> Location:
        """Where the report is: ``given``, or the free name the claim took instead."""
        return self.report.location if self.report is not None else given

    async def recheck_input(self) -> None:
        if self._input is not None:
            await self._input.recheck(await self.store())

    async def close_report(self, writer: Any, summary: RunSummary) -> None:
        """Close the writer and upload the last records; a failure becomes the summary's
        ``output_error`` (the spool is kept and named)."""
        if self.report is None:
            return
        writer.close()
        error = await self.report.finish()
        if error is not None and summary.output_error is None:
            summary.output_error = error

    async def upload_summary(self, summary: RunSummary) -> None:
        if self.report is not None:
            await self.report.upload_summary(summary)

    async def discard(self) -> None:
        if self.report is not None:
            await self.report.discard()

    async def aclose(self) -> None:
        await self._stack.aclose()


# -- merge -----------------------------------------------------------------------------


async def merge_on_s3(
    reports: Sequence[Location],
    output: Location,
    *,
    input_path: Location | None,
    overwrite: bool,
    warn: Callable[[str], None] | None,
    session: Any,
) -> tuple[MergeResult, int]:
    """:func:`~batch_updater.merge.merge_reports` where some of the reports (an S3 prefix:
    every report under it), the input or the output are on S3.

    S3 reports and their summaries, and the input, are copied to private local files
    first; the merged report and its summary are written to a local spool, then uploaded
    (report first; a new output with a conditional put, so an object that appeared
    meanwhile is not overwritten without ``overwrite``). Returns the result and how many
    reports were merged.
    """
    from .merge import MergeError, merge_reports  # noqa: PLC0415 - merge only

    copies = LocalCopies()
    try:
        async with S3Store(session) as store:
            sources = await fetch_reports(store, reports, copies, summaries=True)
            local_input: Path | None = None
            names: dict[str, str] = {}
            if isinstance(input_path, S3Location):
                local_input = copies.path_for(input_path)
                with local_input.open("wb") as handle:
                    await store.download(input_path, handle)
                copies.names[local_input] = names[str(local_input)] = str(input_path)
            elif input_path is not None:
                local_input = input_path
            target: Path | FetchedObject
            if isinstance(output, S3Location):
                if output.is_prefix:
                    raise S3Error(f"--output {output} is a prefix: name the merged report")
                if not overwrite and await store.exists(output):
                    raise MergeError(
                        f"the merged report {output} already exists: choose another --output, "
                        "or pass --overwrite to replace it"
                    )
                target = FetchedObject(copies.path_for(output), str(output))
            else:
                target = output
            try:
                result = merge_reports(
                    sources, target, input_path=local_input, overwrite=overwrite, warn=warn
                )
            except SetupError as exc:
                message = str(exc)
                for local, url in names.items():
                    message = message.replace(local, url)
                raise (
                    MergeError(message) if isinstance(exc, MergeError) else SetupError(message)
                ) from None
            if not isinstance(output, S3Location):
                return result, len(sources)
            assert isinstance(target, FetchedObject)
            size = target.path.stat().st_size
            try:
                await store.put_file(output, target.path, size, create=not overwrite)
            except _Exists:
                raise MergeError(
                    f"the merged report {output} appeared while merging: not overwritten; "
                    "choose another --output, or pass --overwrite"
                ) from None
            summary = target.path.with_name(target.path.name + SUMMARY_SUFFIX)
            data = json.loads(summary.read_bytes())
            if isinstance(input_path, S3Location):
                data["input"] = str(input_path)
            await store.put_bytes(output.summary(), (json.dumps(data, indent=2) + "\n").encode())
            return replace(result, summary_path=target.beside(SUMMARY_SUFFIX)), len(sources)
    finally:
        copies.close()
