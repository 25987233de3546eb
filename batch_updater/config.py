"""Run settings (:class:`RunConfig`) and the checks made on them before anything runs.

The settings are grouped the way httpx groups its own: :class:`Rate` (rate and workers),
:class:`Retries`, :class:`StopRules`, :class:`Accounts` (roles to assume) and :class:`Output`
(the report). Where a group has one obvious main value a plain value stands for the group:
``RunConfig(rate=5)`` is ``RunConfig(rate=Rate(5))``, ``retries=3`` is ``Retries(3)``,
``output="r.csv"`` is ``Output("r.csv")`` and ``accounts="arn:...{account_id}..."`` is
``Accounts(role_arn=...)``.

Each setting's type, default and rule are written here, once: a field's annotation is
``Annotated[type, rule]``. The command line's flags, ``BATCH_UPDATER_*`` variables, ``--help``
and the README's flag table follow from them (see :mod:`batch_updater.options`), and every
setting has a flat name (its field name, also its key in the summary's ``settings``).
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import operator
import os
import re
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import KW_ONLY, dataclass, field, fields
from pathlib import Path, PurePath
from typing import Annotated, Any
from urllib.parse import urlsplit

from .errors import SetupError
from .report import REPORT_COLUMNS
from .rows import INPUT_COLUMNS, check_region
from .s3 import Location, S3Location, to_location
from .shard import Shard

__all__ = [
    "REPORT_SUFFIXES",
    "Accounts",
    "Output",
    "Rate",
    "Retries",
    "Rule",
    "RunConfig",
    "Setting",
    "StopRules",
    "check_endpoint",
    "check_report_path",
    "settings",
]


@dataclass(frozen=True, slots=True)
class Rule:
    """What a value must be: ``test(value)`` holds, or ``reason`` says what to give."""

    reason: str
    test: Callable[[Any], bool]

    def problem(self, value: Any) -> str | None:
        """None when ``value`` keeps the rule, else ``"<reason>, got <value>"``."""
        if self.test(value):
            return None
        shown = f"{value:g}" if isinstance(value, float) else f"{value!r:.80}"
        return f"{self.reason}, got {shown}"


def _matches(pattern: str) -> Callable[[Any], bool]:
    compiled = re.compile(pattern, re.ASCII)
    return lambda value: compiled.fullmatch(value) is not None


AT_LEAST_0 = Rule("must be 0 or more", lambda v: v >= 0)
AT_LEAST_1 = Rule("must be at least 1", lambda v: v >= 1)
MORE_THAN_0 = Rule("must be more than 0", lambda v: v > 0)
SHARE = Rule("must be between 0 and 1", lambda v: 0 <= v <= 1)

_ROLE = r"role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}"  # IAM: optional path, name of 1-64
_ROLE_ARN = re.compile(rf"arn:(?:aws|aws-cn|aws-us-gov):iam::\d{{12}}:{_ROLE}", re.ASCII)


def _role_arn_or_template(value: str) -> bool:
    """A role ARN, or one once ``{account_id}`` (and ``{partition}``) are filled in."""
    filled = value.replace("{account_id}", "111122223333").replace("{partition}", "aws")
    return _ROLE_ARN.fullmatch(filled) is not None


ROLE_ARN = Rule(
    "must be a role ARN (arn:aws:iam::111122223333:role/NAME) or a template with "
    "{account_id} (arn:aws:iam::{account_id}:role/NAME)",
    _role_arn_or_template,
)
ROLE_NAME = Rule(
    "must be a role name (1 to 64 letters, digits and _+=,.@-), after an optional path "
    "(like team/)",
    _matches(r"(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}"),
)
EXTERNAL_ID = Rule(
    "must be 2 to 1224 letters, digits and _+=,.@:/-", _matches(r"[\w+=,.@:/-]{2,1224}")
)
SESSION_NAME = Rule("must be 2 to 64 letters, digits and _+=,.@-", _matches(r"[\w+=,.@-]{2,64}"))
ROLE_DURATION = Rule(
    "must be 900 to 43200 seconds (15 minutes to 12 hours)", lambda v: 900 <= v <= 43200
)
_SESSION_UNSAFE = re.compile(r"[^\w+=,.@-]", re.ASCII)
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


@dataclass(frozen=True, slots=True)
class Rate:
    """How fast requests go out: ``rate`` per second per region (0: unlimited; retries
    included), ``burst`` back to back, lowered on throttling when ``adaptive``, by
    ``concurrency`` workers; ``rate_per_shard``: each shard gets ``rate``, not its share."""

    rate: Annotated[float, AT_LEAST_0] = 10.0
    _: KW_ONLY
    burst: Annotated[int, AT_LEAST_1] = 1
    adaptive: bool = True
    concurrency: Annotated[int, AT_LEAST_1] = 16
    rate_per_shard: bool = False

    def __post_init__(self) -> None:
        _check_fields(self)


@dataclass(frozen=True, slots=True)
class Retries:
    """Attempts per row (first try included), the read timeout of one request, and the
    exponential backoff between attempts (seconds)."""

    max_attempts: Annotated[int, AT_LEAST_1] = 8
    _: KW_ONLY
    request_timeout: Annotated[float, MORE_THAN_0] = 30.0
    backoff_base: Annotated[float, AT_LEAST_0] = 0.5
    backoff_cap: Annotated[float, AT_LEAST_0] = 20.0

    def __post_init__(self) -> None:
        _check_fields(self)


@dataclass(frozen=True, slots=True)
class StopRules:
    """When a run stops by itself: more than ``max_failure_rate`` of the last
    ``failure_window`` rows failed, or more than ``max_failures`` rows (None: no limit);
    ``grace_period``: seconds calls in flight may finish after SIGINT/SIGTERM."""

    max_failure_rate: Annotated[float, SHARE] = 0.5
    failure_window: Annotated[int, AT_LEAST_1] = 100
    max_failures: Annotated[int | None, AT_LEAST_0] = None
    grace_period: Annotated[float, AT_LEAST_0] = 20.0

    def __post_init__(self) -> None:
        _check_fields(self)


@dataclass(frozen=True, slots=True)
class Accounts:
    """The role to assume in each row's account (rows with an ``account_id`` and no
    ``role_arn`` column): ``role_arn`` (a role ARN, or a template with ``{account_id}``) or
    ``role_name`` (the role of that name in every account), not both; ``external_id`` and
    ``role_session_name`` as the roles' trust policies want them (the session name defaults
    to ``batch-updater-<run id>``); ``role_duration`` seconds per session;
    ``check_access`` (dry runs only): assume every role once and report per account."""

    role_arn: Annotated[str | None, ROLE_ARN] = None
    _: KW_ONLY
    role_name: Annotated[str | None, ROLE_NAME] = None
    external_id: Annotated[str | None, EXTERNAL_ID] = None
    role_session_name: Annotated[str | None, SESSION_NAME] = None
    role_duration: Annotated[int, ROLE_DURATION] = 3600
    check_access: bool = False

    def __post_init__(self) -> None:
        _check_fields(self)
        if self.role_arn is not None and self.role_name is not None:
            raise SetupError("use either --role-arn or --role-name, not both")

    @property
    def role_arn_template(self) -> str | None:
        """The role ARN to assume, with ``{account_id}`` and ``{partition}`` still to fill
        in (``role_name`` as ``arn:{partition}:iam::{account_id}:role/<name>``); None when
        neither ``role_arn`` nor ``role_name`` is set."""
        if self.role_name is not None:
            return f"arn:{{partition}}:iam::{{account_id}}:role/{self.role_name}"
        return self.role_arn

    def role_arn_for(self, account_id: str, partition: str = "aws") -> str | None:
        """The role ARN to assume in ``account_id`` (in ``partition``: aws, aws-cn or
        aws-us-gov), or None when no role is set."""
        template = self.role_arn_template
        if template is None:
            return None
        return template.replace("{partition}", partition).replace("{account_id}", account_id)

    def session_name(self, run_id: str) -> str:
        """``role_session_name``, or ``batch-updater-<run_id>`` cut to what STS takes
        (64 characters of letters, digits and ``_+=,.@-``)."""
        if self.role_session_name is not None:
            return self.role_session_name
        return _SESSION_UNSAFE.sub("-", f"batch-updater-{run_id}")[:64]


@dataclass(frozen=True, slots=True)
class Output:
    """The report: its path (None: ``reports/<input stem>-<UTC time>.csv``; ``.csv`` or
    ``.jsonl``), whether to replace an existing one, earlier reports to ``resume`` from,
    the input's extra columns to keep, and the seconds between checkpoints of a report
    written to S3."""

    report_path: Location | None = None  # a local path, or s3://bucket/key
    _: KW_ONLY
    overwrite: bool = False
    resume: tuple[Location, ...] = ()
    keep_columns: tuple[str, ...] = ()
    checkpoint_interval: Annotated[float, MORE_THAN_0] = 60.0

    def __post_init__(self) -> None:
        _check_fields(self)
        if self.report_path is not None:
            check_report_path(str(self.report_path))
        _check_keep_columns(self.keep_columns)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunConfig:
    """Settings of one run. Every field has the CLI's default; see the README's flag table.

    Each field's type is checked on construction (a :class:`SetupError` names the field);
    paths may be given as ``str`` or ``os.PathLike`` (``resume`` as any list of them) and
    are stored as :class:`~pathlib.Path`; whole numbers are accepted for float fields; a
    group may be given as its main value (``rate=5``). :meth:`from_flat` takes every
    setting by its flat name (``RunConfig.from_flat(rate=5, concurrency=4)``).
    """

    rate: Rate = field(default_factory=Rate)
    retries: Retries = field(default_factory=Retries)
    stop: StopRules = field(default_factory=StopRules)
    accounts: Accounts = field(default_factory=Accounts)
    output: Output = field(default_factory=Output)
    region: str | None = None
    allow_unknown_region: bool = False
    profile: str | None = None
    endpoint_url: str | None = None
    allow_insecure_endpoint: bool = False
    local: bool = False
    dry_run: bool = False
    skip_invalid: bool = False
    shard: Shard | None = None
    run_id: str | None = None
    progress_interval: Annotated[float, MORE_THAN_0] = 30.0
    progress_log: bool = False
    collect_results: bool = True

    def __post_init__(self) -> None:
        _check_fields(self)
        if self.local and self.endpoint_url:
            raise SetupError("use either --local or --endpoint-url")
        if self.accounts.check_access and not self.dry_run:
            raise SetupError(
                "--check-access works with --dry-run only: it assumes every role once and "
                "sends no update"
            )
        if self.region is not None and (
            why := check_region(self.region, allow_unknown=self.allow_unknown_region)
        ):
            raise SetupError(f"--region: {why}")
        if self.run_id is not None and not _RUN_ID.fullmatch(self.run_id):
            raise SetupError(
                f"run id {self.run_id[:80]!r}: use 1 to 64 letters, digits, '_', '.', ':' or "
                "'-', starting with a letter or digit"
            )
        if self.endpoint_url is not None:
            check_endpoint(self.endpoint_url, self.allow_insecure_endpoint, "--endpoint-url")

    @classmethod
    def from_flat(cls, **values: Any) -> RunConfig:
        """A config from settings named flat, as the summary's ``settings`` and the flags
        name them: ``from_flat(rate=5, concurrency=4, report_path="r.csv")``."""
        index = settings()
        own: dict[str, Any] = {}
        grouped: dict[str, dict[str, Any]] = {}
        for name, value in values.items():
            if name not in index:
                close = difflib.get_close_matches(name, index, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise SetupError(f"RunConfig has no setting {name!r}{hint}")
            group = index[name].group
            if group is None:
                own[name] = value
            else:
                grouped.setdefault(group, {})[name] = value
        for group, given in grouped.items():
            own[group] = _GROUPS[group](**given)
        return cls(**own)

    def with_settings(self, **changes: Any) -> RunConfig:
        """A copy with settings changed by flat name: ``with_settings(overwrite=True)``."""
        return RunConfig.from_flat(**{**{name: self.get(name) for name in settings()}, **changes})

    def get(self, name: str) -> Any:
        """The setting of flat name ``name`` (``get("concurrency")`` is ``rate.concurrency``)."""
        group = settings()[name].group
        return getattr(self if group is None else getattr(self, group), name)

    @property
    def effective_rate(self) -> float:
        """Requests per second per region for this process: ``rate`` divided among the
        shards (AWS limits are per account and region), unless ``rate_per_shard``."""
        if self.shard is None or self.rate.rate_per_shard:
            return self.rate.rate
        return self.rate.rate / self.shard.count

    def describe(self) -> dict[str, Any]:
        """The settings, named flat, as written to the summary and the run_start event."""
        out = {name: _plain(self.get(name)) for name in settings()}
        del out["collect_results"], out["run_id"]  # the run id is reported on its own
        out["effective_rate"] = self.effective_rate
        return out


_GROUPS: dict[str, type[Any]] = {
    "rate": Rate,
    "retries": Retries,
    "stop": StopRules,
    "accounts": Accounts,
    "output": Output,
}


def _plain(value: Any) -> Any:
    """A setting as JSON shows it: paths and shards as strings, tuples as lists."""
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if isinstance(value, PurePath | Shard | S3Location):
        return str(value)
    return value


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting of a run, by its flat name: the group holding it (a field of
    :class:`RunConfig`, or None for RunConfig's own), its type (``item`` for a tuple),
    whether None is allowed, its rules and its default."""

    name: str
    group: str | None
    kind: Any
    item: Any
    optional: bool
    rules: tuple[Rule, ...]
    default: Any

    def problem(self, value: Any) -> str | None:
        """Why ``value`` (already of the setting's type) breaks a rule, or None."""
        if value is None:
            return None
        for rule in self.rules:
            if why := rule.problem(value):
                return why
        return None


