"""The AmplifyBackend boundary: the only module that calls it through aioboto3/botocore,
and translates their errors into ours (STS, for the accounts' roles, is ``accounts.py``'s)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from botocore.parsers import ResponseParserError

from ._version import __version__
from .accounts import Accounts, AssumeRoleError, FailureScope, account_of_role
from .control import FATAL_CODES
from .errors import SetupError
from .logs import register_secrets
from .rows import Row
from .sdk import client_config, paces_at_write, write_wait

if TYPE_CHECKING:
    from types_aiobotocore_amplifybackend import AmplifyBackendClient
    from types_aiobotocore_amplifybackend.type_defs import LoginAuthConfigReqObjTypeDef

__all__ = ["CallError", "CallResult", "Clients", "LaneKey", "make_session"]

THROTTLE_CODES: Final = frozenset({"TooManyRequestsException", "ThrottlingException"})
# Retried: throttling, gateway timeouts and other 5xx. The update is idempotent.
RETRYABLE_STATUS: Final = frozenset({429, 500, 502, 503, 504})
RETRYABLE_CODES: Final = THROTTLE_CODES | {"GatewayTimeoutException", "ServiceUnavailable"}
#: A client's key: (credentials, region); credentials "" are the base ones, else the role
#: ARN (see ``Accounts.credentials_key``).
LaneKey = tuple[str, str]


#: botocore's last event before a request goes on the wire (after it is built and signed).
_BEFORE_SEND: Final = "before-send.amplifybackend.UpdateBackendConfig"


class _Departure:
    """One call's wait for its lane's pacing (see :meth:`Clients.update`), done once, as
    close to the wire as the HTTP session allows: armed at ``before-send`` (the request is
    built and signed; an STS call its signing made has gone), waited for by the session just
    before it writes the bytes (``sdk.write_wait``), or at ``before-send`` itself by a
    session that cannot (see ``sdk.paces_at_write``)."""

    __slots__ = ("_armed", "_wait")

    def __init__(self, wait: Callable[[], Awaitable[None]]) -> None:
        self._wait: Callable[[], Awaitable[None]] | None = wait
        self._armed = False

    def arm(self) -> None:
        self._armed = True

    async def __call__(self) -> None:
        if self._armed and (wait := self._wait) is not None:
            self._wait = None  # once: a later write of this call (none here) does not wait
            await wait()

    def __repr__(self) -> str:
        state = "done" if self._wait is None else "armed" if self._armed else "waiting to arm"
        return f"<_Departure {state}>"


async def _arm(**_: Any) -> None:
    """``before-send``: the call's request leaves next, its departure waits at the write."""
    if isinstance(departure := write_wait.get(), _Departure):
        departure.arm()


async def _leave_now(**_: Any) -> None:
    """``before-send`` for a session that does not wait at the write: wait here."""
    if isinstance(departure := write_wait.get(), _Departure):
        departure.arm()
        await departure()


@dataclass(frozen=True, slots=True)
class CallResult:
    """A successful ``UpdateBackendConfig`` call."""

    request_id: str
    backend_manager_app_id: str
    http_status: int


