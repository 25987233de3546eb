"""Validation rules that tell the truth: regions botocore knows, one invalid count,
the first invalid rows named, report names with a known format, one region rule."""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from batch_updater import RunConfig, SetupError, Status, rules, run_batch
from batch_updater.cli import main
from batch_updater.emulator import EmulatorServer
from batch_updater.rows import Rejected, Row, RowPlan, _DuplicateIndex, region_rule, validate

from .conftest import INVALID_EXAMPLE, ROOT, fast, read_report, write_csv
from .test_rows import IP, UP, WC, cells

HEADER = "app_id,region,identity_pool_id,cognito_region,user_pool_id,web_client_id"
BOTOCORE = importlib.metadata.version("botocore")
UNKNOWN = f"is not an AWS region botocore {BOTOCORE} knows; pass --allow-unknown-region"


def json_events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


# -- regions botocore knows -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"region": "us-east-9"}, f"region: 'us-east-9' {UNKNOWN}"),
        ({"region": "xx-east-1"}, f"region: 'xx-east-1' {UNKNOWN}"),
        (
            {
                "cognito_region": "us-east-9",
                "identity_pool_id": "",
                "user_pool_id": "us-east-9_AbC123xyz",
            },
            f"cognito_region: 'us-east-9' {UNKNOWN}",
        ),
        (
            {"cognito_region": "", "identity_pool_id": "", "user_pool_id": "xx-east-1_AbC1"},
            f"user_pool_id: region 'xx-east-1' {UNKNOWN}",
        ),
        (
            {"cognito_region": "", "identity_pool_id": "us-east-9:0f1e2d3c", "user_pool_id": ""},
            f"identity_pool_id: region 'us-east-9' {UNKNOWN}",
        ),
    ],
)
def test_a_region_that_looks_real_but_botocore_does_not_know_is_invalid(
    kw: dict[str, str], expected: str
) -> None:
    result = validate(3, cells(**kw), None)
    assert isinstance(result, Rejected), result
    assert result.status == "invalid"
    assert expected in result.reason


def test_allow_unknown_region_keeps_only_the_shape_check() -> None:
    lenient = region_rule(allow_unknown=True)
    row = validate(
        3,
        cells(region="us-east-9", cognito_region="", identity_pool_id="", user_pool_id=""),
        None,
        lenient,
    )
    assert isinstance(row, Row)
    assert row.region == "us-east-9"
    pooled = validate(3, cells(cognito_region="", user_pool_id="xx-east-1_AbC1"), None, lenient)
    assert isinstance(pooled, Row)
    bad = validate(3, cells(region="useast1"), None, lenient)
    assert isinstance(bad, Rejected)
    assert "'useast1' is not a region name like us-east-1" in bad.reason


def test_known_regions_are_every_partition_botocore_ships_without_pseudo_regions() -> None:
    rule = region_rule()
    assert {"us-east-1", "ap-southeast-3", "us-gov-west-1", "cn-north-1"} <= rule.known
    assert not {r for r in rule.known if r.endswith("-global")}
    assert rule.version == BOTOCORE
    assert rule.ok("us-east-1")
    assert not rule.ok("us-east-9")
    assert f"botocore={BOTOCORE}" in repr(rule)


