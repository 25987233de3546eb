"""Credentials per AWS account: each account's role assumed once, refreshed before it expires.

The base credentials come from the standard chain (the run's session). A row with a role
(``role_arn``) is sent with that role's credentials: the role is assumed through STS on first
use, in the STS region of the lane that first needs it, and the credentials are shared by
every region's client of that role for the rest of the run.

Refreshing is aiobotocore's: :class:`AioDeferredRefreshableCredentials` with an assume-role
fetcher (:meth:`_Role.fetch`). Its refresh windows are set from the session's duration
(:class:`RefreshWindows`), because botocore's (15 minutes advisory, 10 mandatory) are longer
than a 900-second session and would assume the role again before every request. In the
advisory window one task refreshes while the others go on with the current credentials; only
in the mandatory window do requests wait for the refresh. A failed refresh is not retried
before ``retry_after`` (the current credentials serve meanwhile, while they last), so at most
one ``AssumeRole`` per role goes out per refresh period, and one per ``retry_after`` while STS
fails.

STS errors are translated here, at one boundary, into :class:`AssumeRoleError`, whose
``scope`` says what it stops: the account (the role cannot be assumed), the run (the base
credentials are refused) or nothing (throttling and the like, retried with backoff first).

With ``local=True`` (``--local``) nothing is assumed: each account signs with its own dummy
access key ``LOCAL<account>``, which the emulator sees and can limit per (access key, region).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any, Final

from ._version import __version__
from .errors import BatchUpdaterError, SetupError
from .logs import default_logger, register_secrets
from .retry import Retrier, RetryEvent, RetryPolicy

if TYPE_CHECKING:
    from .sdk import SessionMaker

__all__ = [
    "LOCAL_ACCESS_KEY_PREFIX",
    "ROLE_DURATION_DEFAULT",
    "ROLE_DURATION_MAX",
    "ROLE_DURATION_MIN",
    "STS_RETRY",
    "AccessCheck",
    "Accounts",
    "AssumeRoleError",
    "AssumeRoleSettings",
    "FailureScope",
    "RefreshWindows",
    "account_of_role",
    "partition_of",
    "role_arn_for",
    "role_session_name",
]

ROLE_DURATION_DEFAULT: Final = 3600
ROLE_DURATION_MIN: Final = 900
ROLE_DURATION_MAX: Final = 43200
SESSION_NAME_PREFIX: Final = "batch-updater"
_SESSION_NAME_MAX: Final = 64  # AWS's limit for RoleSessionName
_SESSION_NAME_BAD: Final = re.compile(r"[^\w+=,.@-]", re.ASCII)
_EXTERNAL_ID: Final = re.compile(r"[\w+=,.@:/-]{2,1224}", re.ASCII)
#: ``--local``: the access key of an account's dummy credentials is this prefix + account id.
LOCAL_ACCESS_KEY_PREFIX: Final = "LOCAL"
_LOCAL_SECRET: Final = "local-secret"
# botocore's own refresh windows (seconds before expiry); ours never exceed them.
_BOTOCORE_ADVISORY: Final = 15 * 60
_BOTOCORE_MANDATORY: Final = 10 * 60
# Seconds between AssumeRole attempts after a failure, when rows wait for credentials.
_RETRY_UNASSUMED: Final = 5.0
#: AssumeRole and GetCallerIdentity retries (throttling, 5xx, connection errors).
STS_RETRY: Final = RetryPolicy(max_attempts=6, backoff_base=0.5, backoff_cap=10.0)
#: Roles assumed at once by :meth:`Accounts.check_access`.
CHECK_CONCURRENCY: Final = 8

# Region prefix -> partition (the rest are "aws").
_PARTITIONS: Final = (
    ("cn-", "aws-cn"),
    ("us-gov-", "aws-us-gov"),
    ("us-isob-", "aws-iso-b"),
    ("us-iso-", "aws-iso"),
)


def partition_of(region: str) -> str:
    """The partition of ``region``: ``cn-north-1`` -> ``aws-cn``, ``us-east-1`` -> ``aws``."""
    for prefix, partition in _PARTITIONS:
        if region.startswith(prefix):
            return partition
    return "aws"


def role_arn_for(
    account_id: str, region: str, *, template: str | None = None, role_name: str | None = None
) -> str:
    """The role to assume for an account without a ``role_arn`` cell ("" when none is set).

    ``template`` (``--role-arn``) has ``{account_id}`` substituted; ``role_name``
    (``--role-name``) is ``arn:<partition of region>:iam::<account_id>:role/<role_name>``.
    """
    if template:
        return template.replace("{account_id}", account_id)
    if role_name:
        return f"arn:{partition_of(region)}:iam::{account_id}:role/{role_name}"
    return ""


def account_of_role(role_arn: str) -> str:
    """The account id in ``arn:<partition>:iam::<account>:role/...`` ("" if not an ARN)."""
    parts = role_arn.split(":", 5)
    return parts[4] if len(parts) == 6 and parts[0] == "arn" else ""


def role_session_name(text: str) -> str:
    """``text`` as an STS role session name: other characters than ``[\\w+=,.@-]`` become
    ``-``, cut to 64 characters. Raises ``ValueError`` when fewer than 2 are left."""
    name = _SESSION_NAME_BAD.sub("-", text)[:_SESSION_NAME_MAX]
    if len(name) < 2:
        raise ValueError(f"role session name must have 2 to 64 characters, not {text!r}")
    return name


@dataclass(frozen=True, slots=True)
class RefreshWindows:
    """When assumed credentials are refreshed, in seconds before they expire.

    From ``advisory`` on, one request refreshes them while the others go on with the current
    ones; from ``mandatory`` on, requests wait for fresh credentials. After a failed refresh,
    STS is asked again only ``retry_after`` seconds later, or ``retry_unassumed`` seconds
    when no valid credentials are left (rows are waiting for them).
    """

    advisory: float
    mandatory: float
    retry_after: float
    retry_unassumed: float

    @classmethod
    def for_duration(cls, seconds: float) -> RefreshWindows:
        """botocore's windows, shrunk to a quarter and a sixth of shorter sessions: a
        900-second session is refreshed after 675 s (mandatory at 750 s), retried every 15 s."""
        advisory = min(float(_BOTOCORE_ADVISORY), seconds / 4)
        mandatory = min(float(_BOTOCORE_MANDATORY), seconds / 6)
        retry_after = max(1.0, (advisory - mandatory) / 5)
        return cls(advisory, mandatory, retry_after, min(retry_after, _RETRY_UNASSUMED))


@dataclass(frozen=True, slots=True)
class AssumeRoleSettings:
    """How roles are assumed: ``--external-id``, ``--role-session-name``, ``--role-duration``.

    ``session_name`` is made valid with :func:`role_session_name`; use :meth:`for_run` for
    the default ``batch-updater-<run_id>``.
    """

    external_id: str | None = None
    session_name: str = SESSION_NAME_PREFIX
    duration_seconds: int = ROLE_DURATION_DEFAULT

    def __post_init__(self) -> None:
        if not ROLE_DURATION_MIN <= self.duration_seconds <= ROLE_DURATION_MAX:
            raise ValueError(
                f"role duration must be {ROLE_DURATION_MIN} to {ROLE_DURATION_MAX} seconds, "
                f"not {self.duration_seconds}"
            )
        if self.external_id is not None and not _EXTERNAL_ID.fullmatch(self.external_id):
            raise ValueError(
                "external id must have 2 to 1224 characters among letters, digits and +=,.@:/-_"
            )
        # Frozen: the cleaned name replaces the given one once, here.
        object.__setattr__(self, "session_name", role_session_name(self.session_name))

    @classmethod
    def for_run(
        cls,
        run_id: str,
        *,
        external_id: str | None = None,
        session_name: str | None = None,
        duration_seconds: int = ROLE_DURATION_DEFAULT,
    ) -> AssumeRoleSettings:
        """Settings whose session name defaults to ``batch-updater-<run_id>``."""
        return cls(
            external_id=external_id or None,
            session_name=session_name or f"{SESSION_NAME_PREFIX}-{run_id}",
            duration_seconds=duration_seconds,
        )

    @property
    def windows(self) -> RefreshWindows:
        """The refresh windows for this duration."""
        return RefreshWindows.for_duration(self.duration_seconds)

    def __repr__(self) -> str:
        external = "set" if self.external_id else "none"  # not secret, but not needed either
        return (
            f"AssumeRoleSettings(session_name={self.session_name!r}, "
            f"duration_seconds={self.duration_seconds}, external_id={external})"
        )


class FailureScope(Enum):
    """What a failure to get an account's credentials stops."""

    TRANSIENT = "transient"  # nothing: STS throttled or failed, retried later
    ACCOUNT = "account"  # that account: its role cannot be assumed
    RUN = "run"  # the whole run: the base credentials are refused


