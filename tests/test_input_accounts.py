"""Rows in many accounts: the account_id and role_arn columns, the role of each row,
duplicates keyed on the account, and shards that own whole lanes (account, region)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch_updater.errors import SetupError
from batch_updater.rows import LoginSettings, Rejected, Row, RowPlan, validate
from batch_updater.rules import FIELDS, AccountRoles, partition_of, settings_digest
from batch_updater.shard import Shard, assign_lanes

UP = "us-east-1_AbC123xyz"
WC = "4v7d2k9q1m3n5p7r9t1v3x5z7b"
A1, A2, A3 = "111122223333", "444455556666", "777788889999"
ROLE1 = f"arn:aws:iam::{A1}:role/AmplifyMigration"
NO_ROLE = f"no role to assume for account {A1}: add a role_arn column or --role-arn"


def row(**kw: str) -> dict[str, str]:
    base = {"app_id": "d1abc", "region": "us-east-1", "user_pool_id": UP, "web_client_id": WC}
    base.update(kw)
    return base


def check(cells: Mapping[str, str], roles: AccountRoles | None = None) -> Row | Rejected:
    result = validate(5, cells, None, roles=roles)
    assert result is not None
    return result


def reason(cells: Mapping[str, str], roles: AccountRoles | None = None) -> str:
    result = check(cells, roles)
    assert isinstance(result, Rejected), result
    assert (result.status, result.line) == ("invalid", 5)
    return result.reason


def plan_items(
    rows: Iterable[Mapping[str, str]], **kw: object
) -> tuple[RowPlan, list[Row | Rejected]]:
    plan = RowPlan(list(rows), None, **kw)  # type: ignore[arg-type]
    return plan, list(plan)


# -- the columns and their rules ----------------------------------------------------------


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        (row(account_id="12345"), "account_id: '12345' is not an AWS account id (12 digits)"),
        (row(account_id="11112222333a"), "account_id: '11112222333a' is not an AWS account id"),
        (row(account_id="1111222233334"), "account_id: 13 characters, at most 12 allowed"),
        (
            row(role_arn=f"arn:aws:iam::{A1[:-1]}:role/R"),
            "role_arn: 'arn:aws:iam::11112222333:role/R' is not an IAM role ARN like "
            "arn:aws:iam::111122223333:role/Name",
        ),
        (row(role_arn=f"arn:aws:sts::{A1}:role/R"), "is not an IAM role ARN"),
        (row(role_arn=f"arn:aws-iso:iam::{A1}:role/R"), "is not an IAM role ARN"),
        (row(role_arn=f"arn:aws:iam::{A1}:user/R"), "is not an IAM role ARN"),
        (row(role_arn=f"arn:aws:iam::{A1}:role/"), "is not an IAM role ARN"),
        (row(role_arn=f"arn:aws:iam::{A1}:role/a b"), "is not an IAM role ARN"),
        (row(role_arn=f"arn:aws:iam::{A1}:role/{'r' * 65}"), "is not an IAM role ARN"),
        (
            row(account_id=A2, role_arn=ROLE1),
            f"role_arn: account {A1} differs from account_id {A2}",
        ),
        (
            row(region="cn-north-1", role_arn=ROLE1),
            "role_arn: partition aws does not match region cn-north-1 (partition aws-cn)",
        ),
        (
            row(region="us-gov-west-1", role_arn=f"arn:aws-cn:iam::{A1}:role/R"),
            "role_arn: partition aws-cn does not match region us-gov-west-1 (partition aws-us-gov)",
        ),
        (row(account_id=A1), NO_ROLE),
    ],
)
def test_each_account_rule_names_the_field(cells: dict[str, str], expected: str) -> None:
    assert expected in reason(cells)


def test_a_role_arn_without_account_id_gives_the_row_the_arns_account() -> None:
    result = check(row(role_arn=ROLE1))
    assert isinstance(result, Row), result
    assert (result.account_id, result.role_arn, result.region) == (A1, ROLE1, "us-east-1")
    plan, _ = plan_items([row(role_arn=ROLE1)])
    assert plan.lane_of(result) == (A1, "us-east-1")  # the role's account's lane


@pytest.mark.parametrize(
    ("region", "arn"),
    [
        ("us-east-1", f"arn:aws:iam::{A1}:role/service-role/team/Name+=,.@-_9"),
        ("cn-northwest-1", f"arn:aws-cn:iam::{A1}:role/R"),
        ("us-gov-east-1", f"arn:aws-us-gov:iam::{A1}:role/R"),
        ("eu-west-1", f"arn:aws:iam::{A1}:role/{'r' * 64}"),
    ],
)
def test_role_arns_of_every_partition_with_paths_are_valid(region: str, arn: str) -> None:
    result = check(row(region=region, account_id=A1, role_arn=f"  {arn} "))
    assert isinstance(result, Row), result
    assert (result.account_id, result.role_arn) == (A1, arn)


def test_an_invalid_row_keeps_its_account_and_every_problem() -> None:
    result = check(row(app_id="D1", account_id=A2, role_arn=ROLE1))
    assert isinstance(result, Rejected)
    assert (result.account_id, result.role_arn) == (A2, ROLE1)
    assert result.reason.startswith("app_id: 'D1' is not an Amplify app id")
    assert f"role_arn: account {A1} differs from account_id {A2}" in result.reason


def test_the_partition_of_a_region() -> None:
    assert [partition_of(r) for r in ("us-east-1", "cn-north-1", "us-gov-west-1")] == [
        "aws",
        "aws-cn",
        "aws-us-gov",
    ]


def test_rows_without_account_columns_have_no_account_or_role() -> None:
    result = check(row())
    assert isinstance(result, Row)
    assert (result.account_id, result.role_arn, result.region) == ("", "", "us-east-1")
    plan, _ = plan_items([row()])
    assert plan.lane_of(result) == ("", "us-east-1")


def test_the_fast_test_of_each_column_agrees_with_its_rule() -> None:
    """The hot path's test is derived from the same table as the worded rule."""
    samples = ["", "d1abc", "D1", "d" * 21, UP, "us-east-1_" + "a" * 46, WC, "a+b", "a-b"]
    samples += [A1, A1 + "1", ROLE1, ROLE1 + " x", "x" * 129, "é"]
    for field in FIELDS.values():
        for value in samples:
            assert (field.fast(value) is not None) == (field.problem(value) is None), (
                field.column,
                value,
            )


