"""``merge_reports``: shard reports of one job joined into one report and summary."""

from __future__ import annotations

import csv
import json
import random
import re
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from batch_updater import RowResult, RunConfig, Status, run_batch_sync
from batch_updater.errors import InputError, SetupError
from batch_updater.merge import MergeError, MergeResult, merge_reports
from batch_updater.report import REPORT_COLUMNS, ReportWriter, neutralize, write_summary
from batch_updater.results import RunSummary
from batch_updater.resume import read_report
from batch_updater.shard import Shard

UP = "us-east-1_AbC123xyz"
T0 = datetime(2026, 11, 26, 10, 15, tzinfo=UTC)


def make_input(path: Path, valid: int = 40) -> Path:
    """An input with valid rows, a blank line, a multi-line cell, invalid rows whose cells a
    spreadsheet would run, a duplicate and a row taking the default region."""
    lines = ["app_id,region,user_pool_id,web_client_id"]
    lines += [f"d{i:06x}abc,us-east-1,{UP},client{i}" for i in range(valid)]
    lines += [
        "",
        f'"=1+2",us-east-1,{UP},c',
        f"d0000aaabc,@evil,{UP},c",
        f"d000001abc,us-east-1,{UP},client1",
        'd000099abc,eu-west-1,eu-west-1_AbC123xyz,"multi\nline"',
        f"d0000ffabc,,{UP},c",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def outcomes(results: list[RowResult]) -> list[RowResult]:
    """Dry-run results turned into a live run's: most succeeded, some failed with messages
    a spreadsheet would run; sorted by line."""
    out: list[RowResult] = []
    for i, r in enumerate(sorted(results, key=lambda r: r.line)):
        if r.status is not Status.DRY_RUN:
            out.append(r)
            continue
        start = T0 + timedelta(seconds=i)
        timed: dict[str, Any] = {
            "started_at": start,
            "finished_at": start + timedelta(milliseconds=120),
            "duration_ms": 120,
        }
        if i % 9 == 4:
            message = "=cmd|' /C calc'!A0" if i % 2 else "-read timed out"
            out.append(
                replace(
                    r,
                    status=Status.FAILED,
                    attempts=8,
                    error_code="ReadTimeoutError",
                    error_message=message,
                    **timed,
                )
            )
        else:
            out.append(
                replace(
                    r,
                    status=Status.SUCCEEDED,
                    attempts=1 + i % 3,
                    http_status=200,
                    request_id=f"req-{i}",
                    backend_manager_app_id=f"+bm{i}" if i == 7 else f"bm{i}",
                    **timed,
                )
            )
    return out


RUN_ID = "job-1"


def shard_of(r: RowResult, n: int) -> int:
    """The shard owning the row, as ``--shard K/N`` decides."""
    return next(k for k in range(n) if Shard(k, n).owns(r.region, r.app_id))


def write_report(path: Path, results: list[RowResult]) -> Path:
    with ReportWriter(path, run_id=RUN_ID) as writer:
        for r in results:
            writer.write(r)
    return path


def write_shards(
    results: list[RowResult],
    directory: Path,
    suffixes: tuple[str, ...],
    *,
    summaries: bool = True,
) -> list[Path]:
    """One report per shard (rows by a hash of region and app_id, in a shuffled finishing
    order), each with a summary: shard k made 10k+1 requests, k retries, 2k throttles
    and ran 1.5 + k seconds."""
    paths: list[Path] = []
    n = len(suffixes)
    for k, suffix in enumerate(suffixes):
        mine = [r for r in results if shard_of(r, n) == k]
        random.Random(k).shuffle(mine)
        path = write_report(directory / f"shard-{k}{suffix}", mine)
        if summaries:
            summary = RunSummary(
                report_path=path,
                run_id=RUN_ID,
                requests=10 * k + 1,
                retries=k,
                throttles=2 * k,
                elapsed_seconds=1.5 + k,
            )
            summary.counts.update(Counter(r.status for r in mine))
            write_summary(summary)
        paths.append(path)
    return paths


@pytest.fixture
def job(tmp_path: Path) -> tuple[Path, list[RowResult]]:
    """An input and its rows' results, from a real (dry) run of the tool."""
    source = make_input(tmp_path / "apps.csv")
    config = RunConfig(dry_run=True, output=tmp_path / "dry.csv", region="us-east-1")
    summary = run_batch_sync(source, config)
    assert summary.results is not None
    statuses = Counter(r.status for r in summary.results)
    assert statuses == {Status.DRY_RUN: 41, Status.INVALID: 3, Status.SKIPPED: 1}
    return source, outcomes(summary.results)


def merged_summary(result: MergeResult) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.summary_path.read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize(
    ("suffixes", "out"),
    [
        ((".csv", ".csv", ".csv"), ".csv"),
        ((".jsonl", ".jsonl", ".jsonl"), ".csv"),
        ((".jsonl", ".csv", ".jsonl", ".csv"), ".csv"),
        ((".jsonl", ".jsonl"), ".jsonl"),
    ],
)
def test_merged_report_is_the_unsharded_report_sorted(
    tmp_path: Path, job: tuple[Path, list[RowResult]], suffixes: tuple[str, ...], out: str
) -> None:
    source, results = job
    shards = write_shards(results, tmp_path, suffixes)
    assert all(read_report(p) for p in shards)  # every shard has rows
    expected = write_report(tmp_path / f"expected{out}", results)

    result = merge_reports(shards, tmp_path / f"merged{out}", input_path=source)

    assert result.output.read_bytes() == expected.read_bytes()
    assert result.rows == len(results) == 45
    assert result.warnings == ()
    lines = [int(r["line"]) for r in read_report(result.output)]
    assert lines == sorted(set(lines))
    if out == ".csv":  # the cells a spreadsheet would run stay defused
        text = result.output.read_text(encoding="utf-8")
        assert "'=1+2" in text
        assert "'@evil" in text
        assert "'-read timed out" in text
        assert "'+bm7" in text


def test_jsonl_from_csv_shards_keeps_cells_as_read(
    tmp_path: Path, job: tuple[Path, list[RowResult]]
) -> None:
    source, results = job
    shards = write_shards(results, tmp_path, (".csv", ".csv", ".csv"))
    verbatim = read_report(write_report(tmp_path / "expected.jsonl", results))

    result = merge_reports(shards, tmp_path / "merged.jsonl", input_path=source)

    records = list(read_report(result.output))
    # Types as the tool writes JSONL (int, null); text as read, so still defused.
    assert records == [
        {k: neutralize(v) if isinstance(v, str) else v for k, v in r.items()} for r in verbatim
    ]
    by_line = {r["line"]: r for r in records}
    failed = [r for r in records if r["status"] == "failed"]
    assert failed
    assert all(r["http_status"] is None and r["attempts"] == 8 for r in failed)
    assert any(r["app_id"] == "'=1+2" for r in by_line.values())


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_merge_of_real_shard_runs(
    tmp_path: Path, job: tuple[Path, list[RowResult]], suffix: str
) -> None:
    """``--shard K/N`` runs of the tool, merged, are the unsharded run's report."""
    source, _ = job
    shards = []
    for k in range(3):
        path = tmp_path / f"run-{k}-of-3{suffix}"
        config = RunConfig(dry_run=True, output=path, region="us-east-1", shard=Shard(k, 3))
        run_batch_sync(source, config)
        shards.append(path)
    run_ids = [
        json.loads((tmp_path / f"run-{k}-of-3{suffix}.summary.json").read_text())["run_id"]
        for k in range(3)
    ]

    result = merge_reports(shards, tmp_path / f"merged{suffix}", input_path=source)

    unsharded = list(read_report(tmp_path / "dry.csv"))
    merged = list(read_report(result.output))
    owner = {int(r["line"]): k for k, p in enumerate(shards) for r in read_report(p)}
    assert [str(r["run_id"]) for r in merged] == [run_ids[owner[int(r["line"])]] for r in merged]
    strip = ("run_id",)
    as_csv = [  # the unsharded report is CSV: compare as its text cells
        {k: "" if v is None else str(neutralize(v)) for k, v in r.items() if k not in strip}
        for r in merged
    ]
    assert as_csv == sorted(
        ({k: v for k, v in r.items() if k not in strip} for r in unsharded),
        key=lambda r: int(r["line"]),
    )
    summary = merged_summary(result)
    tool = json.loads((tmp_path / "dry.csv.summary.json").read_text(encoding="utf-8"))
    assert summary["counts"] == tool["counts"]
    assert summary["exit_code"] == tool["exit_code"] == 1  # the input has invalid rows
    assert [s["run_id"] for s in summary["shards"]] == run_ids
    assert sum(s["rows"] for s in summary["shards"]) == 45
    assert result.warnings == ()


def test_merge_of_the_tools_own_report_and_summary(
    tmp_path: Path, job: tuple[Path, list[RowResult]]
) -> None:
    source, _ = job
    tool = json.loads((tmp_path / "dry.csv.summary.json").read_text(encoding="utf-8"))

    result = merge_reports([tmp_path / "dry.csv"], tmp_path / "merged.csv", input_path=source)

    dry = list(read_report(tmp_path / "dry.csv"))
    assert list(read_report(result.output)) == sorted(dry, key=lambda r: int(r["line"]))
    summary = merged_summary(result)
    assert summary["counts"] == tool["counts"]
    assert summary["exit_code"] == tool["exit_code"] == result.exit_code == 1  # invalid rows
    assert summary["elapsed_seconds"] == tool["elapsed_seconds"]
    assert summary["requests"] == 0
    assert summary["shards"] == [
        {
            "report": str(tmp_path / "dry.csv"),
            "summary_found": True,
            "rows": 45,
            "run_id": tool["run_id"],
        }
    ]
    assert summary["input"] == str(source)


def test_summaries_are_summed(tmp_path: Path, job: tuple[Path, list[RowResult]]) -> None:
    source, results = job
    shards = write_shards(results, tmp_path, (".csv", ".jsonl", ".csv"))

    result = merge_reports(shards, tmp_path / "merged.csv", input_path=source)

    summary = merged_summary(result)
    counts = Counter(str(r.status) for r in results)
    assert summary["counts"] == {str(s): counts[str(s)] for s in Status}
    assert summary["rows"] == 45
    assert (summary["requests"], summary["retries"], summary["throttles"]) == (33, 3, 6)
    assert summary["elapsed_seconds"] == 3.5
    processed = counts["succeeded"] + counts["failed"] + counts["dry_run"]  # sent or checked
    assert summary["rows_per_second"] == round(processed / 3.5, 2)
    assert summary["exit_code"] == result.exit_code == 1
    assert summary["summaries_missing"] == []
    shard_rows = [len(list(read_report(p))) for p in shards]
    assert summary["shards"] == [
        {"report": str(p), "summary_found": True, "rows": n, "run_id": RUN_ID}
        for p, n in zip(shards, shard_rows, strict=True)
    ]
    assert result.counts == summary["counts"]
    assert (result.requests, result.retries, result.throttles) == (33, 3, 6)
    assert result.summary_path == tmp_path / "merged.csv.summary.json"


def test_a_missing_shard_summary_is_named(
    tmp_path: Path, job: tuple[Path, list[RowResult]]
) -> None:
    _, results = job
    shards = write_shards(results, tmp_path, (".csv", ".csv", ".csv"))
    (tmp_path / "shard-2.csv.summary.json").unlink()
    (tmp_path / "shard-1.csv.summary.json").write_text("{not json", encoding="utf-8")
    heard: list[str] = []

    result = merge_reports(shards, tmp_path / "merged.csv", warn=heard.append)

    assert result.summaries_missing == (shards[1], shards[2])
    assert heard == list(result.warnings)
    assert len(heard) == 2
    assert "unreadable summary" in heard[0]
    assert "no summary" in heard[1]
    summary = merged_summary(result)
    assert summary["summaries_missing"] == [str(shards[1]), str(shards[2])]
    assert [s["summary_found"] for s in summary["shards"]] == [True, False, False]
    assert (summary["requests"], summary["elapsed_seconds"]) == (1, 1.5)


def test_all_done_exits_0(tmp_path: Path) -> None:
    rows = [
        RowResult(2, "d1", "us-east-1", Status.SUCCEEDED, attempts=1, http_status=200),
        RowResult(3, "d2", "us-east-1", Status.SKIPPED, error_message="duplicate of line 2"),
        RowResult(4, "d3", "us-east-1", Status.DRY_RUN),
    ]
    a = write_report(tmp_path / "a.csv", rows[:2])
    b = write_report(tmp_path / "b.jsonl", rows[2:])

    result = merge_reports([a, b], tmp_path / "merged.jsonl")

    assert result.exit_code == 0
    assert result.rows == 3
    assert result.elapsed_seconds == 0.0
    summary = merged_summary(result)
    assert (summary["rows_per_second"], summary["input"]) == (0.0, None)
    assert [r["line"] for r in read_report(result.output)] == [2, 3, 4]


def test_a_line_in_two_reports_is_refused(
    tmp_path: Path, job: tuple[Path, list[RowResult]]
) -> None:
    _, results = job
    shards = write_shards(results, tmp_path, (".csv", ".jsonl"))
    line = next(r for r in results if shard_of(r, 2) == 0).line
    with ReportWriter(shards[1], overwrite=True, run_id=RUN_ID) as writer:
        for r in results:
            if shard_of(r, 2) == 1 or r.line == line:
                writer.write(r)

    with pytest.raises(MergeError) as caught:
        merge_reports(shards, tmp_path / "merged.csv")

    message = str(caught.value)
    assert f"line {line} is reported in both {shards[0]} and {shards[1]}" in message
    assert not (tmp_path / "merged.csv").exists()


def test_a_line_twice_in_one_report_is_refused(tmp_path: Path) -> None:
    row = RowResult(5, "d1", "us-east-1", Status.SUCCEEDED)
    path = write_report(tmp_path / "a.csv", [row, row])
    with pytest.raises(MergeError, match=re.escape(f"line 5 is reported twice in {path}")):
        merge_reports([path], tmp_path / "merged.csv")


def test_a_report_given_twice_is_refused(tmp_path: Path, job: tuple[Path, list[RowResult]]) -> None:
    _, results = job
    shards = write_shards(results, tmp_path, (".csv", ".csv"))
    with pytest.raises(MergeError, match="given twice"):
        merge_reports([*shards, tmp_path / "." / "shard-0.csv"], tmp_path / "merged.csv")
    with pytest.raises(MergeError, match="no report to merge"):
        merge_reports([], tmp_path / "merged.csv")


def test_a_missing_shard_is_found_with_the_input(
    tmp_path: Path, job: tuple[Path, list[RowResult]]
) -> None:
    source, results = job
    shards = write_shards(results, tmp_path, (".csv", ".csv", ".csv"))
    lost = sorted(r.line for r in results if shard_of(r, 3) == 2)

    with pytest.raises(MergeError) as caught:
        merge_reports(shards[:2], tmp_path / "merged.csv", input_path=source)

    message = str(caught.value)
    first = ", ".join(map(str, lost[:5]))
    assert f"{len(lost)} input line(s) in no report (first: {first};" in message
    assert str(source) in message
    assert len(message) < 300
    assert not (tmp_path / "merged.csv").exists()

    # Without the input there is nothing to check against: the rows given are merged.
    result = merge_reports(shards[:2], tmp_path / "merged.csv")
    assert result.rows == len(results) - len(lost)


def test_lines_not_in_the_input_are_refused(tmp_path: Path) -> None:
    source = make_input(tmp_path / "apps.csv", valid=3)
    rows = [RowResult(line, "d000000abc", "us-east-1", Status.INVALID) for line in (2, 3, 99)]
    report = write_report(tmp_path / "a.csv", rows)
    with pytest.raises(MergeError) as caught:
        merge_reports([report], tmp_path / "merged.csv", input_path=source)
    message = str(caught.value)
    assert "1 reported line(s) not in the input (first: 99)" in message
    assert "input line(s) in no report" in message


def test_a_report_of_another_input_is_refused(
    tmp_path: Path, job: tuple[Path, list[RowResult]]
) -> None:
    source, results = job
    other = [replace(r, app_id="dfffff") if r.line == 5 else r for r in results]
    report = write_report(tmp_path / "a.csv", other)
    with pytest.raises(MergeError, match=r"1 record\(s\) for another app.*line 5 in"):
        merge_reports([report], tmp_path / "merged.csv", input_path=source)


def test_a_torn_last_line_is_ignored_with_a_warning(
    tmp_path: Path, job: tuple[Path, list[RowResult]]
) -> None:
    source, results = job
    shards = write_shards(results, tmp_path, (".csv", ".jsonl"))
    torn: list[int] = []
    for path in shards:  # kill -9 in the middle of writing the last record
        records = list(read_report(path))
        torn.append(int(records[-1]["line"]))
        data = path.read_bytes()
        path.write_bytes(data[: data.rstrip(b"\n").rfind(b"\n") + 20])
    heard: list[str] = []

    result = merge_reports(shards, tmp_path / "merged.csv", warn=heard.append)

    # Per shard: its torn line, then its summary counting one row more than its records.
    assert len(heard) == 4
    assert all("incomplete last line ignored (torn write)" in m for m in heard[:2])
    assert all("summary counts" in m for m in heard[2:])
    assert result.rows == len(results) - 2
    lines = {int(r["line"]) for r in read_report(result.output)}
    assert not lines & set(torn)

    with pytest.raises(MergeError) as caught:
        merge_reports(shards, tmp_path / "again.csv", input_path=source)
    assert f"2 input line(s) in no report (first: {', '.join(map(str, sorted(torn)))};" in str(
        caught.value
    )


def test_an_existing_output_is_kept_unless_overwrite(
    tmp_path: Path, job: tuple[Path, list[RowResult]]
) -> None:
    _, results = job
    shards = write_shards(results, tmp_path, (".csv", ".csv"))
    output = tmp_path / "out" / "merged.csv"
    output.parent.mkdir()
    output.write_text("keep me\n", encoding="utf-8")

    with pytest.raises(MergeError, match=r"already exists.*--overwrite"):
        merge_reports(shards, output)
    assert output.read_text(encoding="utf-8") == "keep me\n"

    result = merge_reports(shards, output, overwrite=True)
    assert result.rows == len(results)
    assert sorted(output.parent.iterdir()) == sorted([output, result.summary_path])  # no .tmp

    with pytest.raises(MergeError, match="is one of the reports"):
        merge_reports(shards, shards[0], overwrite=True)


def test_other_report_versions_are_merged_generously(tmp_path: Path) -> None:
    """An older CSV lacking the last column(s), a newer JSONL with a column unknown here."""
    rows = [
        RowResult(2, "d1", "us-east-1", Status.SUCCEEDED, attempts=1, duration_ms=5),
        RowResult(3, "d2", "us-east-1", Status.SUCCEEDED, attempts=1, duration_ms=6),
    ]
    old = write_report(tmp_path / "old.csv", rows[:1])
    text = old.read_text(encoding="utf-8").splitlines()
    old.write_text(
        "\n".join(line.rsplit(",", 1)[0] for line in text) + "\n", encoding="utf-8"
    )  # as written before the last column existed
    new = tmp_path / "new.jsonl"
    record = next(read_report(write_report(tmp_path / "tmp.jsonl", rows[1:])))
    new.write_text(json.dumps({**record, "x_note": "=later"}) + "\n", encoding="utf-8")

    merged_csv = merge_reports([old, new], tmp_path / "merged.csv").output
    with merged_csv.open(encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split(",")
    assert header == [*REPORT_COLUMNS, "x_note"]
    records = read_csv_dicts(merged_csv)
    last = REPORT_COLUMNS[-1]
    assert records[0][last] == ""
    assert records[0]["x_note"] == ""
    assert records[1]["x_note"] == "'=later"

    newer_csv = tmp_path / "newer.csv"
    newer_csv.write_text(
        ",".join([*REPORT_COLUMNS, "x_note"])
        + "\n"
        + ",".join(["4", "d3", "us-east-1", "succeeded", "1"] + [""] * (len(REPORT_COLUMNS) - 5))
        + ",'=later\n",
        encoding="utf-8",
    )
    merged_csv = merge_reports([old, new, newer_csv], tmp_path / "merged3.csv").output
    records = read_csv_dicts(merged_csv)
    assert [r["x_note"] for r in records] == ["", "'=later", "'=later"]

    merged_jsonl = merge_reports([old, new], tmp_path / "merged.jsonl").output
    got = list(read_report(merged_jsonl))
    assert got[0][last] is None
    assert got[0]["x_note"] is None
    assert got[1]["x_note"] == "=later"
    assert list(got[1]) == [*REPORT_COLUMNS, "x_note"]


def read_csv_dicts(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_broken_reports_are_setup_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.csv"
    garbage.write_text("not,a,report\n", encoding="utf-8")
    with pytest.raises(InputError, match="unexpected header"):
        merge_reports([garbage], tmp_path / "merged.csv")
    with pytest.raises(InputError, match="cannot read"):
        merge_reports([tmp_path / "absent.csv"], tmp_path / "merged.csv")

    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({"line": 2, "status": "exploded"}) + "\n", encoding="utf-8")
    with pytest.raises(MergeError, match="unknown status 'exploded'"):
        merge_reports([odd], tmp_path / "merged.csv")
    odd.write_text(json.dumps({"line": "two", "status": "failed"}) + "\n", encoding="utf-8")
    with pytest.raises(MergeError, match="record 1: 'two' is not an input line number"):
        merge_reports([odd], tmp_path / "merged.csv")
    assert issubclass(MergeError, SetupError)
    assert not (tmp_path / "merged.csv").exists()


# -- bounded memory ---------------------------------------------------------------------


def many_rows(n: int) -> list[RowResult]:
    """``n`` rows' results (lines 2..n+1), mostly succeeded, some failed, some invalid."""
    out: list[RowResult] = []
    for i in range(n):
        start = T0 + timedelta(milliseconds=37 * i)
        status = (Status.SUCCEEDED, Status.SUCCEEDED, Status.FAILED, Status.INVALID)[i % 4]
        out.append(
            RowResult(
                i + 2,
                f"d{i:08x}abc",
                ("us-east-1", "eu-west-1")[i % 2],
                status,
                attempts=1,
                error_message="=boom" if status is Status.FAILED else "",
                started_at=start,
                finished_at=start + timedelta(milliseconds=5),
                duration_ms=5,
            )
        )
    return out


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_many_shards_merge_in_a_tiny_memory_budget_as_in_a_large_one(
    tmp_path: Path, suffix: str
) -> None:
    """Twelve shards in finishing order, merged with a budget that spills a sorted run to
    disk every few records: the same report and summary as merged in memory."""
    rows = many_rows(3_000)
    source = tmp_path / "apps.csv"
    source.write_text(
        "app_id,region\n" + "".join(f"{r.app_id},{r.region}\n" for r in rows), encoding="utf-8"
    )
    shards = write_shards(rows, tmp_path, tuple(suffix for _ in range(12)))
    expected = write_report(tmp_path / f"expected{suffix}", rows)

    small = merge_reports(
        shards, tmp_path / f"small{suffix}", input_path=source, memory_budget=4_000
    )
    large = merge_reports(shards, tmp_path / f"large{suffix}", input_path=source)

    assert small.output.read_bytes() == large.output.read_bytes() == expected.read_bytes()
    small_summary, large_summary = merged_summary(small), merged_summary(large)
    assert small_summary.pop("report") != large_summary.pop("report")
    assert small_summary == large_summary
    assert small_summary["counts"]["succeeded"] == 1_500
    assert small.rows == 3_000


def test_checks_hold_when_the_records_spill(tmp_path: Path) -> None:
    """Duplicates across shards, missing and stray lines are found in a tiny budget too."""
    rows = many_rows(600)
    source = tmp_path / "apps.csv"
    source.write_text(
        "app_id,region\n" + "".join(f"{r.app_id},{r.region}\n" for r in rows), encoding="utf-8"
    )
    shards = write_shards(rows, tmp_path, (".csv",) * 4)
    twice = next(r for r in rows if shard_of(r, 4) == 0)
    with ReportWriter(shards[3], overwrite=True, run_id=RUN_ID) as writer:
        for r in rows:
            if shard_of(r, 4) == 3 or r == twice:
                writer.write(r)
    with pytest.raises(MergeError, match=rf"line {twice.line} is reported in both"):
        merge_reports(shards, tmp_path / "m.csv", input_path=source, memory_budget=1_000)
    assert not list(tmp_path.glob("m.csv*"))  # nothing published, nothing left beside it

    stray = write_report(tmp_path / "stray.csv", [replace(rows[0], line=10_000)])
    with pytest.raises(MergeError) as caught:
        merge_reports(
            [*shards[:3], stray], tmp_path / "m.csv", input_path=source, memory_budget=1_000
        )
    lost = sorted(r.line for r in rows if shard_of(r, 4) == 3)
    message = str(caught.value)
    assert f"{len(lost)} input line(s) in no report (first: {_first5(lost)};" in message
    assert "1 reported line(s) not in the input (first: 10000)" in message
    assert not list(tmp_path.glob("m.csv*"))


def _first5(lines: list[int]) -> str:
    return ", ".join(map(str, lines[:5]))


def test_a_line_past_any_input_is_a_stray_line(tmp_path: Path) -> None:
    source = make_input(tmp_path / "apps.csv", valid=1)
    rows = [RowResult(line, "d000000abc", "us-east-1", Status.INVALID) for line in (2, 10**20)]
    with pytest.raises(MergeError, match=r"1 reported line\(s\) not in the input \(first: 1000"):
        merge_reports(
            [write_report(tmp_path / "a.jsonl", rows)], tmp_path / "m.csv", input_path=source
        )


@pytest.mark.parametrize("where", ["report", "output", "input"])
def test_an_s3_url_given_to_merge_reports_is_refused_with_what_to_use(
    tmp_path: Path, where: str
) -> None:
    local = str(tmp_path / "shard.csv")
    url = "s3://bucket/reports/shard.csv"
    with pytest.raises(MergeError, match=r"not a local file: .*merge_on_s3"):
        merge_reports(
            [url if where == "report" else local],
            url if where == "output" else str(tmp_path / "merged.csv"),
            input_path=url if where == "input" else None,
        )
    assert not (tmp_path / "merged.csv").exists()
