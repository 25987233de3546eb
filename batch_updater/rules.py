"""The input's columns and the rules of a valid row, each written once.

:data:`FIELDS` is the rule table: per column its pattern (from botocore's service
models), maximum length and how a refusal is worded. Cross-field rules (a pool id starts
with its region, which matches ``cognito_region``; a role ARN's account and partition
match the row) are written once below. Two paths use them: :func:`check` tries the fast
test of every cell first (one compiled pattern per column, the length limit folded in:
:attr:`Field.fast`), and only a row that fails it is checked again by :func:`problems`,
which words every problem for the operator. Both follow from the same table, so they
cannot disagree about which rows are valid.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import re
import sys
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final

from .errors import SetupError

__all__ = [
    "ACCOUNT_COLUMNS",
    "COLUMNS",
    "FIELDS",
    "INPUT_COLUMNS",
    "NO_ROLES",
    "SETTING_COLUMNS",
    "AccountRoles",
    "Field",
    "Invalid",
    "RegionRule",
    "check",
    "check_region",
    "digest_number",
    "digest_numbers",
    "digest_text",
    "partition_of",
    "passed_key",
    "problems",
    "region_rule",
]

# Canonical column name -> the API's own name (accepted as a header alias too).
COLUMNS: Final[Mapping[str, str]] = {
    "app_id": "AppId",
    "region": "Region",
    "identity_pool_id": "AwsCognitoIdentityPoolId",
    "cognito_region": "AwsCognitoRegion",
    "user_pool_id": "AwsUserPoolsId",
    "web_client_id": "AwsUserPoolsWebClientId",
}
SETTING_COLUMNS: Final = ("identity_pool_id", "cognito_region", "user_pool_id", "web_client_id")
# Optional columns of a run over many accounts (name -> alias, as in an inventory export).
ACCOUNT_COLUMNS: Final[Mapping[str, str]] = {"account_id": "AccountId", "role_arn": "RoleArn"}
INPUT_COLUMNS: Final[Mapping[str, str]] = {**COLUMNS, **ACCOUNT_COLUMNS}
ALIASES: Final[Mapping[str, str]] = {
    **{name.lower(): name for name in INPUT_COLUMNS},
    **{api.lower(): name for name, api in INPUT_COLUMNS.items()},
}

# Patterns from botocore's service models (Amplify AppId, Cognito pool and client ids,
# IAM role names and paths). re.ASCII: the models' \w is Java's [a-zA-Z0-9_].
_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}", re.ASCII)
_ROLE_ARN = re.compile(
    r"arn:(aws|aws-cn|aws-us-gov):iam::([0-9]{12}):role/(?:[\x21-\x7e]*/)?[\w+=,.@-]{1,64}",
    re.ASCII,
)


def _shown(value: str, limit: int = 60) -> str:
    """``repr(value)`` for a message, cut to about ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit + 2 else f"{text[:limit]}... ({len(value)} characters)"


# -- regions ----------------------------------------------------------------------------

_UNKNOWN_REGION_HINT: Final = "pass --allow-unknown-region for a region newer than the SDK"
_SHAPE_ONLY_HINT: Final = "pass --allow-unknown-region to check only the shape of region names"


@cache
def _botocore_regions() -> tuple[frozenset[str], str]:
    """(every region of every partition botocore ships, botocore's version), read once.

    Read as plain JSON from botocore's data directory, without botocore's loaders or a
    session (a few milliseconds): ``partitions.json`` (small, botocore 1.28 and later),
    else the partitions of ``endpoints.json``. Pseudo-regions like ``aws-global`` are left
    out. Raises :class:`SetupError` when neither can be read.
    """
    spec = importlib.util.find_spec("botocore")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for name, key in (("partitions.json", "id"), ("endpoints.json", "partition")):
        for location in locations:
            path = Path(location, "data", name)
            try:
                data = json.loads(path.read_bytes())
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                raise SetupError(
                    f"cannot read botocore's region list {path}: {exc}; {_SHAPE_ONLY_HINT}"
                ) from None
            regions: set[str] = set()
            for partition in data.get("partitions", []):
                if not isinstance(partition, dict) or key not in partition:
                    continue
                shape = re.compile(str(partition.get("regionRegex") or "$^"), re.ASCII)
                regions.update(r for r in partition.get("regions", {}) if shape.fullmatch(r))
            return frozenset(regions), importlib.metadata.version("botocore")
    raise SetupError(
        f"cannot find botocore's region list (is botocore installed?); {_SHAPE_ONLY_HINT}"
    )


