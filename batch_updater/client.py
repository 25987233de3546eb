"""The only module that talks to aioboto3/botocore; it translates their errors into ours."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
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
from .errors import SetupError
from .logs import register_secrets
from .rows import Row

if TYPE_CHECKING:
    from types_aiobotocore_amplifybackend import AmplifyBackendClient
    from types_aiobotocore_amplifybackend.type_defs import LoginAuthConfigReqObjTypeDef

__all__ = ["CallError", "CallResult", "Clients", "make_session"]

THROTTLE_CODES: Final = frozenset({"TooManyRequestsException", "ThrottlingException"})
# Retried: throttling, gateway timeouts and other 5xx. The update is idempotent.
RETRYABLE_STATUS: Final = frozenset({429, 500, 502, 503, 504})
RETRYABLE_CODES: Final = THROTTLE_CODES | {"GatewayTimeoutException", "ServiceUnavailable"}


@dataclass(frozen=True, slots=True)
class CallResult:
    """A successful ``UpdateBackendConfig`` call."""

    request_id: str
    backend_manager_app_id: str
    http_status: int


class CallError(Exception):
    """A failed call, translated from botocore at this module's boundary."""

    __slots__ = (
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
def map_botocore_errors() -> Iterator[None]:
    """Translate botocore exceptions raised inside the block into :class:`CallError`."""
    try:
        yield
    except ClientError as exc:
        raise _from_client_error(exc) from exc
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


class Clients:
    """One ``amplifybackend`` client per region, created once and shared by all workers.

    Use as an async context manager; clients are closed on exit.
    """

    __slots__ = ("_clients", "_config", "_endpoint_url", "_session", "_stack")

    def __init__(
        self,
        session: Any,
        *,
        endpoint_url: str | None = None,
        max_pool_connections: int = 16,
        request_timeout: float = 30.0,
        connect_timeout: float = 10.0,
    ) -> None:
        from botocore.config import Config  # noqa: PLC0415 - see make_session

        self._session = session
        self._endpoint_url = endpoint_url
        self._config = Config(
            # tenacity owns every retry; {"max_attempts": 1} would still retry once.
            retries={"total_max_attempts": 1},
            max_pool_connections=max(10, max_pool_connections),
            read_timeout=request_timeout,
            connect_timeout=connect_timeout,
            user_agent_extra=f"batch-updater/{__version__}",
        )
        self._clients: dict[str, AmplifyBackendClient] = {}
        self._stack = contextlib.AsyncExitStack()

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
        """Create the clients for ``regions``."""
        for region in sorted(regions):
            if region in self._clients:
                continue
            try:
                client = await self._stack.enter_async_context(
                    self._session.client(
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
            self._clients[region] = client

    async def update(self, row: Row) -> CallResult:
        """Send ``UpdateBackendConfig`` for ``row``; raises :class:`CallError` on failure."""
        client = self._clients[row.region]
        with map_botocore_errors():
            response = await client.update_backend_config(
                AppId=row.app_id,
                LoginAuthConfig=cast("LoginAuthConfigReqObjTypeDef", row.settings.to_api()),
            )
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
        """Close every client."""
        self._clients.clear()
        await self._stack.aclose()

    def __repr__(self) -> str:
        return f"<Clients regions={sorted(self._clients)} endpoint={self._endpoint_url!r}>"
