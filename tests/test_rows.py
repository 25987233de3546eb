"""Reading and validating the input CSV."""

from __future__ import annotations

from pathlib import Path

import pytest

from batch_updater.errors import InputError, SetupError
from batch_updater.rows import LoginSettings, Rejected, Row, RowPlan, _DuplicateIndex, validate

HEADER = "app_id,region,identity_pool_id,cognito_region,user_pool_id,web_client_id"
UP = "us-east-1_AbC123xyz"
IP = "us-east-1:0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
WC = "4v7d2k9q1m3n5p7r9t1v3x5z7b"


def write(tmp_path: Path, text: str, name: str = "in.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def cells(**kw: str) -> dict[str, str]:
    base = {
        "app_id": "d1abc",
        "region": "us-east-1",
        "identity_pool_id": IP,
        "cognito_region": "us-east-1",
        "user_pool_id": UP,
        "web_client_id": WC,
    }
    base.update(kw)
    return base


def reason(**kw: str) -> str:
    result = validate(7, cells(**kw), None)
    assert isinstance(result, Rejected), result
    assert result.status == "invalid"
    assert result.line == 7
    return result.reason


def test_valid_row_trims_cells_and_builds_the_request() -> None:
    row = validate(2, cells(app_id="  d1abc ", user_pool_id=f" {UP}"), None)
    assert isinstance(row, Row)
    assert row.app_id == "d1abc"
    assert row.settings.to_api() == {
        "AwsCognitoIdentityPoolId": IP,
        "AwsCognitoRegion": "us-east-1",
        "AwsUserPoolsId": UP,
        "AwsUserPoolsWebClientId": WC,
    }


def test_empty_cells_are_left_out_of_the_request() -> None:
    row = validate(2, cells(identity_pool_id="", web_client_id="", cognito_region=""), None)
    assert isinstance(row, Row)
    assert row.settings.to_api() == {"AwsUserPoolsId": UP}


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"app_id": ""}, "app_id: empty"),
        ({"app_id": "D1ABC"}, "app_id: 'D1ABC' is not an Amplify app id"),
        ({"app_id": "x1abc"}, "app_id: 'x1abc' is not an Amplify app id"),
        ({"app_id": "d"}, "app_id: 'd' is not an Amplify app id"),
        ({"app_id": "d" + "a" * 20}, "app_id: 21 characters, at most 20"),
        ({"region": "useast1"}, "region: 'useast1' is not a region name"),
        ({"region": "US-EAST-1"}, "region: 'US-EAST-1' is not a region name"),
        ({"cognito_region": "moon-1"}, "cognito_region: 'moon-1' is not a region name"),
        ({"user_pool_id": "nounderscore"}, "user_pool_id: 'nounderscore' does not look like"),
        ({"user_pool_id": "us-east-1_" + "a" * 50}, "user_pool_id: 60 characters, at most 55"),
        ({"user_pool_id": "pool_abc", "cognito_region": ""}, "user_pool_id: 'pool_abc' must"),
        ({"identity_pool_id": "us-east-1:ABCDEF"}, "identity_pool_id: 'us-east-1:ABCDEF'"),
        ({"identity_pool_id": "us-east-1-0f1e"}, "identity_pool_id: 'us-east-1-0f1e' does not"),
        (
            {"identity_pool_id": "eu-west-1:0f1e2d3c"},
            "identity_pool_id: region eu-west-1 differs from cognito_region us-east-1",
        ),
        (
            {"user_pool_id": "eu-west-1_abc"},
            "user_pool_id: region eu-west-1 differs from cognito_region us-east-1",
        ),
        ({"web_client_id": "abc-def!"}, "web_client_id: only letters, digits, _ and +"),
        ({"web_client_id": "a" * 129}, "web_client_id: 129 characters, at most 128"),
        (
            {"identity_pool_id": "", "cognito_region": "", "user_pool_id": "", "web_client_id": ""},
            "no settings: give at least one of",
        ),
    ],
)
def test_each_validation_rule_names_the_field(kw: dict[str, str], expected: str) -> None:
    assert expected in reason(**kw)


def test_boundaries_that_are_valid() -> None:
    ok = [
        cells(app_id="d" + "a" * 19),
        cells(region="us-gov-west-1"),
        cells(region="ap-southeast-3"),
        cells(user_pool_id="us-east-1_" + "a" * 45),
        cells(web_client_id="a+b_c" + "x" * 123),
        cells(cognito_region="", user_pool_id="eu-west-1_abc"),  # prefix checked only vs given
    ]
    for c in ok:
        assert isinstance(validate(2, c, None), Row), c


