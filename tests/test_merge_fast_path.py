"""``merge``'s fast paths agree with its general ones: blocks of report lines tested and
kept as read at once, the input's key cells read in batches, records checked against the
input by the start of their lines, spilled chunks of lines as read written as three
objects. Each is compared with the path it shortcuts (runs merged a batch at a time:
see ``test_spill``)."""

from __future__ import annotations

import io
import json
import random
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch_updater import codec, merge
from batch_updater.codec import REPORT_COLUMNS, ReportReader, all_as_encoded, as_encoded
from batch_updater.csvinput import _keys, _parse
from batch_updater.errors import InputError
from batch_updater.merge import MergeError, merge_reports
from batch_updater.report import ReportWriter
from batch_updater.results import RowResult, Status
from batch_updater.spill import pickled, unpickled
from batch_updater.storage import LocalFile

HEADER = ",".join(REPORT_COLUMNS)
T0 = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)

# -- the report reader's groups --------------------------------------------------------

# Report lines of every kind: plain ones, quoted ones over two lines, a CRLF line end,
# a formula, a number not as the tool writes it.
_PLAIN = "{n},d{n:06x}abc,us-east-1,succeeded,1,,200,,req-{n},,abc,,,120,job,"
_ODD = [
    '{n},d{n:06x}abc,us-east-1,failed,3,X,429,"slow down, please",,,abc,,,,job,',
    '{n},d{n:06x}abc,us-east-1,failed,1,X,500,"two\nlines",,,abc,,,,job,',
    "{n},d{n:06x}abc,us-east-1,succeeded,1,,200,,,,abc,,,,job,\r",
    "{n},d{n:06x}abc,us-east-1,failed,1,,,=1+2,,,abc,,,,job,",
    "{n},d{n:06x}abc,us-east-1,succeeded,01,,200,,,,abc,,,,job,",
]


def _report_text(count: int, seed: int) -> str:
    rng = random.Random(seed)
    lines = [HEADER]
    for n in range(2, count + 2):
        shape = rng.choice(_ODD) if rng.random() < 0.01 else _PLAIN
        lines.append(shape.format(n=n))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("size", [1, 7, 300, 1 << 15])
