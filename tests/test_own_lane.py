"""One rate domain, one lane: rows without an account_id are sent in the caller's own
account, so they share the lane (one limiter, one breaker) of the rows of that account.

AmplifyBackend is the emulator over HTTP; STS is the small fake STS (``tests/fake_sts.py``)
on its own thread and event loop, so it counts every ``GetCallerIdentity`` the run makes,
whether from validation (a thread of its own) or from the run's loop.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from batch_updater import RunConfig, Shard, Status, run_batch
from batch_updater.emulator import EmulatorConfig, EmulatorServer
from batch_updater.errors import SetupError
from batch_updater.rows import Row, RowPlan

from . import virtual_time
from .conftest import fast, read_report, write_csv
from .fake_sts import FakeSts

OWN = "123456789012"  # the fake STS's caller identity
OTHER = "444455556666"
UP = "us-east-1_AbC123xyz"
EU = "eu-west-1_AbC123xyz"
HEADER = "account_id,app_id,region,user_pool_id"
TEMPLATE = "arn:aws:iam::{account_id}:role/Migrate"


@pytest.fixture
def sts(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSts]:
    """A fake STS serving from a thread of its own (validation asks it from another thread
    while the run's loop waits), with ``AWS_ENDPOINT_URL_STS`` pointing at it."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = FakeSts(account_id=OWN)
    asyncio.run_coroutine_threadsafe(server.__aenter__(), loop).result(30)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", server.url)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.__aexit__(None, None, None), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def identity_calls(sts: FakeSts) -> int:
    return sum(call.action == "GetCallerIdentity" for call in sts.calls)


def mixed(tmp_path: Path, count: int, account: str = OWN) -> Path:
    """``count`` rows, every other one without an account, the others of ``account``."""
    rows = [f"{account if i % 2 else ''},d{i}abc,us-east-1,{UP}" for i in range(count)]
    return write_csv(tmp_path / "mixed.csv", HEADER, *rows)


def three_kinds() -> list[str]:
    """Rows without an account, of the own account and of another, in two regions."""
    return [
        f"{account},d{i}x{n}abc,{region},{pool}"
        for i in range(3)
        for n, account in enumerate(("", OWN, OTHER))
        for region, pool in (("us-east-1", UP), ("eu-west-1", EU))
    ]


def lane_names(tmp_path: Path) -> set[str]:
    """The lanes the run paced: the summary's settled rate of each."""
    summary = json.loads((tmp_path / "report.csv.summary.json").read_text())
    return set(summary["rate_per_region"])


# -- a real run: one lane, one limit -------------------------------------------------------


def test_rows_without_an_account_and_rows_of_the_own_account_are_paced_as_one_lane(
    tmp_path: Path, session: Any, sts: FakeSts
) -> None:
    # The service limits the account in the region to 10/s (burst 2); so does --rate. Paced
    # as two lanes, the two kinds of rows would together reach it at 20/s and be throttled.
    rate, burst, count = 10.0, 2, 40
    source = mixed(tmp_path, count)

    async def scenario() -> tuple[Any, list[float], Counter[str]]:
        limit = EmulatorConfig(rate=rate, burst=burst, limit_per="access-key-region")
        async with EmulatorServer(limit) as server:
            config = fast(tmp_path, endpoint_url=server.url, rate=rate, burst=burst, concurrency=8)
            summary = await run_batch(source, config, session=session)
            requests = server.emulator.requests
            keys = Counter(r.access_key for r in requests)
            return summary, sorted(r.time for r in requests), keys

    summary, times, keys = virtual_time.run(scenario())
    assert summary.counts[Status.SUCCEEDED] == count
    assert summary.throttles == 0
    for i in range(len(times)):  # never more than the account's limit in any window
        for j in range(i + 1, len(times)):
            assert j - i + 1 <= rate * (times[j] - times[i]) + burst + 1e-6
    assert lane_names(tmp_path) == {f"{OWN}/us-east-1"}  # one lane, one settled rate
    assert keys == {"AKIATESTKEY": count}  # both kinds signed with the base credentials
    assert identity_calls(sts) == 1  # the one validation needed anyway
    accounts = {r["app_id"]: r["account_id"] for r in read_report(tmp_path / "report.csv")}
    assert accounts == {f"d{i}abc": OWN if i % 2 else "" for i in range(count)}  # as given


async def test_own_account_rows_reached_by_the_role_template_share_the_lane_of_rows_without_one(
    tmp_path: Path, session: Any, sts: FakeSts
) -> None:
    rows = [
        f",dblankabc,us-east-1,{UP}",
        f"{OWN},downabc,us-east-1,{UP}",
        f"{OTHER},dotherabc,us-east-1,{UP}",
        f",dblankeuabc,eu-west-1,{EU}",
    ]
    source = write_csv(tmp_path / "in.csv", HEADER, *rows)
    async with EmulatorServer() as server:
        config = fast(tmp_path, endpoint_url=server.url, role_arn=TEMPLATE)
        with structlog.testing.capture_logs() as logs:
            summary = await run_batch(source, config, session=session)
        signed = {r.app_id: r.access_key for r in server.emulator.requests}
    assert summary.exit_code == 0
    [merged] = [e for e in logs if e["event"] == "own_account_lanes"]
    assert (merged["log_level"], merged["account_id"]) == ("info", OWN)
    assert lane_names(tmp_path) == {f"{OWN}/us-east-1", f"{OTHER}/us-east-1", f"{OWN}/eu-west-1"}
    assert identity_calls(sts) == 1  # asked once, for the lanes (the template gives roles)
    # The credentials do not change: the own account's row still goes through its role.
    roles = [call.params["RoleArn"] for call in sts.assume_calls()]
    assert sorted(roles) == sorted(TEMPLATE.format(account_id=a) for a in (OWN, OTHER))
    assert signed["dblankabc"] == signed["dblankeuabc"] == "AKIATESTKEY"
    assert signed["downabc"].startswith("ASIAFAKE")
    accounts = {r["app_id"]: r["account_id"] for r in read_report(tmp_path / "report.csv")}
    assert accounts == {"dblankabc": "", "downabc": OWN, "dotherabc": OTHER, "dblankeuabc": ""}


async def test_without_the_own_account_the_run_warns_and_keeps_two_lanes(
    tmp_path: Path, session: Any, sts: FakeSts
) -> None:
    sts.identity_refused = (403, "InvalidClientTokenId")
    source = mixed(tmp_path, 6)
    async with EmulatorServer() as server:
        config = fast(tmp_path, endpoint_url=server.url, role_arn=TEMPLATE)
        with structlog.testing.capture_logs() as logs:
            summary = await run_batch(source, config, session=session)
    assert summary.exit_code == 0  # the run goes on: only the pacing is per lane
    assert summary.counts[Status.SUCCEEDED] == 6
    assert lane_names(tmp_path) == {"us-east-1", f"{OWN}/us-east-1"}
    [warning] = [e for e in logs if e["event"] == "own_account_unknown"]
    assert warning["log_level"] == "warning"
    assert warning["message"].startswith(
        "cannot tell the base credentials' account (GetCallerIdentity): InvalidClientTokenId"
    )
    assert "paced as two lanes" in warning["message"]


async def test_each_shard_of_a_sharded_run_sends_the_merged_lane_whole_or_not_at_all(
    tmp_path: Path, session: Any, sts: FakeSts
) -> None:
    rows = three_kinds()
    source = write_csv(tmp_path / "in.csv", HEADER, *rows)
    names: list[set[str]] = []
    apps: list[str] = []
    async with EmulatorServer() as server:
        for k in range(2):
            report = f"r{k}.csv"
            config = fast(
                tmp_path, report, endpoint_url=server.url, role_arn=TEMPLATE, shard=Shard(k, 2)
            )
            summary = await run_batch(source, config, session=session)
            assert summary.exit_code == 0
            written = json.loads((tmp_path / f"{report}.summary.json").read_text())
            names.append(set(written["rate_per_region"]))
            apps += [r["app_id"] for r in read_report(tmp_path / report)]
    assert sorted(apps) == sorted(row.split(",")[1] for row in rows)  # each row once
    assert names[0].isdisjoint(names[1])  # no lane paced by two shards
    assert names[0] | names[1] == {
        f"{a}/{r}" for a in (OWN, OTHER) for r in ("us-east-1", "eu-west-1")
    }
    assert identity_calls(sts) == 2  # one per shard process, each merging alike


# -- no look-up where nothing can merge ----------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "lanes"),
    [
        pytest.param(
            [f",d{i}abc,us-east-1,{UP}" for i in range(4)], {"us-east-1"}, id="no-account"
        ),
        pytest.param(
            [f"{a},d{i}{a[0]}abc,us-east-1,{UP}" for i in range(2) for a in (OWN, OTHER)],
            {f"{OWN}/us-east-1", f"{OTHER}/us-east-1"},
            id="accounts",
        ),
    ],
)
async def test_a_file_of_one_kind_of_rows_asks_no_get_caller_identity(
    tmp_path: Path, session: Any, sts: FakeSts, rows: list[str], lanes: set[str]
) -> None:
    source = write_csv(tmp_path / "in.csv", HEADER, *rows)
    async with EmulatorServer() as server:
        config = fast(tmp_path, endpoint_url=server.url, role_arn=TEMPLATE)
        summary = await run_batch(source, config, session=session)
    assert summary.exit_code == 0
    assert identity_calls(sts) == 0
    assert lane_names(tmp_path) == lanes