class RegionRule:
    """Which region names are accepted: those botocore knows (the default), or with
    ``allow_unknown`` also any name shaped like one (a region newer than the SDK).

    ``ok`` is the cheap test of the hot path (set membership, or the shape pattern);
    :meth:`problem` words the refusal. Both follow from ``known`` and ``allow_unknown``.
    With ``allow_unknown`` an unreadable botocore region list is no error: the shape
    check alone applies.
    """

    __slots__ = ("allow_unknown", "known", "ok", "version")

    def __init__(self, allow_unknown: bool = False) -> None:
        try:
            self.known, self.version = _botocore_regions()
        except SetupError:
            if not allow_unknown:
                raise
            self.known, self.version = frozenset(), "(unreadable)"
        self.allow_unknown = allow_unknown
        contains = self.known.__contains__
        self.ok: Callable[[str], bool] = (
            (lambda value: contains(value) or _REGION.fullmatch(value) is not None)
            if allow_unknown
            else contains
        )

    def problem(self, value: str) -> str | None:
        """Why ``value`` is not an accepted region name, or None when it is one."""
        if self.ok(value):
            return None
        if not _REGION.fullmatch(value):
            return f"{_shown(value)} is not a region name like us-east-1 or ap-southeast-3"
        return (
            f"{_shown(value)} is not an AWS region botocore {self.version} knows; "
            f"{_UNKNOWN_REGION_HINT}"
        )

    def __repr__(self) -> str:
        return (
            f"<RegionRule known={len(self.known)} botocore={self.version} "
            f"allow_unknown={self.allow_unknown}>"
        )


@cache
def region_rule(allow_unknown: bool = False) -> RegionRule:
    """The shared :class:`RegionRule` for ``allow_unknown`` (made once per process)."""
    return RegionRule(allow_unknown)


def check_region(value: str, *, allow_unknown: bool = False) -> str | None:
    """Return why ``value`` is not an accepted AWS region name, or None when it is one."""
    return region_rule(allow_unknown).problem(value)


# -- the rule table ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Field:
    """The rule of one column: a value matches ``pattern`` and has at most ``max_len``
    characters. ``wrong`` words a value that does not match (``{value}`` stands for the
    value shown; a secret's wording leaves it out); a pool id starts with its region up
    to ``region_sep``, like ``example``."""

    column: str
    pattern: re.Pattern[str]
    max_len: int
    wrong: str
    example: str = ""
    region_sep: str = ""

    @property
    def fast(self) -> Callable[[str], re.Match[str] | None]:
        """The hot path's test: ``pattern`` with the length limit folded in."""
        return _fast_pattern(self.pattern.pattern, self.max_len).fullmatch

    def problem(self, value: str) -> str | None:
        """Why ``value`` breaks this column's rule, or None (the cross-field rules aside)."""
        if len(value) > self.max_len:
            return f"{self.column}: {len(value)} characters, at most {self.max_len} allowed"
        if self.pattern.fullmatch(value) is None:
            return f"{self.column}: {self.wrong.format(value=_shown(value))}"
        return None


@cache
def _fast_pattern(pattern: str, max_len: int) -> re.Pattern[str]:
    return re.compile(rf"(?=.{{0,{max_len}}}\Z)(?:{pattern})", re.ASCII | re.DOTALL)


