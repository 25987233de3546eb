"""Run settings (:class:`RunConfig`) and the checks made on them before anything runs."""

from __future__ import annotations

import functools
import ipaddress
import operator
import os
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import urlsplit

from .errors import SetupError
from .report import REPORT_COLUMNS
from .rows import COLUMNS, check_region
from .s3 import Location, S3Location, to_location
from .shard import Shard

__all__ = ["REPORT_SUFFIXES", "RunConfig", "check_endpoint", "check_report_path"]

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunConfig:
    """Settings of one run. Every field has the CLI's default; see the README's flag table.

    Each field's type is checked on construction (a :class:`SetupError` names the field);
    paths may be given as ``str`` or ``os.PathLike`` (``resume`` as any list of them) and
    are stored as :class:`~pathlib.Path`; whole numbers are accepted for float fields.
    """

    report_path: Location | None = None
    overwrite: bool = False
    region: str | None = None
    allow_unknown_region: bool = False
    profile: str | None = None
    endpoint_url: str | None = None
    allow_insecure_endpoint: bool = False
    local: bool = False
    rate: float = 10.0
    burst: int = 1
    adaptive: bool = True
    concurrency: int = 16
    max_attempts: int = 8
    request_timeout: float = 30.0
    backoff_base: float = 0.5
    backoff_cap: float = 20.0
    dry_run: bool = False
    skip_invalid: bool = False
    resume: tuple[Location, ...] = ()
    grace_period: float = 20.0
    max_failure_rate: float = 0.5
    failure_window: int = 100
    max_failures: int | None = None
    shard: Shard | None = None
    rate_per_shard: bool = False
    run_id: str | None = None
    progress_interval: float = 30.0
    progress_log: bool = False
    collect_results: bool = True
    keep_columns: tuple[str, ...] = ()
    checkpoint_interval: float = 60.0  # seconds between uploads of a report on S3

    def __post_init__(self) -> None:
        for name, hint in _field_types().items():  # types first: the checks below compare
            value = getattr(self, name)
            converted = _convert(name, value, hint)
            if converted is not value:
                object.__setattr__(self, name, converted)
        checks = [
            (self.rate >= 0, f"rate must be 0 (unlimited) or more, got {self.rate}"),
            (self.burst >= 1, f"burst must be at least 1, got {self.burst}"),
            (self.concurrency >= 1, f"concurrency must be at least 1, got {self.concurrency}"),
            (self.max_attempts >= 1, f"max attempts must be at least 1, got {self.max_attempts}"),
            (self.request_timeout > 0, "request timeout must be more than 0 seconds"),
            (self.backoff_base >= 0 and self.backoff_cap >= 0, "backoff must not be negative"),
            (self.grace_period >= 0, "grace period must be 0 seconds or more"),
            (
                0 <= self.max_failure_rate <= 1,
                f"max failure rate must be between 0 and 1, got {self.max_failure_rate}",
            ),
            (self.failure_window >= 1, "failure window must be at least 1 row"),
            (
                self.max_failures is None or self.max_failures >= 0,
                "max failures must be 0 or more",
            ),
            (not (self.local and self.endpoint_url), "use either --local or --endpoint-url"),
            (self.progress_interval > 0, "progress interval must be more than 0 seconds"),
            (self.checkpoint_interval > 0, "checkpoint interval must be more than 0 seconds"),
        ]
        for ok, message in checks:
            if not ok:
                raise SetupError(message)
        if self.region is not None and (
            why := check_region(self.region, allow_unknown=self.allow_unknown_region)
        ):
            raise SetupError(f"--region: {why}")
        if self.report_path is not None:
            check_report_path(str(self.report_path))
        if self.run_id is not None and not _RUN_ID.fullmatch(self.run_id):
            raise SetupError(
                f"run id {self.run_id[:80]!r}: use 1 to 64 letters, digits, '_', '.', ':' or "
                "'-', starting with a letter or digit"
            )
        if self.endpoint_url is not None:
            check_endpoint(self.endpoint_url, self.allow_insecure_endpoint, "--endpoint-url")
        _check_keep_columns(self.keep_columns)

    @property
    def effective_rate(self) -> float:
        """Requests per second per region for this process: ``rate`` divided among the
        shards (AWS limits are per account and region), unless ``rate_per_shard``."""
        if self.shard is None or self.rate_per_shard:
            return self.rate
        return self.rate / self.shard.count

    def describe(self) -> dict[str, Any]:
        """The settings as written to the summary and the run_start log event."""
        out = asdict(self)
        out["report_path"] = str(self.report_path) if self.report_path else None
        out["resume"] = [str(p) for p in self.resume]
        out["shard"] = str(self.shard) if self.shard else None
        del out["collect_results"], out["run_id"]  # the run id is reported on its own
        out["effective_rate"] = self.effective_rate
        return out


