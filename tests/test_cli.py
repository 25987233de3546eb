"""The command line: exit codes, messages, logs and reports, as an operator sees them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from batch_updater import __version__
from batch_updater.cli import main

from .conftest import EXAMPLE, INVALID_EXAMPLE, ROOT, read_report, write_csv

UP = "us-east-1_AbC123xyz"
WEB_CLIENT = "4v7d2k9q1m3n5p7r9t1v3x5zQWER"


def json_events(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_local_run_of_the_example_succeeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "out.csv"
    code = main(["run", "--local", str(EXAMPLE), "--rate", "0", "--report", str(report)])
    err = capsys.readouterr().err

    assert code == 0
    assert len(read_report(report)) == 50
    events = json_events(err)  # stderr is not a terminal here: JSON lines, and only those
    assert len(events) == len(err.splitlines())
    names = [e["event"] for e in events]
    assert names[0] == "run_start"
    assert names[-1] == "run_end"
    assert events[0]["rate"] == 0.0
    assert events[-1]["counts"] == {  # type: ignore[comparison-overlap]
        "succeeded": 50,
        "failed": 0,
        "invalid": 0,
        "skipped": 0,
        "not_attempted": 0,
        "dry_run": 0,
    }
    assert "local-secret" not in err


def test_default_report_path_is_under_reports_with_a_utc_stamp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--dry-run", "--region", "us-east-1", str(EXAMPLE)]) == 0
    (report,) = (tmp_path / "reports").glob("*.csv")
    assert re.fullmatch(r"example-\d{8}T\d{6}Z\.csv", report.name)
    assert (tmp_path / "reports" / f"{report.name}.summary.json").exists()


def test_invalid_input_exits_1_and_makes_no_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "out.csv"
    assert main(["run", "--local", str(INVALID_EXAMPLE), "--report", str(report)]) == 1
    summary = json.loads(Path(f"{report}.summary.json").read_text())
    assert summary["requests"] == 0
    assert summary["counts"]["invalid"] == 17
    assert summary["exit_code"] == 1
    (end,) = [e for e in json_events(capsys.readouterr().err) if e["event"] == "run_end"]
    assert end["counts"]["invalid"] == 17  # type: ignore[index]


def test_dry_run_exit_codes(tmp_path: Path) -> None:
    assert main(["run", "--dry-run", str(EXAMPLE), "--report", str(tmp_path / "a.csv")]) == 0
    assert (
        main(["run", "--dry-run", str(INVALID_EXAMPLE), "--report", str(tmp_path / "b.csv")]) == 1
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "x.csv", "--rate", "-1"], "--rate: must be 0 or more"),
        (["run", "x.csv", "--concurrency", "0"], "--concurrency: must be at least 1"),
        (["run", "x.csv", "--log-format", "xml"], "--log-format: invalid choice"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def run_setup_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("batch-updater: error:")]
    return line


def test_setup_errors_exit_2_naming_what_to_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.csv"
    assert f"{missing}: cannot open" in run_setup_error(["run", str(missing)], capsys)

    bad_header = write_csv(tmp_path / "h.csv", "app_id,userpool", f"d1abc,{UP}")
    line = run_setup_error(["run", "--region", "us-east-1", str(bad_header)], capsys)
    assert f"{bad_header}, line 1: unknown column 'userpool'" in line

    no_region = write_csv(tmp_path / "r.csv", "app_id,user_pool_id", f"d1abc,{UP}")
    assert "line 2: no region" in run_setup_error(["run", str(no_region)], capsys)

    bad_region = ["run", "--region", "mars", str(EXAMPLE)]
    assert "--region: 'mars' is not a region name" in run_setup_error(bad_region, capsys)

    both = ["run", "--local", "--endpoint-url", "http://127.0.0.1:1", str(EXAMPLE)]
    assert "either --local or --endpoint-url" in run_setup_error(both, capsys)


def test_no_credentials_exits_2_before_any_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", str(EXAMPLE), "--endpoint-url", "http://127.0.0.1:9", "--report"]
    line = run_setup_error([*argv, str(tmp_path / "r.csv")], capsys)
    assert "no AWS credentials found" in line


def test_logs_mask_the_web_client_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_csv(
        tmp_path / "in.csv",
        "app_id,region,user_pool_id,web_client_id",
        f"d1abc,us-east-1,{UP},{WEB_CLIENT}",
    )
    argv = ["run", "--local", str(path), "--log-level", "debug", "--log-format", "json"]
    assert main([*argv, "--report", str(tmp_path / "r.csv")]) == 0
    err = capsys.readouterr().err
    assert WEB_CLIENT not in err
    (done,) = [e for e in json_events(err) if e["event"] == "row_succeeded"]
    assert done["web_client_id"] == "****QWER"


def test_console_log_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", "--dry-run", "--log-format", "console", str(EXAMPLE)]
    assert main([*argv, "--report", str(tmp_path / "r.csv")]) == 0
    err = capsys.readouterr().err
    assert "run_start" in err
    assert not err.lstrip().startswith("{")


def test_python_dash_m_and_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "batch_updater", "--version"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert out.stdout.strip() == f"batch-updater {__version__}"


def test_help_shows_examples_and_exit_codes() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "batch_updater", "run", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--max-attempts N" in out.stdout
    assert "batch-updater run --local inputs/example.csv" in out.stdout
    assert "exit codes:" in out.stdout