# STS error codes: transient ones are retried with backoff; the base credentials' are fatal
# for the run; any other refusal is the account's.
_STS_TRANSIENT: Final = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalError",
        "IDPCommunicationError",
    }
)
_STS_RETRYABLE_STATUS: Final = frozenset({429, 500, 502, 503, 504})
_STS_RUN_FATAL: Final = frozenset(
    {
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "UnrecognizedClientException",
        "NoCredentialsError",
        "PartialCredentialsError",
        "CredentialRetrievalError",
    }
)
_RUN_HINT: Final = "the base credentials were refused: refresh them (e.g. aws sso login) and resume"
_TRANSIENT_HINT: Final = "STS did not give credentials now; its rows are retried, or resume later"


def _account_hint(code: str, account_id: str, region: str) -> str:
    if code == "AccessDenied":
        return (
            f"check that the role exists in account {account_id}, that its trust policy lets "
            "the base credentials assume it, and that --external-id matches its "
            "sts:ExternalId condition"
        )
    if code == "RegionDisabledException":
        return f"activate STS in {region} for account {account_id} (IAM account settings)"
    if code in ("ValidationError", "InvalidParameterValue", "MalformedPolicyDocument"):
        return (
            "check the role ARN, --role-session-name and --role-duration (at most the "
            "role's maximum session duration; 3600 when the base credentials are an "
            "assumed role themselves)"
        )
    return f"check the role of account {account_id} and its trust policy"


