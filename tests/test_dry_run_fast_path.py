"""A run that sends nothing (a dry run, an input with invalid rows) writes each row's
record without a Row or a RowResult per row (``RowPlan.outcomes``,
``ResultSink.emit_unsent``, ``RecordEncoder.write_unsent``): it writes exactly what the
general path (iterating the plan, a RowResult per row, ``RecordEncoder.write``) writes."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch_updater import codec
from batch_updater.codec import RecordEncoder
from batch_updater.config import Accounts, Output, RunConfig
from batch_updater.results import RunSummary, Status, unsent_result
from batch_updater.resume import ResumeIndex
from batch_updater.rows import Row, RowPlan
from batch_updater.runner import run_batch_sync
from batch_updater.shard import Shard

UP = "{r}_AbC{i}xyz"
IP = "{r}:0f1e2d3c-4b5a-6978-8a9b-{i:012x}"
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2")
ROLE = "arn:{partition}:iam::{account_id}:role/Updater"


def mixed_rows(n: int = 400) -> list[list[str]]:
    """Cells of rows of every kind: valid, invalid (each rule), duplicates of the same and
    of other settings, quoted cells, formula-like cells, too few and too many cells."""
    rows: list[list[str]] = []
    for i in range(n):
        r = REGIONS[i % 3]
        cells = [f"d{i:06x}", r, IP.format(r=r, i=i), r, UP.format(r=r, i=i), f"c{i}x"]
        kind = i % 23
        if kind == 1:
            cells[0] = "D-bad"
        elif kind == 2:
            cells[1] = "moon-1"
        elif kind == 3:
            cells[4] = "eu-west-2_Zz"  # another region than cognito_region
        elif kind == 4:
            cells[2:] = ["", "", "", ""]  # no settings
        elif kind == 5:
            cells[5] = "bad, client"  # a comma: quoted in the input and the reason
        elif kind == 6:
            cells[0] = "=cmd|x"  # a formula, defused in the report
        elif kind == 7:
            cells = cells[:4]  # too few cells
        elif kind == 8:
            cells += ["", ""]  # empty cells after the header's
        elif kind == 9:
            cells[2:4] = ["", ""]  # only a user pool and a client
        rows.append(cells)
        if i % 11 == 0:
            rows.append(list(cells))  # a duplicate with the same settings
        if i % 37 == 0 and len(cells) == 6:
            rows.append([*cells[:5], "otherclient"])  # the same app, other settings
    return rows


def csv_line(cells: list[str]) -> str:
    return ",".join(f'"{c}"' if "," in c or c.startswith(" ") else c for c in cells)


def write_input(
    tmp_path: Path, *, crlf: bool = False, region: bool = True, extra: str = ""
) -> Path:
    header = ["app_id", "region", "identity_pool_id", "cognito_region", "user_pool_id"]
    header.append("web_client_id")
    lines = []
    for n, row in enumerate(mixed_rows()):
        cells = [row[0], *row[2:]] if not region and len(row) > 1 else row
        if extra == "accounts" and len(cells) >= 5:
            # By app, so a duplicate row names the same account.
            account = ("", "111122223333", "444455556666", "12")[sum(map(ord, cells[0])) % 4]
            cells = [*cells, account, f"note {n % 5}, kept" if n % 7 else f"=n{n}"]
        lines.append(csv_line(cells))
    if not region:
        header.remove("region")
    if extra == "accounts":
        header += ["account_id", "note"]
    lines.insert(5, 'd0abc,us-east-1,"multi\nline",us-east-1,,c1' if region else "d0abc,,,,c1")
    text = "\n".join([",".join(header), *lines]) + "\n"
    if crlf:
        text = "\ufeff" + text.replace("\n", "\r\n")
    path = tmp_path / "in.csv"
    path.write_text(text, encoding="utf-8", newline="")
    return path


VARIANTS: dict[str, dict[str, Any]] = {
    "lf": {},
    "crlf and bom": {"crlf": True},
    "no region column": {"region": False},
    "accounts and a kept column": {"extra": "accounts"},
}


def plan_of(path: Path, variant: dict[str, Any], shard: Shard | None = None) -> RowPlan:
    accounts = variant.get("extra") == "accounts"
    return RowPlan(
        path,
        "us-west-2",
        keep=("note",) if accounts else (),
        role_template=ROLE if accounts else None,
        shard=shard,
    )


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_outcomes_are_what_iterating_the_plan_gives(
    tmp_path: Path, variant: dict[str, Any]
) -> None:
    path = write_input(tmp_path, **variant)
    with plan_of(path, variant) as plan:
        fast = list(plan.outcomes())
        general = list(map(plan.outcome, plan))
    assert fast == general
    fates = {fate for _, _, _, fate, *_ in fast}
    assert fates == {"", "invalid", "skipped"}  # every kind of row was there


def test_a_sharded_plan_gives_the_same_outcomes_as_iterating_it(tmp_path: Path) -> None:
    path = write_input(tmp_path)
    for index in range(3):
        with plan_of(path, {}, Shard(index, 3)) as plan:
            assert list(plan.outcomes()) == list(map(plan.outcome, plan))


def test_outcomes_of_rows_given_as_mappings() -> None:
    rows = [
        {"app_id": "d1a", "region": "us-east-1", "web_client_id": "c1"},
        {"app_id": "d1a", "region": "us-east-1", "web_client_id": "c1"},
        {"app_id": "d2a", "region": "us-east-1", "web_client_id": "c,2"},
        {"app_id": "d3a", "region": "us-east-1", "web_client_id": "c3"},
        {"app_id": "d3a", "region": "us-east-1", "web_client_id": "c4"},
    ]
    with RowPlan(rows, None) as plan:
        fast = list(plan.outcomes())
        assert fast == list(map(plan.outcome, plan))
    assert [fate for _, _, _, fate, *_ in fast] == ["", "skipped", "invalid", "invalid", "invalid"]


# -- the encoder -------------------------------------------------------------------------

CELL = st.text(alphabet='ab1 ,"\r\n\x00=+-@\t{}\ue000\ue001é', max_size=6)


def both_ways(
    jsonl: bool, run_id: str, kept_columns: tuple[str, ...], args: tuple[Any, ...]
) -> tuple[str, str]:
    general, fast = io.StringIO(), io.StringIO()
    RecordEncoder(jsonl=jsonl, run_id=run_id, extra_columns=kept_columns, out=general).write(
        unsent_result(*args)
    )
    RecordEncoder(jsonl=jsonl, run_id=run_id, extra_columns=kept_columns, out=fast).write_unsent(
        args
    )
    return fast.getvalue(), general.getvalue()


@settings(max_examples=300, deadline=None)
@given(
    st.booleans(),
    st.sampled_from(["", "job-1", "=r{0}", "a\ue001b", 'q"r']),
    st.sampled_from(list(Status)),
    st.integers(min_value=2, max_value=10**9),
    st.lists(CELL, min_size=5, max_size=5),
    st.lists(CELL, max_size=2),
)
def test_write_unsent_writes_the_line_write_writes(  # noqa: PLR0917 (hypothesis's arguments)
    jsonl: bool, run_id: str, status: Status, line: int, cells: list[str], kept: list[str]
) -> None:
    app_id, region, message, digest, account = cells
    kept_columns = tuple(f"k{i}" for i in range(len(kept)))
    args = (status, line, app_id, region, message, digest, tuple(kept), account)
    fast, general = both_ways(jsonl, run_id, kept_columns, args)
    assert fast == general


def test_plain_cells_are_written_without_a_row_result(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    encoder = RecordEncoder(jsonl=False, run_id="job", extra_columns=("note",), out=out)
    plain = (Status.DRY_RUN, 2, "d1a", "us-east-1", "", "0123456789abcdef", ("n",), "")
    encoder.write_unsent(plain)  # makes the templates

    def no_result(*args: Any) -> Any:
        raise AssertionError("a RowResult was built")

    monkeypatch.setattr(codec, "unsent_result", no_result)
    encoder.write_unsent(plain)
    encoder.write_unsent(
        (Status.SKIPPED, 3, "d1a", "us-east-1", "duplicate of line 2", "", ("",), "1")
    )
    with pytest.raises(AssertionError, match="RowResult"):  # a comma: the general path
        encoder.write_unsent((Status.INVALID, 4, "d1a", "us-east-1", "a, b", "", ("n",), ""))
    first, second, third = out.getvalue().splitlines()
    assert first == second == "2,d1a,us-east-1,dry_run,0,,,,,,0123456789abcdef,,,,job,,n"
    assert third == "3,d1a,us-east-1,skipped,0,,,duplicate of line 2,,,,,,,job,1,"  # kept: ""


# -- whole runs ------------------------------------------------------------------------------


def run(path: Path, report: Path, *, collect: bool, **config: Any) -> RunSummary:
    return run_batch_sync(
        path,
        RunConfig(
            dry_run=True,
            run_id="job-1",
            region="us-west-2",
            collect_results=collect,
            **config,
        ),
    )


def summary_of(summary: RunSummary) -> dict[str, Any]:
    data = summary.to_json()
    for key in ("elapsed_seconds", "rows_per_second", "report", "settings"):
        data.pop(key)
    return data


@pytest.mark.parametrize("jsonl", [False, True], ids=["csv", "jsonl"])
def test_a_dry_run_writes_the_same_report_on_both_paths(tmp_path: Path, jsonl: bool) -> None:
    # Collecting results (a RowResult per row) takes the general path of the sink and
    # the encoder; not collecting (the CLI) the fast one.
    path = write_input(tmp_path, extra="accounts")
    suffix = ".jsonl" if jsonl else ".csv"
    reports = [tmp_path / f"general{suffix}", tmp_path / f"fast{suffix}"]
    summaries = []
    for report, collect in zip(reports, (True, False), strict=True):
        output = Output(report, keep_columns=("note",))
        summaries.append(run(path, report, collect=collect, output=output, accounts=Accounts(ROLE)))
    general, fast = (report.read_bytes() for report in reports)
    assert fast == general
    assert summary_of(summaries[1]) == summary_of(summaries[0])
    assert summaries[1].counts[Status.DRY_RUN] > 0
    assert summaries[1].counts[Status.INVALID] > 0
    assert len(summaries[1].first_invalid) == 5


def test_a_resumed_dry_run_writes_the_same_report_on_both_paths(tmp_path: Path) -> None:
    path = write_input(tmp_path)
    first = tmp_path / "first.csv"
    run(path, first, collect=False, output=Output(first))
    lines = first.read_text(encoding="utf-8").splitlines(keepends=True)
    earlier = tmp_path / "earlier.csv"
    with earlier.open("w", encoding="utf-8", newline="") as out:
        for n, line in enumerate(lines):
            if n % 3 == 1 and ",dry_run," in line:
                done = line.replace(",dry_run,0,,,", ",succeeded,1,,200,", 1)
                out.write(done.replace(",,,,job-1,", ",,2026-11-29T09:00:00.000Z,,job-1,", 1))
            else:
                out.write(line)
    reports = [tmp_path / "general.csv", tmp_path / "fast.csv"]
    summaries = []
    for report, collect in zip(reports, (True, False), strict=True):
        output = Output(report, resume=(earlier,))
        summaries.append(run(path, report, collect=collect, output=output))
    assert reports[1].read_bytes() == reports[0].read_bytes()
    assert summary_of(summaries[1]) == summary_of(summaries[0])
    report = reports[1].read_text(encoding="utf-8")
    assert report.count(",skipped,0,,,succeeded in ") > 50


def test_successes_noted_on_the_plans_apps_skip_the_rows_a_table_of_their_own_skips(
    tmp_path: Path,
) -> None:
    # Two earlier reports (the first wins), one with other settings for some apps, one
    # with accounts: the successes noted within the plan give each row the note the
    # index of its own (the general path's lookup) gives it.
    path = write_input(tmp_path, extra="accounts")
    variant = VARIANTS["accounts and a kept column"]
    first, second = tmp_path / "first.csv", tmp_path / "second.jsonl"
    config = {"accounts": Accounts(ROLE)}
    run(path, first, collect=False, output=Output(first, keep_columns=("note",)), **config)
    lines = first.read_text(encoding="utf-8").splitlines(keepends=True)
    with first.open("w", encoding="utf-8", newline="") as out:
        for n, line in enumerate(lines):
            if n % 2 and ",dry_run," in line:
                done = line.replace(",dry_run,0,,,", ",succeeded,1,,200,", 1)
                out.write(done.replace(",,,,job-1,", ",,2026-11-29T09:00:01.500Z,,job-1,", 1))
            else:
                out.write(line)
    with second.open("w", encoding="utf-8") as out:
        for n, line in enumerate(lines[1:]):
            cells = line.rstrip("\n").split(",")
            if len(cells) < 17 or cells[3] != "dry_run" or n % 3 == 0:
                continue
            digest = cells[10] if n % 5 else "0123456789abcdef"  # other settings
            record = dict.fromkeys(codec.REPORT_COLUMNS)
            record.update(line=int(cells[0]), app_id=cells[1], region=cells[2])
            record.update(status="succeeded", settings_digest=digest, account_id=cells[15])
            record.update(finished_at=f"2026-11-29T10:00:{n % 60:02d}.{n % 1000:03d}Z")
            out.write(json.dumps(record) + "\n")
    with plan_of(path, variant) as plan:
        alone = ResumeIndex.load([first, second])
        within = ResumeIndex.load([first, second], within=plan.apps)
        outcomes = list(plan.outcomes())
        rows = [item for item in plan if isinstance(item, Row)]
    noted = {o[0]: within.note(o[8]) for o in outcomes if o[8]}
    assert noted == {row.line: note for row in rows if (note := alone.lookup(row)) is not None}
    assert {row.line: within.lookup(row) for row in rows} == {
        row.line: alone.lookup(row) for row in rows
    }
    assert len(noted) == len(within) > 50
    assert any("first.csv" in note for note in noted.values())
    assert any("second.jsonl" in note for note in noted.values())
