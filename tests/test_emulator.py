"""The AmplifyBackend emulator, driven by a real aiobotocore client over HTTP on 127.0.0.1.

Tests about time (rate limit, storms, latency, slow answers, keep-alive) run on virtual time
(:func:`tests.virtual_time.run`), where they can assert exact loop times.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aioboto3
import aiohttp
import botocore
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionClosedError, ReadTimeoutError

from batch_updater.cli import main
from batch_updater.emulator import (
    Emulator,
    EmulatorConfig,
    EmulatorServer,
    FaultPlan,
    RequestRecord,
)
from batch_updater.errors import SetupError

from . import virtual_time

if TYPE_CHECKING:
    from types_aiobotocore_amplifybackend import AmplifyBackendClient
    from types_aiobotocore_amplifybackend.type_defs import LoginAuthConfigReqObjTypeDef

SESSION = aioboto3.Session(
    aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
)
ONE_ATTEMPT = Config(retries={"total_max_attempts": 1})
SIGNER = ("test", "us-east-1")  # SESSION's access key id and region, as the emulator logs them
# Only the prefix is checked; the signature is not verified.
SIGNED = {
    "Authorization": "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/amplifybackend/"
    "aws4_request, SignedHeaders=host, Signature=00",
    "Content-Type": "application/json",
}
POOLS: LoginAuthConfigReqObjTypeDef = {
    "AwsUserPoolsId": "us-east-1_abc",
    "AwsCognitoRegion": "us-east-1",
}


@pytest.fixture
async def server() -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer(EmulatorConfig(seed=7)) as srv:
        yield srv


@pytest.fixture
def emulator(server: EmulatorServer) -> Emulator:
    return server.emulator


@pytest.fixture
async def client(server: EmulatorServer) -> AsyncIterator[AmplifyBackendClient]:
    async with SESSION.client(
        "amplifybackend", endpoint_url=server.url, config=ONE_ATTEMPT
    ) as amplify:
        yield amplify


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # One connection, so sequential requests share a keep-alive connection.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        yield session


async def post(
    http: aiohttp.ClientSession,
    url: str,
    body: bytes,
    *,
    app_id: str = "d1abc",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    async with http.post(
        f"{url}/backend/{app_id}/config/update",
        data=body,
        headers=SIGNED if headers is None else headers,
    ) as resp:
        return resp.status, dict(resp.headers), json.loads(await resp.read())


@contextlib.asynccontextmanager
async def serving(
    config: EmulatorConfig | None = None, **client_config: Any
) -> AsyncIterator[tuple[EmulatorServer, AmplifyBackendClient]]:
    """An emulator and a one-attempt client for it, for scenarios on virtual time."""
    async with (
        EmulatorServer(config or EmulatorConfig(seed=7)) as server,
        amplify(server, **client_config) as client,
    ):
        yield server, client


async def client_error(call: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as info:
        await call
    response: dict[str, Any] = info.value.response  # type: ignore[assignment]
    return response


# -- success -------------------------------------------------------------------------------


async def test_update_merges_settings_and_answers_them(
    client: AmplifyBackendClient, emulator: Emulator
) -> None:
    first = await client.update_backend_config(AppId="d1abc", LoginAuthConfig=POOLS)
    assert first["AppId"] == "d1abc"
    assert first["BackendManagerAppId"] == "d1abc"
    assert first["LoginAuthConfig"] == POOLS
    assert "Error" not in first
    meta = first["ResponseMetadata"]
    assert meta["HTTPStatusCode"] == 200
    assert uuid.UUID(meta["RequestId"]).version == 4

    second = await client.update_backend_config(
        AppId="d1abc",
        LoginAuthConfig={"AwsUserPoolsId": "us-east-1_new", "AwsUserPoolsWebClientId": "abc123"},
    )
    assert second["LoginAuthConfig"] == {
        "AwsUserPoolsId": "us-east-1_new",
        "AwsCognitoRegion": "us-east-1",
        "AwsUserPoolsWebClientId": "abc123",
    }
    assert second["ResponseMetadata"]["RequestId"] != meta["RequestId"]
    assert emulator.apps == {
        "d1abc": {
            "aws_user_pools_id": "us-east-1_new",
            "aws_cognito_region": "us-east-1",
            "aws_user_pools_web_client_id": "abc123",
        }
    }


async def test_apps_are_independent(client: AmplifyBackendClient, emulator: Emulator) -> None:
    await client.update_backend_config(
        AppId="d1", LoginAuthConfig={"AwsCognitoRegion": "eu-west-1"}
    )
    await client.update_backend_config(
        AppId="d2", LoginAuthConfig={"AwsCognitoIdentityPoolId": "eu-west-1:0f1e"}
    )
    assert emulator.apps == {
        "d1": {"aws_cognito_region": "eu-west-1"},
        "d2": {"aws_cognito_identity_pool_id": "eu-west-1:0f1e"},
    }


# -- errors as botocore parses them --------------------------------------------------------

ERRORS = [
    ("429", "TooManyRequestsException", 429, "Rate exceeded", {"LimitType": "requests"}),
    ("504", "GatewayTimeoutException", 504, "Gateway Timeout", {}),
    ("404", "NotFoundException", 404, "App d1abc not found", {"ResourceType": "app"}),
    ("400", "BadRequestException", 400, "scripted bad request", {}),
]


@pytest.mark.parametrize("case", ERRORS, ids=[case[1] for case in ERRORS])
async def test_errors_are_parsed_by_botocore(
    client: AmplifyBackendClient,
    emulator: Emulator,
    case: tuple[str, str, int, str, dict[str, str]],
) -> None:
    outcome, code, status, message, extra = case
    emulator.script("d1abc", [outcome])
    exc_class = getattr(client.exceptions, code)
    with pytest.raises(exc_class) as info:
        await client.update_backend_config(AppId="d1abc", LoginAuthConfig=POOLS)
    response: Any = info.value.response
    assert response["Error"] == {"Code": code, "Message": message}
    meta = response["ResponseMetadata"]
    assert meta["HTTPStatusCode"] == status
    assert uuid.UUID(meta["RequestId"])
    assert meta["HTTPHeaders"]["x-amzn-errortype"] == code
    # botocore copies the modeled error members to the top level, next to "Error".
    assert response["Message"] == message
    for key, value in extra.items():
        assert response[key] == value
    assert emulator.apps == {}
    assert emulator.requests[-1].status == status
    assert emulator.requests[-1].error_type == code


async def test_unsigned_request_is_refused_with_403(
    server: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    body = json.dumps({"loginAuthConfig": {"aws_user_pools_id": "x_1"}}).encode()
    for headers in ({}, {"Authorization": "Bearer abc"}):
        status, resp_headers, answer = await post(http, server.url, body, headers=headers)
        assert status == 403
        assert resp_headers["x-amzn-ErrorType"] == "UnrecognizedClientException"
        assert "Signature Version 4" in answer["message"]
        assert uuid.UUID(resp_headers["x-amzn-RequestId"])
    assert server.emulator.apps == {}
    assert server.emulator.status_counts() == {403: 2}


async def test_unsigned_botocore_client_gets_unrecognized_client(server: EmulatorServer) -> None:
    config = ONE_ATTEMPT.merge(Config(signature_version=botocore.UNSIGNED))
    async with SESSION.client("amplifybackend", endpoint_url=server.url, config=config) as c:
        response = await client_error(c.update_backend_config(AppId="d1", LoginAuthConfig=POOLS))
    assert response["Error"]["Code"] == "UnrecognizedClientException"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 403


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b"", "loginAuthConfig is required"),
        (b"{}", "loginAuthConfig is required"),
        (b'{"loginAuthConfig": "x"}', "must be a JSON object"),
        (b'{"loginAuthConfig": {}}', "loginAuthConfig is empty"),
        (b'{"loginAuthConfig": {"aws_user_pools_id": "a_1"}, "extra": 1}', "unknown field 'extra'"),
        (b'{"loginAuthConfig": {"AwsUserPoolsId": "a_1"}}', "unknown field 'AwsUserPoolsId'"),
        (b'{"loginAuthConfig": {"aws_user_pools_id": 5}}', "must be a non-empty string"),
        (b'{"loginAuthConfig": {"aws_user_pools_id": ""}}', "must be a non-empty string"),
    ],
)
async def test_bad_bodies_get_400(
    server: EmulatorServer, http: aiohttp.ClientSession, body: bytes, why: str
) -> None:
    status, headers, answer = await post(http, server.url, body)
    assert status == 400
    assert headers["x-amzn-ErrorType"] == "BadRequestException"
    assert why in answer["message"]
    assert server.emulator.apps == {}


async def test_empty_settings_from_botocore_get_400(client: AmplifyBackendClient) -> None:
    response = await client_error(client.update_backend_config(AppId="d1", LoginAuthConfig={}))
    assert response["Error"]["Code"] == "BadRequestException"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400


async def test_wrong_route_gets_404(server: EmulatorServer, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{server.url}/backend/d1/config/update", headers=SIGNED) as resp:
        assert resp.status == 404
        assert resp.headers["x-amzn-ErrorType"] == "NotFoundException"
    async with http.post(f"{server.url}/nowhere", data=b"{}", headers=SIGNED) as resp:
        assert resp.status == 404
    assert [r.app_id for r in server.emulator.requests] == ["d1", ""]


# -- scripted outcomes ----------------------------------------------------------------------


async def test_scripted_outcomes_then_normal_behaviour(
    client: AmplifyBackendClient, emulator: Emulator
) -> None:
    emulator.script("d1abc", ["504", "429"])
    emulator.script("d1abc", ["ok", "404"])
    codes = []
    for _ in range(5):
        try:
            await client.update_backend_config(AppId="d1abc", LoginAuthConfig=POOLS)
            codes.append("ok")
        except ClientError as exc:
            codes.append(exc.response["Error"]["Code"])
    assert codes == [
        "GatewayTimeoutException",
        "TooManyRequestsException",
        "ok",
        "NotFoundException",
        "ok",
    ]
    assert [r.status for r in emulator.requests] == [504, 429, 200, 404, 200]
    assert emulator.pending("d1abc") == []
    # Another app is not affected by d1abc's script.
    await client.update_backend_config(AppId="d2", LoginAuthConfig=POOLS)


async def test_scripted_ok_skips_random_504(
    client: AmplifyBackendClient, emulator: Emulator
) -> None:
    emulator.configure(faults={"504": 1.0})
    emulator.script("d1abc", ["ok"])
    await client.update_backend_config(AppId="d1abc", LoginAuthConfig=POOLS)
    response = await client_error(
        client.update_backend_config(AppId="d1abc", LoginAuthConfig=POOLS)
    )
    assert response["Error"]["Code"] == "GatewayTimeoutException"


async def test_error_outcome_sets_error_and_keeps_state(
    client: AmplifyBackendClient, emulator: Emulator
) -> None:
    await client.update_backend_config(AppId="d1abc", LoginAuthConfig={"AwsCognitoRegion": "a-b-1"})
    emulator.script("d1abc", ["error:backend busy: try later"])
    answer = await client.update_backend_config(
        AppId="d1abc", LoginAuthConfig={"AwsCognitoRegion": "changed"}
    )
    assert answer["Error"] == "backend busy: try later"
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert answer["LoginAuthConfig"] == {"AwsCognitoRegion": "a-b-1"}
    assert emulator.apps == {"d1abc": {"aws_cognito_region": "a-b-1"}}
    assert emulator.requests[-1] == RequestRecord(
        emulator.requests[-1].time, "d1abc", 200, None, False, "error", *SIGNER
    )


async def test_configured_script_and_reset() -> None:
    config = EmulatorConfig(script={"d9": ["504"]})
    async with (
        EmulatorServer(config) as server,
        SESSION.client("amplifybackend", endpoint_url=server.url, config=ONE_ATTEMPT) as client,
    ):
        await client_error(client.update_backend_config(AppId="d9", LoginAuthConfig=POOLS))
        await client.update_backend_config(AppId="d9", LoginAuthConfig=POOLS)
        assert server.emulator.request_count == 2
        server.emulator.reset()
        assert server.emulator.apps == {}
        assert server.emulator.requests == []
        assert server.emulator.pending("d9") == ["504"]


def test_bad_outcomes_and_config_are_refused() -> None:
    emulator = Emulator()
    with pytest.raises(ValueError, match="unknown scripted outcome"):
        emulator.script("d1", ["ok", "500"])
    assert emulator.pending("d1") == []
    with pytest.raises(ValueError, match="unknown scripted outcome"):
        EmulatorConfig(script={"d1": ["oops"]})
    with pytest.raises(ValueError, match="burst"):
        EmulatorConfig(burst=0)
    with pytest.raises(ValueError, match="between 0 and 1"):
        EmulatorConfig(faults={"504": 1.5})
    with pytest.raises(ValueError, match="rate"):
        EmulatorConfig(rate=-1)
    with pytest.raises(ValueError, match="latency"):
        EmulatorConfig(latency_ms=-1)


# -- configured behaviour -------------------------------------------------------------------


async def fire(client: AmplifyBackendClient, n: int) -> list[str]:
    async def one(i: int) -> str:
        try:
            await client.update_backend_config(AppId=f"d{i}", LoginAuthConfig=POOLS)
        except ClientError as exc:
            return str(exc.response["Error"]["Code"])
        return "ok"

    return await asyncio.gather(*(one(i) for i in range(n)))


async def code_of(call: Any) -> str:
    """ "ok", or the error code botocore parsed."""
    try:
        await call
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return "ok"


def test_rate_limit_refuses_what_comes_before_its_slot() -> None:
    async def scenario() -> tuple[list[str], list[tuple[int, float]], Emulator]:
        async with serving(EmulatorConfig(rate=5, burst=1)) as (server, client):
            loop = asyncio.get_running_loop()
            start = loop.time()
            codes = await fire(client, 10)  # all arrive at the same instant
            await asyncio.sleep(0.2 - 1e-6)
            codes.append(await code_of(update(client)))  # a microsecond early
            await asyncio.sleep(2e-6)
            codes.append(await code_of(update(client)))  # its slot
            times = [(r.status, r.time - start) for r in server.emulator.requests]
            return codes, times, server.emulator

    codes, times, emulator = virtual_time.run(scenario())
    assert sorted(codes[:10]) == ["TooManyRequestsException"] * 9 + ["ok"]
    assert codes[10:] == ["TooManyRequestsException", "ok"]
    assert times[:10] == [(times[0][0], 0.0)] + [(status, 0.0) for status, _ in times[1:10]]
    assert times[10:] == [(429, pytest.approx(0.2 - 1e-6)), (200, pytest.approx(0.2 + 1e-6))]
    assert len(emulator.apps) == 2
    assert all(r.fault is None for r in emulator.requests)  # the limiter's 429s are no fault


def test_rate_limit_allows_a_burst_after_an_idle_period() -> None:
    async def scenario() -> list[str]:
        async with serving(EmulatorConfig(rate=1, burst=3)) as (_, client):
            codes = await fire(client, 10)
            await asyncio.sleep(1.0)
            return codes + await fire(client, 2)

    codes = virtual_time.run(scenario())
    assert codes[:10].count("ok") == 3
    assert codes[10:].count("ok") == 1  # one interval later: one more slot


def test_a_request_refused_by_the_rate_limit_consumes_no_scripted_outcome() -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        async with serving(EmulatorConfig(rate=1, script={"d1abc": ["504"]})) as (server, c):
            codes = [await code_of(update(c, "d2abc")), await code_of(update(c))]
            return codes, server.emulator.pending("d1abc")

    codes, pending = virtual_time.run(scenario())
    assert codes == ["ok", "TooManyRequestsException"]
    assert pending == ["504"]


async def test_a_504_probability_of_one_gives_all_504(
    client: AmplifyBackendClient, emulator: Emulator
) -> None:
    emulator.configure(faults={"504": 1.0})
    codes = await fire(client, 5)
    assert codes == ["GatewayTimeoutException"] * 5
    assert emulator.status_counts() == {504: 5}
    assert emulator.apps == {}


async def test_random_504s_are_repeatable_with_a_seed() -> None:
    async def run() -> list[int]:
        config = EmulatorConfig(faults={"504": 0.5}, seed=42)
        async with (
            EmulatorServer(config) as server,
            SESSION.client("amplifybackend", endpoint_url=server.url, config=ONE_ATTEMPT) as c,
        ):
            for _ in range(12):
                with contextlib.suppress(ClientError):
                    await c.update_backend_config(AppId="d1", LoginAuthConfig=POOLS)
            return [r.status for r in server.emulator.requests]

    first = await run()
    assert set(first) == {200, 504}
    assert await run() == first


async def test_known_apps_and_malformed_ids_get_404(
    client: AmplifyBackendClient, emulator: Emulator
) -> None:
    for app_id in ("D1", "x123", "d" + "1" * 20, "d1-2"):
        response = await client_error(
            client.update_backend_config(AppId=app_id, LoginAuthConfig=POOLS)
        )
        assert response["Error"]["Code"] == "NotFoundException"
        assert response["ResourceType"] == "app"

    emulator.configure(known_apps=frozenset({"d1"}))
    await client.update_backend_config(AppId="d1", LoginAuthConfig=POOLS)
    response = await client_error(client.update_backend_config(AppId="d2", LoginAuthConfig=POOLS))
    assert response["Error"] == {"Code": "NotFoundException", "Message": "App d2 not found"}
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert list(emulator.apps) == ["d1"]


def test_latency_and_its_seeded_jitter_are_added_to_every_answer() -> None:
    config = EmulatorConfig(seed=7, latency_ms=20.0, latency_jitter_ms=5.0)

    async def scenario() -> list[float]:
        async with serving(config) as (server, client):
            loop = asyncio.get_running_loop()
            server.emulator.script("d2abc", ["504"])
            elapsed = []
            for app_id in ("d1abc", "d2abc"):
                start = loop.time()
                await code_of(update(client, app_id))
                elapsed.append(loop.time() - start)
            return elapsed

    jitter = random.Random("7/latency")
    expected = [0.020 + jitter.uniform(0.0, 5.0) / 1000 for _ in range(2)]
    assert virtual_time.run(scenario()) == pytest.approx(expected, abs=1e-9)


async def test_request_records(client: AmplifyBackendClient, emulator: Emulator) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    emulator.script("d2", ["429"])
    await client.update_backend_config(AppId="d1", LoginAuthConfig=POOLS)
    await client_error(client.update_backend_config(AppId="d2", LoginAuthConfig=POOLS))
    await client.update_backend_config(AppId="d1", LoginAuthConfig=POOLS)
    end = loop.time()

    records = emulator.requests
    assert [(r.app_id, r.status, r.error_type) for r in records] == [
        ("d1", 200, None),
        ("d2", 429, "TooManyRequestsException"),
        ("d1", 200, None),
    ]
    times = [r.time for r in records]
    assert start <= times[0] <= times[1] <= times[2] <= end
    assert emulator.request_count == 3
    assert emulator.count("d1") == 2
    assert emulator.count("d2") == 1
    assert emulator.count("d3") == 0
    assert emulator.status_counts() == {200: 2, 429: 1}
    assert [(r.applied, r.fault) for r in records] == [(True, None), (False, "429"), (True, None)]


def test_keep_alive_is_not_slowed_by_errors() -> None:
    """Every error path reads the body first, so keep-alive requests do not stall."""
    bodies = [
        b"{bad",
        b'{"loginAuthConfig": {}}',
        b'{"loginAuthConfig": {"aws_user_pools_id": "x_1"}}',
    ]

    async def scenario() -> tuple[float, int]:
        config = EmulatorConfig(known_apps=frozenset())
        async with (
            serving(config) as (server, client),
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http,
        ):
            loop = asyncio.get_running_loop()
            start = loop.time()
            for i in range(20):
                await client_error(client.update_backend_config(AppId="d1", LoginAuthConfig=POOLS))
                headers = {} if i % 4 == 0 else SIGNED
                status, _, _ = await post(http, server.url, bodies[i % 3], headers=headers)
                assert status in (400, 403, 404)
            return loop.time() - start, server.emulator.request_count

    # On virtual time, any stall (a timer on a connection) would show as elapsed time.
    assert virtual_time.run(scenario()) == (0.0, 40)


# -- injected faults ------------------------------------------------------------------------

WIRE_POOLS = {"aws_user_pools_id": "us-east-1_abc", "aws_cognito_region": "us-east-1"}
# A guard against a hang: every fault must end the call well within this.
NO_HANG = 60.0


def amplify(server: EmulatorServer, **config: Any) -> Any:
    """A one-attempt client with extra botocore config, e.g. ``read_timeout=0.1``."""
    return SESSION.client(
        "amplifybackend", endpoint_url=server.url, config=ONE_ATTEMPT.merge(Config(**config))
    )


async def update(client: AmplifyBackendClient, app_id: str = "d1abc") -> Any:
    return await asyncio.wait_for(
        client.update_backend_config(AppId=app_id, LoginAuthConfig=POOLS), NO_HANG
    )


async def test_drop_closes_the_connection_with_no_answer(
    client: AmplifyBackendClient, emulator: Emulator, server: EmulatorServer
) -> None:
    emulator.script("d1abc", ["drop", "drop"])
    with pytest.raises(ConnectionClosedError):
        await update(client)
    assert emulator.apps == {}
    record = emulator.requests[-1]
    assert record == RequestRecord(record.time, "d1abc", 0, None, False, "drop", *SIGNER)

    # Plain aiohttp sees the server hang up after it sent the whole request.
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await asyncio.wait_for(
                http.post(f"{server.url}/backend/d1abc/config/update", data=b"{}", headers=SIGNED),
                NO_HANG,
            )

    # The client recovers on a new connection.
    answer = await update(client)
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert emulator.status_counts() == {0: 2, 200: 1}
    assert emulator.apps == {"d1abc": WIRE_POOLS}


def test_slow_applies_the_settings_then_answers_after_the_read_timeout() -> None:
    async def scenario() -> tuple[float, float, Emulator]:
        async with serving(EmulatorConfig(slow_seconds=0.4), read_timeout=0.1) as (server, c):
            loop, emulator = asyncio.get_running_loop(), server.emulator
            emulator.script("d1abc", ["slow"])
            start = loop.time()
            with pytest.raises(ReadTimeoutError):
                await update(c)
            gave_up = loop.time() - start
            # Applied although the client never heard of it.
            assert emulator.apps == {"d1abc": WIRE_POOLS}
            answer = await update(c)
            assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
            return gave_up, loop.time() - start, emulator

    gave_up, answered, emulator = virtual_time.run(scenario())
    assert gave_up == pytest.approx(0.1)  # the client's read timeout, not the 0.4 s
    assert answered == pytest.approx(0.1)  # the next request is answered at once
    record = emulator.requests[0]
    assert record == RequestRecord(record.time, "d1abc", 200, None, True, "slow", *SIGNER)
    assert [(r.applied, r.fault) for r in emulator.requests] == [(True, "slow"), (True, None)]


def test_slow_within_the_read_timeout_is_an_ordinary_200_that_comes_late() -> None:
    async def scenario() -> tuple[Any, float, Emulator]:
        async with serving(EmulatorConfig(slow_seconds=0.25)) as (server, client):
            loop = asyncio.get_running_loop()
            server.emulator.script("d1abc", ["slow"])
            start = loop.time()
            answer = await update(client)
            return answer, loop.time() - start, server.emulator

    answer, elapsed, emulator = virtual_time.run(scenario())
    assert elapsed == pytest.approx(0.25)
    assert answer["LoginAuthConfig"] == POOLS
    assert "Error" not in answer
    assert emulator.requests[-1].fault == "slow"
    assert emulator.apps == {"d1abc": WIRE_POOLS}


HTML_ERRORS = [("500html", 500, "Internal Server Error"), ("503html", 503, "Service Unavailable")]


@pytest.mark.parametrize("case", HTML_ERRORS, ids=[case[0] for case in HTML_ERRORS])
async def test_html_5xx_from_a_load_balancer(
    client: AmplifyBackendClient,
    server: EmulatorServer,
    http: aiohttp.ClientSession,
    case: tuple[str, int, str],
) -> None:
    outcome, status, reason = case
    emulator = server.emulator
    page = f"<html><body><h1>{status} {reason}</h1></body></html>"
    emulator.script("d1abc", [outcome, outcome])
    async with http.post(
        f"{server.url}/backend/d1abc/config/update", data=b"{}", headers=SIGNED
    ) as resp:
        assert resp.status == status
        assert resp.content_type == "text/html"
        assert "x-amzn-ErrorType" not in resp.headers
        assert "x-amzn-RequestId" not in resp.headers
        assert await resp.text() == page

    # botocore takes an HTML 5xx for a generic error named after the status.
    response = await client_error(update(client))
    assert response["Error"] == {"Code": str(status), "Message": reason}
    assert response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert "x-amzn-errortype" not in response["ResponseMetadata"]["HTTPHeaders"]
    assert emulator.apps == {}
    record = emulator.requests[-1]
    assert record == RequestRecord(record.time, "d1abc", status, None, False, outcome, *SIGNER)


async def test_malformed_200_is_truncated_json_and_applies_nothing(
    client: AmplifyBackendClient,
    emulator: Emulator,
    server: EmulatorServer,
    http: aiohttp.ClientSession,
) -> None:
    emulator.script("d1abc", ["malformed", "malformed"])
    async with http.post(
        f"{server.url}/backend/d1abc/config/update", data=b"{}", headers=SIGNED
    ) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        text = await resp.text()
    assert text.startswith('{"appId": "d1abc"')
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)

    # botocore does not raise on an unparseable 200: it answers with none of the members.
    answer = await update(client)
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert set(answer) == {"ResponseMetadata"}
    assert emulator.apps == {}
    assert [(r.status, r.applied, r.fault) for r in emulator.requests] == [
        (200, False, "malformed")
    ] * 2


async def test_storm_answers_429_to_everything_without_consuming_scripts(
    client: AmplifyBackendClient, emulator: Emulator
) -> None:
    emulator.script("d1abc", ["504"])
    emulator.storm(60.0)
    response = await client_error(update(client))
    assert response["Error"]["Code"] == "TooManyRequestsException"
    assert response["LimitType"] == "requests"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert await fire(client, 4) == ["TooManyRequestsException"] * 4
    assert emulator.pending("d1abc") == ["504"]
    assert {(r.status, r.fault) for r in emulator.requests} == {(429, "storm")}
    assert emulator.apps == {}

    emulator.storm(0)  # ends it
    response = await client_error(update(client))
    assert response["Error"]["Code"] == "GatewayTimeoutException"
    await update(client)
    assert emulator.apps == {"d1abc": WIRE_POOLS}


def test_storm_ends_after_its_seconds_of_loop_time() -> None:
    async def scenario() -> list[tuple[int, float]]:
        async with serving() as (server, client):
            loop, emulator = asyncio.get_running_loop(), server.emulator
            emulator.storm(60.0)
            await code_of(update(client))
            start = loop.time()
            emulator.storm(0.5)  # a new storm from now on, instead
            await asyncio.sleep(0.5 - 1e-6)
            await code_of(update(client))
            await asyncio.sleep(2e-6)
            await code_of(update(client))
            return [(r.status, r.time - start) for r in emulator.requests]

    assert virtual_time.run(scenario()) == [
        (429, 0.0),
        (429, pytest.approx(0.5 - 1e-6)),
        (200, pytest.approx(0.5 + 1e-6)),
    ]


def test_configured_storm_starts_with_the_first_request_and_again_after_reset() -> None:
    async def scenario() -> tuple[list[tuple[int, str | None, float]], list[RequestRecord]]:
        async with serving(EmulatorConfig(storm_seconds=0.5)) as (server, client):
            loop, emulator = asyncio.get_running_loop(), server.emulator
            await asyncio.sleep(1.0)  # longer than the storm: it has not started yet
            start = loop.time()
            for wait in (0.0, 0.5 - 1e-6, 2e-6):
                await asyncio.sleep(wait)
                await code_of(update(client))
            first = [(r.status, r.fault, r.time - start) for r in emulator.requests]
            emulator.reset()
            await code_of(update(client))
            emulator.configure(storm_seconds=0)
            await code_of(update(client))
            return first, emulator.requests

    first, after_reset = virtual_time.run(scenario())
    assert first == [
        (429, "storm", 0.0),
        (429, "storm", pytest.approx(0.5 - 1e-6)),
        (200, None, pytest.approx(0.5 + 1e-6)),
    ]
    assert [(r.status, r.fault) for r in after_reset] == [(429, "storm"), (200, None)]


FAULT_MIX = {"drop": 0.15, "slow": 0.15, "500html": 0.15, "503html": 0.1, "504": 0.1, "429": 0.1}
FAULT_STATUS = {"drop": 0, "slow": 200, "500html": 500, "503html": 503, "504": 504, "429": 429}


async def test_random_faults_follow_the_seeded_mix() -> None:
    async def run() -> list[RequestRecord]:
        config = EmulatorConfig(seed=11, faults=FAULT_MIX, slow_seconds=0.0)
        async with EmulatorServer(config) as server, amplify(server) as client:
            for i in range(60):
                with contextlib.suppress(ClientError, BotoCoreError):
                    await update(client, f"d{i}")
            return server.emulator.requests

    first = await run()
    faults = [r.fault for r in first]
    assert set(faults) == {*FAULT_MIX, None}
    for record in first:
        assert record.status == FAULT_STATUS.get(record.fault or "", 200)
        assert record.applied == (record.fault in {None, "slow"})
    assert [r.fault for r in await run()] == faults


async def test_scripted_outcomes_and_invalid_requests_skip_random_faults(
    client: AmplifyBackendClient, emulator: Emulator
) -> None:
    emulator.configure(faults={"503html": 1.0})
    emulator.script("d1abc", ["ok", "slow"])
    emulator.configure(slow_seconds=0.0)
    await update(client)
    await update(client)
    response = await client_error(client.update_backend_config(AppId="d1", LoginAuthConfig={}))
    assert response["Error"]["Code"] == "BadRequestException"
    response = await client_error(update(client))
    assert response["Error"]["Code"] == "503"
    assert [r.fault for r in emulator.requests] == [None, "slow", None, "503html"]


def test_fault_config_is_validated() -> None:
    with pytest.raises(ValueError, match="add up to at most 1"):
        EmulatorConfig(faults={"drop": 0.6, "slow": 0.5})
    with pytest.raises(ValueError, match="unknown scripted outcome"):
        EmulatorConfig(faults={"500": 0.1})
    with pytest.raises(ValueError, match="'ok' is not a fault"):
        EmulatorConfig(faults={"ok": 0.1})
    with pytest.raises(ValueError, match="between 0 and 1"):
        EmulatorConfig(faults={"drop": -0.1})
    with pytest.raises(ValueError, match="slow_seconds"):
        EmulatorConfig(slow_seconds=-1)
    with pytest.raises(ValueError, match="storm seconds"):
        EmulatorConfig(storm_seconds=-1)
    with pytest.raises(ValueError, match="storm seconds"):
        Emulator().storm(-1)
    mix = {"drop": 0.5, "error:busy": 0.25, "malformed": 0.25}
    assert EmulatorConfig(faults=mix).faults == mix
    for outcome in ("drop", "slow", "500html", "503html", "malformed"):
        Emulator().script("d1", [outcome])


# -- the fault plan, on its own -------------------------------------------------------------


def test_the_plan_answers_a_storm_first_then_the_script_then_one_draw() -> None:
    plan = FaultPlan({"504": 1.0}, script={"d1": ["drop"]})
    plan.storm(1.0, start=1000.0)
    assert plan.next("d1", 1000.0) == "storm"
    assert plan.next("d1", 1000.5) == "storm"
    assert plan.pending("d1") == ["drop"]  # a storm keeps the script for later
    assert plan.next("d1", 1001.0) == "drop"  # the storm ends at exactly start + seconds
    assert plan.pending("d1") == []
    assert plan.next("d1", 1001.0) == "504"
    assert plan.next("d2", 1001.0) == "504"


def test_an_invalid_request_draws_no_random_fault_but_uses_its_script() -> None:
    plan = FaultPlan({"503html": 1.0}, script={"d1": ["slow"]})
    assert plan.next("d1", 0.0, valid=False) == "slow"
    assert plan.next("d1", 0.0, valid=False) is None
    assert plan.next("d1", 0.0) == "503html"


def test_a_storm_without_a_start_begins_with_the_next_request() -> None:
    plan = FaultPlan(storm_seconds=2.0)
    assert plan.next("d1", 5000.0) == "storm"
    assert plan.next("d1", 5001.999) == "storm"
    assert plan.next("d1", 5002.0) is None
    plan.storm(2.0, start=6000.0)
    plan.storm(0.0)  # 0 ends it
    assert plan.next("d1", 6000.0) is None


def test_random_faults_follow_their_probabilities_and_the_seed() -> None:
    def draws(seed: int, *, invalid_every: int = 0) -> list[str | None]:
        plan = FaultPlan({"504": 0.2, "drop": 0.1}, seed=seed)
        out = []
        for i in range(10_000):
            if invalid_every and i % invalid_every == 0:
                assert plan.next("d1", 0.0, valid=False) is None
            out.append(plan.next("d1", 0.0))
        return out

    first = draws(3)
    assert 0.18 < first.count("504") / len(first) < 0.22
    assert 0.08 < first.count("drop") / len(first) < 0.12
    assert draws(3) == first
    assert draws(4) != first
    # Invalid requests draw nothing: the valid ones get the same sequence.
    assert draws(3, invalid_every=3) == first


def test_the_plan_refuses_what_config_refuses_and_shows_its_state() -> None:
    with pytest.raises(ValueError, match="add up to at most 1"):
        FaultPlan({"504": 0.6, "drop": 0.5})
    with pytest.raises(ValueError, match="unknown scripted outcome"):
        FaultPlan(script={"d1": ["500"]})
    with pytest.raises(ValueError, match="storm seconds"):
        FaultPlan().storm(-1.0)
    plan = FaultPlan({"504": 0.05}, script={"d1": ["ok", "drop"]})
    assert repr(plan) == "<FaultPlan scripted=2 faults={504=0.05} storm=none>"
    plan.storm(3.0)
    assert repr(plan).endswith("storm=3s from the next request>")
    plan.storm(1.0, start=10.5)
    assert repr(plan).endswith("storm=until 11.5>")
    assert not hasattr(plan, "__dict__")


def test_the_emulator_configures_its_plan() -> None:
    emulator = Emulator(EmulatorConfig(faults={"504": 0.5}, script={"d1": ["drop"]}))
    assert emulator.plan.faults == {"504": 0.5}
    emulator.script("d1", ["slow"])
    assert emulator.pending("d1") == emulator.plan.pending("d1") == ["drop", "slow"]
    emulator.configure(faults={"drop": 0.25})
    assert emulator.plan.faults == {"drop": 0.25}
    assert emulator.pending("d1") == ["drop", "slow"]  # new faults keep the scripts
    emulator.configure(script={"d2": ["404"]})
    assert (emulator.pending("d1"), emulator.pending("d2")) == ([], ["404"])


# -- server lifecycle ------------------------------------------------------------------------


async def test_server_url_and_bind_failure() -> None:
    server = EmulatorServer()
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.url
    async with server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert server.port > 0
        with pytest.raises(SetupError, match=r"cannot listen.*: Address already in use$"):
            await EmulatorServer(port=server.port).start()
    with pytest.raises(RuntimeError):
        _ = server.url


@pytest.mark.parametrize(
    ("host", "port", "why"),
    [
        ("127.0.0.1", 99999, "port must be 0-65535"),
        ("127.0.0.1", -1, "port must be 0-65535"),
        ("no-such-host.invalid", 0, "not known"),
    ],
)
async def test_an_address_that_cannot_be_bound_is_a_setup_error(
    host: str, port: int, why: str
) -> None:
    with pytest.raises(SetupError, match=f"^cannot listen on {host}:{port}: .*{why}"):
        await EmulatorServer(host=host, port=port).start()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--port", "99999"], "argument --port: must be a port number from 0 to 65535"),
        (["--port", "-1"], "argument --port: must be a port number from 0 to 65535"),
        (["--port", "http"], "argument --port: 'http' is not a port number"),
        (["--rate", "-1"], "argument --rate: must be 0 or more"),
        (["--burst", "0"], "argument --burst: must be at least 1"),
        (["--p504", "1.5"], "argument --p504: must be between 0 and 1"),
        (["--latency-ms", "-5"], "argument --latency-ms: must be 0 or more"),
        (["--seed", "x"], "argument --seed:"),
        (["--region-rate", "us-west-2"], "argument --region-rate: 'us-west-2': use REGION=NUMBER"),
        (["--region-latency-ms", "eu-west-1=-3"], "argument --region-latency-ms: 'eu-west-1=-3'"),
    ],
)
def test_emulate_refuses_a_bad_number_in_one_line_naming_the_flag(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["emulate", *flags])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"batch-updater emulate: error: {message}")
    assert err.count("\n") == 1


# Only bounds a hang: the child waits for nothing but its imports and the socket.
CHILD_DEADLINE = 60.0


async def listening_url(proc: asyncio.subprocess.Process) -> str:
    """Wait for the child's readiness line and return the URL it names."""
    assert proc.stderr is not None
    line = (await asyncio.wait_for(proc.stderr.readline(), CHILD_DEADLINE)).decode()
    assert line.startswith("AmplifyBackend emulator listening on http://127.0.0.1:"), line
    return line.split()[-1]