def test_web_client_id_is_never_echoed_in_a_reason() -> None:
    secret = "sekret-value-1234!"
    assert secret not in reason(web_client_id=secret)


def test_several_problems_in_one_row_are_all_listed() -> None:
    text = reason(app_id="BAD", region="nowhere")
    assert "app_id:" in text
    assert "region:" in text


def test_region_falls_back_to_the_default_and_none_at_all_is_a_setup_error() -> None:
    row = validate(2, cells(region=""), "eu-west-1")
    assert isinstance(row, Row)
    assert row.region == "eu-west-1"
    assert validate(2, cells(region=""), None) is None


def test_digest_is_stable_and_depends_only_on_settings() -> None:
    a = LoginSettings(user_pool_id=UP, web_client_id=WC)
    b = LoginSettings(web_client_id=WC, user_pool_id=UP)
    assert a.digest() == b.digest()
    assert len(a.digest()) == 16
    assert a.digest() != LoginSettings(user_pool_id=UP).digest()
    assert all(ch in "0123456789abcdef" for ch in a.digest())


# -- the file ---------------------------------------------------------------------------


def test_header_aliases_case_insensitive_bom_crlf_and_blank_lines(tmp_path: Path) -> None:
    text = (
        "\ufeffAPPID, Region ,awsCognitoIdentityPoolId,AWSCOGNITOREGION,AwsUserPoolsId,"
        "awsuserpoolswebclientid\r\n"
        "\r\n"
        f"d1abc,us-east-1,{IP},us-east-1,{UP},{WC}\r\n"
        "\r\n"
        f"d2abc,us-east-1,,,{UP},\r\n"
    )
    plan = RowPlan(write(tmp_path, text), None)
    items = list(plan)
    assert [i.line for i in items] == [3, 5]
    assert all(isinstance(i, Row) for i in items)
    assert plan.ok
    assert plan.total == 2
    assert plan.regions == {"us-east-1"}


def test_unknown_column_is_an_error_naming_it_and_the_accepted_names(tmp_path: Path) -> None:
    path = write(tmp_path, "app_id,user_pool_idd\nd1abc,x\n")
    with pytest.raises(InputError) as info:
        RowPlan(path, "us-east-1")
    message = str(info.value)
    assert str(path) in message
    assert "line 1" in message
    assert "'user_pool_idd'" in message
    assert "user_pool_id (or AwsUserPoolsId)" in message


def test_header_problems(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no app_id"):
        RowPlan(write(tmp_path, f"region,user_pool_id\nus-east-1,{UP}\n"), None)
    with pytest.raises(InputError, match="appears twice"):
        RowPlan(write(tmp_path, "app_id,AppId\nd1,d1\n"), None)
    with pytest.raises(InputError, match="header row is required"):
        RowPlan(write(tmp_path, "\n\n"), None)
    with pytest.raises(InputError, match="empty name"):
        RowPlan(write(tmp_path, "app_id,,user_pool_id\n"), None)


def test_unreadable_and_broken_files_name_the_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot open"):
        RowPlan(tmp_path / "missing.csv", None)
    bad_utf8 = tmp_path / "latin1.csv"
    bad_utf8.write_bytes(b"app_id,user_pool_id\nd1abc,us-east-1_abc\nd2abc,caf\xe9\n")
    with pytest.raises(InputError, match=r"latin1\.csv, line 3: not valid UTF-8"):
        RowPlan(bad_utf8, "us-east-1")
    open_quote = write(tmp_path, f'app_id,user_pool_id\nd1abc,{UP}\n"d2abc,{UP}\n', "q.csv")
    with pytest.raises(InputError, match=r"q\.csv, line 3: broken CSV"):
        RowPlan(open_quote, "us-east-1")


def test_nul_byte_in_a_cell_makes_the_row_invalid(tmp_path: Path) -> None:
    nul = write(tmp_path, f"app_id,user_pool_id\nd1abc,{UP}\nd2\x00abc,{UP}\n", "nul.csv")
    items = list(RowPlan(nul, "us-east-1"))
    assert isinstance(items[1], Rejected)
    assert "app_id: 'd2\\x00abc'" in items[1].reason


def test_row_with_wrong_cell_count_is_invalid_not_guessed(tmp_path: Path) -> None:
    plan = RowPlan(write(tmp_path, f"app_id,user_pool_id\nd1abc,{UP},extra\nd2abc\n"), "us-east-1")
    items = list(plan)
    assert [i.status for i in items if isinstance(i, Rejected)] == ["invalid", "invalid"]
    assert "has 3 cells, the header has 2" in items[0].reason  # type: ignore[union-attr]
    assert not plan.ok


def test_multiline_quoted_cell_keeps_the_starting_line_number(tmp_path: Path) -> None:
    text = f'app_id,user_pool_id\n"d1\nabc",{UP}\nd2abc,{UP}\n'
    items = list(RowPlan(write(tmp_path, text), "us-east-1"))
    assert [i.line for i in items] == [2, 4]
    assert isinstance(items[0], Rejected)


def test_missing_region_is_a_setup_error_naming_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, f"app_id,region,user_pool_id\nd1abc,us-east-1,{UP}\nd2abc,,{UP}\n")
    with pytest.raises(SetupError, match=r"line 3: no region"):
        RowPlan(path, None)