def _check_keep_columns(names: tuple[str, ...]) -> None:
    """A kept column needs a name of its own: not a report column, not an input column."""
    taken = {c.lower() for c in (*REPORT_COLUMNS, *COLUMNS, *COLUMNS.values())}
    seen: set[str] = set()
    for name in names:
        key = name.strip().lower()
        if not key:
            raise SetupError("--keep-column: give a column name")
        if key in taken:
            raise SetupError(
                f"--keep-column {name[:80]!r}: the report has its own column of that name "
                "(only extra input columns can be kept)"
            )
        if key in seen:
            raise SetupError(f"--keep-column {name[:80]!r} is given twice")
        seen.add(key)


REPORT_SUFFIXES = (".csv", ".jsonl")  # the report's format follows its file name


def check_report_path(path: str | PurePath) -> None:
    """Refuse a report name whose format is not known: ``.csv`` or ``.jsonl``, any case."""
    suffix = PurePath(path).suffix
    if suffix.lower() not in REPORT_SUFFIXES:
        given = f"ends in {suffix!r}" if suffix else "has no extension"
        raise SetupError(
            f"--report {str(path)[:200]}: the name {given}; a report is written as CSV "
            "(name it .csv) or JSON lines (name it .jsonl)"
        )


@functools.cache
def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(RunConfig)
    return {f.name: hints[f.name] for f in fields(RunConfig)}


def _expected(hint: Any) -> str:
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    if hint is Path:
        return "a path (str or os.PathLike)"
    return getattr(hint, "__name__", str(hint))


def _convert(name: str, value: Any, hint: Any) -> Any:
    """``value`` as a field of type ``hint`` wants it, or a SetupError naming the field.

    Paths accept ``str`` and ``os.PathLike``; floats accept ints; a tuple field accepts any
    iterable (not a single string); ``bool`` is not taken for a number.
    """
    args = typing.get_args(hint)
    if hint == Location:  # a local path, or s3://bucket/key
        if not isinstance(value, str | os.PathLike | S3Location):
            raise SetupError(
                f"RunConfig.{name}: expected a path (str, os.PathLike or s3://bucket/key), "
                f"got {type(value).__name__} {value!r:.60}"
            )
        return to_location(value)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None
        if value is None and type(None) in args:
            return None
        inner = functools.reduce(operator.or_, (a for a in args if a is not type(None)))
        return _convert(name, value, inner)
    if typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis:
        if isinstance(value, str | bytes | os.PathLike) or not isinstance(value, Iterable):
            raise SetupError(
                f"RunConfig.{name}: expected a list or tuple, each item {_expected(args[0])}; "
                f"got {type(value).__name__} {value!r:.60}"
            )
        return tuple(_convert(f"{name}[{i}]", item, args[0]) for i, item in enumerate(value))
    ok = (
        isinstance(value, str | os.PathLike)
        if hint is Path
        else isinstance(value, int | float) and not isinstance(value, bool)
        if hint is float
        else isinstance(value, int) and not isinstance(value, bool)
        if hint is int
        else not isinstance(hint, type) or isinstance(value, hint)
    )
    if not ok:
        raise SetupError(
            f"RunConfig.{name}: expected {_expected(hint)}, got {type(value).__name__} "
            f"{value!r:.60}"
        )
    if hint is Path and not isinstance(value, Path):
        return Path(value)
    if hint is float and not isinstance(value, float):
        return float(value)
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(url: str, allow_insecure: bool, where: str) -> None:
    """Refuse plain ``http://`` to a host that is not loopback, unless allowed.

    Signed requests and settings should not cross a network in clear text.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SetupError(f"{where}: {url!r} is not an http:// or https:// URL")
    if parts.scheme == "http" and not allow_insecure and not _is_loopback(parts.hostname):
        raise SetupError(
            f"{where}: plain http:// to {parts.hostname} would send signed requests in clear "
            "text; use https://, or pass --allow-insecure-endpoint if you really mean it"
        )


def check_endpoint_environment(allow_insecure: bool) -> None:
    """Apply :func:`check_endpoint` to the endpoint variables botocore honours."""
    for name in ("AWS_ENDPOINT_URL_AMPLIFYBACKEND", "AWS_ENDPOINT_URL"):
        if value := os.environ.get(name):
            check_endpoint(value, allow_insecure, name)
            return