def test_groups_give_the_records_cells_gives_one_by_one(
    tmp_path: Path, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(codec, "_BLOCK", size)
    path = tmp_path / "r.csv"
    path.write_text(_report_text(2_000, seed=size), encoding="utf-8")
    width = len(REPORT_COLUMNS)

    one_by_one = [
        (number, line, cells) for number, line, _, cells in ReportReader(LocalFile(path)).cells(())
    ]
    grouped: list[tuple[int, str | None, list[str]]] = []
    plain_groups = 0
    for first, text, bodies, cells in ReportReader(LocalFile(path)).groups():
        records = [cells[at : at + width] for at in range(0, len(cells), width)]
        if bodies is None:
            assert text is None
            assert len(records) == 1
            grouped.append((first, None, records[0]))
            continue
        assert text == "".join(body + "\n" for body in bodies)
        plain_groups += len(bodies) > 1
        numbers = range(first, first + len(bodies))
        for number, body, record in zip(numbers, bodies, records, strict=True):
            grouped.append((number, body + "\n", record))

    assert grouped == one_by_one
    if size >= 300:
        assert plain_groups  # blocks of plain lines came whole


def test_a_group_names_the_line_of_a_record_of_the_wrong_width(tmp_path: Path) -> None:
    lines = [_PLAIN.format(n=n) for n in range(2, 60)]
    lines[40] = lines[40].rsplit(",", 1)[0]  # a cell short, on line 42
    path = tmp_path / "r.csv"
    path.write_text("\n".join([HEADER, *lines]) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"r\.csv, line 42: not a report line: wrong number"):
        list(ReportReader(LocalFile(path)).groups())


# Cells a hand or a spreadsheet may leave in a report line without quotes.
_CELL = st.text(alphabet="0123456789-+=@\tab .'Z:", max_size=4)
_RECORD = st.lists(_CELL, min_size=len(REPORT_COLUMNS), max_size=len(REPORT_COLUMNS))


@settings(max_examples=400, deadline=None)
@given(st.lists(_RECORD, min_size=1, max_size=6))
def test_a_block_is_kept_as_read_exactly_when_each_of_its_lines_is(
    records: list[list[str]],
) -> None:
    text = "".join(",".join(cells) + "\n" for cells in records)
    columns = [[cells[i] for cells in records] for i in range(len(REPORT_COLUMNS))]
    each = all(as_encoded(",".join(cells), cells) for cells in records)
    assert all_as_encoded(text, columns) == each


# -- the input's key cells ---------------------------------------------------------------

INPUTS = [
    b"app_id,region,user_pool_id\nd1,us-east-1,p\nd2,eu-west-1,p\n",
    b"app_id,region\r\nd1,us-east-1\r\nd2,eu-west-1\r\n",  # CRLF
    b"\xef\xbb\xbfAppId,Region\nd1,us-east-1",  # a BOM, aliases, no line end at the end
    b'app_id,region\n"d1",us-east-1\n"d,2","eu-west-1"\nd3,"two\nlines"\n',
    b"app_id,region\n\n  \nd1,x\n\nd2,y\n",  # blank lines
    b"app_id,region\n d1 , us-east-1 \n\td2\t,eu-west-1\n",  # spaces around cells
    b"app_id,region\nd1,us-east-1\nd2,  \n",  # a cell of spaces only...
    b"app_id,region\nd1,us-east-1\n  ,eu-west-1\n",  # ...in either column...
    b"app_id,region\nd1, \n",  # ...alone in its block
    b"app_id,region\nd1,us-east-1,extra\nd2\nd3,,\n",  # rows of other widths
    b"app_id,region,,\nd1,us-east-1,,\nd2,eu-west-1,\n",  # a spreadsheet's empty columns
    b"app_id,user_pool_id\nd1,p\nd2,p\n",  # no region column
    b"app_id\nd1\n\nd2\n",  # one column
    b"app_id,region,note\nd1,us-east-1,a\rb\n",  # a lone CR
    b"app_id,region\nd1,\xff\n",  # not UTF-8
    b"app_id,region\nd1,a\nd2,b\xff\nd3,c\n",  # not UTF-8 after plain lines
    b"",
    b"\n\n",
    b"nope,region\nd1,a\n",  # an unknown column
]


def _by_rows(data: bytes, columns: tuple[str, ...]) -> list[Any] | str:
    """What the general reader (one dict per row) gives for ``columns``, or its error."""
    try:
        return [
            (line, tuple(row.get(c, "").strip() for c in columns), "__cells__" in row)
            for line, row in _parse("in.csv", io.BytesIO(data), (), require=False)
        ]
    except InputError as exc:
        return str(exc)


def _by_keys(data: bytes, columns: tuple[str, ...], block_size: int) -> list[Any] | str:
    got: list[Any] = []
    try:
        for lines, values, odd in _keys(
            "in.csv", io.BytesIO(data), columns, (), require=False, block_size=block_size
        ):
            got += zip(lines, zip(*values, strict=True), odd, strict=True)
    except InputError as exc:
        return str(exc)
    return got


@pytest.mark.parametrize("block_size", [1, 5, 64, 1 << 18])
@pytest.mark.parametrize("data", INPUTS)
def test_the_input_key_cells_are_those_of_the_rows_read_one_by_one(
    data: bytes, block_size: int
) -> None:
    columns = ("app_id", "region")
    assert _by_keys(data, columns, block_size) == _by_rows(data, columns)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(alphabet='ab ,"\r\n\t', max_size=10), max_size=8),
    st.integers(min_value=1, max_value=40),
)
def test_any_input_gives_the_key_cells_of_its_rows(lines: list[str], block_size: int) -> None:
    data = ("app_id,region,note\n" + "\n".join(lines)).encode("utf-8")
    columns = ("app_id", "region")
    assert _by_keys(data, columns, block_size) == _by_rows(data, columns)


# -- the merge, fast and general ----------------------------------------------------------


def _rows(count: int) -> list[RowResult]:
    out: list[RowResult] = []
    for i in range(count):
        start = T0 + timedelta(milliseconds=37 * i)
        status = (
            Status.SUCCEEDED,
            Status.SUCCEEDED,
            Status.FAILED,
            Status.INVALID,
            Status.SKIPPED,
            Status.NOT_ATTEMPTED,
        )[i % 6]
        out.append(
            RowResult(
                i + 2,
                f"d{i:08x}abc",
                ("us-east-1", "eu-west-1")[i % 2],
                status,
                attempts=i % 3,
                http_status=200 if status is Status.SUCCEEDED else None,
                error_message=("=boom", "a, b", "plain")[i % 3] if status is Status.FAILED else "",
                started_at=start,
                finished_at=start + timedelta(milliseconds=5),
                duration_ms=5,
                account_id="" if i % 5 else f"{(i * 7919) % 4:012d}",
            )
        )
    return out


def _shards(
    rows: list[RowResult], directory: Path, count: int, *, jsonl: bool = False
) -> list[Path]:
    """Shard reports in a finishing order (shuffled within windows); with ``jsonl`` the
    second is JSON lines."""
    rng = random.Random(count)
    directory.mkdir(exist_ok=True)
    paths: list[Path] = []
    for k in range(count):
        mine = [r for r in rows if r.line % count == k]
        order: list[RowResult] = []
        for start in range(0, len(mine), 40):
            window = mine[start : start + 40]
            rng.shuffle(window)
            order += window
        path = directory / f"shard-{k}{'.jsonl' if jsonl and k == 1 else '.csv'}"
        with ReportWriter(path, run_id=f"run-{k}") as writer:
            for r in order:
                writer.write(r)
        summary = {"run_id": f"run-{k}", "rows": len(order), "requests": len(order)}
        summary |= {"retries": k, "throttles": 0, "elapsed_seconds": 1.0 + k}
        path.with_name(path.name + ".summary.json").write_text(json.dumps(summary))
        paths.append(path)
    return paths


