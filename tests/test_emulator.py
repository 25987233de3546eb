"""The AmplifyBackend emulator, driven by a real aiobotocore client over HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aioboto3
import aiohttp
import botocore
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionClosedError, ReadTimeoutError

from batch_updater.emulator import Emulator, EmulatorConfig, EmulatorServer, RequestRecord
from batch_updater.errors import SetupError

if TYPE_CHECKING:
    from types_aiobotocore_amplifybackend import AmplifyBackendClient
    from types_aiobotocore_amplifybackend.type_defs import LoginAuthConfigReqObjTypeDef

SESSION = aioboto3.Session(
    aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
)
ONE_ATTEMPT = Config(retries={"total_max_attempts": 1})
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
    emulator.configure(p504=1.0)
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
        emulator.requests[-1].time, "d1abc", 200, None, applied=False, fault="error"
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
    with pytest.raises(ValueError, match="p504"):
        EmulatorConfig(p504=1.5)
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


async def test_rate_limit_refuses_a_burst(client: AmplifyBackendClient, emulator: Emulator) -> None:
    emulator.configure(rate=5, burst=1)
    codes = await fire(client, 10)
    assert 1 <= codes.count("ok") <= 2
    assert codes.count("TooManyRequestsException") == 10 - codes.count("ok")
    assert emulator.status_counts()[429] >= 8
    assert len(emulator.apps) == codes.count("ok")


async def test_rate_limit_allows_burst(client: AmplifyBackendClient, emulator: Emulator) -> None:
    emulator.configure(rate=1, burst=3)
    codes = await fire(client, 10)
    assert 3 <= codes.count("ok") <= 4


async def test_p504_one_gives_all_504(client: AmplifyBackendClient, emulator: Emulator) -> None:
    emulator.configure(p504=1.0)
    codes = await fire(client, 5)
    assert codes == ["GatewayTimeoutException"] * 5
    assert emulator.status_counts() == {504: 5}
    assert emulator.apps == {}


async def test_p504_is_repeatable_with_a_seed() -> None:
    async def run() -> list[int]:
        config = EmulatorConfig(p504=0.5, seed=42)
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


async def test_latency_is_added(client: AmplifyBackendClient, emulator: Emulator) -> None:
    emulator.configure(latency_ms=20.0, latency_jitter_ms=5.0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await client.update_backend_config(AppId="d1", LoginAuthConfig=POOLS)
    assert loop.time() - start >= 0.019  # a lower bound only


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


async def test_keep_alive_is_not_slowed_by_errors(
    server: EmulatorServer, client: AmplifyBackendClient, http: aiohttp.ClientSession
) -> None:
    """Every error path reads the body first, so keep-alive requests do not stall."""
    server.emulator.configure(known_apps=frozenset())
    bodies = [
        b"{bad",
        b'{"loginAuthConfig": {}}',
        b'{"loginAuthConfig": {"aws_user_pools_id": "x_1"}}',
    ]
    start = time.perf_counter()
    for i in range(20):
        await client_error(client.update_backend_config(AppId="d1", LoginAuthConfig=POOLS))
        headers = {} if i % 4 == 0 else SIGNED
        status, _, _ = await post(http, server.url, bodies[i % 3], headers=headers)
        assert status in (400, 403, 404)
    assert time.perf_counter() - start < 2.0
    assert server.emulator.request_count == 40


# -- injected faults ------------------------------------------------------------------------

WIRE_POOLS = {"aws_user_pools_id": "us-east-1_abc", "aws_cognito_region": "us-east-1"}
# A guard against a hang: every fault must end the call well within this.
NO_HANG = 10.0


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
    assert record == RequestRecord(record.time, "d1abc", 0, None, applied=False, fault="drop")

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


async def test_slow_applies_the_settings_then_answers_after_the_read_timeout(
    server: EmulatorServer, emulator: Emulator
) -> None:
    emulator.configure(slow_seconds=0.4)
    emulator.script("d1abc", ["slow"])
    async with amplify(server, read_timeout=0.1) as client:
        with pytest.raises(ReadTimeoutError):
            await update(client)
        # Applied although the client never heard of it.
        assert emulator.apps == {"d1abc": WIRE_POOLS}
        record = emulator.requests[-1]
        assert record == RequestRecord(record.time, "d1abc", 200, None, applied=True, fault="slow")
        answer = await update(client)
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert [(r.applied, r.fault) for r in emulator.requests] == [(True, "slow"), (True, None)]


async def test_slow_within_the_read_timeout_is_an_ordinary_200(
    client: AmplifyBackendClient, emulator: Emulator
) -> None:
    emulator.configure(slow_seconds=0.01)
    emulator.script("d1abc", ["slow"])
    answer = await update(client)
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
    assert record == RequestRecord(record.time, "d1abc", status, None, applied=False, fault=outcome)


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


async def test_storm_ends_after_its_seconds_of_loop_time(
    client: AmplifyBackendClient, emulator: Emulator
) -> None:
    emulator.storm(60.0)
    await client_error(update(client))
    emulator.storm(0.05)  # a new storm from now on, instead
    await asyncio.sleep(0.1)
    await update(client)
    assert [r.status for r in emulator.requests] == [429, 200]


async def test_configured_storm_starts_with_the_first_request_and_again_after_reset() -> None:
    async with (
        EmulatorServer(EmulatorConfig(storm_seconds=0.05)) as server,
        amplify(server) as client,
    ):
        await asyncio.sleep(0.1)  # longer than the storm: it has not started yet
        await client_error(update(client))
        await asyncio.sleep(0.1)
        await update(client)
        server.emulator.reset()
        await client_error(update(client))
        server.emulator.configure(storm_seconds=0)
        await update(client)
        records = server.emulator.requests
    assert [(r.status, r.fault) for r in records] == [(429, "storm"), (200, None)]


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
    with pytest.raises(ValueError, match="storm_seconds"):
        EmulatorConfig(storm_seconds=-1)
    with pytest.raises(ValueError, match="storm seconds"):
        Emulator().storm(-1)
    mix = {"drop": 0.5, "error:busy": 0.25, "malformed": 0.25}
    assert EmulatorConfig(faults=mix).faults == mix
    for outcome in ("drop", "slow", "500html", "503html", "malformed"):
        Emulator().script("d1", [outcome])


# -- server lifecycle ------------------------------------------------------------------------


async def test_server_url_and_bind_failure() -> None:
    server = EmulatorServer()
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.url
    async with server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert server.port > 0
        with pytest.raises(SetupError, match="cannot listen"):
            await EmulatorServer(port=server.port).start()
    with pytest.raises(RuntimeError):
        _ = server.url


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")
async def test_main_emulate_serves_until_ctrl_c() -> None:
    code = (
        "from batch_updater.emulator import EmulatorConfig, main_emulate\n"
        "main_emulate(0, EmulatorConfig(rate=100))\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    try:
        line = (await asyncio.wait_for(proc.stderr.readline(), 10)).decode()
        assert line.startswith("AmplifyBackend emulator listening on http://127.0.0.1:")
        url = line.split()[-1]
        async with SESSION.client("amplifybackend", endpoint_url=url, config=ONE_ATTEMPT) as c:
            answer = await c.update_backend_config(AppId="d1", LoginAuthConfig=POOLS)
        assert answer["AppId"] == "d1"
        proc.send_signal(signal.SIGINT)
        rest = (await asyncio.wait_for(proc.stderr.read(), 10)).decode()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        assert rest == ""
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
