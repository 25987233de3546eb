"""A small STS on 127.0.0.1 speaking STS's query protocol (form body in, XML out).

It answers ``AssumeRole`` and ``GetCallerIdentity`` itself, with credentials that expire
``DurationSeconds`` after its ``clock`` (the test's injected clock, so expiry and refresh
agree), or passes every request it does not refuse on to ``upstream`` (moto's server). It
can refuse a role (403 ``AccessDenied``, as AWS does for a trust policy that does not let the
caller in) or ``GetCallerIdentity`` (``identity_refused``), throttle the next requests (400
``Throttling``), fail them (500), and hold answers until a gate opens. ``calls`` records
every request with the access key and region it was signed with.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import secrets
import urllib.parse
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web

_CREDENTIAL = re.compile(r"Credential=([^/,\s]*)/[^/,\s]*/([^/,\s]*)/")
_NS = "https://sts.amazonaws.com/doc/2011-06-15/"
_FORWARDED = ("Authorization", "Content-Type", "X-Amz-Date", "X-Amz-Security-Token")


@dataclass(frozen=True, slots=True)
class StsCall:
    action: str
    params: dict[str, str]
    access_key: str  # the signer's
    region: str  # the signing region
    answer: int  # HTTP status


class FakeSts:
    """See the module docstring. ``async with FakeSts(...) as sts:`` then ``sts.url``."""

    def __init__(
        self,
        *,
        clock: Any = None,
        upstream: str | None = None,
        account_id: str = "123456789012",
    ) -> None:
        self.clock = clock or (lambda: datetime.now(UTC))
        self.upstream = upstream
        self.account_id = account_id
        self.calls: list[StsCall] = []
        self.refused: dict[str, tuple[int, str]] = {}  # role ARN -> (status, code)
        self.identity_refused: tuple[int, str] | None = None  # GetCallerIdentity's answer
        self.throttle_next = 0
        self.fail_next = 0
        self.gate: asyncio.Event | None = None  # set: answers wait for it
        self.seen = asyncio.Event()  # a request arrived (set before the gate)
        self.issued: list[dict[str, str]] = []  # credentials answered by this server itself
        self._serial = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self.url = ""

    def assume_calls(self, role_arn: str | None = None) -> list[StsCall]:
        return [
            c
            for c in self.calls
            if c.action == "AssumeRole" and role_arn in (None, c.params.get("RoleArn"))
        ]

    async def __aenter__(self) -> FakeSts:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        if self.upstream:
            self._client = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        params = dict(urllib.parse.parse_qsl(body.decode()))
        action = params.get("Action", "")
        signed = _CREDENTIAL.search(request.headers.get("Authorization", ""))
        access_key, region = signed.groups() if signed else ("", "")
        self.seen.set()
        if self.gate is not None:
            await self.gate.wait()
        status, text = await self._answer(action, params, body, request)
        self.calls.append(StsCall(action, params, access_key, region, status))
        return web.Response(status=status, text=text, content_type="text/xml")

    async def _answer(
        self, action: str, params: dict[str, str], body: bytes, request: web.Request
    ) -> tuple[int, str]:
        if self.throttle_next > 0:
            self.throttle_next -= 1
            return _error(400, "Throttling", "Rate exceeded")
        if self.fail_next > 0:
            self.fail_next -= 1
            return _error(500, "InternalFailure", "An internal error occurred")
        if action == "GetCallerIdentity" and self.identity_refused is not None:
            status, code = self.identity_refused
            return _error(status, code, "The security token included in the request is invalid.")
        role = params.get("RoleArn", "")
        if action == "AssumeRole" and role in self.refused:
            status, code = self.refused[role]
            return _error(
                status,
                code,
                f"User: arn:aws:iam::{self.account_id}:user/base is not authorized to "
                f"perform: sts:AssumeRole on resource: {role}",
            )
        if self._client is not None:
            headers = {k: request.headers[k] for k in _FORWARDED if k in request.headers}
            async with self._client.post(self.upstream or "", data=body, headers=headers) as up:
                return up.status, await up.text()
        if action == "AssumeRole":
            return 200, self._assumed(params)
        if action == "GetCallerIdentity":
            return 200, (
                f'<GetCallerIdentityResponse xmlns="{_NS}"><GetCallerIdentityResult>'
                f"<Arn>arn:aws:iam::{self.account_id}:user/base</Arn>"
                f"<UserId>AIDAFAKE</UserId><Account>{self.account_id}</Account>"
                f"</GetCallerIdentityResult>{_metadata()}</GetCallerIdentityResponse>"
            )
        return _error(400, "InvalidAction", f"Could not find operation {action}")

    def _assumed(self, params: dict[str, str]) -> str:
        serial = next(self._serial)
        expiry = self.clock() + timedelta(seconds=int(params.get("DurationSeconds", "3600")))
        creds = {
            "AccessKeyId": f"ASIAFAKE{serial:012d}",
            "SecretAccessKey": secrets.token_urlsafe(30),
            "SessionToken": f"FwoFAKE{secrets.token_urlsafe(60)}",
        }
        self.issued.append(creds)
        role = params["RoleArn"]
        account = role.split(":")[4]
        name = params.get("RoleSessionName", "")
        return (
            f'<AssumeRoleResponse xmlns="{_NS}"><AssumeRoleResult><Credentials>'
            f"<AccessKeyId>{creds['AccessKeyId']}</AccessKeyId>"
            f"<SecretAccessKey>{creds['SecretAccessKey']}</SecretAccessKey>"
            f"<SessionToken>{creds['SessionToken']}</SessionToken>"
            f"<Expiration>{expiry.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}</Expiration>"
            f"</Credentials><AssumedRoleUser>"
            f"<Arn>arn:aws:sts::{account}:assumed-role/{role.split('/')[-1]}/{name}</Arn>"
            f"<AssumedRoleId>AROAFAKE:{name}</AssumedRoleId></AssumedRoleUser>"
            f"</AssumeRoleResult>{_metadata()}</AssumeRoleResponse>"
        )


def _metadata() -> str:
    return f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"


def _error(status: int, code: str, message: str) -> tuple[int, str]:
    kind = "Sender" if status < 500 else "Receiver"
    return status, (
        f'<ErrorResponse xmlns="{_NS}"><Error><Type>{kind}</Type><Code>{code}</Code>'
        f"<Message>{message}</Message></Error><RequestId>{uuid.uuid4()}</RequestId>"
        "</ErrorResponse>"
    )
