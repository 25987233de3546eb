"""Many accounts: each signs with its own role's credentials, assumed once and refreshed in time.

AmplifyBackend is the emulator over HTTP; STS is moto's server (``moto`` fixture), or a small
STS on 127.0.0.1 (``tests/fake_sts.py``) that refuses a role, throttles, or answers with
credentials whose expiry follows the test's injected clock. Time is that injected clock:
nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import ssl
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
import structlog.testing
from aiobotocore.session import AioSession
from botocore.config import Config

from batch_updater.accounts import (
    AccessCheck,
    Accounts,
    AssumeRoleError,
    AssumeRoleSettings,
    FailureScope,
    RefreshWindows,
    account_of_role,
    partition_of,
    role_arn_for,
    role_session_name,
)
from batch_updater.client import CallError, Clients
from batch_updater.emulator import EmulatorConfig, EmulatorServer
from batch_updater.logs import configure_logging, default_logger
from batch_updater.retry import RetryPolicy
from batch_updater.rows import LoginSettings, Row

from .conftest import SECRET_KEY
from .fake_sts import FakeSts
from .moto_server import MotoServer
from .tls import self_signed

UP = "us-east-1_AbC123xyz"
ACCOUNTS = ("111111111111", "222222222222", "333333333333")
REGIONS = ("us-east-1", "eu-west-1")
_lines = itertools.count(2)


def role(account: str) -> str:
    return f"arn:aws:iam::{account}:role/AmplifyMigration"


def row(account: str = "", region: str = "us-east-1", *, role_arn: str | None = None) -> Row:
    line = next(_lines)
    return Row(
        line,
        f"d{line}abc",
        region,
        LoginSettings(None, None, UP, f"client{line}"),
        f"{line:016x}",
        account_id=account,
        role_arn=(role(account) if account else "") if role_arn is None else role_arn,
    )


class Clock:
    """An injected clock for the credentials: moves only when told."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Sleeps:
    """STS retry backoff, recorded instead of slept."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)


def accounts_for(session: Any, **kw: Any) -> Accounts:
    kw.setdefault("sleep", Sleeps())
    return Accounts(session, AssumeRoleSettings.for_run("run-1", **kw.pop("settings", {})), **kw)


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer(EmulatorConfig(limit_per="access-key-region")) as server:
        yield server


# -- settings ----------------------------------------------------------------------------


def test_session_names_default_to_the_run_and_are_cut_to_what_sts_accepts() -> None:
    assert AssumeRoleSettings.for_run("20260101T000000-ab12").session_name == (
        "batch-updater-20260101T000000-ab12"
    )
    assert role_session_name("ops team/migration #7") == "ops-team-migration--7"
    assert len(role_session_name("x" * 100)) == 64
    with pytest.raises(ValueError, match="2 to 64"):
        role_session_name("")
    assert AssumeRoleSettings(session_name="a b").session_name == "a-b"


@pytest.mark.parametrize("seconds", [899, 43201])
def test_a_role_duration_outside_900_to_43200_is_refused(seconds: int) -> None:
    with pytest.raises(ValueError, match="900 to 43200 seconds"):
        AssumeRoleSettings(duration_seconds=seconds)


def test_refresh_windows_fit_inside_a_short_session() -> None:
    short = RefreshWindows.for_duration(900)
    assert (short.advisory, short.mandatory, short.retry_after) == (225, 150, 15)
    assert short.retry_unassumed == 5  # rows wait: STS is asked again sooner
    hour = RefreshWindows.for_duration(3600)
    assert (hour.advisory, hour.mandatory) == (900, 600)  # botocore's own
    assert RefreshWindows.for_duration(43200).advisory == 900


def test_roles_follow_the_template_or_the_name_in_the_regions_partition() -> None:
    template = "arn:aws:iam::{account_id}:role/AmplifyMigration"
    assert role_arn_for("111122223333", "us-east-1", template=template) == role("111122223333")
    assert (
        role_arn_for("111122223333", "cn-north-1", role_name="Org")
        == "arn:aws-cn:iam::111122223333:role/Org"
    )
    assert partition_of("us-gov-west-1") == "aws-us-gov"
    assert account_of_role("arn:aws-cn:iam::111122223333:role/path/Name") == "111122223333"
    assert account_of_role("not-an-arn") == ""
    assert role_arn_for("111122223333", "us-east-1") == ""


# -- signing as each account -----------------------------------------------------------


async def test_each_account_and_region_signs_with_its_own_assumed_credentials(
    moto: MotoServer, emulator: EmulatorServer, session: Any
) -> None:
    accounts = accounts_for(session, settings={"external_id": "ext-123"})
    rows = [row(a, r) for a in ACCOUNTS for r in REGIONS for _ in range(3)]
    async with Clients(session, endpoint_url=emulator.url, accounts=accounts) as clients:
        await asyncio.gather(*(clients.update(r) for r in rows))
        assert accounts.assume_role_calls() == {role(a): 1 for a in ACCOUNTS}

    assumed = moto.assumed_roles()
    assert sorted(a["role_arn"] for a in assumed) == sorted(role(a) for a in ACCOUNTS)
    assert {a["external_id"] for a in assumed} == {"ext-123"}
    assert {a["session_name"] for a in assumed} == {"batch-updater-run-1"}
    account_of_key = {a["access_key_id"]: a["account_id"] for a in assumed}
    records = {rec.app_id: rec for rec in emulator.emulator.requests}
    assert len(records) == len(rows)
    for r in rows:
        record = records[r.app_id]
        assert account_of_key[record.access_key] == r.account_id
        assert record.region == r.region
        assert record.status == 200
    # One client per (role, region): 6 lanes, each its own signer.
    assert len({(rec.access_key, rec.region) for rec in records.values()}) == 6


async def test_rows_without_an_account_keep_the_base_credentials_and_no_sts_call(
    emulator: EmulatorServer, session: Any
) -> None:
    # No STS endpoint exists here: any AssumeRole would fail.
    async with Clients(session, endpoint_url=emulator.url) as clients:
        await clients.open(["us-east-1"])
        await clients.update(row())
        await clients.update(row("444455556666", role_arn=""))  # own account, no role
        assert clients.accounts.assume_role_calls() == {}
    assert {rec.access_key for rec in emulator.emulator.requests} == {"AKIATESTKEY"}


async def test_own_account_is_asked_once(moto: MotoServer, session: Any) -> None:
    accounts = accounts_for(session)
    try:
        assert await accounts.own_account("us-east-1") == "123456789012"  # moto's default
        assert await accounts.own_account("eu-west-1") == "123456789012"
    finally:
        await accounts.aclose()
    assert repr(accounts).endswith("own=123456789012>")
    assert await accounts.signs_without_role("123456789012", "us-east-1")
    assert not await accounts.signs_without_role("111122223333", "us-east-1")
    assert await accounts.signs_without_role("", "us-east-1")
    assert await Accounts(session, local=True).signs_without_role("111122223333", "us-east-1")
    assert len(moto.data()["sts"]["AssumedRole"]) == 0
    assert accounts._sts.keys() == set()  # closed


# -- one account refused ---------------------------------------------------------------


async def test_a_role_that_cannot_be_assumed_stops_its_account_only(
    moto: MotoServer,
    emulator: EmulatorServer,
    session: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # moto assumes any role, so a fake STS in front of it refuses one (403 AccessDenied, as
    # AWS answers when the trust policy does not let the caller in) and passes the rest on.
    refused = ACCOUNTS[1]
    async with FakeSts(upstream=moto.url) as sts:
        sts.refused[role(refused)] = (403, "AccessDenied")
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.url)
        accounts = accounts_for(session)
        rows = [row(a, r) for a in ACCOUNTS for r in REGIONS for _ in range(2)]
        async with Clients(session, endpoint_url=emulator.url, accounts=accounts) as clients:
            outcomes = await asyncio.gather(
                *(clients.update(r) for r in rows), return_exceptions=True
            )
        assert len(sts.assume_calls(role(refused))) == 1  # refused once, not asked again

    for r, outcome in zip(rows, outcomes, strict=True):
        if r.account_id != refused:
            assert not isinstance(outcome, BaseException), outcome
            continue
        assert isinstance(outcome, CallError)
        assert outcome.account_fatal
        assert outcome.account_id == refused
        assert not outcome.retryable
        assert not outcome.answered
        assert not outcome.maybe_applied
        assert outcome.code == "AccessDenied"
        assert f"account {refused}: cannot assume {role(refused)}" in outcome.message
        assert "trust policy" in outcome.message
        assert "--external-id" in outcome.message
    # A row with the role but no account_id cell: the ARN's account is named.
    async with FakeSts(upstream=moto.url) as sts2:
        sts2.refused[role(refused)] = (403, "AccessDenied")
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts2.url)
        async with Clients(session, endpoint_url=emulator.url) as clients:
            with pytest.raises(CallError) as caught:
                await clients.update(row("", role_arn=role(refused)))
    assert caught.value.account_id == refused
    assert caught.value.account_fatal
    assert {rec.access_key for rec in emulator.emulator.requests}.isdisjoint({""})
    assert len(emulator.emulator.requests) == 8  # the two other accounts' rows only


async def test_an_access_denied_answer_stops_the_account_on_a_role_and_the_run_on_base(
    moto: MotoServer, emulator: EmulatorServer, session: Any
) -> None:
    async with Clients(session, endpoint_url=emulator.url) as clients:
        on_role, on_base, bad = row(ACCOUNTS[0]), row(), row(ACCOUNTS[1])
        for r, outcome in ((on_role, "403"), (on_base, "403"), (bad, "400")):
            emulator.emulator.script(r.app_id, [outcome])
        errors = {}
        for r in (on_role, on_base, bad):
            with pytest.raises(CallError) as caught:
                await clients.update(r)
            errors[r.app_id] = caught.value
    denied = errors[on_role.app_id]
    assert denied.code == "AccessDeniedException"
    assert denied.http_status == 403
    assert denied.account_fatal  # that account's role lacks the permission
    assert denied.account_id == ACCOUNTS[0]
    base = errors[on_base.app_id]
    assert base.code == "AccessDeniedException"
    assert not base.account_fatal  # the base credentials': control.FATAL_CODES stop the run
    assert not errors[bad.app_id].account_fatal  # not a credentials error


async def test_check_access_assumes_every_role_once_and_sends_no_update(
    moto: MotoServer, session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with FakeSts(upstream=moto.url) as sts:
        sts.refused[role(ACCOUNTS[2])] = (403, "AccessDenied")
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.url)
        accounts = accounts_for(session)
        targets = [(a, role(a), r) for a in ACCOUNTS for r in REGIONS]
        targets += [("123456789012", "", "us-east-1"), ("999999999999", "", "us-east-1")]
        try:
            checks = await accounts.check_access(targets)
        finally:
            await accounts.aclose()
        assert Counter(c.action for c in sts.calls) == {"AssumeRole": 3, "GetCallerIdentity": 1}
    by_account = {c.account_id: c for c in checks}
    assert [c.account_id for c in checks] == sorted(by_account)  # one per account, sorted
    assert by_account[ACCOUNTS[0]] == AccessCheck(ACCOUNTS[0], role(ACCOUNTS[0]), ok=True)
    assert by_account[ACCOUNTS[1]] == AccessCheck(ACCOUNTS[1], role(ACCOUNTS[1]), ok=True)
    refused = by_account[ACCOUNTS[2]]
    assert not refused.ok
    assert refused.reason.startswith(
        f"account {ACCOUNTS[2]}: cannot assume {role(ACCOUNTS[2])}: AccessDenied: "
    )
    assert by_account["123456789012"] == AccessCheck("123456789012", "", ok=True)  # own
    assert by_account["999999999999"].reason == (
        "no role to assume for account 999999999999: add a role_arn column or --role-arn"
    )


async def test_base_credentials_refused_by_sts_stop_the_run_not_one_account(
    session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with FakeSts() as sts:
        sts.refused[role(ACCOUNTS[0])] = (403, "InvalidClientTokenId")
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.url)
        accounts = accounts_for(session)
        async with (
            EmulatorServer() as server,
            Clients(session, endpoint_url=server.url, accounts=accounts) as clients,
        ):
            with pytest.raises(CallError) as caught:
                await clients.update(row(ACCOUNTS[0]))
    assert caught.value.code == "InvalidClientTokenId"  # one of control.FATAL_CODES
    assert not caught.value.account_fatal
    assert "refresh them" in caught.value.message


# -- STS throttling --------------------------------------------------------------------


async def test_sts_throttling_is_retried_with_backoff(
    emulator: EmulatorServer, session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps = Sleeps()
    async with FakeSts() as sts:
        sts.throttle_next = 3
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.url)
        with structlog.testing.capture_logs() as events:
            accounts = accounts_for(session, sleep=sleeps)
            async with Clients(session, endpoint_url=emulator.url, accounts=accounts) as clients:
                await clients.update(row(ACCOUNTS[0]))
        assert [c.answer for c in sts.assume_calls()] == [400, 400, 400, 200]
    assert len(sleeps.slept) == 3  # full jitter: each within its growing cap
    assert [(e["event"], e["attempt"], e["account_id"]) for e in events] == [
        ("sts_retry", n, ACCOUNTS[0]) for n in (1, 2, 3)
    ]
    assert events[0]["error"] == "Throttling: Rate exceeded"
    assert all(0 <= s <= cap for s, cap in zip(sleeps.slept, (0.5, 1.0, 2.0), strict=True))
    assert emulator.emulator.requests[0].access_key == sts.issued[0]["AccessKeyId"]


async def test_sts_throttling_past_the_retries_is_transient_and_retried_later(
    emulator: EmulatorServer, session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    async with FakeSts(clock=clock) as sts:
        sts.throttle_next = 2
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.url)
        accounts = accounts_for(session, clock=clock, retry=RetryPolicy(max_attempts=2))
        async with Clients(session, endpoint_url=emulator.url, accounts=accounts) as clients:
            with pytest.raises(CallError) as caught:
                await clients.update(row(ACCOUNTS[0]))
            assert caught.value.retryable
            assert not caught.value.account_fatal
            assert caught.value.code == "Throttling"
            # Asked again within retry_unassumed: STS is left alone, the failure stands.
            with pytest.raises(CallError):
                await clients.update(row(ACCOUNTS[0]))
            clock.advance(4)
            with pytest.raises(CallError):
                await clients.update(row(ACCOUNTS[0]))
            assert len(sts.assume_calls()) == 2
            clock.advance(RefreshWindows.for_duration(3600).retry_unassumed - 4)  # 5 s on
            await clients.update(row(ACCOUNTS[0]))
        assert len(sts.assume_calls()) == 3


# -- where a request leaves ----------------------------------------------------------------


async def test_a_lanes_pacing_is_awaited_once_per_call_by_the_http_session_as_it_writes(
    emulator: EmulatorServer, session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lane's pacing (AdaptiveRate.leave) waits where the request's bytes are written,
    # not one busy loop turn before; not for the STS call a role's first request makes as
    # it is signed; and before the service has seen the request.
    clock = Clock()
    async with FakeSts(clock=clock) as sts:
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.url)
        accounts = accounts_for(session, clock=clock)
        seen: list[tuple[int, int, bool]] = []
        async with Clients(session, endpoint_url=emulator.url, accounts=accounts) as clients:
            caller = asyncio.current_task()

            async def departure() -> None:
                writer = asyncio.current_task() is not caller  # aiohttp's write, not the call
                seen.append((len(sts.assume_calls()), emulator.emulator.request_count, writer))

            for r in (row(ACCOUNTS[0]), row(ACCOUNTS[0]), row()):
                await clients.update(r, departure)
    assert seen == [(1, 0, True), (1, 1, True), (1, 2, True)]


@pytest.mark.parametrize("why", ["an aiobotocore without http_session_cls", "an unpaced run"])
async def test_a_client_that_does_not_pace_at_the_write_waits_at_botocores_last_event(
    emulator: EmulatorServer, session: Any, monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    # An aiobotocore without http_session_cls gives clients a plain Config; an unpaced run
    # (--rate 0) has nothing to pace at the write, so no aiohttp trace (about 0.1 ms of CPU
    # a request). Either way a departure, if any, is awaited at before-send, in the
    # caller's task.
    paced = why == "an aiobotocore without http_session_cls"
    if paced:
        monkeypatch.setattr(
            "batch_updater.client.client_config", lambda paced=False, **options: Config(**options)
        )
    seen: list[tuple[int, bool]] = []
    async with Clients(session, endpoint_url=emulator.url, paced=paced) as clients:
        caller = asyncio.current_task()

        async def departure() -> None:
            seen.append((emulator.emulator.request_count, asyncio.current_task() is caller))

        await clients.update(row(), departure)
        await clients.update(row(), departure)
    assert seen == [(0, True), (1, True)]


# -- refresh ---------------------------------------------------------------------------


async def test_credentials_are_refreshed_ahead_of_expiry_once_per_refresh_period(
    emulator: EmulatorServer, session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    async with FakeSts(clock=clock) as sts:
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.url)
        # 900 s: shorter than botocore's own 15-minute advisory window.
        accounts = accounts_for(session, clock=clock, settings={"duration_seconds": 900})
        async with Clients(session, endpoint_url=emulator.url, accounts=accounts) as clients:
            for _ in range(100):  # a request every 30 s for 50 minutes
                await clients.update(row(ACCOUNTS[0]))
                await clients.update(row(ACCOUNTS[0], "eu-west-1"))
                clock.advance(30)
        calls = sts.assume_calls()
    # Refreshed at the first request 675 s (900 - 225) after each AssumeRole: 0, 690,
    # 1380, 2070, 2760; never once per request, never an expired key.
    assert len(calls) == 5
    keys = [rec.access_key for rec in emulator.emulator.requests]
    assert len(keys) == 200
    assert [k for k, _ in itertools.groupby(keys)] == [c["AccessKeyId"] for c in sts.issued]
    assert [len(list(group)) for _, group in itertools.groupby(keys)] == [46, 46, 46, 46, 16]


async def test_an_advisory_refresh_does_not_pause_the_other_requests(
    emulator: EmulatorServer, session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    async with FakeSts(clock=clock) as sts:
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.url)
        accounts = accounts_for(session, clock=clock, settings={"duration_seconds": 900})
        async with Clients(session, endpoint_url=emulator.url, accounts=accounts) as clients:
            await clients.update(row(ACCOUNTS[0]))
            first = sts.issued[0]["AccessKeyId"]
            clock.advance(700)  # in the advisory window, not yet the mandatory one
            sts.gate, sts.seen = asyncio.Event(), asyncio.Event()
            refreshing = asyncio.create_task(clients.update(row(ACCOUNTS[0])))
            await sts.seen.wait()  # that request is waiting for STS
            for _ in range(5):  # the others go on with the current key meanwhile
                await clients.update(row(ACCOUNTS[0], "eu-west-1"))
            assert not refreshing.done()
            sts.gate.set()
            await refreshing
            await clients.update(row(ACCOUNTS[0]))
    keys = [rec.access_key for rec in emulator.emulator.requests]
    second = sts.issued[1]["AccessKeyId"]
    assert keys == [first] * 6 + [second] * 2
    assert len(sts.assume_calls()) == 2


async def test_a_failed_refresh_keeps_the_current_credentials_and_retries_sparingly(
    emulator: EmulatorServer, session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    async with FakeSts(clock=clock) as sts:
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.url)
        accounts = accounts_for(
            session, clock=clock, settings={"duration_seconds": 900}, retry=RetryPolicy(1)
        )
        async with Clients(session, endpoint_url=emulator.url, accounts=accounts) as clients:
            await clients.update(row(ACCOUNTS[0]))
            clock.advance(680)  # advisory window: 220 s of validity left
            sts.fail_next = 10**6  # STS is down from now on
            for _ in range(40):  # a request every 5 s for 200 s: each still signed
                await clients.update(row(ACCOUNTS[0]))
                clock.advance(5)
            failed = len(sts.assume_calls()) - 1
            # One attempt per retry_after (15 s), not one per request.
            assert failed == 14
            clock.advance(25)  # now expired, and STS still down: the account's rows fail
            with pytest.raises(CallError) as caught:
                await clients.update(row(ACCOUNTS[0]))
            assert caught.value.retryable
            assert caught.value.code == "InternalFailure"
    assert len({rec.access_key for rec in emulator.emulator.requests}) == 1
    assert len(emulator.emulator.requests) == 41


# -- --local -----------------------------------------------------------------------------


async def test_local_mode_signs_each_account_with_its_own_dummy_key_and_no_sts(
    emulator: EmulatorServer, session: Any
) -> None:
    accounts = Accounts(session, local=True)
    rows = [row(a, r) for a in ACCOUNTS for r in REGIONS] + [row()]
    async with Clients(session, endpoint_url=emulator.url, accounts=accounts) as clients:
        await asyncio.gather(*(clients.update(r) for r in rows))
        checks = await accounts.check_access([(a, role(a), "us-east-1") for a in ACCOUNTS])
    assert all(c.ok for c in checks)
    signers = {(rec.access_key, rec.region) for rec in emulator.emulator.requests}
    assert signers == {(f"LOCAL{a}", r) for a in ACCOUNTS for r in REGIONS} | {
        ("AKIATESTKEY", "us-east-1")
    }
    assert accounts.assume_role_calls() == {}


# -- endpoints -------------------------------------------------------------------------


async def test_sts_is_called_at_the_lanes_regional_endpoint(session: Any) -> None:
    accounts = accounts_for(session)
    try:
        assert await accounts.sts_endpoint("eu-west-1") == "https://sts.eu-west-1.amazonaws.com"
        assert (
            await accounts.sts_endpoint("cn-north-1") == "https://sts.cn-north-1.amazonaws.com.cn"
        )
    finally:
        await accounts.aclose()


async def test_sts_honours_aws_endpoint_url_sts_not_the_amplifybackend_endpoint(
    moto: MotoServer, session: Any
) -> None:
    accounts = accounts_for(session)
    async with (
        EmulatorServer() as server,
        Clients(session, endpoint_url=server.url, accounts=accounts) as clients,
    ):
        assert await accounts.sts_endpoint("us-west-2") == moto.url
        await clients.update(row(ACCOUNTS[0], "us-west-2"))
    assert len(moto.assumed_roles()) == 1


# -- secrets ---------------------------------------------------------------------------


async def test_assumed_credentials_never_appear_in_logs_at_debug_level(
    moto: MotoServer, emulator: EmulatorServer, session: Any
) -> None:
    stream = io.StringIO()
    configure_logging("json", "debug", stream)
    accounts = accounts_for(session)
    async with Clients(session, endpoint_url=emulator.url, accounts=accounts) as clients:
        await asyncio.gather(*(clients.update(row(a)) for a in ACCOUNTS))
        log = default_logger()
        log.debug("lanes", clients=repr(clients), accounts=repr(accounts))
    output = stream.getvalue()
    assert "AssumeRole" in output  # botocore's debug lines were there, scrubbed
    secrets = [SECRET_KEY]
    for assumed in moto.data()["sts"]["AssumedRole"]:
        secrets += [assumed[k] for k in ("access_key_id", "secret_access_key", "session_token")]
    assert len(secrets) == 10
    for secret in secrets:
        assert secret not in output
    # The STS answer was logged (botocore's debug), with its credentials cut out.
    assert "<SecretAccessKey>[redacted]</SecretAccessKey>" in output


async def test_assume_role_error_names_account_role_cause_and_fix() -> None:
    error = AssumeRoleError(
        "111122223333",
        role("111122223333"),
        "AccessDenied",
        "not authorized",
        scope=FailureScope.ACCOUNT,
        hint="check the trust policy",
    )
    assert str(error) == (
        "account 111122223333: cannot assume arn:aws:iam::111122223333:role/AmplifyMigration:"
        " AccessDenied: not authorized; check the trust policy"
    )
    assert not error.transient


@pytest.mark.parametrize("local", [False, True], ids=["roles", "local"])
def test_account_sessions_share_one_data_loader(session: Any, local: bool) -> None:
    # Each session would otherwise read and keep the service models and endpoint rules
    # again: about 8 MB and most of a second per account (100 accounts: 860 MB, 140 s;
    # --local with 100 accounts: 45 s and 974 MB before it shared them too).
    accounts = Accounts(session, local=local)
    first = accounts.session_for(ACCOUNTS[0], role(ACCOUNTS[0]), "us-east-1")
    second = accounts.session_for(ACCOUNTS[1], role(ACCOUNTS[1]), "us-east-1")
    assert first is accounts.session_for(ACCOUNTS[0], role(ACCOUNTS[0]), "eu-west-1")
    assert first is not second
    loaders = {id(s._session.get_component("data_loader")) for s in (first, second)}
    assert len(loaders) == 1


async def test_account_sessions_run_botocore_s_builtin_handlers_copied_not_registered_again(
    session: Any,
) -> None:
    # Registering them again cost about 10 ms per account (each handler's signature is
    # inspected); the copy must run the same handlers as a session of its own.
    accounts = Accounts(session, local=True)
    sessions = [accounts.session_for(a, role(a), "us-east-1")._session for a in ACCOUNTS[:2]]
    async with session.client("amplifybackend", region_name="us-east-1") as client:
        model = client.meta.service_model.operation_model("UpdateBackendConfig")
    events = (
        ("choose-service-name", {"service_name": "amplifybackend"}),
        ("before-parameter-build.amplifybackend.UpdateBackendConfig", {"model": model}),
        ("before-call.amplifybackend.UpdateBackendConfig", {"model": model}),
    )
    for event, kwargs in events:
        ran = []
        for core in (*sessions, AioSession()):
            emitter = core.get_component("event_emitter")
            answers = await emitter.emit(event, params={"headers": {}, "body": {}}, **kwargs)
            ran.append([handler for handler, _ in answers])
        assert ran[0], event
        assert ran[0] == ran[1] == ran[2], event


async def test_clients_of_every_account_and_region_share_one_tls_context(
    session: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # aiobotocore loads the CA bundle into a new TLS context for each client: 30 ms of CPU
    # and 0.7 MB per account and region. Here the HTTPS emulator's certificate is the bundle.
    server_tls, bundle = self_signed(tmp_path)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(bundle))
    loads: list[str] = []
    load = ssl.SSLContext.load_verify_locations

    def counted(context: ssl.SSLContext, cafile: Any = None, *args: Any) -> None:
        loads.append(str(cafile))
        load(context, cafile, *args)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counted)
    accounts = Accounts(session, local=True)
    rows = [row(a, r) for a in ACCOUNTS for r in REGIONS] + [row()]
    async with (
        EmulatorServer(ssl_context=server_tls) as https,
        Clients(session, endpoint_url=https.url, accounts=accounts) as clients,
    ):
        assert https.url.startswith("https://127.0.0.1:")
        await asyncio.gather(*(clients.update(r) for r in rows))
    assert [rec.status for rec in https.emulator.requests] == [200] * len(rows)
    assert len({(rec.access_key, rec.region) for rec in https.emulator.requests}) == 7
    assert loads.count(str(bundle)) == 1


async def test_a_server_whose_certificate_is_not_in_the_bundle_is_refused(
    session: Any, tmp_path: Path
) -> None:
    server_tls, _ = self_signed(tmp_path)  # not in the default bundle: not trusted
    async with (
        EmulatorServer(ssl_context=server_tls) as https,
        Clients(session, endpoint_url=https.url) as clients,
    ):
        with pytest.raises(CallError) as refused:
            await clients.update(row())
    assert refused.value.transport
    assert "certificate" in refused.value.message.lower()
    assert https.emulator.requests == []


async def test_credential_failures_are_json_log_lines_not_tracebacks(
    emulator: EmulatorServer, session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream)
    clock = Clock()
    async with FakeSts(clock=clock) as sts:
        sts.refused[role(ACCOUNTS[1])] = (403, "AccessDenied")
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.url)
        accounts = accounts_for(session, clock=clock, retry=RetryPolicy(1))
        async with Clients(session, endpoint_url=emulator.url, accounts=accounts) as clients:
            await clients.update(row(ACCOUNTS[0]))
            clock.advance(2800)  # advisory window of a one-hour session
            sts.fail_next = 1
            await clients.update(row(ACCOUNTS[0]))  # the refresh fails: old key serves
            with pytest.raises(CallError):
                await clients.update(row(ACCOUNTS[1]))  # refused on first use
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["role_refresh_failed", "sdk_warning"]
    refresh, refused = lines
    assert refresh["level"] == "warning"
    assert refresh["account_id"] == ACCOUNTS[0]
    assert refresh["error"] == "InternalFailure: An internal error occurred"
    assert refresh["valid_seconds"] == 800
    assert "mandatory refresh period" in refused["message"]  # aiobotocore's own words
    assert refused["error"].startswith(f"AssumeRoleError: account {ACCOUNTS[1]}: ")
