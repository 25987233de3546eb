"""The command line: exit codes, messages, logs and reports, as an operator sees them."""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from batch_updater import Rate, RowResult, RunConfig, SetupError, Status, __version__
from batch_updater import report as report_module
from batch_updater.cli import build_parser, main, resume_command
from batch_updater.config import settings
from batch_updater.options import (
    README_END,
    README_START,
    RUN_OPTIONS,
    Option,
    config_settings,
    markdown_table,
    resolve,
)
from batch_updater.options import main as options_main

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
    assert events[-1]["counts"] == {
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


# -- outputs that cannot be written ----------------------------------------------------------


def full_disk_report(tmp_path: Path) -> Path:
    """A report path that is /dev/full (every write: No space left on device); its summary
    still goes to tmp_path."""
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    report = tmp_path / "full.csv"
    report.symlink_to("/dev/full")
    return report


def test_a_full_disk_stops_the_run_in_one_json_line_with_the_summary_and_resume_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = full_disk_report(tmp_path)
    argv = ["run", "--local", str(EXAMPLE), "--report", str(report), "--overwrite"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    events = json_events(err)
    assert len(events) == len(err.splitlines())  # JSON mode: nothing but JSON lines
    message = f"cannot write the report {report}: No space left on device"
    (stopping,) = [e for e in events if e["event"] == "run_stopping"]
    assert stopping["message"] == message
    end = events[-1]
    assert end["event"] == "run_end"
    assert end["output_error"] == message
    assert end["requests"] == 0  # nothing is sent once the report cannot be written
    assert end["counts"]["not_attempted"] == 50  # type: ignore[index]
    command = str(end["resume_command"])
    assert command.startswith("batch-updater run --local")
    assert "--report" not in command  # to a new report: this one holds nothing
    assert "--resume" not in command
    summary = json.loads(Path(f"{report}.summary.json").read_text())
    assert summary["resume_command"] == command
    assert summary["exit_code"] == 1
    assert summary["stopped"] == {"reason": "output_error", "message": message}


def test_a_full_disk_in_console_mode_says_so_once_and_prints_the_resume_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = full_disk_report(tmp_path)
    argv = ["run", "--dry-run", str(EXAMPLE), "--report", str(report), "--overwrite"]
    assert main([*argv, "--log-format", "console"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    summary_lines = err[err.index("batch-updater: ") :].splitlines()
    stopped = [ln for ln in summary_lines if "No space left on device" in ln]
    assert stopped == [
        f"  stopped early: cannot write the report {report}: No space left on device"
    ]
    assert any(
        ln.startswith("  to finish the job: batch-updater run --dry-run") for ln in err.splitlines()
    )


class FillsUp:
    """A report file on a disk that fills up after ``room`` writes."""

    def __init__(self, file: Any, room: int) -> None:
        self._file, self._room = file, room

    def write(self, text: str) -> int:
        if self._room == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= 1
        return int(self._file.write(text))

    def __getattr__(self, name: str) -> Any:  # flush, fileno, close, closed
        return getattr(self._file, name)


def test_a_disk_filling_mid_run_stops_the_run_and_the_resume_command_finishes_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_open = report_module._open_report
    monkeypatch.setattr(
        report_module, "_open_report", lambda path, mode: FillsUp(real_open(path, mode), 11)
    )
    report = tmp_path / "first.csv"
    argv = ["run", "--local", str(EXAMPLE), "--concurrency", "1", "--report", str(report)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    summary = json.loads(Path(f"{report}.summary.json").read_text())
    assert summary["output_error"] == f"cannot write the report {report}: No space left on device"
    assert summary["stopped"]["reason"] == "output_error"
    assert summary["rows"] == 50  # every row is counted, written or not
    assert summary["counts"]["not_attempted"] > 0
    records = read_report(report)
    lines = [int(r["line"]) for r in records]  # the header and 10 rows (in completion order)
    assert len(lines) == len(set(lines)) == 10
    command = summary["resume_command"]
    assert command.endswith(f"--resume {report}")

    monkeypatch.setattr(report_module, "_open_report", real_open)  # room on the disk again
    again = [*shlex.split(command)[1:], "--report", str(tmp_path / "second.csv")]
    assert main(again) == 0
    finished = read_report(tmp_path / "second.csv")
    assert len(finished) == 50
    assert sum(r["status"] == "skipped" for r in finished) == 10  # done before the disk filled


@pytest.mark.parametrize("log_format", ["console", "json"])
def test_a_summary_path_that_is_a_directory_leaves_the_summary_on_stderr_and_no_tmp_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], log_format: str
) -> None:
    report = tmp_path / "r.csv"
    Path(f"{report}.summary.json").mkdir()
    argv = ["run", "--dry-run", str(EXAMPLE), "--report", str(report)]
    assert main([*argv, "--log-format", log_format]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "r.csv.summary.json"]
    assert len(read_report(report)) == 50  # the report is whole
    message = f"cannot write the summary {report}.summary.json: Is a directory"
    if log_format == "console":
        assert f"  error: {message}" in err.splitlines()
        (printed,) = [ln for ln in err.splitlines() if ln.startswith("  summary (not written): ")]
        summary = json.loads(printed.split(": ", 1)[1])
    else:
        events = json_events(err)
        assert len(events) == len(err.splitlines())
        assert [e["error"] for e in events if e["event"] == "summary_write_failed"] == [message]
        summary = events[-1]
    assert summary["counts"]["dry_run"] == 50
    assert summary["output_error"] == message
    assert summary["exit_code"] == 1


# -- messages --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rate", "abc"], "argument --rate: 'abc' is not a number"),
        (["--concurrency", "2.5"], "argument --concurrency: '2.5' is not a whole number"),
        (["--max-failures", "some"], "argument --max-failures: 'some' is not a whole number"),
        (["--max-failure-rate", "half"], "argument --max-failure-rate: 'half' is not a number"),
        (["--request-timeout", "1s"], "argument --request-timeout: '1s' is not a number"),
    ],
)
def test_a_value_of_the_wrong_kind_names_the_flag_and_what_is_expected(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "x.csv", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "_non_negative" not in err
    assert "_positive" not in err
    assert err.count("\n") == 1


def test_console_mode_prints_the_human_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "r.csv"
    argv = ["run", "--dry-run", "--log-format", "console", str(EXAMPLE), "--report", str(report)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "50 rows in" in err
    assert "50 dry_run" in err
    assert f"  report:  {report}" in err.splitlines()
    assert f"  summary: {report}.summary.json" in err.splitlines()


def test_a_report_writer_on_a_full_disk_keeps_what_it_saved_and_never_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = report_module._open_report
    monkeypatch.setattr(
        report_module, "_open_report", lambda path, mode: FillsUp(real_open(path, mode), 3)
    )
    path = tmp_path / "r.jsonl"
    writer = report_module.ReportWriter(path, run_id="r1")
    for line in range(2, 7):
        writer.write(RowResult(line, f"d{line}abc", "us-east-1", Status.SUCCEEDED))
    writer.close()
    assert writer.error == f"cannot write the report {path}: No space left on device"
    assert (writer.written, writer.saved) == (3, 3)
    assert [r["line"] for r in read_report(path)] == [2, 3, 4]
    assert "error=" in repr(writer)


# -- the option table ------------------------------------------------------------------------

CLI_ONLY_SETTINGS = {"backoff_base", "run_id", "progress_log", "collect_results"}  # no flag


def test_the_run_parser_has_exactly_the_tables_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    usage = out[: out.index("\n\n")]
    assert set(re.findall(r"\[(--[a-z-]+)", usage)) == {
        o.flag for o in RUN_OPTIONS if not o.positional
    }
    for option in RUN_OPTIONS:
        assert option.env in out.replace("\n", " ").replace("  ", "")


def test_every_setting_but_the_librarys_own_has_a_flag() -> None:
    flagged = {o.setting for o in RUN_OPTIONS if o.setting is not None}
    assert flagged == set(settings()) - CLI_ONLY_SETTINGS


def test_no_flag_and_no_variable_gives_the_librarys_default_config() -> None:
    given = vars(build_parser().parse_args(["run", "x.csv"]))
    values = resolve(given, {})
    assert RunConfig.from_flat(**config_settings(values)) == RunConfig()
    assert values["input"] == Path("x.csv")
    assert (values["log_format"], values["log_level"], values["progress"]) == ("auto", "info", True)


def test_help_shows_defaults_from_the_config_never_typed_into_the_help() -> None:
    for option in RUN_OPTIONS:
        assert "default" not in option.help, option.flag
    by_flag = {o.flag: o for o in RUN_OPTIONS}
    assert by_flag["--concurrency"].help_text() == (
        f"workers (default {Rate().concurrency}) [env BATCH_UPDATER_CONCURRENCY]"
    )
    assert "(default 3600)" in by_flag["--role-duration"].help_text()
    assert "(default 60)" in by_flag["--checkpoint-interval"].help_text()
    assert "(default" not in by_flag["--dry-run"].help_text()


def test_the_readme_flag_table_is_the_generated_one() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert README_START in text, "paste `python -m batch_updater.options --markdown` into README"
    start = text.index(README_START) + len(README_START) + 1
    assert text[start : text.index(README_END, start)] == markdown_table()


def test_the_generator_prints_the_table_between_its_markers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert options_main(["--markdown"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == README_START
    assert out[-1] == README_END
    assert out[1] == "| flag | variable | default | meaning |"
    assert "| `--rate N` | `BATCH_UPDATER_RATE` | `10` | requests per second" in "\n".join(out)
    assert "| `--log-format auto\\|json\\|console` |" in "\n".join(out)
    assert len(out) == len(RUN_OPTIONS) + 4


def test_a_rule_reads_the_same_from_the_flag_the_variable_and_the_library(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reason = "must be at least 1, got 0"
    with pytest.raises(SystemExit):
        main(["run", "x.csv", "--burst", "0"])
    assert f"argument --burst: {reason}" in capsys.readouterr().err
    monkeypatch.setenv("BATCH_UPDATER_BURST", "0")
    assert main(["run", "x.csv"]) == 2
    assert f"BATCH_UPDATER_BURST='0': {reason}" in capsys.readouterr().err
    with pytest.raises(SetupError, match=f"^Rate.burst: {reason}$"):
        Rate(burst=0)


# -- account flags -----------------------------------------------------------------------------

ROLE_TEMPLATE = "arn:aws:iam::{account_id}:role/AmplifyMigration"


def dry_run_settings(tmp_path: Path, *argv: str) -> dict[str, Any]:
    report = tmp_path / "r.csv"
    assert main(["run", "--dry-run", str(EXAMPLE), "--report", str(report), *argv]) == 0
    return json.loads(Path(f"{report}.summary.json").read_text())["settings"]  # type: ignore[no-any-return]


def test_account_flags_reach_the_config(tmp_path: Path) -> None:
    settings_ = dry_run_settings(
        tmp_path,
        "--role-name",
        "OrganizationAccountAccessRole",
        "--external-id",
        "ext-123",
        "--role-session-name",
        "migration-1",
        "--role-duration",
        "900",
        "--check-access",
        "--checkpoint-interval",
        "5",
    )
    assert settings_["role_name"] == "OrganizationAccountAccessRole"
    assert settings_["role_arn"] is None
    assert settings_["external_id"] == "ext-123"
    assert settings_["role_session_name"] == "migration-1"
    assert settings_["role_duration"] == 900
    assert settings_["check_access"] is True
    assert settings_["checkpoint_interval"] == 5.0


def test_account_variables_reach_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCH_UPDATER_ROLE_ARN", ROLE_TEMPLATE)
    monkeypatch.setenv("BATCH_UPDATER_EXTERNAL_ID", "ext-123")
    monkeypatch.setenv("BATCH_UPDATER_ROLE_SESSION_NAME", "migration-1")
    monkeypatch.setenv("BATCH_UPDATER_ROLE_DURATION", "43200")
    monkeypatch.setenv("BATCH_UPDATER_CHECK_ACCESS", "true")
    monkeypatch.setenv("BATCH_UPDATER_CHECKPOINT_INTERVAL", "0.5")
    settings_ = dry_run_settings(tmp_path, "--role-duration", "1800")
    assert settings_["role_arn"] == ROLE_TEMPLATE
    assert settings_["external_id"] == "ext-123"
    assert settings_["role_session_name"] == "migration-1"
    assert settings_["role_duration"] == 1800  # the flag wins over the variable
    assert settings_["check_access"] is True
    assert settings_["checkpoint_interval"] == 0.5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--role-duration", "600"], "argument --role-duration: must be 900 to 43200 seconds"),
        (["--role-duration", "1h"], "argument --role-duration: '1h' is not a whole number"),
        (["--role-arn", "AmplifyMigration"], "argument --role-arn: must be a role ARN"),
        (["--role-name", "a b"], "argument --role-name: must be a role name"),
        (["--external-id", "x"], "argument --external-id: must be 2 to 1224 letters"),
        (["--role-session-name", "a:b"], "argument --role-session-name: must be 2 to 64"),
        (["--checkpoint-interval", "0"], "argument --checkpoint-interval: must be more than 0"),
    ],
)
def test_a_bad_account_flag_exits_2_naming_the_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "x.csv", "--dry-run", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("BATCH_UPDATER_ROLE_DURATION", "60", "BATCH_UPDATER_ROLE_DURATION='60': must be 900"),
        ("BATCH_UPDATER_ROLE_ARN", "x", "BATCH_UPDATER_ROLE_ARN='x': must be a role ARN"),
        ("BATCH_UPDATER_CHECK_ACCESS", "maybe", "BATCH_UPDATER_CHECK_ACCESS='maybe': use true"),
    ],
)
def test_a_bad_account_variable_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(name, value)
    line = run_setup_error(["run", str(EXAMPLE), "--dry-run"], capsys)
    assert message in line


def test_account_flags_that_do_not_go_together_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    both = ["run", str(EXAMPLE), "--dry-run", "--role-arn", ROLE_TEMPLATE, "--role-name", "R"]
    assert "use either --role-arn or --role-name" in run_setup_error(both, capsys)
    monkeypatch.setenv("BATCH_UPDATER_ROLE_NAME", "R")
    from_env = ["run", str(EXAMPLE), "--dry-run", "--role-arn", ROLE_TEMPLATE]
    assert "use either --role-arn or --role-name" in run_setup_error(from_env, capsys)
    sending = ["run", str(EXAMPLE), "--check-access"]
    assert "--check-access works with --dry-run only" in run_setup_error(sending, capsys)


# -- the resume command --------------------------------------------------------------------------


def test_the_resume_command_keeps_every_flag_but_the_report_ones() -> None:
    argv = [
        "run",
        "in.csv",
        "--role-arn",
        ROLE_TEMPLATE,
        "--external-id=ext-1",
        "--report",
        "old.csv",
        "--resume",
        "older.csv",
        "--overwrite",
        "--rate",
        "5",
        "--no-adaptive",
        "--keep-column",
        "notes",
    ]
    command = resume_command(argv, Path("old.csv"))
    assert shlex.split(command) == [
        "batch-updater",
        "run",
        "in.csv",
        "--role-arn",
        ROLE_TEMPLATE,
        "--external-id=ext-1",
        "--rate",
        "5",
        "--no-adaptive",
        "--keep-column",
        "notes",
        "--resume",
        "old.csv",
    ]
    nothing_saved = shlex.split(resume_command(argv, None))
    assert "--report" not in nothing_saved
    assert nothing_saved[6:8] == ["--resume", "older.csv"]  # its own, to a new report


def test_the_resume_command_drops_abbreviated_and_joined_report_flags() -> None:
    argv = ["run", "in.csv", "--rep", "old.csv", "--resume=a.csv", "--over", "--max-att", "3"]
    assert shlex.split(resume_command(argv, Path("old.csv"))) == [
        "batch-updater",
        "run",
        "in.csv",
        "--max-att",
        "3",
        "--resume",
        "old.csv",
    ]


def test_the_resume_command_parses_to_the_same_settings_plus_the_resume() -> None:
    argv = ["run", "in.csv", "--role-name", "R", "--concurrency", "4", "--report", "r.csv"]
    again = shlex.split(resume_command(argv, Path("r.csv")))[1:]
    first = resolve(vars(build_parser().parse_args(argv)), {})
    second = resolve(vars(build_parser().parse_args(again)), {})
    assert {**first, "report_path": None} == {**second, "resume": []}
    assert second["resume"] == [Path("r.csv")]


SAMPLES = {  # a valid value for each option that takes one
    "INPUT": "apps.csv",
    "--report": "r.jsonl",
    "--resume": "a.csv",
    "--keep-column": "notes",
    "--checkpoint-interval": "5",
    "--region": "eu-west-1",
    "--profile": "ops",
    "--endpoint-url": "https://example.com",
    "--role-arn": ROLE_TEMPLATE,
    "--role-name": "OrganizationAccountAccessRole",
    "--external-id": "ext-1",
    "--role-session-name": "mine",
    "--role-duration": "7200",
    "--rate": "2.5",
    "--burst": "3",
    "--concurrency": "4",
    "--shard": "1/3",
    "--shard-count": "3",
    "--max-attempts": "2",
    "--request-timeout": "9",
    "--backoff-cap": "7",
    "--grace-period": "6",
    "--max-failure-rate": "0.25",
    "--failure-window": "50",
    "--max-failures": "10",
    "--progress-interval": "4",
    "--log-format": "console",
    "--log-level": "debug",
}


@pytest.mark.parametrize("option", RUN_OPTIONS, ids=lambda o: o.flag)
def test_each_options_variable_sets_what_its_flag_sets(option: Option) -> None:
    if option.takes_value:
        argv = [SAMPLES[option.flag]] if option.positional else [option.flag, SAMPLES[option.flag]]
        env = {option.env: SAMPLES[option.flag]}
    else:
        argv, env = [option.flag], {option.env: "yes"}
    from_flag = resolve(vars(build_parser().parse_args(["run", *argv])), {})
    from_env = resolve(vars(build_parser().parse_args(["run"])), env)
    assert from_flag == from_env
    assert from_flag[option.name] != option.default_value
    if not option.takes_value:  # a switch's variable can say no too
        assert resolve({}, {option.env: "false"}) == resolve({}, {})
