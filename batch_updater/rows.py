"""Input rows: the rows to send and the two-pass plan that validates every row first.

The rows are read twice in a streaming fashion (see :class:`RowPlan`): the first pass
reads the input once, validates every row, fills the duplicate index and copies the bytes
it read into a private spool file; the second pass reads that copy and yields what to do
with each row. So the rows sent are exactly the rows validated, whatever happens to the
input file meanwhile, and a pipe is read once. Memory grows only with the duplicate
index, never with the rows themselves.

The jobs live in their own modules: :mod:`.csvinput` (decoding, header, spool),
:mod:`.rules` (the rule table and the checks), :mod:`.duplicates` (the duplicate index);
their public names are importable from here too.
"""

from __future__ import annotations

import io
import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from types import TracebackType
from typing import Protocol, runtime_checkable

from .csvinput import (
    _CHUNK,
    STDIN,
    _expected_rows,
    _identity,
    _open_input,
    _parse,
    _Spool,
    _Tee,
    read_csv,
    read_mappings,
)
from .duplicates import _DuplicateIndex, app_key, duplicate_of
from .errors import BatchUpdaterError, InputError, SetupError
from .rules import (
    ACCOUNT_COLUMNS,
    COLUMNS,
    EVERY_ACCOUNT,
    INPUT_COLUMNS,
    NO_ROLES,
    SETTING_COLUMNS,
    AccountRoles,
    Checked,
    Invalid,
    OwnAccount,
    RegionRule,
    check,
    check_region,
    digest_number,
    digest_text,
    passed_key,
    region_rule,
    settings_digest,
)
from .shard import Lane, Shard, assign_lanes

__all__ = [
    "ACCOUNT_COLUMNS",
    "COLUMNS",
    "INPUT_COLUMNS",
    "SETTING_COLUMNS",
    "STDIN",
    "InputCopy",
    "Lane",
    "LoginSettings",
    "Outcome",
    "RegionRule",
    "Rejected",
    "Row",
    "RowPlan",
    "ValidationInterrupted",
    "check_region",
    "read_csv",
    "read_mappings",
    "region_rule",
    "validate",
]


@dataclass(frozen=True, slots=True)
class LoginSettings:
    """The Amazon Cognito login settings requested for one app; None means not sent."""

    identity_pool_id: str | None = None
    cognito_region: str | None = None
    user_pool_id: str | None = None
    web_client_id: str | None = None

    def to_api(self) -> dict[str, str]:
        """The ``LoginAuthConfig`` request member: only the settings that are set."""
        out: dict[str, str] = {}
        if self.identity_pool_id is not None:
            out["AwsCognitoIdentityPoolId"] = self.identity_pool_id
        if self.cognito_region is not None:
            out["AwsCognitoRegion"] = self.cognito_region
        if self.user_pool_id is not None:
            out["AwsUserPoolsId"] = self.user_pool_id
        if self.web_client_id is not None:
            out["AwsUserPoolsWebClientId"] = self.web_client_id
        return out

    def digest(self) -> str:
        """A short stable hash of the normalized settings (16 hex characters)."""
        return settings_digest(
            self.identity_pool_id or "",
            self.cognito_region or "",
            self.user_pool_id or "",
            self.web_client_id or "",
        )[1]