async def test_a_sharded_dry_run_lists_the_rows_each_shard_would_send(
    tmp_path: Path, session: Any, sts: FakeSts
) -> None:
    # Merged or not, the lanes decide which shard gets which rows: the preview must merge
    # as the real run does (one GetCallerIdentity each), or it lists other rows.
    rows = three_kinds()
    source = write_csv(tmp_path / "in.csv", HEADER, *rows)

    def lines(report: str) -> list[str]:
        return sorted(r["line"] for r in read_report(tmp_path / report))

    async with EmulatorServer() as server:
        for k in range(3):
            shard = Shard(k, 3)
            preview = fast(tmp_path, f"d{k}.csv", dry_run=True, role_arn=TEMPLATE, shard=shard)
            await run_batch(source, preview, session=session)
            live = fast(
                tmp_path, f"r{k}.csv", endpoint_url=server.url, role_arn=TEMPLATE, shard=shard
            )
            assert (await run_batch(source, live, session=session)).exit_code == 0
            assert lines(f"d{k}.csv") == lines(f"r{k}.csv"), f"shard {shard}"
    assert identity_calls(sts) == 6


async def test_a_dry_run_asks_nothing_for_lanes(tmp_path: Path, session: Any, sts: FakeSts) -> None:
    config = fast(tmp_path, dry_run=True, role_arn=TEMPLATE)
    summary = await run_batch(mixed(tmp_path, 6), config, session=session)
    assert summary.counts[Status.DRY_RUN] == 6
    assert sts.calls == []