class CallError(Exception):
    """A failed call, translated from botocore at this module's boundary."""

    __slots__ = (
        "account_fatal",
        "account_id",
        "answered",
        "code",
        "http_status",
        "maybe_applied",
        "message",
        "request_id",
        "retryable",
        "transport",
    )

    # Transport failures before the request left this machine: it cannot have been applied.
    NOT_SENT: Final = frozenset({"EndpointConnectionError", "ConnectTimeoutError"})

    def __init__(
        self,
        code: str,
        message: str,
        *,
        http_status: int | None = None,
        request_id: str = "",
        retryable: bool = False,
        transport: bool = False,
        unreadable: bool = False,
        account_fatal: bool = False,
        account_id: str = "",
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status
        self.request_id = request_id
        self.retryable = retryable
        self.transport = transport
        #: The request was sent but its outcome is unknown: no answer came back (e.g. a read
        #: timeout), an answer that could not be read (``unreadable``), or a gateway's answer
        #: for a backend that may have gone on (502, 504).
        self.maybe_applied = (
            (transport and code not in self.NOT_SENT) or unreadable or http_status in (502, 504)
        )
        #: The endpoint answered (any HTTP status, or a body that could not be read): it is
        #: reachable. False for transport failures and for errors raised before sending.
        self.answered = http_status is not None or unreadable
        #: Every following call of this account would fail too (its role cannot be assumed,
        #: or its credentials are refused): stop this account only. Never set for the base
        #: credentials, whose fatal errors stop the run (``control.FATAL_CODES``).
        self.account_fatal = account_fatal
        self.account_id = account_id

    @property
    def throttled(self) -> bool:
        """True for a 429 / throttling answer."""
        return self.code in THROTTLE_CODES or self.http_status == 429


def _from_client_error(exc: ClientError) -> CallError:
    response: Any = exc.response
    error = response.get("Error", {})
    meta = response.get("ResponseMetadata", {})
    code = str(error.get("Code") or "Unknown")
    status = meta.get("HTTPStatusCode")
    message = str(error.get("Message") or exc)
    return CallError(
        code,
        message,
        http_status=status,
        request_id=str(meta.get("RequestId") or ""),
        retryable=code in RETRYABLE_CODES or status in RETRYABLE_STATUS,
    )


@contextlib.contextmanager
def map_botocore_errors(account_id: str = "", *, assumed: bool = False) -> Iterator[None]:
    """Translate botocore exceptions raised inside the block into :class:`CallError`.

    ``assumed``: the call signs with an account's own credentials (an assumed role, or
    ``--local`` dummy keys), so a fatal credentials error is that account's, not the run's.
    """
    try:
        yield
    except ClientError as exc:
        error = _from_client_error(exc)
        if assumed and error.code in FATAL_CODES:
            error.account_fatal, error.account_id = True, account_id
        raise error from exc
    except AssumeRoleError as exc:
        # Raised while signing: nothing was sent. A refusal is the account's (or, for the
        # base credentials, the run's: its code is one of control.FATAL_CODES).
        raise CallError(
            exc.code,
            str(exc),
            retryable=exc.transient,
            account_fatal=exc.scope is FailureScope.ACCOUNT,
            account_id=exc.account_id,
        ) from exc
    except ResponseParserError as exc:
        # An answer came back but could not be read: it may say the update was applied.
        raise CallError(type(exc).__name__, str(exc), retryable=True, unreadable=True) from exc
    except (HTTPClientError, BotoConnectionError) as exc:
        # Connect/read timeouts, resets, closed connections: nothing (or no complete answer)
        # came back, so the call is retried; the update is idempotent.
        raise CallError(type(exc).__name__, str(exc), retryable=True, transport=True) from exc
    except (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError) as exc:
        raise CallError(type(exc).__name__, str(exc)) from exc
    except BotoCoreError as exc:
        raise CallError(type(exc).__name__, str(exc)) from exc


def make_session(
    profile: str | None = None, region: str | None = None, *, local: bool = False
) -> Any:
    """An aioboto3 Session from the standard credential chain, or dummy credentials.

    The region is found the same way in both cases (``region``, else the environment or
    the profile): ``local`` does not make up one, so a row without a region is the same
    setup error with the emulator as without it.
    """
    # Imported here: aioboto3 and aiohttp cost ~25 MB and 0.2 s, which a dry run skips.
    import aioboto3  # noqa: PLC0415

    try:
        if local:
            return aioboto3.Session(
                aws_access_key_id="local",
                aws_secret_access_key="local-secret",
                region_name=region,
            )
        return aioboto3.Session(profile_name=profile, region_name=region)
    except ProfileNotFound as exc:
        raise SetupError(f"AWS profile not found: {exc.kwargs.get('profile', profile)}") from None


def find_region(profile: str | None = None) -> str | None:
    """The region the session of :func:`make_session` would have (the environment's
    ``AWS_DEFAULT_REGION``, else the profile's), found by botocore alone: aioboto3 and
    aiohttp (~15 MB more) are then left to a run that sends, not imported by a dry run
    of rows without a region column."""
    import botocore.session  # noqa: PLC0415 - only for rows without a region

    session = botocore.session.Session(profile=profile)
    try:
        session.get_scoped_config()  # a profile that does not exist, as aioboto3 finds
        region = session.get_config_variable("region")
    except ProfileNotFound as exc:
        raise SetupError(f"AWS profile not found: {exc.kwargs.get('profile', profile)}") from None
    return str(region) if region else None


class Clients:
    """One ``amplifybackend`` client per (credentials, region), created once and shared by
    all workers.

    Rows without a role (``role_arn`` "") use the base session's client of their region, as
    before accounts existed; a row with a role uses its role's client of its region, made on
    its first call, signing with the role's credentials (see :class:`Accounts`, which the
    clients close with themselves). Use as an async context manager; clients are closed on
    exit.
    """

    __slots__ = ("_accounts", "_clients", "_config", "_endpoint_url", "_lock", "_session", "_stack")

    def __init__(
        self,
        session: Any,
        *,
        endpoint_url: str | None = None,
        max_pool_connections: int = 16,
        request_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        accounts: Accounts | None = None,
        paced: bool = True,
    ) -> None:
        self._session = session
        self._accounts = (
            accounts
            if accounts is not None
            else Accounts(session, request_timeout=request_timeout, connect_timeout=connect_timeout)
        )
        self._endpoint_url = endpoint_url
        # Clients share one TLS context (see sdk.tls_context): made once, not per account.
        # ``paced``: requests are paced where they are written (see sdk.paces_at_write);
        # an unlimited run (--rate 0) does without the trace that costs.
        self._config = client_config(
            paced=paced,
            # tenacity owns every retry; {"max_attempts": 1} would still retry once.
            retries={"total_max_attempts": 1},
            max_pool_connections=max(10, max_pool_connections),
            read_timeout=request_timeout,
            connect_timeout=connect_timeout,
            user_agent_extra=f"batch-updater/{__version__}",
        )
        self._clients: dict[LaneKey, AmplifyBackendClient] = {}
        self._lock = asyncio.Lock()  # clients made on first use: one per key
        self._stack = contextlib.AsyncExitStack()

    @property
    def accounts(self) -> Accounts:
        """The credentials per account these clients sign with."""
        return self._accounts

    async def check_credentials(self) -> None:
        """Raise :class:`SetupError` when the credential chain yields no credentials."""
        try:
            credentials = await self._session.get_credentials()
            if credentials is not None:
                frozen = await credentials.get_frozen_credentials()
                register_secrets(frozen.access_key, frozen.secret_key, frozen.token)
        except (BotoCoreError, OSError) as exc:
            raise SetupError(f"cannot load AWS credentials: {exc}") from None
        if credentials is None:
            raise SetupError(
                "no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY, run 'aws sso login', or use --local for the emulator"
            )

    async def open(self, regions: Iterable[str]) -> None:
        """Create the base credentials' clients for ``regions``."""
        for region in sorted(regions):
            if ("", region) not in self._clients:
                await self._open(self._session, ("", region))

    async def _open(self, session: Any, key: LaneKey) -> AmplifyBackendClient:
        region = key[1]
        try:
            client: AmplifyBackendClient = await self._stack.enter_async_context(
                session.client(
                    "amplifybackend",
                    region_name=region,
                    endpoint_url=self._endpoint_url,
                    config=self._config,
                )
            )
        except (NoRegionError, BotoCoreError, ValueError) as exc:
            raise SetupError(
                f"cannot create the AmplifyBackend client for {region}: {exc}"
            ) from None
        # aiobotocore awaits a coroutine handler; the stubs know botocore's plain ones.
        handler = _arm if paces_at_write(self._config) else _leave_now
        client.meta.events.register(_BEFORE_SEND, cast("Callable[..., None]", handler))
        self._clients[key] = client
        return client

    async def _lane_client(self, key: LaneKey, row: Row) -> AmplifyBackendClient:
        """The client of ``key`` (made on first use; making it sends nothing: a role is
        assumed when the first call is signed)."""
        async with self._lock:
            client = self._clients.get(key)
            if client is None:
                session = self._accounts.session_for(row.account_id, row.role_arn, row.region)
                client = await self._open(session, key)
        return client

    def lane_key(self, row: Row) -> LaneKey:
        """The key of ``row``'s client: (credentials, region)."""
        return (self._accounts.credentials_key(row.account_id, row.role_arn), row.region)

    async def ready(self, row: Row) -> None:
        """Have ``row``'s lane ready to send: its client made and its credentials in hand
        (see :meth:`Accounts.ready`), so the lane's rate limiter starts pacing only then
        (its first rows would otherwise leave together once both are there). Raises
        :class:`CallError` when its role cannot be assumed."""
        key = self.lane_key(row)
        if key not in self._clients:
            await self._lane_client(key, row)
        if not key[0] or self._accounts.local:
            return
        with map_botocore_errors(row.account_id or account_of_role(row.role_arn), assumed=True):
            if refusal := self._accounts.refused(key[0]):
                raise refusal.with_traceback(None)
            await self._accounts.ready(row.account_id, row.role_arn, row.region)

    async def update(
        self, row: Row, departure: Callable[[], Awaitable[None]] | None = None
    ) -> CallResult:
        """Send ``UpdateBackendConfig`` for ``row``; raises :class:`CallError` on failure.

        ``departure`` is awaited once the request is built and signed, just before it goes
        on the wire (the lane's pacing where the service sees it: see
        :meth:`AdaptiveRate.leave`)."""
        key = self.lane_key(row)
        client = self._clients.get(key) or await self._lane_client(key, row)
        assumed = bool(key[0])
        account_id = row.account_id or (account_of_role(row.role_arn) if assumed else "")
        with map_botocore_errors(account_id, assumed=assumed):
            if assumed and (refusal := self._accounts.refused(key[0])):
                raise refusal.with_traceback(None)  # final: not signed (nor logged) again
            token = write_wait.set(_Departure(departure) if departure is not None else None)
            try:
                response = await client.update_backend_config(
                    AppId=row.app_id,
                    LoginAuthConfig=cast("LoginAuthConfigReqObjTypeDef", row.settings.to_api()),
                )
            finally:
                write_wait.reset(token)
        meta = response.get("ResponseMetadata", {})
        request_id = str(meta.get("RequestId") or "")
        status = int(meta.get("HTTPStatusCode") or 200)
        if error := response.get("Error"):
            raise CallError("ResponseError", error, http_status=status, request_id=request_id)
        if "AppId" not in response:
            # botocore does not raise on a 200 whose JSON it cannot parse: it returns only
            # the metadata. Not a success (nothing says the update was applied), and not a
            # refusal either (a 200 may well have applied it): retried, outcome unknown.
            raise CallError(
                "ResponseParserError",
                "the service answered 200 with a body that could not be read",
                http_status=status,
                request_id=request_id,
                retryable=True,
                unreadable=True,
            )
        return CallResult(request_id, response.get("BackendManagerAppId") or "", status)

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every client, and the accounts' STS clients."""
        self._clients.clear()
        try:
            await self._stack.aclose()
        finally:
            await self._accounts.aclose()

    def __repr__(self) -> str:
        regions = sorted({region for _, region in self._clients})
        roles = len({key for key, _ in self._clients if key})
        return (
            f"<Clients regions={regions} roles={roles} clients={len(self._clients)} "
            f"endpoint={self._endpoint_url!r}>"
        )
