"""Making the SDK's objects cheaply, and pacing requests where they reach the wire.

Nothing here calls AWS or translates its errors: ``client.py`` (AmplifyBackend) and
``accounts.py`` (STS) stay the only boundaries; they make their clients and sessions here.

A run with many accounts has a client per account and region, and each one used to cost
what the first one does. Measured with 100 accounts (benchmarks scenario 12), per account:

- TLS: aiobotocore gives every client's HTTP session a TLS context of its own and loads the
  CA bundle into it (about 30 ms of CPU and 0.7 MB each, on the first request's path).
  :func:`client_config` makes clients whose HTTP sessions share one context per CA bundle.
- Sessions: a role's botocore session registered botocore's ~120 builtin event handlers
  again, each inspected for its signature (about 10 ms). :class:`SessionMaker` copies them
  from a template instead, and shares one data loader (service models and endpoint rules
  read once, not once per account).

The wire: on Python 3.11 aiohttp writes a request's bytes from a task of its own, a turn of
a busy event loop after botocore's last event (``before-send``): 0.75 ms later at the median
and several ms at the tail, measured with four lanes on two cores, so a lane paced at
``before-send`` reached the service up to 5 ms closer than ``1/rate``. The HTTP session of
:func:`client_config`'s paced clients awaits :data:`write_wait` just before it writes instead.

Imported lazily, like every SDK import: a dry run never loads the SDK.
"""

from __future__ import annotations

import copy
import functools
import ssl
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, cast

__all__ = ["SessionMaker", "client_config", "paces_at_write", "tls_context", "write_wait"]

#: What the request being made waits for just before its bytes are written, if anything:
#: set by the caller around one SDK call (see ``client.Clients.update``); the HTTP session of
#: clients made with ``client_config(paced=True)`` awaits it at each write of a request body
#: (one per request here), whatever the request: the waiter decides whether it is its own.
WriteWait = Callable[[], Awaitable[None]]
write_wait: ContextVar[WriteWait | None] = ContextVar("write_wait", default=None)


async def _before_write(_session: object, _context: object, _params: object) -> None:
    """aiohttp's ``on_request_chunk_sent``: it is awaited before the chunk is written."""
    if (wait := write_wait.get()) is not None:
        await wait()


@functools.cache
def tls_context(ca_bundle: str) -> ssl.SSLContext:
    """The TLS context of every client verifying against ``ca_bundle``, made once: botocore's
    own settings (``create_urllib3_context``) with the bundle loaded, as aiobotocore does for
    each client. Contexts are safe to share between connections; nothing changes it after."""
    from botocore.httpsession import create_urllib3_context  # noqa: PLC0415 - lazy SDK

    context: ssl.SSLContext = create_urllib3_context()
    context.load_verify_locations(ca_bundle, None, None)
    return context


@functools.cache
def _http_session_class() -> type[Any]:
    """aiobotocore's aiohttp session, taking its TLS context from :func:`tls_context`."""
    import aiohttp  # noqa: PLC0415 - lazy SDK
    from aiobotocore.httpsession import AIOHTTPSession  # noqa: PLC0415
    from botocore.httpsession import get_cert_path  # noqa: PLC0415

    class SharedTlsSession(AIOHTTPSession):
        """One TLS context per CA bundle for every client. A proxy, a client certificate or
        ``verify=False`` keep aiobotocore's own connector (they change the context). Its
        connector is aiobotocore's otherwise: same pool limit and connector arguments."""

        def _create_connector(self, proxy_url: str | None) -> Any:
            # The state aiobotocore's own _create_connector reads (not in its type stubs).
            own: Any = self
            bundle = get_cert_path(own._verify) if own._verify else None
            if proxy_url or not bundle or own._cert_file:
                return cast("Any", super())._create_connector(proxy_url)
            return aiohttp.TCPConnector(
                limit=own._max_pool_connections, ssl=tls_context(bundle), **own._connector_args
            )

    return SharedTlsSession