@dataclass(frozen=True, slots=True, init=False)
class Row:
    """A validated input row, ready to send.

    ``account_id`` is the row's account ("" for the base credentials' own, as before
    accounts); ``role_arn`` the role to assume for it, from the row or the ``--role-arn``
    template ("" means the base credentials). Its rate lane is the plan's to say
    (:meth:`RowPlan.lane_of`): a row without an account may share its own account's lane.
    """

    line: int
    app_id: str
    region: str
    settings: LoginSettings
    digest: str
    kept: tuple[str, ...] = ()  # the cells of the kept columns (RunConfig.keep_columns)
    account_id: str = ""
    role_arn: str = ""

    def __init__(  # noqa: PLR0917 (the positional fields of the dataclass, as before)
        self,
        line: int,
        app_id: str,
        region: str,
        settings: LoginSettings,
        digest: str,
        kept: tuple[str, ...] = (),
        account_id: str = "",
        role_arn: str = "",
    ) -> None:
        # Written out for speed: a dry run makes a Row per input row, and a frozen
        # dataclass's own __init__ sets each field by name through object.__setattr__,
        # which made the two account fields cost 3% of a 1M-row dry run. The slots'
        # setters (_ROW_SETTERS, in field order) skip the lookup by name.
        s0, s1, s2, s3, s4, s5, s6, s7 = _ROW_SETTERS
        s0(self, line)
        s1(self, app_id)
        s2(self, region)
        s3(self, settings)
        s4(self, digest)
        s5(self, kept)
        s6(self, account_id)
        s7(self, role_arn)

    def rejected(self, status: str, reason: str) -> Rejected:
        """This row, not sent: ``status`` (``invalid`` or ``skipped``) and why."""
        return Rejected(
            self.line,
            self.app_id,
            self.region,
            status,
            reason,
            self.digest,
            self.kept,
            self.account_id,
            self.role_arn,
        )


_ROW_SETTERS: tuple[Callable[[Row, object], None], ...] = tuple(
    Row.__dict__[field.name].__set__ for field in fields(Row)
)


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input row that is not sent: ``status`` is ``invalid`` or ``skipped``."""

    line: int
    app_id: str
    region: str
    status: str
    reason: str
    digest: str = ""
    kept: tuple[str, ...] = ()  # the cells of the kept columns (RunConfig.keep_columns)
    account_id: str = ""  # as given (or from the role ARN), even when invalid
    role_arn: str = ""


# A row of a run that sends nothing, as RowPlan.outcomes gives it: line, app_id, region,
# fate ("" for a row that would be sent, else "invalid" or "skipped", as Rejected.status),
# why (for a fate), settings digest, kept cells, account_id, and for a row that would be
# sent the success of an earlier report noted on its app (see ResumeIndex), else 0.
Outcome = tuple[int, str, str, str, str, str, tuple[str, ...], str, int]


def validate(
    line: int,
    cells: Mapping[str, str],
    default_region: str | None,
    rule: RegionRule | None = None,
    keep: tuple[str, ...] = (),
    *,
    roles: AccountRoles | None = None,
    passed: bool = False,
) -> Row | Rejected | None:
    """Validate one row. Returns None when the row needs a region and none is configured.

    ``rule`` decides which region names are accepted (default: those botocore knows);
    ``keep`` names the columns whose cells the result carries along (``kept``);
    ``roles`` the role of a row with an ``account_id`` (default: none, so only a
    ``role_arn`` column gives one); ``passed``: these cells were found valid before
    (see :func:`~batch_updater.rules.check`).
    """
    checked = check(cells, default_region, rule or region_rule(), roles or NO_ROLES, passed=passed)
    if checked is None:
        return None
    kept = tuple(cells.get(name, "") for name in keep) if keep else ()
    if isinstance(checked, Invalid):
        return Rejected(
            line,
            checked.app_id,
            checked.region,
            "invalid",
            checked.reason,
            "",
            kept,
            checked.account_id,
            checked.role_arn,
        )
    app_id, region, values, _, hexdigest, account, role = checked
    identity_pool, cognito_region, user_pool, client_id = values
    settings = LoginSettings(
        identity_pool or None, cognito_region or None, user_pool or None, client_id or None
    )
    return Row(line, app_id, region, settings, hexdigest, kept, account, role)


def _merged(
    lanes: Mapping[Lane, int], own: str, combine: Callable[[int, int], int]
) -> dict[Lane, int]:
    """``lanes`` with the lane of rows without an account in each region folded into
    ``own``'s lane there, the two values combined (the later line, the sum of rows)."""
    out: dict[Lane, int] = {}
    for (account, region), value in lanes.items():
        lane = (account or own, region)
        out[lane] = combine(out[lane], value) if lane in out else value
    return out


# -- the two passes --------------------------------------------------------------------


class ValidationInterrupted(BatchUpdaterError):
    """A stop was asked for while the input was being validated; nothing was sent."""

    def __init__(self, source: str, line: int) -> None:
        super().__init__(f"{source}: stopped while validating line {line}; nothing was sent")
        self.signal: int | None = None  # set by the runner from the stop request