def _general(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every fast path of the merge off: records one by one, chunks pickled."""
    monkeypatch.setattr(merge, "_as_read", lambda text, cells: None)
    monkeypatch.setattr(merge, "_starting", lambda texts, lines, apps, regions: False)
    monkeypatch.setattr(merge, "_pack", pickled)
    monkeypatch.setattr(merge, "_unpack", unpickled)


def _outcome(reports: list[Path], out: Path, source: Path | None, budget: int) -> Any:
    out.parent.mkdir(exist_ok=True)
    try:
        result = merge_reports(reports, out, input_path=source, memory_budget=budget)
    except MergeError as exc:
        return str(exc).replace(str(out.parent), "<dir>")
    summary = json.loads(result.summary_path.read_text(encoding="utf-8"))
    summary.pop("report")
    return out.read_bytes(), summary, result.warnings


def _cases(tmp_path: Path) -> dict[str, tuple[list[Path], Path | None]]:
    rows = _rows(1_200)
    source = tmp_path / "apps.csv"
    source.write_text(
        "app_id,region\n" + "".join(f"{r.app_id},{r.region}\n" for r in rows), encoding="utf-8"
    )
    gaps = tmp_path / "apps-gaps.csv"  # the region left to the default on some rows
    lines = ["app_id,region"]
    for r in rows:
        lines.append(f"{r.app_id},{r.region}" if r.line % 50 else f"{r.app_id},")
    gaps.write_text("\n".join(lines) + "\n", encoding="utf-8")
    no_region = tmp_path / "apps-no-region.csv"
    no_region.write_text("app_id\n" + "".join(f"{r.app_id}\n" for r in rows), encoding="utf-8")
    shards = _shards(rows, tmp_path, 3)
    mixed = _shards(rows, tmp_path / "mixed", 3, jsonl=True)
    other = tmp_path / "other.csv"  # shard 2 with another app on line 14 (succeeded)
    with ReportWriter(other, run_id="other") as writer:
        for r in rows:
            if r.line % 3 == 2:
                writer.write(replace(r, app_id="d_other") if r.line == 14 else r)
    elsewhere = tmp_path / "elsewhere.csv"  # shard 2 with another region on line 14
    with ReportWriter(elsewhere, run_id="elsewhere") as writer:
        for r in rows:
            if r.line % 3 == 2:
                writer.write(replace(r, region="ap-south-1") if r.line == 14 else r)
    torn = tmp_path / "torn.csv"
    data = shards[0].read_bytes()
    torn.write_bytes(data[: data.rstrip(b"\n").rfind(b"\n") + 25])
    return {
        "with the input": (shards, source),
        "a JSON-lines shard": (mixed, source),
        "with an input of no region": (shards, no_region),
        "with an input of some regions": (shards, gaps),
        "without the input": (shards, None),
        "a line twice": ([*shards, other], None),
        "another app": ([torn, shards[1], other], source),
        "another region": ([shards[0], shards[1], elsewhere], source),
        "a shard missing": (shards[1:], source),
        "a torn shard": ([torn, *shards[1:]], None),
    }


@pytest.mark.parametrize("budget", [3_000, 1 << 25])
def test_the_fast_paths_merge_as_the_general_ones(
    tmp_path: Path, budget: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reports, summaries and errors byte for byte the same with every fast path off,
    whether the records spill (a tiny budget) or not."""
    cases = _cases(tmp_path)
    fast = {
        name: _outcome(reports, tmp_path / "fast" / f"{i}.csv", source, budget)
        for i, (name, (reports, source)) in enumerate(cases.items())
    }
    _general(monkeypatch)
    general = {
        name: _outcome(reports, tmp_path / "general" / f"{i}.csv", source, budget)
        for i, (name, (reports, source)) in enumerate(cases.items())
    }
    assert fast == general
    assert isinstance(fast["with the input"], tuple)
    assert "line 2 is reported in both" in fast["a line twice"]
    assert "1 record(s) for another app" in fast["another app"]
    assert "line 14 in" in fast["another region"]


def test_records_are_counted_by_status_and_account_as_read(tmp_path: Path) -> None:
    rows = _rows(600)
    result = merge_reports(
        _shards(rows, tmp_path, 3, jsonl=True), tmp_path / "merged.csv", memory_budget=2_000
    )
    summary = json.loads(result.summary_path.read_text(encoding="utf-8"))
    assert {k: v for k, v in summary["counts"].items() if v} == dict(
        Counter(r.status.value for r in rows)
    )
    by_account: dict[str, Counter[str]] = {}
    for r in rows:
        if r.account_id:
            by_account.setdefault(r.account_id, Counter())[r.status.value] += 1
    assert len(by_account) == 4
    assert {
        account: {k: v for k, v in counts.items() if v}
        for account, counts in summary["counts_by_account"].items()
    } == {account: dict(counts) for account, counts in by_account.items()}