@functools.cache
def _paced_session_class() -> type[Any]:
    """:func:`_http_session_class` with an aiohttp trace that awaits :data:`write_wait`
    before each body write. Only for clients whose requests are paced: a trace costs about
    0.1 ms of CPU per request (measured against the emulator), 4% of what the SDK spends on
    one, which a run at ``--rate 0`` would pay for nothing."""
    import aiohttp  # noqa: PLC0415 - lazy SDK

    class PacedSession(_http_session_class()):  # type: ignore[misc]  # made at run time
        """Requests leave when their lane's pacing says, just before their bytes are written."""

        async def _get_session(self, proxy_url: str | None) -> Any:
            # aiobotocore's own, with a trace that awaits write_wait before each body write.
            own: Any = self
            if not (session := own._sessions.get(proxy_url)):
                trace = aiohttp.TraceConfig()
                trace.on_request_chunk_sent.append(_before_write)
                session = await own._exit_stack.enter_async_context(
                    aiohttp.ClientSession(
                        connector=self._create_connector(proxy_url),
                        timeout=own._timeout,
                        skip_auto_headers={"CONTENT-TYPE"},
                        auto_decompress=False,
                        trace_configs=[trace],
                    )
                )
                own._sessions[proxy_url] = session
            return session

    return PacedSession


def paces_at_write(config: Any) -> bool:
    """Whether clients made with ``config`` await :data:`write_wait` before they write."""
    return getattr(config, "http_session_cls", None) is _paced_session_class()


def client_config(*, paced: bool = False, **options: Any) -> Any:
    """A botocore ``Config`` of ``options`` whose clients share their TLS context (see
    :func:`tls_context`) and, if ``paced``, await :data:`write_wait` before they write; a
    plain ``Config`` on an aiobotocore without ``http_session_cls``."""
    from aiobotocore.config import AioConfig  # noqa: PLC0415 - lazy SDK

    session_class = _paced_session_class() if paced else _http_session_class()
    try:
        return AioConfig(http_session_cls=session_class, **options)
    except TypeError:  # an aiobotocore older than http_session_cls: each client its own TLS
        from botocore.config import Config  # noqa: PLC0415

        return Config(**options)


class SessionMaker:
    """Makes the aioboto3 Sessions of accounts: each with its own credentials, all sharing
    one data loader and copying botocore's builtin event handlers from one template.

    ``profile``: the base session's profile (its configuration: CA bundle, endpoints...), or
    None for the default configuration.
    """

    __slots__ = ("_loader", "_profile", "_region", "_template", "sessions")

    def __init__(self, profile: str | None, region: str | None) -> None:
        self._profile = profile
        self._region = region
        self._template: Any = None  # the builtin handlers, registered once
        self._loader: Any = None  # the first session's data loader, shared
        self.sessions = 0  # sessions made

    def _core(self) -> Any:
        from aiobotocore.hooks import AioHierarchicalEmitter  # noqa: PLC0415 - lazy SDK
        from aiobotocore.session import AioSession  # noqa: PLC0415

        if self._template is None:
            self._template = AioHierarchicalEmitter()
            AioSession(event_hooks=self._template)  # registers the builtin handlers into it
        core = AioSession(
            event_hooks=copy.copy(self._template),
            include_builtin_handlers=False,
            profile=self._profile,
        )
        # One loader for every session: it caches the service models and endpoint rules it
        # has read, which each session would otherwise read and keep again (about 1 s and
        # 8 MB per account).
        if self._loader is None:
            self._loader = core.get_component("data_loader")
        else:
            core.register_component("data_loader", self._loader)
        self.sessions += 1
        return core

    def with_provider(self, provider: Any) -> Any:
        """A Session whose credentials come from ``provider`` (a ``credential_provider``
        component: ``async load_credentials()``), e.g. an assumed role's refreshing ones."""
        import aioboto3  # noqa: PLC0415 - lazy SDK

        core = self._core()
        core.register_component("credential_provider", provider)
        return aioboto3.Session(botocore_session=core, region_name=self._region)

    def with_keys(self, access_key: str, secret_key: str) -> Any:
        """A Session signing with fixed keys (``--local``'s dummy ones per account)."""
        import aioboto3  # noqa: PLC0415 - lazy SDK

        core = self._core()
        core.set_credentials(access_key, secret_key)
        return aioboto3.Session(botocore_session=core, region_name=self._region)

    def __repr__(self) -> str:
        return f"<SessionMaker profile={self._profile!r} sessions={self.sessions}>"