FIELDS: Final[Mapping[str, Field]] = {
    field.column: field
    for field in (
        Field(
            "app_id",
            re.compile(r"d[a-z0-9]+", re.ASCII),
            20,
            "{value} is not an Amplify app id (d followed by a-z, 0-9)",
        ),
        Field(
            "identity_pool_id",
            re.compile(r"[\w-]+:[0-9a-f-]+", re.ASCII),
            55,
            "{value} does not look like us-east-1:0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b",
            "us-east-1:0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b",
            ":",
        ),
        Field(
            "user_pool_id",
            re.compile(r"[\w-]+_[0-9a-zA-Z]+", re.ASCII),
            55,
            "{value} does not look like us-east-1_AbC123xyz",
            "us-east-1_AbC123xyz",
            "_",
        ),
        # A secret: never echoed, the message names only what is wrong.
        Field(
            "web_client_id",
            re.compile(r"[\w+]+", re.ASCII),
            128,
            "only letters, digits, _ and + are allowed",
        ),
        Field(
            "account_id",
            re.compile(r"[0-9]{12}", re.ASCII),
            12,
            "{value} is not an AWS account id (12 digits)",
        ),
        Field(
            "role_arn",
            _ROLE_ARN,
            2048,
            "{value} is not an IAM role ARN like arn:aws:iam::111122223333:role/Name",
        ),
    )
}
_APP_ID_OK: Final = FIELDS["app_id"].fast
_IDENTITY_POOL: Final = FIELDS["identity_pool_id"]
_USER_POOL: Final = FIELDS["user_pool_id"]
_IDENTITY_POOL_OK: Final = _IDENTITY_POOL.fast
_USER_POOL_OK: Final = _USER_POOL.fast
_WEB_CLIENT_OK: Final = FIELDS["web_client_id"].fast
_USER_SEP: Final = _USER_POOL.region_sep
_IDENTITY_SEP: Final = _IDENTITY_POOL.region_sep
_NO_SETTINGS: Final = (
    "no settings: give at least one of identity_pool_id, cognito_region, "
    "user_pool_id, web_client_id"
)


