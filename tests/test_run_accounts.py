"""A whole run over many accounts (issue 10): run_batch and the CLI, end to end.

AmplifyBackend is the emulator over HTTP, limiting each (access key, region) the way AWS
limits each account in each region; STS is moto's server (``moto`` fixture), with a small
STS in front of it (``tests/fake_sts.py``) where a role must be refused.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from batch_updater import Accounts, RunConfig, Status, run_batch
from batch_updater.cli import main
from batch_updater.emulator import EmulatorConfig, EmulatorServer

from .conftest import fast, read_report, write_csv
from .fake_sts import FakeSts
from .moto_server import MotoServer

UP = "us-east-1_AbC123xyz"
ACCOUNTS = ("111111111111", "222222222222", "333333333333")
REGIONS = ("us-east-1", "eu-west-1")
HEADER = "account_id,app_id,region,user_pool_id"


def fleet(tmp_path: Path, per_lane: int = 2, accounts: tuple[str, ...] = ACCOUNTS) -> Path:
    """Rows sorted by account, as an Organizations export is."""
    rows = [
        f"{account},d{a}x{r}x{i}abc,{region},{UP}"
        for a, account in enumerate(accounts)
        for r, region in enumerate(REGIONS)
        for i in range(per_lane)
    ]
    return write_csv(tmp_path / "fleet.csv", HEADER, *rows)


def role(account: str) -> str:
    return f"arn:aws:iam::{account}:role/AmplifyMigration"


async def test_each_account_and_region_is_a_lane_signed_with_its_own_role(
    tmp_path: Path, moto: MotoServer, session: Any
) -> None:
    emulator = EmulatorServer(EmulatorConfig(limit_per="access-key-region"))
    async with emulator as server:
        config = fast(tmp_path, endpoint_url=server.url, role_name="AmplifyMigration")
        summary = await run_batch(fleet(tmp_path), config, session=session)
        requests = server.emulator.requests
    assert summary.exit_code == 0
    assert summary.counts[Status.SUCCEEDED] == 12
    # moto maps each assumed access key to its account: every request signed as its row's.
    account_of = {r["access_key_id"]: r["account_id"] for r in moto.assumed_roles()}
    assert sorted(account_of.values()) == sorted(ACCOUNTS)  # one AssumeRole per account
    assert {r["role_arn"] for r in moto.assumed_roles()} == {role(a) for a in ACCOUNTS}
    signed = Counter((account_of[r.access_key], r.region) for r in requests)
    assert signed == {(a, region): 2 for a in ACCOUNTS for region in REGIONS}
    records = read_report(tmp_path / "report.csv")
    assert {r["account_id"] for r in records} == set(ACCOUNTS)
    written = json.loads((tmp_path / "report.csv.summary.json").read_text())
    assert written["counts_by_account"] == {a: {"succeeded": 4} for a in ACCOUNTS}
    assert set(written["rate_per_region"]) == {f"{a}/{r}" for a in ACCOUNTS for r in REGIONS}
    assert written["accounts_stopped"] == {}


async def test_an_account_whose_role_is_refused_stops_alone(
    tmp_path: Path, moto: MotoServer, session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = ACCOUNTS[1]
    async with FakeSts(upstream=moto.url) as sts, EmulatorServer() as server:
        sts.refused[role(refused)] = (403, "AccessDenied")
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.url)
        config = fast(tmp_path, endpoint_url=server.url, role_name="AmplifyMigration")
        summary = await run_batch(fleet(tmp_path, per_lane=5), config, session=session)
        assert len(sts.assume_calls(role(refused))) == 1  # refused once, not asked again
    assert summary.exit_code == 1
    assert summary.stop_reason is None  # the other accounts went on
    records = read_report(tmp_path / "report.csv")
    assert len(records) == 30
    mine = [r for r in records if r["account_id"] == refused]
    assert {r["status"] for r in mine} == {"not_attempted"}
    assert all(
        f"account {refused}: cannot assume {role(refused)}" in r["error_message"] for r in mine
    )
    others = [r for r in records if r["account_id"] != refused]
    assert {r["status"] for r in others} == {"succeeded"}
    assert list(summary.accounts_stopped) == [refused]
    assert "trust policy" in summary.accounts_stopped[refused]


async def test_an_access_denied_answer_on_a_role_stops_that_account_not_the_run(
    tmp_path: Path, moto: MotoServer, session: Any
) -> None:
    bad = ACCOUNTS[2]
    async with EmulatorServer() as server:
        # The first request of the bad account is answered 403 AccessDeniedException.
        server.emulator.script("d2x0x0abc", ["403"])
        config = fast(
            tmp_path, endpoint_url=server.url, role_name="AmplifyMigration", concurrency=1
        )
        summary = await run_batch(fleet(tmp_path, per_lane=3), config, session=session)
    assert summary.stop_reason is None
    assert list(summary.accounts_stopped) == [bad]
    records = {r["app_id"]: r for r in read_report(tmp_path / "report.csv")}
    assert records["d2x0x0abc"]["status"] == "failed"
    assert records["d2x0x0abc"]["error_code"] == "AccessDeniedException"
    rest = [r for r in records.values() if r["account_id"] == bad and r["app_id"] != "d2x0x0abc"]
    assert {r["status"] for r in rest} == {"not_attempted"}
    assert {r["status"] for r in records.values() if r["account_id"] != bad} == {"succeeded"}


async def test_local_runs_accounts_with_dummy_keys_per_account_and_no_sts(tmp_path: Path) -> None:
    # --local: no AWS account and no role needed; each account signs with its own key.
    config = RunConfig.from_flat(local=True, rate=0, report_path=tmp_path / "r.csv")
    summary = await run_batch(fleet(tmp_path), config)
    assert summary.exit_code == 0
    assert summary.counts_by_account == {a: {"succeeded": 4} for a in ACCOUNTS}


async def test_a_row_of_another_account_without_a_role_is_invalid_naming_the_fix(
    tmp_path: Path, moto: MotoServer, session: Any
) -> None:
    # moto's caller identity is account 123456789012: that account needs no role.
    source = write_csv(
        tmp_path / "in.csv",
        HEADER,
        f"123456789012,downabc,us-east-1,{UP}",
        f"111111111111,dotherabc,us-east-1,{UP}",
    )
    summary = await run_batch(source, fast(tmp_path, dry_run=True), session=session)
    records = {r["app_id"]: r for r in read_report(tmp_path / "report.csv")}
    assert records["downabc"]["status"] == "dry_run"
    assert records["dotherabc"]["status"] == "invalid"
    assert records["dotherabc"]["error_message"].endswith(
        "no role to assume for account 111111111111: add a role_arn column or --role-arn"
    )
    assert summary.exit_code == 1


async def test_check_access_assumes_every_role_once_and_reports_each_account(
    tmp_path: Path,
    moto: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    refused = ACCOUNTS[0]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-secret-secret")
    async with FakeSts(upstream=moto.url) as sts:
        sts.refused[role(refused)] = (403, "AccessDenied")
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.url)
        source = fleet(tmp_path)
        report = tmp_path / "check.csv"
        code = await _main_async(
            [
                "run", str(source), "--dry-run", "--check-access", "--role-name",
                "AmplifyMigration", "--report", str(report), "--log-format", "json",
            ]
        )  # fmt: skip
        assert sorted(Counter(c.params["RoleArn"] for c in sts.assume_calls()).values()) == [
            1,
            1,
            1,
        ]
    assert code == 1
    written = json.loads((tmp_path / "check.csv.summary.json").read_text())
    checks = {c["account_id"]: c for c in written["access_checks"]}
    assert set(checks) == set(ACCOUNTS)
    assert not checks[refused]["ok"]
    assert "AccessDenied" in checks[refused]["reason"]
    assert all(checks[a]["ok"] for a in ACCOUNTS[1:])
    assert written["counts"]["dry_run"] == 12  # no update sent


async def _main_async(argv: list[str]) -> int:
    """The CLI in a thread: it runs its own event loop."""
    return await asyncio.to_thread(main, argv)


def test_accounts_is_a_public_settings_group() -> None:
    assert RunConfig(accounts=Accounts(role_name="X")).accounts.role_arn_template == (
        "arn:{partition}:iam::{account_id}:role/X"
    )


def test_the_human_summary_names_stopped_accounts_and_the_resume_command(
    tmp_path: Path,
    moto: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    refused = ACCOUNTS[1]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-secret-secret")

    async def scenario() -> int:
        async with FakeSts(upstream=moto.url) as sts, EmulatorServer() as server:
            sts.refused[role(refused)] = (403, "AccessDenied")
            monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.url)
            return await _main_async(
                [
                    "run", str(fleet(tmp_path)), "--endpoint-url", server.url, "--rate", "0",
                    "--role-name", "AmplifyMigration", "--report", str(tmp_path / "r.csv"),
                    "--log-format", "console", "--no-progress",
                ]
            )  # fmt: skip

    assert asyncio.run(scenario()) == 1
    err = capsys.readouterr().err
    assert f"account {refused} stopped (its rows not sent): account {refused}: cannot assume" in err
    assert "to finish the job: batch-updater run" in err
    assert "--resume" in err.split("to finish the job:")[1]