@runtime_checkable
class InputCopy(Protocol):
    """An input its reader already copied to a private file (an S3 object, see
    ``s3.S3Input``): a :class:`RowPlan` given one reads that copy in both passes."""

    @property
    def name(self) -> str: ...  # the input's name in messages

    size: int

    def reader(self) -> io.BufferedReader: ...  # a new reader from the copy's start

    def changed(self) -> bool: ...  # whether the original changed since it was copied

    def close(self) -> None: ...


DefaultRegion = str | Callable[[], str | None] | None


class RowPlan:
    """Validates all rows up front, then yields each row's fate in input order.

    ``source`` is a CSV path (``-`` for standard input) or an iterable of mappings
    (column name -> cell); an iterable is materialized into a list because it is read
    twice. A file is read once: the first pass copies its bytes into a private spool
    file that the second pass reads, so later changes to the file change nothing here
    (:meth:`input_changed` tells whether there were any). ``default_region`` is the
    region of rows without one, or a function that finds it (called only if such a row
    exists). ``allow_unknown_region`` accepts region names botocore does not know (see
    :class:`RegionRule`); ``keep`` names extra columns to read. ``role_template`` (the
    ``--role-arn`` value) and ``own_account`` (the caller's account, or a function that
    finds it, called only if a row needs it) give rows with an ``account_id`` their role
    (see :class:`~batch_updater.rules.AccountRoles`).

    One rate domain, one lane: AWS limits each account in each region, and a row without
    an ``account_id`` is sent in the caller's own account. So when the input holds both
    rows without an account and rows of the caller's own account, the rows without one
    are keyed by that account, (own, region), and share its lane (:meth:`lane_of`). Keyed
    that way round, a lane key names the account whose limit it paces; a row's report
    keeps the account it gave (blank stays blank) and its credentials. The own account is
    looked up for this only when the input holds both rows without an account and rows
    with one (else nothing can merge), and only when the run ``sends`` or is sharded (a
    dry run unsharded merges only when validation already knew the own account; sharded,
    it looks up as the live run does, so that each shard's preview lists the rows that
    shard would send). ``--local`` (``own_account``
    :data:`~batch_updater.rules.EVERY_ACCOUNT`) merges nothing. When the look-up fails
    the two lanes stay apart, and ``warn(message)`` says so; a shard that sends raises
    :class:`SetupError` instead: every shard must key the rows alike, or a lane's rows
    could go to two shards or to none.

    After construction, ``total`` (rows this plan yields), ``invalid`` (those of them that
    are invalid, rows of conflicting duplicates included: the report's count),
    ``input_rows`` and ``input_invalid`` (the same over the whole input, whichever shard),
    ``conflicts`` (keys given twice with different settings), ``lanes`` (the (account,
    region) pairs of this plan's valid rows), ``last_lines`` (the input line of each of
    those lanes' last valid row that iterating gives: sharded by hash, this shard's),
    ``regions`` (their regions), ``own_lane`` (the account rows without one are keyed by,
    "" when none) and ``rate_divided`` describe the input; iterate for the
    second pass. :meth:`close` (or ``with``) removes the spool.

    Sharded, every shard reads the whole input and so knows every lane: with at least as
    many lanes as shards each lane goes whole to one shard (:func:`assign_lanes`, the same
    in every shard process), so its rate need not be divided; with fewer lanes rows are
    split by a hash of (account, region, app_id) and ``rate_divided`` is True. Invalid
    rows are always split by that hash.
    """

    __slots__ = (
        "_copy",
        "_default_region",
        "_identity",
        "_index",
        "_interrupted",
        "_invalid_lines",
        "_keep",
        "_owned_lanes",
        "_resolve_region",
        "_roles",
        "_rows",
        "_rule",
        "_sends",
        "_spool",
        "_warn",
        "input_invalid",
        "input_rows",
        "invalid",
        "lanes",
        "last_lines",
        "own_lane",
        "path",
        "rate_divided",
        "regions",
        "shard",
        "total",
    )

    def __init__(
        self,
        source: Path | InputCopy | Iterable[Mapping[str, str | None]],
        default_region: DefaultRegion,
        *,
        shard: Shard | None = None,
        interrupted: Callable[[], bool] | None = None,
        allow_unknown_region: bool = False,
        keep: Iterable[str] = (),
        role_template: str | None = None,
        own_account: OwnAccount = None,
        sends: bool = True,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self._rule = region_rule(allow_unknown_region)
        self._roles = AccountRoles(role_template, own_account)
        self._sends = sends
        self._warn = warn
        self._copy: InputCopy | None = None
        if isinstance(source, Path):
            self.path: Path | None = source
            self._rows: list[Mapping[str, str | None]] | None = None
        elif isinstance(source, InputCopy):
            self.path, self._rows, self._copy = None, None, source
        else:
            self.path = None
            self._rows = list(source)
        if callable(default_region):
            self._default_region: str | None = None
            self._resolve_region: Callable[[], str | None] | None = default_region
        else:
            self._default_region = default_region
            self._resolve_region = None
        self.shard = shard
        self._interrupted = interrupted
        self._keep = tuple(name.strip() for name in keep)
        self._spool: _Spool | InputCopy | None = None
        self._identity: tuple[int, int, int, int] | None = None
        self._index = _DuplicateIndex()
        # Bit i: the row on line i was invalid in pass 1 (pass 2 re-tests only those).
        self._invalid_lines = bytearray()
        self.total = 0  # rows this plan yields (this shard's, when sharded)
        self.input_rows = 0  # rows in the whole input
        self.invalid = 0  # invalid rows this plan yields (conflicting duplicates included)
        self.input_invalid = 0  # invalid rows in the whole input, whichever shard
        self.lanes: set[Lane] = set()  # (account, region) of this plan's valid rows
        self.regions: set[str] = set()  # the regions of those lanes
        self.last_lines: dict[Lane, int] = {}  # each of those lanes' last line in the input
        self.own_lane = ""  # the account rows without one are keyed by ("": none)
        self.rate_divided = False  # sharded by hash: each shard gets rate / shards
        self._owned_lanes: frozenset[Lane] | None = None  # sharded by lane: this shard's
        try:
            self._first_pass()
        except BaseException:
            self.close()
            raise

    @property
    def conflicts(self) -> int:
        """How many (account, region, app_id) keys appear with different settings."""
        return self._index.conflicts

    @property
    def ok(self) -> bool:
        """True when no row of the whole input is invalid (conflicting duplicates
        included), so every shard of a sharded job agrees."""
        return self.input_invalid == 0

    @property
    def source_name(self) -> str:
        """The input's name for messages: its path, ``<stdin>`` or ``<rows>``."""
        if self._copy is not None:
            return self._copy.name
        if self.path is None:
            return "<rows>"
        return "<stdin>" if str(self.path) == STDIN else str(self.path)

    @property
    def kept_columns(self) -> tuple[str, ...]:
        """The extra columns each row carries into the report, in ``keep`` order."""
        return self._keep

    @property
    def stem(self) -> str:
        """The input's name in a default report name: the file's name, stdin or rows."""
        if self._copy is not None:
            return self._copy.name.rsplit("/", 1)[-1]
        if self.path is None:
            return "rows"
        return "stdin" if str(self.path) == STDIN else self.path.name

    def input_changed(self) -> bool:
        """True when the input file is no longer the one the first pass read (another
        size, modification time or inode, or gone). Only a regular file is checked."""
        if self._copy is not None:
            return self._copy.changed()
        if self._identity is None or self.path is None:
            return False
        try:
            if str(self.path) == STDIN:  # a file given as standard input: the same file
                return _identity(os.fstat(sys.stdin.fileno())) != self._identity
            return _identity(os.stat(self.path)) != self._identity
        except OSError:
            return True

    def close(self) -> None:
        """Remove the private copy of the input; the plan cannot be iterated after."""
        if self._spool is not None:
            self._spool.close()

    def __enter__(self) -> RowPlan:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<RowPlan {self.source_name} rows={self.input_rows} mine={self.total} "
            f"invalid={self.invalid} conflicts={self.conflicts} lanes={len(self.lanes)} "
            f"rate_divided={self.rate_divided} spool={self._spool!r}>"
        )

    def _no_region(self, line: int, cells: Mapping[str, str]) -> Checked | Invalid:
        if self._resolve_region is not None:
            self._default_region, self._resolve_region = self._resolve_region(), None
            checked = check(cells, self._default_region, self._rule, self._roles)
            if checked is not None:
                return checked
        raise SetupError(
            f"{self.source_name}, line {line}: no region for this row; add a region "
            "column, pass --region, or set AWS_REGION / AWS_DEFAULT_REGION or a "
            "profile region"
        )

    def _first_pass(self) -> None:
        if self._copy is not None:
            self._spool = self._copy  # read by the second pass, closed with the plan
            with self._copy.reader() as reader:
                sample = reader.peek(_CHUNK)
                self._index = _DuplicateIndex(_expected_rows(sample, self._copy.size))
                self._scan(_parse(self.source_name, reader, self._keep))
            return
        if self.path is None:
            assert self._rows is not None
            self._index = _DuplicateIndex(len(self._rows))
            self._scan(read_mappings(self._rows, self._keep))
            return
        name = self.source_name
        with _open_input(self.path) as raw:
            info = os.fstat(raw.fileno())
            if stat.S_ISREG(info.st_mode):
                self._identity = _identity(info)
            self._spool = spool = _Spool()
            reader = io.BufferedReader(_Tee(raw, spool), _CHUNK)
            try:
                sample = reader.peek(_CHUNK)
            except OSError as exc:
                raise InputError(name, None, f"cannot read: {exc.strerror or exc}") from None
            self._index = _DuplicateIndex(_expected_rows(sample, info.st_size))
            self._scan(_parse(name, reader, self._keep))
            spool.finish()

    def _scan(self, rows: Iterable[tuple[int, dict[str, str]]]) -> None:
        index, shard, rule, roles = self._index, self.shard, self._rule, self._roles
        key, add = index.key, index.add
        if shard is not None and shard.count == 1:
            shard = None  # one shard of one: the whole input, as unsharded
        regions: dict[str, int] = {}  # unsharded: region -> last line of its valid rows
        #   without an account
        lanes: dict[Lane, int] = {}  # lane -> last line of its valid rows (unsharded: with
        #   an account)
        lane_rows: dict[Lane, int] = {}  # sharded: valid rows per lane
        hashed: dict[Lane, int] = {}  # sharded: lane -> last line of the valid rows this
        #   shard hashes to
        repeated: dict[int, tuple[Lane, bool]] = {}  # sharded: keys given more than once
        total = invalid = invalid_mine = hashed_mine = 0
        interrupted = self._interrupted
        for line, cells in rows:
            total += 1
            if interrupted is not None and total % 4096 == 0 and interrupted():
                raise ValidationInterrupted(self.source_name, line)
            checked = check(cells, self._default_region, rule, roles)
            if checked is None:
                checked = self._no_region(line, cells)
            if isinstance(checked, Invalid):
                invalid += 1
                self._mark_invalid(line)
                if shard is None or shard.owns(checked.region, checked.app_id, checked.account_id):
                    invalid_mine += 1
                continue
            app_id, region, _, number, _, account, _ = checked
            # Duplicates are found over the whole input: they belong to one shard anyway.
            k = key(region, app_id, account)
            if shard is None:
                if account:
                    lanes[account, region] = line
                else:
                    regions[region] = line  # no tuple per row for the common case
                add(k, line, number)
                continue
            lane = (account, region)
            lanes[lane] = line
            lane_rows[lane] = lane_rows.get(lane, 0) + 1
            owned = shard.owns(region, app_id, account)
            if owned:
                hashed_mine += 1
                hashed[lane] = line
            if not add(k, line, number):
                repeated[k] = (lane, owned)
        # Every row of a key given with different settings is invalid (see classify).
        conflicting = index.conflicting_rows()
        self.input_rows, self.input_invalid = total, invalid + conflicting
        if shard is None:
            self._whole_lanes(lanes, regions)
            self.total, self.invalid = total, self.input_invalid
        else:
            self._count_mine(
                shard, (lanes, lane_rows), (hashed, hashed_mine), repeated, invalid_mine
            )
        self.regions = {region for _, region in self.lanes}

    def _whole_lanes(self, lanes: dict[Lane, int], regions: Mapping[str, int]) -> None:
        """An unsharded plan's lanes and their last lines, from pass 1's: ``lanes`` (with
        an account) and ``regions`` (the rows without one), merged once per lane."""
        lanes.update((("", region), line) for region, line in regions.items())
        if own := self._find_own_lane(lanes):
            lanes = _merged(lanes, own, max)
        self.lanes, self.last_lines = set(lanes), lanes

    def _find_own_lane(self, lanes: Iterable[Lane]) -> str:
        """The account rows without one are keyed by (see the class docstring), set as
        ``own_lane``: the caller's own, when the input holds rows without an account and
        rows of that account; else ""."""
        accounts = {account for account, _ in lanes}
        if "" not in accounts or len(accounts) < 2:
            return ""  # rows of one kind: nothing to merge, and nothing to look up
        roles = self._roles
        own = roles.known_own()
        sharded = self.shard is not None and self.shard.count > 1
        if own is None and (self._sends or sharded):
            try:
                own = roles.own_account()
            except SetupError as exc:
                if sharded and self._sends:
                    raise SetupError(
                        f"{exc}; shard {self.shard} needs it to put the rows without an "
                        "account_id in the lane of the caller's own account as every "
                        "other shard does; nothing was sent, run this shard again"
                    ) from None
                if self._warn is not None:
                    self._warn(
                        f"{exc}; rows without an account_id and rows of the caller's own "
                        + (
                            "account are paced as two lanes in each region (together up to "
                            "twice the rate there)"
                            if self._sends
                            else "account are kept in two lanes, so this dry run's shard "
                            "may list other rows than the same shard of a real run"
                        )
                    )
                return ""
        if own is None or own == EVERY_ACCOUNT or own not in accounts:
            return ""
        self.own_lane = own
        return own

    def lane_of(self, row: Row) -> Lane:
        """The rate lane of ``row``, a row this plan yields: (account, region), with a row
        without an account in the lane of the caller's own account when the input has
        rows of both (``own_lane``, see the class docstring)."""
        return (row.account_id or self.own_lane, row.region)

    def _mark_invalid(self, line: int) -> None:
        bits = self._invalid_lines
        if line >> 3 >= len(bits):
            bits.extend(bytes((line >> 3) + 1 - len(bits) + len(bits) // 2))
        bits[line >> 3] |= 1 << (line & 7)

    def _count_mine(
        self,
        shard: Shard,
        tallies: tuple[Mapping[Lane, int], Mapping[Lane, int]],
        hashed: tuple[Mapping[Lane, int], int],
        repeated: Mapping[int, tuple[Lane, bool]],
        invalid_mine: int,
    ) -> None:
        """This shard's lanes, counts and last lines, after pass 1 saw every lane (each
        lane's last line and its valid rows in ``tallies``): whole lanes when there are at
        least as many as shards, else the rows that hash to it."""
        (last, lane_rows), (hashed_last, hashed_mine) = tallies, hashed
        # Every shard process reads every lane, so each one merges them alike.
        if own := self._find_own_lane(lane_rows):
            last, hashed_last = _merged(last, own, max), _merged(hashed_last, own, max)
            lane_rows = _merged(lane_rows, own, int.__add__)
            repeated = {
                k: ((account or own, region), owned)
                for k, ((account, region), owned) in repeated.items()
            }
        owned_lanes = self._owned_lanes = assign_lanes(lane_rows, shard)
        if owned_lanes is None:  # fewer lanes than shards: split by hash
            self.rate_divided = True
            self.lanes, valid_mine = set(hashed_last), hashed_mine
            mine = {k for k, (_, owned) in repeated.items() if owned}
            # A lane's last row may be another shard's: the last one this shard reads.
            self.last_lines = dict(hashed_last)
        else:
            self.lanes = set(owned_lanes)
            self.last_lines = {lane: last[lane] for lane in owned_lanes}
            valid_mine = sum(lane_rows[lane] for lane in owned_lanes)
            mine = {k for k, (lane, _) in repeated.items() if lane in owned_lanes}
        self.total = valid_mine + invalid_mine
        self.invalid = invalid_mine + self._index.conflicting_rows(mine)

    def _read(self) -> Iterator[tuple[int, dict[str, str]]]:
        if self._spool is None:
            assert self._rows is not None
            yield from read_mappings(self._rows, self._keep)
            return
        with self._spool.reader() as handle:
            yield from _parse(self.source_name, handle, self._keep)

    def outcomes(self) -> Iterator[Outcome]:
        """Second pass for a run that sends nothing (a dry run, an input with invalid
        rows): what iterating gives, each row as an :data:`Outcome`, without a
        :class:`Row` per row.

        A row pass 1 found valid is not checked again: its key is read from its cells
        (:func:`~batch_updater.rules.passed_key`), and its settings digest is its key's in
        the duplicate index (every row of a key without a conflict has the first row's).
        Rows pass 1 found invalid, rows of conflicting keys, and a sharded plan's rows
        take the way of iterating.
        """
        if self.shard is not None and self.shard.count > 1:
            yield from map(self.outcome, self)
            return
        index, rule, keep, roles = self._index, self._rule, self._keep, self._roles
        first, classify, outcome = index.first, index.classify, self.outcome
        default = self._default_region
        invalid_lines, size = self._invalid_lines, len(self._invalid_lines)
        for line, cells in self._read():
            passed = line >> 3 >= size or not invalid_lines[line >> 3] >> (line & 7) & 1
            if passed:
                app_id, region, account = passed_key(cells, default, roles)
                first_line, digest, conflict, done = first(app_key(region, app_id, account))
                if not conflict:
                    kept = tuple(cells.get(name, "") for name in keep) if keep else ()
                    text = digest_text(digest)
                    if line == first_line:
                        yield line, app_id, region, "", "", text, kept, account, done
                    else:
                        why = duplicate_of(first_line)
                        yield line, app_id, region, "skipped", why, text, kept, account, 0
                    continue
            result = validate(line, cells, default, rule, keep, roles=roles, passed=passed)
            assert result is not None, "pass 1 found the region of every row"
            yield outcome(classify(result) if isinstance(result, Row) else result)

    def outcome(self, item: Row | Rejected) -> Outcome:
        """The :data:`Outcome` of what iterating gives."""
        if isinstance(item, Row):
            line, app_id, region, digest, account = (
                item.line,
                item.app_id,
                item.region,
                item.digest,
                item.account_id,
            )
            done = self._index.success(app_key(region, app_id, account), digest_number(digest))
            return line, app_id, region, "", "", digest, item.kept, account, done
        return (
            item.line,
            item.app_id,
            item.region,
            item.status,
            item.reason,
            item.digest,
            item.kept,
            item.account_id,
            0,
        )

    @property
    def apps(self) -> _DuplicateIndex:
        """The input's apps (the duplicate index), where ``--resume`` notes the successes
        of earlier reports that a row of this input may skip (``ResumeIndex(within=)``)."""
        return self._index

    def __iter__(self) -> Iterator[Row | Rejected]:
        """Second pass: each row of this plan (its shard's), validated again, with
        duplicates and conflicts resolved."""
        classify, rule, keep, roles = self._index.classify, self._rule, self._keep, self._roles
        shard = self.shard if self.shard is not None and self.shard.count > 1 else None
        owned_lanes, own = self._owned_lanes, self.own_lane
        invalid_lines, size = self._invalid_lines, len(self._invalid_lines)
        for line, cells in self._read():
            # Valid in pass 1 (the same bytes): its cells need no second test.
            passed = line >> 3 >= size or not invalid_lines[line >> 3] >> (line & 7) & 1
            result = validate(
                line, cells, self._default_region, rule, keep, roles=roles, passed=passed
            )
            assert result is not None, "pass 1 found the region of every row"
            if isinstance(result, Rejected):
                if shard is None or shard.owns(result.region, result.app_id, result.account_id):
                    yield result
                continue
            if shard is not None and not (
                (result.account_id or own, result.region) in owned_lanes  # as lane_of
                if owned_lanes is not None
                else shard.owns(result.region, result.app_id, result.account_id)
            ):
                continue
            yield classify(result)