def partition_of(region: str) -> str:
    """The AWS partition of a region name: aws-cn for cn-*, aws-us-gov for us-gov-*,
    else aws (the partitions a role ARN of the input may name)."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def _pool_problem(field: Field, value: str, rule: RegionRule) -> tuple[str | None, str | None]:
    """(problem, region prefix) of a pool id: its shape, and a prefix that is a region."""
    if (problem := field.problem(value)) is not None:
        return problem, None
    prefix = value.split(field.region_sep, 1)[0]
    if not _REGION.fullmatch(prefix) and not rule.ok(prefix):
        return f"{field.column}: {value!r} must start with its region, like {field.example}", None
    if (why := rule.problem(prefix)) is not None:
        return f"{field.column}: region {why}", None
    return None, prefix


def problems(
    app_id: str,
    region: str,
    values: tuple[str, str, str, str],
    rule: RegionRule,
    found: list[str],
) -> None:
    """Append every problem of a row's app and settings to ``found``, worded for the
    operator (the slow path, for rows the fast test did not accept)."""
    if not app_id:
        found.append("app_id: empty")
    elif (why := FIELDS["app_id"].problem(app_id)) is not None:
        found.append(why)
    if (why := rule.problem(region)) is not None:
        found.append(f"region: {why}")

    identity_pool, cognito_region, user_pool, client_id = values
    if cognito_region and (why := rule.problem(cognito_region)) is not None:
        found.append(f"cognito_region: {why}")
        cognito_region = ""

    for field, value in ((_USER_POOL, user_pool), (_IDENTITY_POOL, identity_pool)):
        if not value:
            continue
        why, prefix = _pool_problem(field, value, rule)
        if why is not None:
            found.append(why)
        elif cognito_region and prefix != cognito_region:
            found.append(
                f"{field.column}: region {prefix} differs from cognito_region {cognito_region}"
            )

    if client_id and (why := FIELDS["web_client_id"].problem(client_id)) is not None:
        found.append(why)

    if not any(values):
        found.append(_NO_SETTINGS)


def _fast_ok(
    app_id: str, region: str, values: tuple[str, str, str, str], region_ok: Callable[[str], bool]
) -> bool:
    """True when the row is certainly valid (the common case, tested cheaply): the fast
    tests of :data:`FIELDS`, and pool ids that start with ``cognito_region`` when given,
    else with an accepted region."""
    if not (_APP_ID_OK(app_id) and region_ok(region)):
        return False
    identity_pool, cognito_region, user_pool, client_id = values
    if cognito_region and not region_ok(cognito_region):
        return False
    if user_pool:
        if not _USER_POOL_OK(user_pool):
            return False
        prefix = user_pool.partition(_USER_SEP)[0]
        if not (prefix == cognito_region if cognito_region else region_ok(prefix)):
            return False
    if identity_pool:
        if not _IDENTITY_POOL_OK(identity_pool):
            return False
        prefix = identity_pool.partition(_IDENTITY_SEP)[0]
        if not (prefix == cognito_region if cognito_region else region_ok(prefix)):
            return False
    if client_id and not _WEB_CLIENT_OK(client_id):
        return False
    return bool(identity_pool or cognito_region or user_pool or client_id)


# -- accounts and roles ------------------------------------------------------------------

_ACCOUNT: Final = FIELDS["account_id"]
_ROLE: Final = FIELDS["role_arn"]
_TEMPLATE_LABEL: Final = "role_arn (from --role-arn)"
_MAX_SEEN: Final = 1 << 14  # (account, role, region) cells remembered by AccountRoles
OwnAccount = str | Callable[[], str | None] | None
#: ``own_account`` for ``--local``: every account signs with its own dummy keys, no role.
EVERY_ACCOUNT: Final = "*"


class AccountRoles:
    """Which role reaches a row's account: its ``role_arn``, else ``template`` (the
    ``--role-arn`` value; ``{account_id}`` and ``{partition}`` are filled in per row),
    else none when the account is ``own_account`` (the caller's, or a function that finds
    it, called only when such a row exists: it costs a ``GetCallerIdentity``).
    """

    __slots__ = ("_own", "_resolve_own", "_seen", "template")

    def __init__(self, template: str | None = None, own_account: OwnAccount = None) -> None:
        self.template = template or None
        if self.template is not None:
            sample = self.template.replace("{account_id}", "111122223333").replace(
                "{partition}", "aws"
            )
            if not _ROLE.fast(sample):
                raise SetupError(
                    f"--role-arn: {_shown(self.template)} is not an IAM role ARN template "
                    "like arn:aws:iam::{account_id}:role/Name"
                )
        if callable(own_account):
            self._own: str | None = None
            self._resolve_own: Callable[[], str | None] | None = own_account
        else:
            self._own, self._resolve_own = own_account or None, None
        # (account, role, region) cells -> (account, role, problems): a fleet repeats a
        # few roles over many rows. Bounded, so memory does not grow with the rows.
        self._seen: dict[tuple[str, str, str], tuple[str, str, tuple[str, ...]]] = {}

    def own_account(self) -> str | None:
        """The caller's account (found on first use when given as a function)."""
        if self._resolve_own is not None:
            self._own, self._resolve_own = self._resolve_own() or None, None
        return self._own

    def known_own(self) -> str | None:
        """The caller's account when it is known without a look-up (given, or found
        already), else None."""
        return self._own if self._resolve_own is None else None

    def check(self, account: str, role: str, region: str, found: list[str]) -> tuple[str, str]:
        """(account, role ARN) of a row with an ``account_id`` or a ``role_arn`` (or
        both); appends the problems to ``found``. A role ARN alone gives the account."""
        key = (account, role, region)
        seen = self._seen.get(key)
        if seen is None:
            problems: list[str] = []
            seen = (*self._resolve(account, role, region, problems), tuple(problems))
            if len(self._seen) < _MAX_SEEN:
                self._seen[key] = seen
        found.extend(seen[2])
        return seen[0], seen[1]

    def _resolve(self, account: str, role: str, region: str, found: list[str]) -> tuple[str, str]:
        why = _ACCOUNT.problem(account) if account else None
        if why is not None:
            found.append(why)
        if role:
            if (wrong := _ROLE.problem(role)) is not None:
                found.append(wrong)
                return account, role
            arn_account, arn_problems = _arn_problems(
                role, "role_arn", account if why is None else "", region
            )
            found.extend(arn_problems)
            return account or arn_account, role
        if why is not None:
            return account, ""
        if self.template is not None:
            partition = partition_of(region)
            arn = self.template.replace("{account_id}", account).replace("{partition}", partition)
            found.extend(_arn_problems(arn, _TEMPLATE_LABEL, account, region)[1])
            return account, arn
        if (own := self.own_account()) != EVERY_ACCOUNT and account != own:
            found.append(
                f"no role to assume for account {account}: add a role_arn column or --role-arn"
            )
        return account, ""

    def __repr__(self) -> str:
        own = "(not looked up)" if self._resolve_own is not None else self._own
        return f"<AccountRoles template={self.template!r} own_account={own} seen={len(self._seen)}>"