async def test_local_keeps_every_account_in_a_lane_of_its_own(tmp_path: Path) -> None:
    # --local: each account signs with its own dummy key; there is no own account.
    config = RunConfig.from_flat(local=True, rate=0, report_path=tmp_path / "report.csv")
    summary = await run_batch(mixed(tmp_path, 6), config)
    assert summary.exit_code == 0
    assert lane_names(tmp_path) == {"us-east-1", f"{OWN}/us-east-1"}


# -- the plan: every lane-keyed thing agrees ----------------------------------------------


def cells(account: str, app: str, region: str = "us-east-1") -> dict[str, str]:
    pool = UP if region == "us-east-1" else EU
    return {"account_id": account, "app_id": app, "region": region, "user_pool_id": pool}


def test_the_merged_lane_has_the_later_last_line_and_every_row_of_both() -> None:
    rows = [
        cells("", "d1abc"),
        cells(OWN, "d2abc"),
        cells(OWN, "d3abc", "eu-west-1"),
        cells("", "d4abc"),  # the last row of the merged us-east-1 lane
        cells(OWN, "d5abc"),
        cells("", "d6abc", "eu-west-1"),
        {**cells("", "d7abc"), "role_arn": f"arn:aws:iam::{OWN}:role/Own"},  # own, by role
    ]
    asked: list[int] = []

    def whoami() -> str:
        asked.append(1)
        return OWN

    with RowPlan(rows, None, own_account=whoami, role_template=TEMPLATE) as plan:
        items = list(plan)
        assert asked == [1]
        assert plan.own_lane == OWN
        assert plan.lanes == {(OWN, "us-east-1"), (OWN, "eu-west-1")}
        assert plan.regions == {"us-east-1", "eu-west-1"}
        assert plan.last_lines == {(OWN, "us-east-1"): 8, (OWN, "eu-west-1"): 7}
        assert {plan.lane_of(r) for r in items if isinstance(r, Row)} == plan.lanes
    # As given (a role ARN alone gives its account, as before).
    assert [i.account_id for i in items] == ["", OWN, OWN, "", OWN, "", OWN]