class AssumeRoleError(BatchUpdaterError):
    """An account's role could not be assumed: which account and role, what failed, and
    what to fix. ``scope`` says whether it stops that account, the run, or nothing."""

    def __init__(
        self,
        account_id: str,
        role_arn: str,
        code: str,
        message: str,
        *,
        scope: FailureScope,
        hint: str,
    ) -> None:
        super().__init__(
            f"account {account_id}: cannot assume {role_arn}: {code}: {message}; {hint}"
        )
        self.account_id = account_id
        self.role_arn = role_arn
        self.code = code
        self.message = message
        self.scope = scope
        self.hint = hint

    @property
    def transient(self) -> bool:
        """Worth asking STS again later."""
        return self.scope is FailureScope.TRANSIENT


def _sts_failure(exc: Exception) -> tuple[str, str, FailureScope]:
    """(code, message, scope) of an exception raised by an STS call."""
    # Imported here like every botocore import: a dry run never loads the SDK.
    from botocore.exceptions import (  # noqa: PLC0415
        BotoCoreError,
        ClientError,
        ConnectionError,
        HTTPClientError,
    )

    if isinstance(exc, ClientError):
        response: Any = exc.response
        code = str(response.get("Error", {}).get("Code") or "Unknown")
        message = str(response.get("Error", {}).get("Message") or exc)
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _STS_TRANSIENT or status in _STS_RETRYABLE_STATUS:
            return code, message, FailureScope.TRANSIENT
        if code in _STS_RUN_FATAL:
            return code, message, FailureScope.RUN
        return code, message, FailureScope.ACCOUNT
    name = type(exc).__name__
    if isinstance(exc, HTTPClientError | ConnectionError):
        return name, str(exc), FailureScope.TRANSIENT
    if name in _STS_RUN_FATAL:
        return name, str(exc), FailureScope.RUN
    if isinstance(exc, BotoCoreError):
        return name, str(exc), FailureScope.TRANSIENT
    raise exc  # not an SDK error: a bug, not the account's