def test_duplicates_are_skipped_and_conflicts_invalidate_every_row_of_the_key(
    tmp_path: Path,
) -> None:
    other = "us-east-1_Other1234"
    text = (
        "app_id,region,user_pool_id\n"
        f"d1abc,us-east-1,{UP}\n"  # 2: first
        f"d1abc,us-east-1,{UP}\n"  # 3: duplicate of 2
        f"d1abc,eu-west-1,eu-west-1_abc\n"  # 4: other region: its own key
        f"d2abc,us-east-1,{UP}\n"  # 5: first of d2
        f"d2abc,us-east-1,{other}\n"  # 6: conflicts with 5
        f"d2abc,us-east-1,{UP}\n"  # 7: same as 5, still conflicts with 6
    )
    plan = RowPlan(write(tmp_path, text), None)
    assert not plan.ok
    assert plan.conflicts == 1
    outcome = {i.line: i for i in plan}
    assert isinstance(outcome[2], Row)
    assert isinstance(outcome[4], Row)
    assert outcome[3] == Rejected(
        3, "d1abc", "us-east-1", "skipped", "duplicate of line 2", outcome[2].digest
    )  # type: ignore[union-attr]
    for line, other_line in [(5, 6), (6, 5), (7, 6)]:
        item = outcome[line]
        assert isinstance(item, Rejected)
        assert item.status == "invalid"
        assert item.reason.startswith(f"conflicts with line {other_line}")


def test_rows_given_as_mappings(tmp_path: Path) -> None:
    plan = RowPlan([{"AppId": "d1abc", "AwsUserPoolsId": UP}, {"app_id": "BAD"}], "us-east-1")
    items = list(plan)
    assert isinstance(items[0], Row)
    assert items[0].line == 2
    assert isinstance(items[1], Rejected)
    with pytest.raises(InputError, match="unknown column 'pool'"):
        RowPlan([{"app_id": "d1abc", "pool": "x"}], "us-east-1")


def test_example_inputs_validate_as_documented() -> None:
    root = Path(__file__).resolve().parent.parent / "inputs"
    example = RowPlan(root / "example.csv", None)
    assert example.ok
    assert example.total >= 40
    invalid = RowPlan(root / "invalid-example.csv", None)
    assert not invalid.ok
    statuses = {i.status for i in invalid if isinstance(i, Rejected)}
    assert statuses == {"invalid", "skipped"}


@pytest.mark.parametrize(
    "kw",
    [
        {"cognito_region": "", "user_pool_id": "__abc"},
        {"cognito_region": "", "identity_pool_id": "_:0f1e"},
        {"cognito_region": "", "user_pool_id": "us-east-1-x_abc"},
    ],
)
def test_pool_ids_need_a_real_region_prefix_even_without_cognito_region(
    kw: dict[str, str],
) -> None:
    assert "must start with its region" in reason(**kw)


def test_duplicate_index_grows_and_keeps_every_key() -> None:
    index = _DuplicateIndex(expected=3)
    settings = LoginSettings(user_pool_id=UP)
    other = LoginSettings(user_pool_id="us-east-1_Other1")
    rows = [Row(i + 2, f"d{i}x", "us-east-1", settings, settings.digest()) for i in range(5000)]
    for row in rows:
        assert index.add(index.key(row.region, row.app_id), row.line, int(row.digest, 16))
    assert len(index) == 5000
    assert "keys=5000 slots=" in repr(index)
    dup = Row(9000, "d42x", "us-east-1", settings, settings.digest())
    clash = Row(9001, "d43x", "us-east-1", other, other.digest())
    for row in (dup, clash):
        assert not index.add(index.key(row.region, row.app_id), row.line, int(row.digest, 16))
    assert index.conflicts == 1
    assert all(index.classify(row) is row for row in rows if row.app_id != "d43x")
    assert index.classify(dup) == Rejected(
        9000, "d42x", "us-east-1", "skipped", "duplicate of line 44", dup.digest
    )
    assert isinstance(index.classify(rows[43]), Rejected)
