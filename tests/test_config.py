"""RunConfig and its groups: shorthands, flat names, rules written once, account settings."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest

import batch_updater
from batch_updater import (
    Accounts,
    Output,
    Rate,
    Retries,
    RunConfig,
    SetupError,
    Shard,
    StopRules,
)
from batch_updater.config import settings

ROLE = "arn:aws:iam::{account_id}:role/AmplifyMigration"


def test_the_package_exports_exactly_its_public_names() -> None:
    public = {
        name
        for name, value in vars(batch_updater).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert set(batch_updater.__all__) == public | {"__version__"}
    for group in (Rate, Retries, StopRules, Accounts, Output):
        assert group.__name__ in batch_updater.__all__


@pytest.mark.parametrize(
    ("given", "meant"),
    [
        ({"rate": 5}, {"rate": Rate(5.0)}),
        ({"retries": 3}, {"retries": Retries(3)}),
        ({"output": "r.csv"}, {"output": Output(Path("r.csv"))}),
        ({"accounts": ROLE}, {"accounts": Accounts(role_arn=ROLE)}),
    ],
)
def test_a_plain_value_stands_for_its_groups_main_setting(
    given: dict[str, object], meant: dict[str, object]
) -> None:
    assert RunConfig(**given) == RunConfig(**meant)  # type: ignore[arg-type]


def test_a_group_without_a_main_setting_takes_no_plain_value() -> None:
    with pytest.raises(SetupError, match=r"^RunConfig.stop: expected a StopRules, got int 3$"):
        RunConfig(stop=3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Rate(burst="2"), "Rate.burst: expected a whole number, got str '2'"),
        (lambda: Rate(adaptive=1), "Rate.adaptive: expected true or false, got int 1"),
        (lambda: Retries(backoff_cap=-1), "Retries.backoff_cap: must be 0 or more, got -1"),
        (lambda: Retries(request_timeout=0), "Retries.request_timeout: must be more than 0"),
        (lambda: StopRules(max_failure_rate=2), "StopRules.max_failure_rate: must be between 0"),
        (lambda: StopRules(max_failures=-1), "StopRules.max_failures: must be 0 or more"),
        (lambda: Output(checkpoint_interval=0), "Output.checkpoint_interval: must be more than"),
        (lambda: RunConfig(rate=-1), "Rate.rate: must be 0 or more, got -1"),
        (lambda: RunConfig(progress_interval=0), "RunConfig.progress_interval: must be more"),
    ],
)
def test_each_group_checks_its_fields_and_names_them(make: object, message: str) -> None:
    with pytest.raises(SetupError) as info:
        make()  # type: ignore[operator]
    assert str(info.value).startswith(message)


def test_groups_are_frozen_and_slotted() -> None:
    for group in (Rate(), Retries(), StopRules(), Accounts(), Output(), RunConfig()):
        assert not hasattr(group, "__dict__")
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(group, dataclasses.fields(group)[0].name, None)


def test_defaults_are_the_documented_ones() -> None:
    described = RunConfig().describe()
    expected = {
        "rate": 10.0,
        "burst": 1,
        "adaptive": True,
        "concurrency": 16,
        "max_attempts": 8,
        "request_timeout": 30.0,
        "backoff_base": 0.5,
        "backoff_cap": 20.0,
        "grace_period": 20.0,
        "max_failure_rate": 0.5,
        "failure_window": 100,
        "max_failures": None,
        "progress_interval": 30.0,
        "role_arn": None,
        "role_name": None,
        "external_id": None,
        "role_session_name": None,
        "role_duration": 3600,
        "check_access": False,
        "checkpoint_interval": 60.0,
        "report_path": None,
        "resume": [],
        "keep_columns": [],
    }
    assert {k: described[k] for k in expected} == expected


def test_flat_names_reach_their_groups() -> None:
    flat = RunConfig.from_flat(
        rate=5,
        concurrency=2,
        max_attempts=3,
        backoff_base=0.001,
        grace_period=1,
        role_name="OrganizationAccountAccessRole",
        report_path="r.csv",
        resume=["a.csv"],
        region="us-east-1",
        shard=Shard(1, 2),
    )
    assert flat == RunConfig(
        rate=Rate(5, concurrency=2),
        retries=Retries(3, backoff_base=0.001),
        stop=StopRules(grace_period=1),
        accounts=Accounts(role_name="OrganizationAccountAccessRole"),
        output=Output("r.csv", resume=["a.csv"]),  # type: ignore[arg-type]
        region="us-east-1",
        shard=Shard(1, 2),
    )
    assert flat.get("concurrency") == 2
    assert flat.get("region") == "us-east-1"


def test_with_settings_changes_settings_by_flat_name_and_keeps_the_rest() -> None:
    config = RunConfig(rate=Rate(5, concurrency=2), output="r.csv", dry_run=True)
    changed = config.with_settings(overwrite=True, concurrency=4)
    assert changed == RunConfig(
        rate=Rate(5, concurrency=4), output=Output("r.csv", overwrite=True), dry_run=True
    )
    with pytest.raises(SetupError, match=r"Rate\.concurrency: must be at least 1"):
        config.with_settings(concurrency=0)


def test_the_summary_names_every_setting_flat_as_before() -> None:
    config = RunConfig(rate=Rate(40, rate_per_shard=False), shard=Shard(0, 4), output="r.csv")
    described = config.describe()
    assert set(described) == (set(settings()) - {"collect_results", "run_id"}) | {"effective_rate"}
    assert described["rate"] == 40.0
    assert described["effective_rate"] == 10.0
    assert described["shard"] == "0/4"
    assert described["report_path"] == "r.csv"


def test_every_setting_has_one_flat_name() -> None:
    names = [
        f.name
        for group in (Rate, Retries, StopRules, Accounts, Output)
        for f in dataclasses.fields(group)
    ]
    own = [f.name for f in dataclasses.fields(RunConfig)]
    groups = {"rate", "retries", "stop", "accounts", "output"}
    assert len(names) == len(set(names))
    assert not (set(names) & (set(own) - groups))
    assert set(settings()) == set(names) | (set(own) - groups)


# -- accounts ----------------------------------------------------------------------------------


def test_role_name_is_a_template_over_partition_and_account() -> None:
    accounts = Accounts(role_name="OrganizationAccountAccessRole")
    assert (
        accounts.role_arn_template
        == "arn:{partition}:iam::{account_id}:role/OrganizationAccountAccessRole"
    )
    assert (
        accounts.role_arn_for("111122223333", "aws-us-gov")
        == "arn:aws-us-gov:iam::111122223333:role/OrganizationAccountAccessRole"
    )
    assert Accounts(role_arn=ROLE).role_arn_for("444455556666") == (
        "arn:aws:iam::444455556666:role/AmplifyMigration"
    )
    assert Accounts().role_arn_for("111122223333") is None


@pytest.mark.parametrize(
    "arn",
    [
        ROLE,
        "arn:aws:iam::111122223333:role/AmplifyMigration",
        "arn:aws-cn:iam::{account_id}:role/team/deploy/Amplify+Migration",
        "arn:{partition}:iam::{account_id}:role/AmplifyMigration",
    ],
)
def test_role_arn_takes_an_arn_or_a_template(arn: str) -> None:
    assert Accounts(role_arn=arn).role_arn == arn


@pytest.mark.parametrize(
    "arn",
    [
        "AmplifyMigration",
        "arn:aws:iam::{account}:role/AmplifyMigration",
        "arn:aws:iam::12345:role/AmplifyMigration",
        "arn:aws:iam::{account_id}:user/someone",
        "arn:aws:iam::{account_id}:role/",
        "arn:aws:iam::{account_id}:role/has space",
        "arn:azure:iam::{account_id}:role/AmplifyMigration",
    ],
)
def test_role_arn_refuses_anything_else_saying_what_to_give(arn: str) -> None:
    with pytest.raises(SetupError, match=r"^Accounts.role_arn: must be a role ARN \(arn:aws"):
        Accounts(role_arn=arn)


def test_role_arn_and_role_name_exclude_each_other() -> None:
    with pytest.raises(SetupError, match="use either --role-arn or --role-name, not both"):
        Accounts(role_arn=ROLE, role_name="AmplifyMigration")


@pytest.mark.parametrize(
    ("field", "good", "bad"),
    [
        ("role_name", ["A", "team/A", "a+=,.@_-" * 8], ["", "a b", "x" * 65, "/A"]),
        ("external_id", ["ab", "x" * 1224, "a:b/c=d@e"], ["a", "x" * 1225, "a b", "é1"]),
        ("role_session_name", ["ab", "x" * 64, "run.1@x=y"], ["a", "x" * 65, "a:b", "a b"]),
        ("role_duration", [900, 3600, 43200], [899, 43201, 0]),
    ],
)
def test_account_settings_take_what_sts_takes(
    field: str, good: list[object], bad: list[object]
) -> None:
    for value in good:
        assert getattr(Accounts(**{field: value}), field) == value  # type: ignore[arg-type]
    for value in bad:
        with pytest.raises(SetupError, match=f"^Accounts.{field}: must be"):
            Accounts(**{field: value})  # type: ignore[arg-type]


def test_the_session_name_defaults_to_the_run_id_cut_to_what_sts_takes() -> None:
    assert Accounts().session_name("a1b2c3") == "batch-updater-a1b2c3"
    long_id = "migration-2026.11:shard-1" + "x" * 40
    name = Accounts().session_name(long_id)
    assert name == ("batch-updater-migration-2026.11-shard-1" + "x" * 40)[:64]
    assert len(name) == 64
    assert Accounts(role_session_name="mine").session_name("a1b2c3") == "mine"


def test_check_access_is_for_dry_runs_only() -> None:
    with pytest.raises(SetupError, match="--check-access works with --dry-run only"):
        RunConfig(accounts=Accounts(check_access=True))
    assert RunConfig(accounts=Accounts(check_access=True), dry_run=True).accounts.check_access