def _arn_problems(arn: str, label: str, account: str, region: str) -> tuple[str, tuple[str, ...]]:
    """(the ARN's account, its problems): it names ``account`` when given, and the
    partition of ``region`` when that is shaped like a region."""
    match = _ROLE_ARN.fullmatch(arn)
    assert match is not None, "checked against FIELDS['role_arn'] first"
    partition, arn_account = match[1], match[2]
    out: list[str] = []
    if account and arn_account != account:
        out.append(f"{label}: account {arn_account} differs from account_id {account}")
    if _REGION.fullmatch(region) and partition != (expected := partition_of(region)):
        out.append(
            f"{label}: partition {partition} does not match region {region} (partition {expected})"
        )
    return arn_account, tuple(out)


# -- one row -----------------------------------------------------------------------------


def settings_digest(
    identity_pool: str, cognito_region: str, user_pool: str, client: str, account: str = ""
) -> tuple[int, str]:
    """(64-bit int, 16 hex characters) of the settings; empty means not sent.

    Unit separators keep the fields apart; no valid value can contain one. The account
    is hashed only when set, so a row without one keeps the digest of earlier releases
    (and their reports still resume).
    """
    text = f"{identity_pool}\x1f{cognito_region}\x1f{user_pool}\x1f{client}"
    if account:
        text += f"\x1f{account}"
    raw = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(raw, "big"), raw.hex()


class Invalid:
    """What :func:`check` returns for an invalid row: the cells read and why."""

    __slots__ = ("account_id", "app_id", "reason", "region", "role_arn")

    def __init__(
        self, app_id: str, region: str, reason: str, account_id: str = "", role_arn: str = ""
    ) -> None:
        self.app_id, self.region, self.reason = app_id, region, reason
        self.account_id, self.role_arn = account_id, role_arn

    def __repr__(self) -> str:
        return (
            f"<Invalid {self.app_id!r} {self.region!r} account={self.account_id!r}: {self.reason}>"
        )


# What check returns for a valid row: app_id, region, settings, digest as int and hex,
# account and role ARN ("" when not set).
Checked = tuple[str, str, tuple[str, str, str, str], int, str, str, str]

NO_ROLES: Final = AccountRoles()  # no template, no own account: only role_arn cells