@functools.cache
def settings() -> dict[str, Setting]:
    """Every setting of :class:`RunConfig` by flat name, in the order of the fields."""
    out: dict[str, Setting] = {}
    for f in fields(RunConfig):
        hint, rules = _field_hints(RunConfig)[f.name]
        if hint in _GROUPS.values():
            for g in fields(hint):
                kind, group_rules = _field_hints(hint)[g.name]
                out[g.name] = _setting(g.name, f.name, kind, group_rules, g.default)
        else:
            out[f.name] = _setting(f.name, None, hint, rules, f.default)
    return out


def _setting(
    name: str, group: str | None, hint: Any, rules: tuple[Rule, ...], default: Any
) -> Setting:
    kind = _without_none(hint)
    args = typing.get_args(kind)
    item = args[0] if typing.get_origin(kind) is tuple else None
    return Setting(name, group, kind, item, _optional(hint), rules, default)


def _optional(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(
        None
    ) in typing.get_args(hint)


def _without_none(hint: Any) -> Any:
    if not _optional(hint):
        return hint
    inner = [a for a in typing.get_args(hint) if a is not type(None)]
    return functools.reduce(operator.or_, inner)  # Location | None: Path | S3Location


_HINTS: dict[type[Any], dict[str, tuple[Any, tuple[Rule, ...]]]] = {}


def _field_hints(cls: type[Any]) -> dict[str, tuple[Any, tuple[Rule, ...]]]:
    """Each field's type and rules (from ``Annotated[type, rule, ...]``), worked out once
    per class."""
    if cls in _HINTS:
        return _HINTS[cls]
    hints = typing.get_type_hints(cls, include_extras=True)
    out: dict[str, tuple[Any, tuple[Rule, ...]]] = {}
    for f in fields(cls):
        hint = hints[f.name]
        if typing.get_origin(hint) is Annotated:
            hint, *extras = typing.get_args(hint)
            out[f.name] = (hint, tuple(e for e in extras if isinstance(e, Rule)))
        else:
            out[f.name] = (hint, ())
    _HINTS[cls] = out
    return out


def _check_fields(obj: Any) -> None:
    """Convert each field of ``obj`` to its type and apply its rules, or raise a
    SetupError naming ``<Class>.<field>``."""
    owner = type(obj).__name__
    for name, (hint, rules) in _field_hints(type(obj)).items():
        value = getattr(obj, name)
        converted = _convert(f"{owner}.{name}", value, hint)
        if converted is not value:
            object.__setattr__(obj, name, converted)
        if converted is None:
            continue
        for rule in rules:
            if why := rule.problem(converted):
                raise SetupError(f"{owner}.{name}: {why}")


def _check_keep_columns(names: tuple[str, ...]) -> None:
    """A kept column needs a name of its own: not a report column, not an input column."""
    taken = {c.lower() for c in (*REPORT_COLUMNS, *INPUT_COLUMNS, *INPUT_COLUMNS.values())}
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


def _expected(hint: Any) -> str:
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    if hint is Path:
        return "a path (str or os.PathLike)"
    if hint == Location:
        return "a path (str, os.PathLike or s3://bucket/key)"
    return getattr(hint, "__name__", str(hint))


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "AEIOU" else f"a {noun}"


def _main_field(group: type[Any]) -> str | None:
    """The group's one positional field (``Rate``'s ``rate``), which a plain value sets."""
    main = [f.name for f in fields(group) if not f.kw_only]
    return main[0] if len(main) == 1 else None


def _convert_group(name: str, value: Any, group: type[Any]) -> Any:
    """A group, or a plain value standing for its main field (``rate=5``: ``Rate(5)``)."""
    if isinstance(value, group):
        return value
    main = _main_field(group)
    if main is not None:
        try:
            _convert(name, value, _field_hints(group)[main][0])
        except SetupError:
            pass
        else:
            return group(value)
        main_hint = _without_none(_field_hints(group)[main][0])
        wanted = f"{_a(group.__name__)} or {_expected(main_hint)}"
    else:
        wanted = _a(group.__name__)
    raise SetupError(f"{name}: expected {wanted}, got {type(value).__name__} {value!r:.60}")


def _convert(name: str, value: Any, hint: Any) -> Any:
    """``value`` as a field of type ``hint`` wants it, or a SetupError naming the field.

    Paths accept ``str`` and ``os.PathLike``; floats accept ints; a tuple field accepts any
    iterable (not a single string); ``bool`` is not taken for a number; a group accepts
    its main value.
    """
    if _optional(hint):  # X | None
        return None if value is None else _convert(name, value, _without_none(hint))
    if hint == Location:  # a local path, or s3://bucket/key
        if not isinstance(value, str | os.PathLike | S3Location):
            raise SetupError(
                f"{name}: expected a path (str, os.PathLike or s3://bucket/key), "
                f"got {type(value).__name__} {value!r:.60}"
            )
        return to_location(value)
    if hint in _GROUPS.values():
        return _convert_group(name, value, hint)
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis:
        if isinstance(value, str | bytes | os.PathLike) or not isinstance(value, Iterable):
            raise SetupError(
                f"{name}: expected a list or tuple, each item {_expected(args[0])}; "
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
            f"{name}: expected {_expected(hint)}, got {type(value).__name__} {value!r:.60}"
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