# -- headers and aliases ------------------------------------------------------------------


def test_the_aliases_account_id_and_role_arn_of_an_inventory_export(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(
        "AppId,Region,AwsUserPoolsId,AccountId,RoleArn\n"
        f"d1abc,us-east-1,{UP},{A1},{ROLE1}\n"
        f"d2abc,us-east-1,{UP},,arn:aws:iam::{A2}:role/R\n"
        f"d3abc,us-east-1,{UP},{A2},{ROLE1}\n"
    )
    with RowPlan(path, None) as plan:
        items = list(plan)
    assert [(i.line, i.account_id) for i in items] == [(2, A1), (3, A2), (4, A2)]
    assert isinstance(items[0], Row)
    assert items[0].role_arn == ROLE1
    assert isinstance(items[2], Rejected)
    assert items[2].reason == f"role_arn: account {A1} differs from account_id {A2}"
    assert plan.lanes == {(A1, "us-east-1"), (A2, "us-east-1")}
    assert (plan.total, plan.invalid) == (3, 1)


def test_an_unknown_column_lists_the_account_columns_too(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("app_id,acount_id\n")
    with pytest.raises(SetupError, match=r"account_id \(or AccountId\), role_arn \(or RoleArn\)"):
        RowPlan(path, None)


# -- which role: the row's, the template, or none for the caller's own account ------------


def test_the_role_template_fills_in_account_and_partition() -> None:
    roles = AccountRoles("arn:{partition}:iam::{account_id}:role/Migrate")
    rows = [
        row(account_id=A1),
        row(account_id=A2, region="cn-north-1", user_pool_id="cn-north-1_AbC"),
        row(account_id=A1, app_id="d2abc", role_arn=f"arn:aws:iam::{A1}:role/Own"),
        row(app_id="d3abc"),
    ]
    got = [check(cells, roles) for cells in rows]
    assert all(isinstance(r, Row) for r in got), got
    assert [(r.account_id, r.role_arn) for r in got] == [
        (A1, f"arn:aws:iam::{A1}:role/Migrate"),
        (A2, f"arn:aws-cn:iam::{A2}:role/Migrate"),
        (A1, f"arn:aws:iam::{A1}:role/Own"),  # the row's own role_arn wins
        ("", ""),  # no account: the base credentials, as before
    ]


def test_a_template_in_another_partition_or_account_makes_the_row_invalid() -> None:
    cn = row(account_id=A1, region="cn-north-1", user_pool_id="cn-north-1_AbC")
    assert reason(cn, AccountRoles("arn:aws:iam::{account_id}:role/R")) == (
        "role_arn (from --role-arn): partition aws does not match region cn-north-1 "
        "(partition aws-cn)"
    )
    assert reason(row(account_id=A2), AccountRoles(ROLE1)) == (
        f"role_arn (from --role-arn): account {A1} differs from account_id {A2}"
    )


@pytest.mark.parametrize("template", ["arn:aws:iam::{account_id}:user/R", "Migrate", "{x}"])
def test_a_template_that_is_no_role_arn_is_a_setup_error(template: str) -> None:
    with pytest.raises(SetupError, match=r"--role-arn: .* is not an IAM role ARN template"):
        AccountRoles(template)


def test_the_callers_own_account_needs_no_role() -> None:
    roles = AccountRoles(own_account=A1)
    assert isinstance(check(row(account_id=A1), roles), Row)
    assert reason(row(account_id=A2), roles) == NO_ROLE.replace(A1, A2)
    assert reason(row(account_id=A1)) == NO_ROLE  # no own account known: exactly this


def test_the_own_account_is_looked_up_once_and_only_when_a_row_needs_it() -> None:
    calls: list[int] = []

    def whoami() -> str:
        calls.append(1)
        return A1

    plan, items = plan_items(
        [row(role_arn=ROLE1), row(app_id="d2abc"), row(app_id="d3abc", region="eu-west-1")],
        own_account=whoami,
        sends=False,  # validation alone; lanes may ask (see test_own_lane.py)
    )
    assert calls == []
    assert all(isinstance(i, Row) for i in items)

    plan, items = plan_items(
        [row(account_id=A1), row(account_id=A1, app_id="d2abc"), row(account_id=A2)],
        own_account=whoami,
    )
    assert calls == [1]  # one GetCallerIdentity for both passes
    assert [i.status if isinstance(i, Rejected) else "ok" for i in items] == [
        "ok",
        "ok",
        "invalid",
    ]
    assert (plan.total, plan.invalid) == (3, 1)
    assert plan.lanes == {(A1, "us-east-1")}


# -- duplicates and digests ---------------------------------------------------------------


def test_the_same_app_in_two_accounts_is_two_apps() -> None:
    other = "us-east-1_Other9"
    plan, items = plan_items(
        [
            row(role_arn=ROLE1),
            row(role_arn=f"arn:aws:iam::{A2}:role/R", user_pool_id=other),  # another app
            row(role_arn=ROLE1),  # the first again
            row(),  # no account: the base credentials' app, a third one
            row(account_id=A3, role_arn=f"arn:aws:iam::{A3}:role/R"),
            row(account_id=A3, role_arn=f"arn:aws:iam::{A3}:role/R", user_pool_id=other),
        ]
    )
    fates = [(i.line, i.status if isinstance(i, Rejected) else "send") for i in items]
    assert fates == [
        (2, "send"),
        (3, "send"),
        (4, "skipped"),
        (5, "send"),
        (6, "invalid"),
        (7, "invalid"),
    ]
    assert isinstance(items[2], Rejected)
    assert items[2].reason == "duplicate of line 2"
    assert isinstance(items[4], Rejected)
    assert items[4].reason == (
        "conflicts with line 7 (same account, region and app_id, other settings)"
    )
    assert (plan.conflicts, plan.total, plan.invalid) == (1, 6, 2)
    assert plan.lanes == {
        (A1, "us-east-1"),
        (A2, "us-east-1"),
        ("", "us-east-1"),
        (A3, "us-east-1"),
    }
    assert plan.regions == {"us-east-1"}


def test_the_digest_of_a_row_without_account_is_the_one_earlier_reports_hold() -> None:
    # Written by the release before accounts: a resumed run must find the same digest.
    old = "1b1b11580533318a"
    assert LoginSettings(user_pool_id=UP, web_client_id=WC).digest() == old
    plain = check(row())
    assert isinstance(plain, Row)
    assert plain.digest == old
    with_account = check(row(role_arn=ROLE1))
    assert isinstance(with_account, Row)
    assert with_account.digest not in {old, ""}
    assert with_account.digest == settings_digest("", "", UP, WC, A1)[1]


# -- sharding by lane ---------------------------------------------------------------------


def fleet(
    accounts: int, regions: tuple[str, ...], apps: Callable[[int], int]
) -> list[dict[str, str]]:
    """Rows over ``accounts`` x ``regions``; account k has ``apps(k)`` apps per region, plus
    one invalid row and one duplicate per account."""
    out: list[dict[str, str]] = []
    for k in range(accounts):
        account = f"{k + 100000000000}"
        arn = f"arn:aws:iam::{account}:role/R"
        for region in regions:
            pool = f"{region}_AbC"
            out += [
                row(app_id=f"d{n}x", region=region, user_pool_id=pool, role_arn=arn)
                for n in range(apps(k))
            ]
        out.append(
            row(app_id="d0x", region=regions[0], user_pool_id=f"{regions[0]}_AbC", role_arn=arn)
        )
        out.append(row(app_id="bad", role_arn=arn))
    return out


def sharded(rows: list[dict[str, str]], count: int) -> list[tuple[RowPlan, list[Row | Rejected]]]:
    return [plan_items(rows, shard=Shard(k, count)) for k in range(count)]


@pytest.mark.parametrize("count", [2, 3, 7])
def test_with_enough_lanes_each_lane_belongs_to_exactly_one_shard(count: int) -> None:
    rows = fleet(5, ("us-east-1", "eu-west-1"), lambda k: 3 + 4 * k)  # 10 lanes, uneven
    whole, _ = plan_items(rows)
    shards = sharded(rows, count)
    lines = Counter(i.line for _, items in shards for i in items)
    assert sorted(lines) == list(range(2, len(rows) + 2))  # every row once
    assert set(lines.values()) == {1}
    owner: dict[tuple[str, str], int] = {}
    for k, (plan, items) in enumerate(shards):
        assert not plan.rate_divided
        for item in items:
            if isinstance(item, Row) or item.status == "skipped":
                assert owner.setdefault((item.account_id, item.region), k) == k
        assert plan.lanes == {lane for lane, k2 in owner.items() if k2 == k}
        assert plan.total == len(items)
        assert plan.invalid == sum(isinstance(i, Rejected) and i.status == "invalid" for i in items)
        assert (plan.input_rows, plan.input_invalid) == (whole.input_rows, whole.input_invalid)
    assert sorted(owner) == sorted(whole.lanes)
    # Balanced by rows: no shard holds more than the ideal share plus the biggest lane.
    loads = [sum(isinstance(i, Row) for i in items) for _, items in shards]
    biggest = max(
        Counter(
            plan.lane_of(r) for plan, items in shards for r in items if isinstance(r, Row)
        ).values()
    )
    assert max(loads) <= sum(loads) / count + biggest


def test_fewer_lanes_than_shards_split_by_hash_and_divide_the_rate() -> None:
    rows = fleet(2, ("us-east-1",), lambda k: 20)  # 2 lanes, 3 shards
    shards = sharded(rows, 3)
    assert all(plan.rate_divided for plan, _ in shards)
    lines = sorted(i.line for _, items in shards for i in items)
    assert lines == list(range(2, len(rows) + 2))
    assert all(plan.total == len(items) for plan, items in shards)
    lanes_per_shard = [plan.lanes for plan, _ in shards]
    assert sum(len(lanes) for lanes in lanes_per_shard) > 2  # a lane is shared


def test_lane_assignment_is_deterministic_and_balanced() -> None:
    counts = {
        ("", "us-east-1"): 50,
        (A1, "us-east-1"): 30,
        (A2, "us-east-1"): 20,
        (A3, "eu-west-1"): 10,
    }
    got = [assign_lanes(counts, Shard(k, 2)) for k in range(2)]
    assert got == [
        frozenset({("", "us-east-1"), (A3, "eu-west-1")}),
        frozenset({(A1, "us-east-1"), (A2, "us-east-1")}),
    ]
    assert assign_lanes(dict(reversed(counts.items())), Shard(0, 2)) == got[0]
    assert assign_lanes(counts, Shard(0, 5)) is None


def test_the_shard_hash_of_a_row_without_account_is_unchanged() -> None:
    # Shard owners computed by the release before accounts.
    assert [k for k in range(7) if Shard(k, 7).owns("us-east-1", "d1abc")] == [4]
    assert [k for k in range(7) if Shard(k, 7).owns("eu-west-1", "d2xyz", "")] == [0]
    owners = {
        k for a in (A1, A2, A3) for k in range(7) if Shard(k, 7).owns("us-east-1", "d1abc", a)
    }
    assert owners != {4}  # the account is hashed too


def test_an_unsharded_plan_never_divides_the_rate() -> None:
    plan, _ = plan_items(fleet(1, ("us-east-1",), lambda k: 2))
    assert not plan.rate_divided
    one, _ = plan_items(fleet(1, ("us-east-1",), lambda k: 2), shard=Shard(0, 1))
    assert not one.rate_divided
    assert one.total == plan.total


# -- random fleets against an oracle written out again -------------------------------------

ROLES = {  # role_arn cell -> (account, partition), None when it is no role ARN
    "": None,
    ROLE1: (A1, "aws"),
    f"arn:aws:iam::{A2}:role/path/R": (A2, "aws"),
    f"arn:aws-cn:iam::{A2}:role/R": (A2, "aws-cn"),
    "arn:aws:iam::1:role/R": None,
}
TEMPLATES = [None, "arn:{partition}:iam::{account_id}:role/R", "arn:aws:iam::{account_id}:role/R"]


def expected_fates(
    rows: list[dict[str, str]], template: str | None, own: str | None
) -> dict[int, tuple[str, str, str]]:
    """line -> (fate, account, role): fate is send, skipped or invalid."""
    out: dict[int, tuple[str, str, str]] = {}
    groups: dict[tuple[str, str, str], list[tuple[int, str]]] = {}
    for line, cells in enumerate(rows, start=2):
        account, role, region = cells["account_id"], cells["role_arn"], cells["region"]
        partition = "aws-cn" if region.startswith("cn-") else "aws"
        ok = account == "" or (len(account) == 12 and account.isdigit())
        if role:
            parsed = ROLES[role]
            ok = ok and parsed is not None and parsed[1] == partition
            ok = ok and (not account or parsed is None or parsed[0] == account)
            account = account or (parsed[0] if parsed else "")
        elif account and ok and template is not None:
            role = template.format(account_id=account, partition=partition)
            ok = ok and role.startswith(f"arn:{partition}:")
        elif account:
            ok = ok and account == own
        if not ok:
            out[line] = ("invalid", account, role)
            continue
        groups.setdefault((account, region, cells["app_id"]), []).append(
            (line, cells["user_pool_id"])
        )
        out[line] = ("send", account, role)
    for members in groups.values():
        if len({pool for _, pool in members}) > 1:
            out.update((line, ("invalid", *out[line][1:])) for line, _ in members)
        else:
            out.update((line, ("skipped", *out[line][1:])) for line, _ in members[1:])
    return out


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(
    cells=st.lists(
        st.tuples(
            st.sampled_from(["", A1, A2, A3, "12345"]),
            st.sampled_from(list(ROLES)),
            st.sampled_from(["us-east-1", "eu-west-1", "cn-north-1"]),
            st.sampled_from(["d1abc", "d2abc"]),
            st.sampled_from(["AbC", "XyZ"]),
        ),
        max_size=25,
    ),
    template=st.sampled_from(TEMPLATES),
    own=st.sampled_from([None, A3]),
    count=st.integers(2, 5),
)
def test_random_fleets_are_read_as_the_oracle_says_whole_and_sharded(
    cells: list[tuple[str, str, str, str, str]], template: str | None, own: str | None, count: int
) -> None:
    rows = [
        {
            "account_id": account,
            "role_arn": role,
            "region": region,
            "app_id": app,
            "user_pool_id": f"{region}_{pool}",
        }
        for account, role, region, app, pool in cells
    ]
    kw = {"role_template": template, "own_account": own}
    plan, items = plan_items(rows, **kw)
    expected = expected_fates(rows, template, own)
    got = {
        i.line: (i.status if isinstance(i, Rejected) else "send", i.account_id, i.role_arn)
        for i in items
    }
    assert got == expected
    assert plan.invalid == sum(fate == "invalid" for fate, _, _ in expected.values())
    shards = [plan_items(rows, shard=Shard(k, count), **kw) for k in range(count)]
    lines = sorted(i.line for _, part in shards for i in part)
    assert lines == sorted(expected)  # every row in exactly one shard
    for part_plan, part in shards:
        assert all(
            got[i.line][0] == (i.status if isinstance(i, Rejected) else "send") for i in part
        )
        assert part_plan.total == len(part)
        assert part_plan.invalid == sum(got[i.line][0] == "invalid" for i in part)


def test_the_roles_remembered_for_repeated_cells_are_bounded() -> None:
    roles = AccountRoles()
    for n in range(20_000):  # as many distinct role ARNs: memory must not grow with rows
        account = f"{n:012d}"
        found: list[str] = []
        got = roles.check("", f"arn:aws:iam::{account}:role/R", "us-east-1", found)
        assert (got, found) == ((account, f"arn:aws:iam::{account}:role/R"), [])
    assert "seen=16384>" in repr(roles)
    again: list[str] = []
    assert roles.check(A2, ROLE1, "us-east-1", again) == (A2, ROLE1)
    assert roles.check(A2, ROLE1, "us-east-1", again) == (A2, ROLE1)
    assert again == [f"role_arn: account {A1} differs from account_id {A2}"] * 2


def test_row_keeps_its_positional_fields_and_stays_frozen() -> None:
    settings = LoginSettings(user_pool_id=UP)
    old_style = Row(2, "d1abc", "us-east-1", settings, "ab", ("x",))
    assert (old_style.account_id, old_style.role_arn, old_style.kept) == ("", "", ("x",))
    full = Row(2, "d1abc", "us-east-1", settings, "ab", (), A1, ROLE1)
    assert dataclasses.replace(old_style, kept=(), account_id=A1, role_arn=ROLE1) == full
    assert hash(full) == hash(Row(2, "d1abc", "us-east-1", settings, "ab", (), A1, ROLE1))
    assert [f.name for f in dataclasses.fields(Row)][-2:] == ["account_id", "role_arn"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        full.account_id = A2  # type: ignore[misc]
    rejected = full.rejected("skipped", "duplicate of line 1")
    assert rejected == Rejected(
        2, "d1abc", "us-east-1", "skipped", "duplicate of line 1", "ab", (), A1, ROLE1
    )
