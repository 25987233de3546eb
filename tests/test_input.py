"""Reading the input: read once (spooled), from a pipe or standard input, whatever happens
to the file; spreadsheet quirks; hints for files saved the wrong way."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from batch_updater import RunConfig, Shard, run_batch, run_batch_sync
from batch_updater.cli import main
from batch_updater.emulator import EmulatorServer
from batch_updater.errors import InputError, SetupError
from batch_updater.merge import merge_reports
from batch_updater.rows import Rejected, Row, RowPlan, read_csv

from .conftest import fast, read_report

HEADER = "app_id,region,user_pool_id"
UP = "us-east-1_AbC123xyz"


def csv_text(n: int) -> str:
    return HEADER + "\n" + "".join(f"d{i}abc,us-east-1,{UP}\n" for i in range(n))


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """A pipe (read end, write end); the ends still open at the end are closed."""
    r, w = os.pipe()
    ends = [r, w]
    yield r, w
    for fd in ends:
        with contextlib.suppress(OSError):  # closed by the test already
            os.close(fd)


def feed(fd: int, data: bytes) -> threading.Thread:
    """Write ``data`` into a pipe from a thread (more than a pipe buffer holds), then close."""

    def run() -> None:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


# -- read once ---------------------------------------------------------------------------


def test_a_pipe_given_by_path_is_read_once_and_every_row_is_yielded(
    pipe: tuple[int, int],
) -> None:
    r, w = pipe
    writer = feed(w, csv_text(5000).encode())  # about 190 kB: several pipe buffers
    with RowPlan(Path(f"/dev/fd/{r}"), None) as plan:
        writer.join()
        items = list(plan)
        assert plan.input_rows == plan.total == 5000
        assert [item.line for item in items] == list(range(2, 5002))
        assert all(isinstance(item, Row) for item in items)
        assert list(plan) == items  # a second iteration reads the same private copy
        assert not plan.input_changed()  # a pipe has no identity to compare


def test_dash_reads_standard_input(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    r, w = pipe
    feed(w, csv_text(3).encode()).join()
    monkeypatch.setattr(sys, "stdin", os.fdopen(r, "r", closefd=False))
    report = tmp_path / "r.csv"
    code = main(["run", "--dry-run", "-", "--report", str(report)])
    assert code == 0
    assert [row["line"] for row in read_report(report)] == ["2", "3", "4"]
    assert [row["status"] for row in read_report(report)] == ["dry_run"] * 3


def test_the_default_report_of_standard_input_is_named_after_stdin(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    r, w = pipe
    feed(w, csv_text(1).encode()).join()
    monkeypatch.setattr(sys, "stdin", os.fdopen(r, "r", closefd=False))
    monkeypatch.chdir(tmp_path)
    summary = run_batch_sync(Path("-"), RunConfig(dry_run=True))
    assert summary.report_path is not None
    assert summary.report_path.name.startswith("stdin-")
    assert summary.settings["input"] == "<stdin>"


def test_the_second_pass_reads_the_copy_not_the_file(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(csv_text(10))
    with RowPlan(path, None) as plan:
        path.write_text(HEADER + "\nBAD,us-east-1,x\n")  # rewritten in place
        assert [item.line for item in plan] == list(range(2, 12))
        assert all(isinstance(item, Row) for item in plan)
        assert plan.input_changed()


def test_removing_the_input_counts_as_a_change(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(csv_text(2))
    with RowPlan(path, None) as plan:
        assert not plan.input_changed()
        path.unlink()
        assert plan.input_changed()
        assert len(list(plan)) == 2


def test_the_private_copy_is_closed_with_the_plan_and_on_errors(tmp_path: Path) -> None:
    good = tmp_path / "in.csv"
    good.write_text(csv_text(3))
    broken = tmp_path / "broken.csv"
    broken.write_text(csv_text(3) + '"never closed\n')
    before = open_fds()
    with RowPlan(good, None) as plan:
        assert len(open_fds() - before) == 1  # the spool
        assert "spool=<_Spool open size=" in repr(plan)
    assert open_fds() == before
    assert "spool=<_Spool closed" in repr(plan)
    with pytest.raises(InputError, match="broken CSV"):
        RowPlan(broken, None)
    assert open_fds() == before


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_while_spooling_is_a_one_line_setup_error_before_any_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def full_disk(**_kw: object) -> object:
        return open("/dev/full", "w+b")

    monkeypatch.setattr("batch_updater.rows.tempfile.TemporaryFile", full_disk)
    path = tmp_path / "in.csv"
    path.write_text(csv_text(20_000))  # more than one read chunk
    with pytest.raises(SetupError, match="cannot keep a private copy of the input") as info:
        RowPlan(path, None)
    assert "No space left on device" in str(info.value)
    report = tmp_path / "r.csv"
    code = main(["run", "--local", str(path), "--report", str(report)])
    err = capsys.readouterr().err
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("batch-updater: error: cannot keep a private copy of the input")
    assert "nothing was sent" in line
    assert not report.exists()


# -- empty inputs ------------------------------------------------------------------------


def test_a_header_only_input_exits_1_saying_there_is_nothing_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "h.csv"
    path.write_text(HEADER + "\n\n")
    code = main(["run", "--dry-run", str(path), "--report", str(tmp_path / "r.csv")])
    err = capsys.readouterr().err
    assert code == 1
    assert f"{path} has a header but no rows: nothing to do" in err.splitlines()[-1]
    assert "Traceback" not in err


def test_a_shard_without_rows_of_a_non_empty_input_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text(csv_text(1))
    codes = [
        run_batch_sync(
            path,
            RunConfig(dry_run=True, shard=Shard(k, 2), report_path=tmp_path / f"r{k}.csv"),
        ).exit_code
        for k in range(2)
    ]
    assert sorted(codes) == [0, 0]
    sizes = sorted(len(read_report(tmp_path / f"r{k}.csv")) for k in range(2))
    assert sizes == [0, 1]  # one shard owned no row, and still succeeded


# -- what can be read is kept ------------------------------------------------------------


def test_a_row_with_the_wrong_cell_count_keeps_the_cells_it_has(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(f"{HEADER}\nd1abc,us-east-1,{UP},extra\nd2abc\n,eu-west-1\n")
    with RowPlan(path, None) as plan:
        items = list(plan)
    assert [(i.line, i.app_id, i.region) for i in items] == [
        (2, "d1abc", "us-east-1"),
        (3, "d2abc", ""),
        (4, "", "eu-west-1"),
    ]
    assert all(isinstance(i, Rejected) and i.status == "invalid" for i in items)
    assert items[0].reason == "has 4 cells, the header has 3"  # type: ignore[union-attr]
    assert items[1].reason == "has 1 cells, the header has 3"  # type: ignore[union-attr]


def test_spreadsheet_empty_header_cells_at_the_end_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_text(
        f"{HEADER},, ,\n"
        f"d1abc,us-east-1,{UP},,,\n"  # as a spreadsheet writes it
        f"d2abc,us-east-1,{UP}\n"  # without the empty cells
        f"d3abc,us-east-1,{UP},,note,\n"  # a value under no column name
        f"d4abc,us-east-1,{UP},,,,\n"  # more cells than the header
    )
    with RowPlan(path, None) as plan:
        items = list(plan)
    assert [type(i).__name__ for i in items] == ["Row", "Row", "Rejected", "Rejected"]
    assert items[2].reason == (  # type: ignore[union-attr]
        "a value at position 5, where the header has no column name (an empty header cell)"
    )
    assert items[2].app_id == "d3abc"
    assert items[3].reason == (  # type: ignore[union-attr]
        "has 7 cells, the header has 3 and 3 empty cells after them"
    )


def test_an_empty_header_cell_between_names_is_still_an_error(tmp_path: Path) -> None:
    path = tmp_path / "gap.csv"
    path.write_text(f"app_id,,user_pool_id,,\nd1abc,,{UP},,\n")
    with pytest.raises(InputError, match="unknown column an empty name at position 2"):
        RowPlan(path, "us-east-1")


# -- hints for files saved the wrong way -----------------------------------------------


@pytest.mark.parametrize(("sep", "name"), [(";", "';'"), ("\t", "tab")])
def test_another_separator_gets_a_hint(tmp_path: Path, sep: str, name: str) -> None:
    path = tmp_path / "semi.csv"
    path.write_text(f"{HEADER.replace(',', sep)}\nd1abc{sep}us-east-1{sep}{UP}\n")
    with pytest.raises(InputError) as info:
        RowPlan(path, None)
    message = str(info.value)
    assert message.startswith(f"{path}, line 1: unknown column ")
    assert message.endswith(f"the file looks like {name}-separated: save it comma-separated")


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_bom_gets_a_hint(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "wide.csv"
    path.write_bytes(f"{HEADER}\nd1abc,us-east-1,{UP}\n".encode(encoding))
    with pytest.raises(InputError) as info:
        RowPlan(path, None)
    assert str(info.value).startswith(f"{path}, line 1: ")
    assert str(info.value).endswith("the file looks like UTF-16: save it as UTF-8")


def test_utf16_that_is_not_valid_utf8_gets_the_hint_too(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_bytes("app_id,région\n".encode("utf-16-le"))
    with pytest.raises(InputError, match=r"line 1: not valid UTF-8 \(the file looks like UTF-16"):
        RowPlan(path, None)


def test_read_csv_still_reads_a_file_by_path(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(csv_text(2))
    assert [line for line, _ in read_csv(path)] == [2, 3]


# -- kept columns ------------------------------------------------------------------------

KEPT_INPUT = (
    "app_id,region,user_pool_id,notes,Owner\n"
    f"d1abc,us-east-1,{UP},first app,=alice\n"
    f"d1abc,us-east-1,{UP},again,bob\n"  # a duplicate: skipped
    "d3abc,us-east-1,bad,broken,carol\n"  # invalid
    f"d4abc,us-east-1,{UP}\n"  # too few cells: invalid, keeps what it has
)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
async def test_kept_columns_ride_along_into_the_report_after_its_own_columns(
    tmp_path: Path, server: EmulatorServer, session: Any, suffix: str
) -> None:
    path = tmp_path / "in.csv"
    path.write_text(KEPT_INPUT)
    report = tmp_path / f"r{suffix}"
    config = fast(
        tmp_path,
        f"r{suffix}",
        endpoint_url=server.url,
        skip_invalid=True,
        keep_columns=("notes", "owner"),
    )
    await run_batch(path, config, session=session)
    records = sorted(read_report(report), key=lambda r: int(r["line"]))
    assert list(records[0])[-4:] == ["run_id", "account_id", "notes", "owner"]
    got = [(r["status"], r["notes"], r["owner"]) for r in records]
    formula = "'=alice" if suffix == ".csv" else "=alice"  # CSV cells are defused
    assert got == [
        ("succeeded", "first app", formula),
        ("skipped", "again", "bob"),
        ("invalid", "broken", "carol"),
        ("invalid", "", ""),
    ]


def test_an_extra_column_not_kept_still_stops_the_run_and_says_how_to_keep_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "in.csv"
    path.write_text(KEPT_INPUT)
    with pytest.raises(InputError) as info:
        RowPlan(path, None, keep=("notes",))
    assert str(info.value).startswith(f"{path}, line 1: unknown column 'Owner' at position 5;")
    assert str(info.value).endswith("to carry it into the report, pass --keep-column Owner")


def test_a_kept_column_the_header_lacks_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(csv_text(1))
    with pytest.raises(InputError, match=r"line 1: the header has no column 'notes' to keep"):
        RowPlan(path, None, keep=("notes",))


@pytest.mark.parametrize("name", ["run_id", "Status", "app_id", "AwsUserPoolsId", " "])
def test_a_kept_column_needs_a_name_of_its_own(name: str) -> None:
    with pytest.raises(SetupError, match="--keep-column"):
        RunConfig(keep_columns=(name,))
    with pytest.raises(SetupError, match="given twice"):
        RunConfig(keep_columns=("notes", "Notes"))


def test_keep_column_flag_and_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(KEPT_INPUT)
    report = tmp_path / "r.csv"
    run = ["run", "--dry-run", str(path), "--report", str(report), "--overwrite"]
    monkeypatch.setenv("BATCH_UPDATER_KEEP_COLUMN", "notes, owner")
    assert main(run) == 1  # the invalid rows
    assert [r["owner"] for r in read_report(report)] == ["'=alice", "bob", "carol", ""]
    monkeypatch.setenv("BATCH_UPDATER_KEEP_COLUMN", "notes")
    assert main([*run, "--keep-column", "owner", "--keep-column", "notes"]) == 1
    assert list(read_report(report)[0])[-2:] == ["owner", "notes"]  # the flags' order
    monkeypatch.delenv("BATCH_UPDATER_KEEP_COLUMN")
    assert main(run) == 2  # not kept: unknown columns stop the run


async def test_resume_and_merge_read_reports_with_kept_columns(
    tmp_path: Path, server: EmulatorServer, session: Any
) -> None:
    path = tmp_path / "in.csv"
    path.write_text(KEPT_INPUT)
    keep = ("notes", "owner")
    first = fast(tmp_path, "first.csv", endpoint_url=server.url, skip_invalid=True)
    await run_batch(path, replace(first, keep_columns=keep), session=session)
    again = replace(
        first,
        report_path=tmp_path / "again.csv",
        keep_columns=keep,
        resume=(tmp_path / "first.csv",),
    )
    summary = await run_batch(path, again, session=session)
    assert summary.requests == 0  # the first report's success was read back
    statuses = {r["line"]: r["status"] for r in read_report(tmp_path / "again.csv")}
    assert statuses["2"] == "skipped"
    merged = merge_reports([tmp_path / "again.csv"], tmp_path / "merged.csv", input_path=path)
    assert merged.exit_code == 1  # the invalid rows
    records = read_report(tmp_path / "merged.csv")
    assert [r["notes"] for r in records] == ["first app", "again", "broken", ""]