def passed_key(
    cells: Mapping[str, str], default_region: str | None, roles: AccountRoles = NO_ROLES
) -> tuple[str, str, str]:
    """(app_id, region, account) of cells :func:`check` found valid before: what it
    returns for them with ``passed``, without the settings and their digest (a second
    pass that finds the digest elsewhere, see ``RowPlan.outcomes``)."""
    get = cells.get
    app_id = get("app_id", "").strip()
    region = get("region", "").strip() or (default_region or "")
    if "account_id" not in cells and "role_arn" not in cells:  # the common case
        return app_id, region, ""
    account, role = get("account_id", "").strip(), get("role_arn", "").strip()
    if account or role:
        account = roles.check(account, role, region, [])[0]
    return app_id, region, account


def digest_text(number: int) -> str:
    """The 16 hex characters of a settings digest given as its 64-bit int (see
    :func:`settings_digest`)."""
    return f"{number:016x}"


_HEX: Final = "0123456789abcdef"  # the characters of a settings digest's text


def digest_number(text: str) -> int:
    """The 64-bit int of a settings digest's text (:func:`digest_text` undone); for text
    :func:`settings_digest` never writes (a hand-edited report), a 64-bit hash of it."""
    if len(text) == 16 and not text.strip(_HEX):  # all 16 characters of _HEX (not a regex:
        return int(text, 16)  # once per record of reports of millions)
    return hash(text) & 0xFFFF_FFFF_FFFF_FFFF


def digest_numbers(texts: list[str]) -> list[int] | None:
    """:func:`digest_number` of each of ``texts`` when every one is written as
    :func:`settings_digest` writes it, else None: for a block of a report's records at
    once (loops in C)."""
    joined = "".join(texts)
    if set(map(len, texts)) != {16} or joined != joined.lower():
        return None
    try:  # 8 bytes each, the first the highest; any but hex digits refused...
        raw = bytes.fromhex(joined)
    except ValueError:
        return None
    if len(raw) != 8 * len(texts):  # ...but ASCII whitespace, skipped
        return None
    numbers = array("Q", raw)
    if sys.byteorder == "little":
        numbers.byteswap()
    return numbers.tolist()


def check(
    cells: Mapping[str, str],
    default_region: str | None,
    rule: RegionRule,
    roles: AccountRoles = NO_ROLES,
    *,
    passed: bool = False,
) -> Checked | Invalid | None:
    """Validate one row without building objects; None when it has no region at all.

    A row that holds the cells that have a column and a count problem (``__cells__``,
    see the reader) is invalid with that problem. ``passed``: these very cells were
    found valid before (the plan's first pass), so the tests of each cell are not run
    again, only what builds the result.
    """
    get = cells.get
    app_id = get("app_id", "").strip()
    region = get("region", "").strip() or (default_region or "")
    if "__cells__" in cells:  # the cells that have a column, and why the row is invalid
        account, role = get("account_id", "").strip(), get("role_arn", "").strip()
        return Invalid(app_id, region, cells["__cells__"], account, role)
    if not region:
        return None
    values = (
        get("identity_pool_id", "").strip(),
        get("cognito_region", "").strip(),
        get("user_pool_id", "").strip(),
        get("web_client_id", "").strip(),
    )
    fast = passed or _fast_ok(app_id, region, values, rule.ok)
    if fast and "account_id" not in cells and "role_arn" not in cells:  # the common case
        number, hexdigest = settings_digest(*values)
        return app_id, region, values, number, hexdigest, "", ""
    account, role = get("account_id", "").strip(), get("role_arn", "").strip()
    found: list[str] = []
    if not fast:
        problems(app_id, region, values, rule, found)
    if account or role:
        account, role = roles.check(account, role, region, found)
    if found:
        return Invalid(app_id, region, "; ".join(found), account, role)
    number, hexdigest = settings_digest(*values, account)
    return app_id, region, values, number, hexdigest, account, role