def test_rows_without_an_account_keep_their_lane_when_no_row_is_of_the_own_account() -> None:
    rows = [cells("", "d1abc"), cells(OTHER, "d2abc")]
    with RowPlan(rows, None, own_account=OWN, role_template=TEMPLATE) as plan:
        assert plan.own_lane == ""
        assert plan.lanes == {("", "us-east-1"), (OTHER, "us-east-1")}


def fleet() -> list[dict[str, str]]:
    """Rows without an account and rows of the own account and of three others, in two
    regions, mixed as an export may mix them."""
    accounts = ("", OWN, "111111111111", "222222222222", "333333333333")
    return [
        cells(account, f"d{n}x{i}abc", region)
        for i in range(3)
        for n, account in enumerate(accounts)
        for region in ("us-east-1", "eu-west-1")
    ]


@pytest.mark.parametrize("count", [2, 3, 5, 9])
def test_every_shard_puts_the_merged_lane_whole_in_one_shard(count: int) -> None:
    rows = fleet()
    shards_of: dict[tuple[str, str], set[int]] = {}  # (account or own, region) -> shards
    lines: list[int] = []
    for k in range(count):
        with RowPlan(
            rows, None, shard=Shard(k, count), own_account=OWN, role_template=TEMPLATE
        ) as plan:
            items = list(plan)
        lines += [i.line for i in items]
        for item in items:
            assert isinstance(item, Row), item
            shards_of.setdefault((item.account_id or OWN, item.region), set()).add(k)
            assert plan.lane_of(item) == (item.account_id or OWN, item.region)
        if not plan.rate_divided:
            assert {plan.lane_of(i) for i in items if isinstance(i, Row)} == plan.lanes
    assert sorted(lines) == list(range(2, len(rows) + 2))  # every row in exactly one shard
    if count <= 8:  # 8 lanes: each whole in one shard, the merged ones included
        assert all(len(shards) == 1 for shards in shards_of.values()), shards_of


def test_a_shard_that_cannot_tell_the_own_account_sends_nothing() -> None:
    def refused() -> str:
        raise SetupError("cannot tell the base credentials' account (GetCallerIdentity): X: y")

    with pytest.raises(SetupError, match=r"shard 1/3 needs it .* nothing was sent"):
        RowPlan(fleet(), None, shard=Shard(1, 3), own_account=refused, role_template=TEMPLATE)
    warned: list[str] = []
    with RowPlan(
        fleet(), None, own_account=refused, role_template=TEMPLATE, warn=warned.append
    ) as plan:  # unsharded: two lanes, and a warning
        assert ("", "us-east-1") in plan.lanes
        assert (OWN, "us-east-1") in plan.lanes
    assert len(warned) == 1
    warned.clear()
    with RowPlan(
        fleet(),
        None,
        shard=Shard(1, 3),
        own_account=refused,
        role_template=TEMPLATE,
        sends=False,
        warn=warned.append,
    ) as plan:  # a sharded dry run sends nothing: it warns that its split may differ
        assert plan.own_lane == ""
    assert len(warned) == 1
    assert "this dry run's shard may list other rows" in warned[0]