def test_reading_the_region_list_imports_nothing_of_the_sdk() -> None:
    # Read as data: botocore's loaders and aioboto3 (0.2 s, 25 MB) stay unimported.
    code = (
        "import sys; from batch_updater.rows import region_rule; before = set(sys.modules); "
        "n = len(region_rule().known); "
        "print(n, [m for m in set(sys.modules) - before if 'boto' in m])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    count, imported = out.stdout.split(maxsplit=1)
    assert int(count) > 30
    assert imported.strip() == "[]"


def fake_botocore(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Make ``find_spec("botocore")`` point at ``root`` (a package directory)."""
    spec = importlib.machinery.ModuleSpec("botocore", None, is_package=True)
    spec.submodule_search_locations = [str(root)]
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: spec if name == "botocore" else real(name)
    )


def test_an_old_botocore_without_partitions_json_is_read_from_endpoints_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data").mkdir()
    endpoints = {
        "partitions": [
            {
                "partition": "aws",
                "regionRegex": "^(us|eu)\\-\\w+\\-\\d+$",
                "regions": {"us-east-1": {}, "eu-west-1": {}, "aws-global": {}},
            }
        ]
    }
    (tmp_path / "data" / "endpoints.json").write_text(json.dumps(endpoints))
    fake_botocore(monkeypatch, tmp_path)
    known, version = rules._botocore_regions.__wrapped__()
    assert known == {"us-east-1", "eu-west-1"}
    assert version == BOTOCORE


def test_an_unreadable_region_list_is_a_setup_error_unless_unknown_regions_are_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "partitions.json").write_text("{not json")
    fake_botocore(monkeypatch, tmp_path)
    with pytest.raises(SetupError, match=r"cannot read botocore.s region list .*partitions"):
        rules._botocore_regions.__wrapped__()

    monkeypatch.setattr(rules, "_botocore_regions", rules._botocore_regions.__wrapped__)
    with pytest.raises(SetupError, match="pass --allow-unknown-region to check only the shape"):
        rules.RegionRule()
    lenient = rules.RegionRule(allow_unknown=True)
    assert lenient.ok("us-east-9")
    assert lenient.problem("useast1") is not None


def test_unknown_region_on_the_command_line_and_the_library_is_a_setup_error() -> None:
    with pytest.raises(SetupError, match=re.escape(f"--region: 'us-east-9' {UNKNOWN}")):
        RunConfig(region="us-east-9")
    assert RunConfig(region="us-east-9", allow_unknown_region=True).region == "us-east-9"
    with pytest.raises(SetupError, match="'useast1' is not a region name"):
        RunConfig(region="useast1", allow_unknown_region=True)


def test_dry_run_refuses_an_unknown_region_unless_allowed_by_flag_or_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_csv(tmp_path / "in.csv", "app_id,region,user_pool_id", f"d1abc,us-east-9,{UP}")
    argv = ["run", "--dry-run", str(path), "--log-level", "error", "--log-format", "console"]

    assert main([*argv, "--report", str(tmp_path / "a.csv")]) == 1
    (record,) = read_report(tmp_path / "a.csv")
    assert record["status"] == "invalid"
    assert f"region: 'us-east-9' {UNKNOWN}" in record["error_message"]
    assert "line 2: region: 'us-east-9'" in capsys.readouterr().err

    assert main([*argv, "--allow-unknown-region", "--report", str(tmp_path / "b.csv")]) == 0
    assert [r["status"] for r in read_report(tmp_path / "b.csv")] == ["dry_run"]

    monkeypatch.setenv("BATCH_UPDATER_ALLOW_UNKNOWN_REGION", "true")
    assert main([*argv, "--report", str(tmp_path / "c.csv")]) == 0
    summary = json.loads((tmp_path / "c.csv.summary.json").read_text())
    assert summary["settings"]["allow_unknown_region"] is True

    monkeypatch.delenv("BATCH_UPDATER_ALLOW_UNKNOWN_REGION")
    assert main(["run", "--dry-run", str(path), "--region", "xx-east-1"]) == 2
    assert f"--region: 'xx-east-1' {UNKNOWN}" in capsys.readouterr().err


# -- one invalid count, computed in the first pass; the first invalid rows named ---------


def test_conflicting_duplicates_are_counted_as_invalid_in_the_first_pass(
    tmp_path: Path,
) -> None:
    other = "us-east-1_Other1"
    path = write_csv(
        tmp_path / "in.csv",
        HEADER,
        f"d1aaa,us-east-1,{IP},us-east-1,{UP},{WC}",
        f"d1aaa,us-east-1,{IP},us-east-1,{UP},{WC}",  # same settings: still a conflict row
        f"d1aaa,us-east-1,{IP},us-east-1,{other},{WC}",
        f"d1bbb,us-east-1,{IP},us-east-1,{UP},{WC}",
        f"d1bbb,us-east-1,{IP},us-east-1,{UP},{WC}",  # a plain duplicate: skipped
        f"BAD,us-east-1,{IP},us-east-1,{UP},{WC}",
    )
    plan = RowPlan(path, None)
    assert (plan.invalid, plan.input_invalid, plan.conflicts) == (4, 4, 1)
    assert plan.invalid == sum(isinstance(i, Rejected) and i.status == "invalid" for i in plan)
    assert not plan.ok


def test_duplicate_index_keeps_row_counts_when_it_grows() -> None:
    index = _DuplicateIndex(expected=2)
    keys = [index.key("us-east-1", f"d{i}") for i in range(200)]
    index.add(keys[0], 2, 1)
    index.add(keys[0], 3, 2)  # a conflict: two rows so far
    for line, key in enumerate(keys[1:], start=4):  # grows the table several times
        index.add(key, line, 1)
    index.add(keys[0], 500, 1)
    assert index.conflicting_rows() == 3
    assert index.conflicting_rows(among={keys[1]}) == 0


def test_run_start_and_summary_say_the_same_invalid_count_and_stderr_names_the_first_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "out.csv"
    argv = ["run", "--dry-run", str(INVALID_EXAMPLE), "--log-format", "json"]
    assert main([*argv, "--report", str(report)]) == 1
    err = capsys.readouterr().err
    (start,) = [e for e in json_events(err) if e["event"] == "run_start"]
    (end,) = [e for e in json_events(err) if e["event"] == "run_end"]
    assert start["invalid"] == start["input_invalid"] == end["counts"]["invalid"] == 17
    assert [e["line"] for e in end["first_invalid"]] == [4, 5, 6, 7, 8]
    assert all(not line or line.startswith("{") for line in err.splitlines())  # only JSON

    console = ["run", "--dry-run", str(INVALID_EXAMPLE), "--log-format", "console"]
    assert main([*console, "--log-level", "error", "--report", str(report), "--overwrite"]) == 1
    err = capsys.readouterr().err
    text = err.splitlines()
    at = text.index("  17 invalid rows; first 5:")
    shown = text[at + 1 : at + 6]
    assert [line.split(":")[0] for line in shown] == [
        "    line 4",
        "    line 5",
        "    line 6",
        "    line 7",
        "    line 8",
    ]
    assert "app_id: 'D1A2B3C4D5E6F8' is not an Amplify app id" in shown[1]
    assert text[at + 6] == "  fix them, or pass --skip-invalid to send the valid rows"
    assert "see error_message in the report" not in err
    records = {int(r["line"]): r for r in read_report(report)}
    for line in shown:
        number, reason = line.strip().removeprefix("line ").split(": ", 1)
        assert records[int(number)]["error_message"] == reason


async def test_the_library_gets_the_first_invalid_rows_in_the_summary(
    tmp_path: Path, server: EmulatorServer, session: Any
) -> None:
    config = fast(tmp_path, endpoint_url=server.url, skip_invalid=True)
    summary = await run_batch(INVALID_EXAMPLE, config, session=session)
    assert summary.counts[Status.INVALID] == 17
    assert [r.line for r in summary.first_invalid] == [4, 5, 6, 7, 8]
    assert all(r.status is Status.INVALID for r in summary.first_invalid)
    assert summary.first_invalid[3].error_message == "app_id: 23 characters, at most 20 allowed"
    saved = json.loads(Path(f"{config.output.report_path}.summary.json").read_text())
    assert saved["first_invalid"][3] == {
        "line": 7,
        "error_message": "app_id: 23 characters, at most 20 allowed",
    }


def test_every_invalid_row_is_listed_when_there_are_few(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_csv(tmp_path / "in.csv", "app_id,region,user_pool_id", f"BAD,us-east-1,{UP}")
    argv = ["run", "--dry-run", "--skip-invalid", str(path), "--log-level", "error"]
    argv += ["--log-format", "console"]
    assert main([*argv, "--report", str(tmp_path / "r.csv")]) == 1
    err = capsys.readouterr().err
    assert "  1 invalid row:\n    line 2: app_id: 'BAD' is not an Amplify app id" in err
    assert "--skip-invalid to send" not in err  # it was passed


# -- report names with a known format -----------------------------------------------------


@pytest.mark.parametrize("name", ["x.json", "x", "x.csv.bak", "x.txt"])
def test_a_report_name_that_is_not_csv_or_jsonl_is_a_setup_error(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / name
    with pytest.raises(SetupError, match=r"--report .*; a report is written as CSV"):
        RunConfig(output=report)
    assert main(["run", "--dry-run", str(INVALID_EXAMPLE), "--report", str(report)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"batch-updater: error: --report {report}: the name ")
    assert err.count("\n") == 1
    assert not report.exists()


def test_report_extensions_are_accepted_in_any_case(tmp_path: Path) -> None:
    for name in ("a.CSV", "b.JsonL"):
        argv = ["run", "--dry-run", "--region", "us-east-1", str(INVALID_EXAMPLE)]
        assert main([*argv, "--report", str(tmp_path / name), "--log-level", "error"]) == 1
    assert read_report(tmp_path / "a.CSV")[0]["line"] == "2"
    first = (tmp_path / "b.JsonL").read_text().splitlines()[0]
    assert json.loads(first)["line"] == 2


# -- --local follows the same region rule as a real run ---------------------------------


def test_local_with_a_row_without_region_is_the_same_setup_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_csv(
        tmp_path / "in.csv",
        "app_id,region,user_pool_id",
        f"d1aaa,eu-west-1,{UP.replace('us-east-1', 'eu-west-1')}",
        f"d1bbb,,{UP}",
    )
    report = tmp_path / "r.csv"
    assert main(["run", "--local", str(path), "--report", str(report)]) == 2
    err = capsys.readouterr().err
    assert f"batch-updater: error: {path}, line 3: no region for this row" in err
    assert not report.exists()

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")  # the standard chain still counts
    assert main(["run", "--local", str(path), "--report", str(report), "--rate", "0"]) == 0
    assert {r["region"] for r in read_report(report)} == {"eu-west-1", "us-east-1"}


@pytest.mark.parametrize("variable", ["AWS_REGION", "AWS_DEFAULT_REGION"])
def test_a_dry_run_of_rows_without_a_region_column_finds_it_without_aioboto3(
    tmp_path: Path, variable: str
) -> None:
    # The region from the environment, found by botocore alone: aioboto3 and aiohttp
    # (~15 MB) would take a 1M-row dry run past its memory target.
    path = write_csv(tmp_path / "in.csv", "app_id,user_pool_id", f"d1aaa,{UP}", f"d1bbb,{UP}")
    report = tmp_path / "r.csv"
    code = (
        "import sys; from batch_updater.cli import main; "
        f"code = main(['run', '--dry-run', {str(path)!r}, '--report', {str(report)!r}, "
        "'--log-level', 'error']); "
        "print(code, sorted(m for m in sys.modules if m.split('.')[0] in ('aioboto3', 'aiohttp')))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {variable: "eu-west-1", "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config")}
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert out.stdout.split(maxsplit=1) == ["0", "[]\n"], out.stderr
    assert {r["region"] for r in read_report(report)} == {"eu-west-1"}


def test_a_profile_that_does_not_exist_is_named_when_it_would_give_the_region(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_csv(tmp_path / "in.csv", "app_id,user_pool_id", f"d1aaa,{UP}")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    argv = ["run", "--dry-run", str(path), "--report", str(tmp_path / "r.csv")]
    assert main([*argv, "--profile", "nope"]) == 2
    assert "AWS profile not found: nope" in capsys.readouterr().err