@contextlib.contextmanager
def _sts_errors(account_id: str, role_arn: str, region: str) -> Iterator[None]:
    """Translate what an STS call raises into :class:`AssumeRoleError` (the one boundary)."""
    try:
        yield
    except AssumeRoleError:
        raise
    except Exception as exc:
        code, message, scope = _sts_failure(exc)
        hint = (
            _RUN_HINT
            if scope is FailureScope.RUN
            else _TRANSIENT_HINT
            if scope is FailureScope.TRANSIENT
            else _account_hint(code, account_id, region)
        )
        raise AssumeRoleError(account_id, role_arn, code, message, scope=scope, hint=hint) from None


def _retry_sts(exc: BaseException) -> bool:
    return isinstance(exc, AssumeRoleError) and exc.transient


def utc_now() -> datetime:
    """The credentials' default clock."""
    return datetime.now(UTC)


Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]


@functools.cache
def _role_credentials_class() -> type[Any]:
    """aiobotocore's deferred refreshable credentials with refresh windows fitted to the
    session (made on first use: a dry run never loads the SDK)."""
    from aiobotocore.credentials import AioDeferredRefreshableCredentials  # noqa: PLC0415

    class RoleCredentials(AioDeferredRefreshableCredentials):
        def __init__(
            self,
            fetch: Callable[[], Awaitable[dict[str, Any]]],
            clock: Clock,
            windows: RefreshWindows,
        ) -> None:
            super().__init__(refresh_using=fetch, method="assume-role", time_fetcher=clock)
            self._advisory_refresh_timeout = windows.advisory
            self._mandatory_refresh_timeout = windows.mandatory

    return RoleCredentials


class _FixedCredentialResolver:
    """A session's ``credential_provider`` component that answers one credentials object."""

    __slots__ = ("_credentials",)

    def __init__(self, credentials: Any) -> None:
        self._credentials = credentials

    async def load_credentials(self) -> Any:
        return self._credentials


class _Role:
    """One role: its refreshing credentials, and the assume-role fetcher behind them."""

    __slots__ = (
        "_accounts",
        "_error",
        "_expiry",
        "_failed_at",
        "_last",
        "account_id",
        "assume_calls",
        "credentials",
        "region",
        "role_arn",
    )

    def __init__(self, accounts: Accounts, account_id: str, role_arn: str, region: str) -> None:
        self._accounts = accounts
        self.account_id = account_id
        self.role_arn = role_arn
        self.region = region  # the STS region: the first lane's that needed this role
        self.assume_calls = 0  # AssumeRole requests sent, retries included
        self._error: AssumeRoleError | None = None
        self._failed_at = datetime.min.replace(tzinfo=UTC)
        self._last: dict[str, Any] | None = None
        self._expiry = datetime.min.replace(tzinfo=UTC)
        self.credentials: Any = _role_credentials_class()(
            self.fetch, accounts.clock, accounts.settings.windows
        )

    async def fetch(self) -> dict[str, Any]:
        """New credentials for the refreshable credentials (their ``refresh_using``).

        A refusal (account or run scope) is final for the run: it is raised again without
        asking STS. After a transient failure the current credentials are given back while
        they are valid (even in the mandatory window: they still work), else the failure is
        raised; STS is not asked again before ``retry_after`` seconds (``retry_unassumed``
        without valid credentials).
        """
        error = self._error
        now = self._accounts.clock()
        if error is not None:
            if not error.transient:
                raise error.with_traceback(None)
            last = self._last if now < self._expiry else None  # still valid, if any
            windows = self._accounts.settings.windows
            wait = windows.retry_after if last is not None else windows.retry_unassumed
            if now < self._failed_at + timedelta(seconds=wait):
                if last is not None:
                    return last
                raise error.with_traceback(None)
        try:
            data = await self._accounts.assume(self)
        except AssumeRoleError as exc:
            self._error, self._failed_at = exc, now
            if exc.transient and self._last is not None and now < self._expiry:
                # Still valid: used up to their expiry, whatever the window.
                self._accounts.refresh_failed(self, exc, self._expiry - now)
                return self._last
            raise
        self._error = None
        self._last = data
        self._expiry = datetime.fromisoformat(data["expiry_time"])
        return data

    @property
    def refusal(self) -> AssumeRoleError | None:
        """The account- or run-scope error this role failed with (final for the run)."""
        error = self._error
        return error if error is not None and not error.transient else None

    def __repr__(self) -> str:
        state = "failed" if self._error else "assumed" if self._last else "not assumed"
        expires = self._expiry.isoformat() if self._last else "-"
        return f"<Role {self.role_arn} {state} expires={expires} calls={self.assume_calls}>"