async def stop_child(proc: asyncio.subprocess.Process, sig: signal.Signals) -> tuple[int, str]:
    """Send ``sig``; return the exit code and what the child wrote to stderr after that."""
    assert proc.stderr is not None
    proc.send_signal(sig)
    rest = (await asyncio.wait_for(proc.stderr.read(), CHILD_DEADLINE)).decode()
    return await asyncio.wait_for(proc.wait(), CHILD_DEADLINE), rest


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")
@pytest.mark.parametrize("inherited", ["default", "ignored"])
async def test_main_emulate_serves_until_ctrl_c(inherited: str) -> None:
    # "ignored": started in the background by a shell, which ignores SIGINT for it.
    code = (
        "from batch_updater.emulator import EmulatorConfig, main_emulate\n"
        "main_emulate(0, EmulatorConfig(rate=100))\n"
    )
    handler = signal.SIG_IGN if inherited == "ignored" else signal.SIG_DFL
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, handler),
    )
    try:
        url = await listening_url(proc)
        async with SESSION.client("amplifybackend", endpoint_url=url, config=ONE_ATTEMPT) as c:
            answer = await c.update_backend_config(AppId="d1", LoginAuthConfig=POOLS)
        assert answer["AppId"] == "d1"
        assert await stop_child(proc, signal.SIGINT) == (0, "")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGTERM")
async def test_emulate_command_turns_p504_into_the_plans_504_probability() -> None:
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "batch_updater", "emulate", "--port", "0"),
        *("--p504", "1", "--known-apps", "d1,d2"),
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        url = await listening_url(proc)
        async with SESSION.client("amplifybackend", endpoint_url=url, config=ONE_ATTEMPT) as c:
            codes = [
                await code_of(c.update_backend_config(AppId=app_id, LoginAuthConfig=POOLS))
                for app_id in ("d1", "d2", "d3")
            ]
        # A known app always gets the 504; an unknown one is refused before any draw.
        assert codes == ["GatewayTimeoutException", "GatewayTimeoutException", "NotFoundException"]
        assert await stop_child(proc, signal.SIGTERM) == (0, "")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# -- a limit per region, or per access key and region (an account's limit) ----------------

SIGNERS = [("AKIAONE", "us-east-1"), ("AKIAONE", "eu-west-1"), ("AKIATWO", "us-east-1")]


def requests_by_signer(limit_per: str) -> dict[tuple[str, str], list[str]]:
    """Three requests at once from each (access key, region): which got through."""

    async def scenario() -> dict[tuple[str, str], list[str]]:
        async with EmulatorServer(EmulatorConfig(rate=5, limit_per=limit_per)) as server:
            codes: dict[tuple[str, str], list[str]] = {}
            for key, region in SIGNERS:
                session = aioboto3.Session(
                    aws_access_key_id=key, aws_secret_access_key="s", region_name=region
                )
                async with session.client(
                    "amplifybackend", endpoint_url=server.url, config=ONE_ATTEMPT
                ) as client:
                    calls = [
                        code_of(client.update_backend_config(AppId=f"d{i}", LoginAuthConfig=POOLS))
                        for i in range(3)
                    ]
                    codes[key, region] = sorted(await asyncio.gather(*calls))
            signed = {(r.access_key, r.region) for r in server.emulator.requests}
            assert signed == set(SIGNERS)  # every request's signer is recorded
            return codes

    return virtual_time.run(scenario())