@dataclass(frozen=True, slots=True)
class AccessCheck:
    """``--check-access``: whether an account's credentials could be had, and if not, why."""

    account_id: str
    role_arn: str  # "" for the base credentials
    ok: bool
    reason: str = ""


class Accounts:
    """Credentials per account for one run: base session, assumed roles, or ``--local`` keys.

    ``base_session`` is the run's aioboto3 Session (standard chain). Roles are assumed on
    first use; :meth:`session_for` gives the session a lane's clients are made from.
    ``clock`` and ``sleep`` are the testing seams (credentials' time, STS retry backoff).
    Close with :meth:`aclose` (``Clients`` does it for the accounts it is given).
    """

    __slots__ = (
        "_base",
        "_lock",
        "_log",
        "_maker",
        "_own",
        "_own_lock",
        "_retrier",
        "_roles",
        "_sessions",
        "_stack",
        "_sts",
        "_sts_config",
        "clock",
        "local",
        "settings",
    )

    def __init__(
        self,
        base_session: Any,
        settings: AssumeRoleSettings | None = None,
        *,
        local: bool = False,
        clock: Clock = utc_now,
        sleep: Sleep = asyncio.sleep,
        retry: RetryPolicy = STS_RETRY,
        request_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        log: Any = None,
    ) -> None:
        self._base = base_session
        self._log = log if log is not None else default_logger()
        self.settings = settings if settings is not None else AssumeRoleSettings()
        self.local = local
        self.clock = clock
        self._retrier = Retrier(retry, sleep=sleep)
        self._sts_config: tuple[float, float] = (request_timeout, connect_timeout)
        self._roles: dict[str, _Role] = {}
        self._sessions: dict[str, Any] = {}
        self._sts: dict[str, Any] = {}  # region -> STS client (base credentials)
        self._own: str | None = None
        self._maker: SessionMaker | None = None  # the accounts' sessions, made on first need
        self._own_lock = asyncio.Lock()
        self._lock = asyncio.Lock()  # STS client creation
        self._stack = contextlib.AsyncExitStack()

    # -- which credentials a lane uses ---------------------------------------------------

    def credentials_key(self, account_id: str, role_arn: str) -> str:
        """Which credentials rows of ``account_id`` with ``role_arn`` use: ``""`` for the base
        credentials, else the role ARN (``--local``: the account's dummy access key)."""
        if self.local:
            return f"{LOCAL_ACCESS_KEY_PREFIX}{account_id}" if account_id else ""
        return role_arn

    def session_for(self, account_id: str, role_arn: str, region: str) -> Any:
        """The aioboto3 Session whose clients sign as ``account_id`` (through ``role_arn``).

        Made once per credentials (not per region) and without any call: the role is
        assumed when its first request is signed, through ``region``'s STS endpoint.
        """
        key = self.credentials_key(account_id, role_arn)
        if not key:
            return self._base
        session = self._sessions.get(key)
        if session is None:
            session = self._sessions[key] = self._new_session(key, account_id, region)
        return session

    async def ready(self, account_id: str, role_arn: str, region: str) -> None:
        """Have ``role_arn``'s credentials in hand (assumed, or refreshed if they must be):
        a lane's rate limiter starts pacing only once they are, so the rows of a lane whose
        role is being assumed do not leave together when it arrives. Raises
        :class:`AssumeRoleError` when they cannot be had. No-op for the base credentials."""
        key = self.credentials_key(account_id, role_arn)
        if not key or self.local:
            return
        self.session_for(account_id, role_arn, region)
        role = self._roles.get(key)
        if role is not None:
            await role.credentials.get_frozen_credentials()

    def _new_session(self, key: str, account_id: str, region: str) -> Any:
        if self._maker is None:
            from .sdk import SessionMaker  # noqa: PLC0415 - lazy SDK

            # The base profile's configuration (CA bundle, endpoints...), each account's
            # credentials.
            profile = self._base.profile_name
            known = profile in self._base.available_profiles
            self._maker = SessionMaker(profile if known else None, self._base.region_name)
        if self.local:
            return self._maker.with_keys(key, _LOCAL_SECRET)
        # A row with a role but no account_id cell: the account is the ARN's.
        account_id = account_id or account_of_role(key)
        role = self._roles[key] = _Role(self, account_id, key, region)
        return self._maker.with_provider(_FixedCredentialResolver(role.credentials))

    # -- STS -------------------------------------------------------------------------------

    async def _sts_client(self, region: str) -> Any:
        """The STS client of ``region`` (base credentials; regional endpoint, or
        ``AWS_ENDPOINT_URL_STS``), made once."""
        client = self._sts.get(region)
        if client is not None:
            return client
        from .sdk import client_config  # noqa: PLC0415 - see client.make_session

        async with self._lock:
            client = self._sts.get(region)
            if client is None:
                read_timeout, connect_timeout = self._sts_config
                config = client_config(
                    retries={"total_max_attempts": 1},  # retried here, with backoff
                    read_timeout=read_timeout,
                    connect_timeout=connect_timeout,
                    user_agent_extra=f"batch-updater/{__version__}",
                )
                client = self._sts[region] = await self._stack.enter_async_context(
                    self._base.client("sts", region_name=region, config=config)
                )
        return client

    async def sts_endpoint(self, region: str) -> str:
        """The URL STS is called at for ``region``."""
        client = await self._sts_client(region)
        return str(client.meta.endpoint_url)

    async def assume(self, role: _Role) -> dict[str, Any]:
        """One AssumeRole for ``role`` (throttling retried): credentials as botocore's
        refreshable credentials take them. Raises :class:`AssumeRoleError`."""
        settings = self.settings
        params: dict[str, Any] = {
            "RoleArn": role.role_arn,
            "RoleSessionName": settings.session_name,
            "DurationSeconds": settings.duration_seconds,
        }
        if settings.external_id:
            params["ExternalId"] = settings.external_id

        async def once(_attempt: int) -> Any:
            with _sts_errors(role.account_id, role.role_arn, role.region):
                sts = await self._sts_client(role.region)
                role.assume_calls += 1
                return await sts.assume_role(**params)

        response = await self._retrier.call(once, retry_on=_retry_sts, on_retry=self._retrying)
        credentials = response["Credentials"]
        register_secrets(
            credentials["AccessKeyId"], credentials["SecretAccessKey"], credentials["SessionToken"]
        )
        expiration = credentials["Expiration"]
        return {
            "access_key": credentials["AccessKeyId"],
            "secret_key": credentials["SecretAccessKey"],
            "token": credentials["SessionToken"],
            "expiry_time": expiration.isoformat()
            if isinstance(expiration, datetime)
            else str(expiration),
            "account_id": role.account_id,
        }

    def _retrying(self, event: RetryEvent) -> None:
        error = event.error
        if isinstance(error, AssumeRoleError):
            self._log.info(
                "sts_retry",
                account_id=error.account_id,
                role_arn=error.role_arn,
                error=f"{error.code}: {error.message}",
                attempt=event.attempt,
                sleep=round(event.sleep, 3),
            )

    def refresh_failed(self, role: _Role, error: AssumeRoleError, left: timedelta) -> None:
        """Log a failed refresh whose current credentials still serve."""
        self._log.warning(
            "role_refresh_failed",
            account_id=role.account_id,
            role_arn=role.role_arn,
            error=f"{error.code}: {error.message}",
            valid_seconds=int(left.total_seconds()),
            retry_seconds=self.settings.windows.retry_after,
        )

    async def own_account(self, region: str) -> str:
        """The base credentials' account (one ``GetCallerIdentity`` per run, through
        ``region``'s STS endpoint). Raises :class:`SetupError` when it cannot be had."""
        async with self._own_lock:
            if self._own is None:
                self._own = await self._caller_account(region)
        return self._own

    async def _caller_account(self, region: str) -> str:
        async def once(_attempt: int) -> Any:
            with _sts_errors("(own)", "(base credentials)", region):
                sts = await self._sts_client(region)
                return await sts.get_caller_identity()

        try:
            response = await self._retrier.call(once, retry_on=_retry_sts, on_retry=self._retrying)
        except AssumeRoleError as exc:
            raise SetupError(
                f"cannot tell the base credentials' account (GetCallerIdentity): "
                f"{exc.code}: {exc.message}"
            ) from None
        return str(response["Account"])

    def refused(self, key: str) -> AssumeRoleError | None:
        """The refusal that stopped credentials ``key`` (a role ARN), if any: final for the
        run, so callers fail its rows at once instead of signing (and logging) again."""
        role = self._roles.get(key)
        return role.refusal if role is not None else None

    async def check_access(self, targets: Iterable[tuple[str, str, str]]) -> list[AccessCheck]:
        """``--check-access``: get every account's credentials once; no update is sent.

        ``targets`` are (account id, role ARN or "", region) triples, e.g. one per lane; each
        role is assumed once. An account with no role passes when it is the base credentials'
        own account. Returns one :class:`AccessCheck` per (account, role), sorted.
        """
        unique: dict[tuple[str, str], str] = {}
        for account_id, role_arn, region in targets:
            unique.setdefault((account_id, role_arn), region)
        gate = asyncio.Semaphore(CHECK_CONCURRENCY)

        async def check(account_id: str, role_arn: str, region: str) -> AccessCheck:
            async with gate:
                if not self.credentials_key(account_id, role_arn):
                    return await self._check_base(account_id, region)
                self.session_for(account_id, role_arn, region)
                role = self._roles.get(role_arn)
                if role is not None:
                    try:
                        await role.credentials.get_frozen_credentials()
                    except AssumeRoleError as exc:
                        return AccessCheck(account_id, role_arn, ok=False, reason=str(exc))
                return AccessCheck(account_id, role_arn, ok=True)

        checks = await asyncio.gather(*(check(a, r, g) for (a, r), g in unique.items()))
        return sorted(checks, key=lambda c: (c.account_id, c.role_arn))

    async def signs_without_role(self, account_id: str, region: str) -> bool:
        """Whether rows of ``account_id`` need no role: ``--local`` (each account has its
        dummy key), no account, or the base credentials' own account (asked once, through
        ``region``'s STS; :class:`SetupError` when that fails)."""
        if self.local or not account_id:
            return True
        return account_id == await self.own_account(region)

    async def _check_base(self, account_id: str, region: str) -> AccessCheck:
        try:
            own = await self.signs_without_role(account_id, region)
        except SetupError as exc:
            return AccessCheck(account_id, "", ok=False, reason=str(exc))
        if not own:
            return AccessCheck(
                account_id,
                "",
                ok=False,
                reason=f"no role to assume for account {account_id}: add a role_arn column "
                "or --role-arn",
            )
        return AccessCheck(account_id, "", ok=True)

    # -- state -----------------------------------------------------------------------------

    def assume_role_calls(self) -> dict[str, int]:
        """Role ARN -> AssumeRole requests sent so far (retries included)."""
        return {arn: role.assume_calls for arn, role in self._roles.items()}

    async def aclose(self) -> None:
        """Close the STS clients."""
        self._sts.clear()
        await self._stack.aclose()

    def __repr__(self) -> str:
        mode = "local" if self.local else "sts"
        calls = sum(role.assume_calls for role in self._roles.values())
        return (
            f"<Accounts {mode} roles={len(self._roles)} sessions={len(self._sessions)} "
            f"assume_calls={calls} sts_regions={sorted(self._sts)} own={self._own or '?'}>"
        )