def test_one_limit_for_the_endpoint_by_default() -> None:
    codes = requests_by_signer("endpoint")
    assert codes[SIGNERS[0]] == ["TooManyRequestsException"] * 2 + ["ok"]
    assert codes[SIGNERS[1]] == codes[SIGNERS[2]] == ["TooManyRequestsException"] * 3


def test_a_limit_per_signing_region() -> None:
    codes = requests_by_signer("region")
    assert codes[SIGNERS[0]] == codes[SIGNERS[1]] == ["TooManyRequestsException"] * 2 + ["ok"]
    assert codes[SIGNERS[2]] == ["TooManyRequestsException"] * 3  # us-east-1's is used up


def test_a_limit_per_access_key_and_region_like_an_accounts() -> None:
    codes = requests_by_signer("access-key-region")
    assert all(got == ["TooManyRequestsException"] * 2 + ["ok"] for got in codes.values())


def test_limit_per_is_checked() -> None:
    with pytest.raises(ValueError, match="limit_per must be one of endpoint, region"):
        EmulatorConfig(limit_per="account")


def test_emulate_refuses_an_unknown_limit_scope_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["emulate", "--port", "0", "--limit-per", "galaxy"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "limit_per must be one of endpoint, region, access-key-region" in err


def test_a_region_can_have_its_own_rate_and_latency(session: Any) -> None:
    # One slow, tightly limited region among fast ones (benchmark scenario 10).
    config = EmulatorConfig(
        limit_per="region",  # no limit but in us-west-2
        region_rate={"us-west-2": 1},
        region_latency_ms={"us-west-2": 250},
    )

    async def scenario() -> dict[str, list[tuple[float, int]]]:
        loop = asyncio.get_running_loop()
        seen: dict[str, list[tuple[float, int]]] = {}
        async with EmulatorServer(config) as server:
            for region in ("us-east-1", "us-west-2"):
                async with session.client(
                    "amplifybackend",
                    region_name=region,
                    endpoint_url=server.url,
                    config=Config(retries={"total_max_attempts": 1}),
                ) as client:
                    for app in ("dabc1", "dabc2"):
                        start = loop.time()
                        try:
                            await client.update_backend_config(
                                AppId=app, LoginAuthConfig={"AwsCognitoRegion": "us-east-1"}
                            )
                            status = 200
                        except ClientError as exc:
                            status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
                        seen.setdefault(region, []).append((loop.time() - start, status))
        return seen

    seen = virtual_time.run(scenario())
    assert [status for _, status in seen["us-east-1"]] == [200, 200]
    assert [status for _, status in seen["us-west-2"]] == [200, 429]  # 1/s: back to back fails
    assert all(took < 0.25 for took, _ in seen["us-east-1"])
    assert all(took >= 0.25 for took, _ in seen["us-west-2"])
