"""The report reader's fast path (a line without quotes, split at commas) agrees with the
csv module on every kind of line, and so do what reads through it: ``--resume`` (a few
columns of each record) and ``merge`` (lines copied as read when the encoder would write
them so)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch_updater import codec
from batch_updater.codec import (
    REPORT_COLUMNS,
    WIDTHS,
    RecordEncoder,
    ReportReader,
    as_encoded,
)
from batch_updater.errors import InputError
from batch_updater.merge import merge_reports
from batch_updater.resume import SUCCEEDED_IN, ResumeIndex
from batch_updater.rows import LoginSettings, Row
from batch_updater.storage import LocalFile

HEADER = ",".join(REPORT_COLUMNS)
UP = "us-east-1_AbC123xyz"


def digest(i: int) -> str:
    return LoginSettings(user_pool_id=UP, web_client_id=f"c{i}").digest()


def row(i: int) -> Row:
    settings = LoginSettings(user_pool_id=UP, web_client_id=f"c{i}")
    return Row(i, f"d{i:06x}abc", "us-east-1", settings, settings.digest())


def record(i: int, status: str = "succeeded", message: str = "", **cells: str) -> list[str]:
    """The cells of a record of this version for input line ``i``."""
    values = {
        "line": str(i),
        "app_id": f"d{i:06x}abc",
        "region": "us-east-1",
        "status": status,
        "attempts": "1",
        "http_status": "200" if status == "succeeded" else "",
        "error_message": message,
        "request_id": f"req-{i}",
        "settings_digest": digest(i),
        "started_at": "2026-11-29T09:00:00.000Z",
        "finished_at": f"2026-11-29T09:00:01.{i % 1000:03d}Z",
        "duration_ms": "1000",
        "run_id": "job",
    }
    values.update(cells)
    return [values.get(column, "") for column in REPORT_COLUMNS]


def plain(cells: list[str]) -> str:
    return ",".join(cells) + "\n"


# Lines of every kind: plain ones (the fast path), and ones the csv module reads.
LINES = [
    plain(record(2)),
    plain(record(3, "skipped", f"{SUCCEEDED_IN}old.csv at 2026-11-28T08:00:00.001Z")),
    '4,d000004abc,us-east-1,failed,3,Throttling,429,"slow down, please",,,'
    + digest(4)
    + ",,,,job,\n",
    '5,d000005abc,us-east-1,failed,1,X,500,"two\nlines ""quoted""",,,' + digest(5) + ",,,,job,\n",
    plain(record(6)).replace("\n", "\r\n"),  # a CRLF line end, as a spreadsheet saves
    plain(record(7, "failed", "=1+2")),  # a hand-edited formula, not defused
    plain(record(8, attempts="01")),  # a number not written as the tool writes it
    plain(record(9, account_id="111122223333")),
    plain(record(10, "failed", "\tTab", http_status="-1")),
]


def crlf_ends(line: str) -> str:
    """``line`` with CRLF line ends, as a spreadsheet saves it."""
    return line.replace("\r\n", "\n").replace("\n", "\r\n")


def report(path: Path, lines: list[str], *, header: str = HEADER, bom: bool = False) -> Path:
    text = ("\ufeff" if bom else "") + header + "\n" + "".join(lines)
    path.write_bytes(text.encode("utf-8"))
    return path


def by_csv_module(path: Path) -> list[list[str]]:
    """The records as the csv module alone reads the file (BOM skipped, torn end cut)."""
    text = path.read_bytes().decode("utf-8-sig")
    return list(csv.reader(io.StringIO(text, newline="")))[1:]


# Characters read at a time: a block of one line or a few, or the whole report.
BLOCKS = [1, 7, 300, 1 << 15]


@pytest.fixture(params=BLOCKS, ids=lambda size: f"blocks of {size}")
def block(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    size: int = request.param
    monkeypatch.setattr(codec, "_BLOCK", size)
    return size


@pytest.mark.parametrize("bom", [False, True])
@pytest.mark.parametrize("crlf", [False, True])
def test_the_fast_path_reads_the_cells_the_csv_module_reads(
    tmp_path: Path, bom: bool, crlf: bool, block: int
) -> None:
    lines = [crlf_ends(line) if crlf else line for line in LINES]
    path = report(tmp_path / "r.csv", lines, bom=bom)

    got = list(ReportReader(LocalFile(path)).cells(("line", "status", "account_id")))

    assert [cells for *_, cells in got] == by_csv_module(path)
    assert [picked for _, _, picked, _ in got] == [
        (cells[0], cells[3], cells[15]) for cells in by_csv_module(path)
    ]
    fast = [line is not None for _, line, _, _ in got]
    assert fast == [not crlf and '"' not in line and "\r" not in line for line in LINES]
    assert [number for number, *_ in got] == [2, 3, 4, 6, 7, 8, 9, 10, 11]


def test_a_torn_last_line_on_the_fast_path_is_ignored_like_one_the_csv_module_reads(
    tmp_path: Path, block: int
) -> None:
    for last in (plain(record(20)), '20,"quoted,\nstill open'):
        path = report(tmp_path / "r.csv", [*LINES, last.rstrip("\n")])
        heard: list[str] = []
        got = list(ReportReader(LocalFile(path), heard.append).cells(()))
        assert [cells for *_, cells in got] == by_csv_module(path)[: len(LINES)]
        assert heard == [f"{path}, line 12: incomplete last line ignored (torn write)"]


def test_blocks_of_plain_records_are_split_whole_among_lines_the_csv_module_reads(
    tmp_path: Path, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [plain(record(i)) for i in range(2, 300)]
    lines[100:100] = LINES  # quoted, CRLF and hand-edited lines in the middle
    path = report(tmp_path / "r.csv", lines)
    split: list[int] = []
    split_records = codec._split_records

    def counting(*args: Any) -> Any:
        split.append(args[2])
        return split_records(*args)

    monkeypatch.setattr(codec, "_split_records", counting)
    got = list(ReportReader(LocalFile(path)).cells(("line", "status")))
    assert [cells for *_, cells in got] == by_csv_module(path)
    assert [picked for _, _, picked, _ in got] == [
        (cells[0], cells[3]) for cells in by_csv_module(path)
    ]
    assert [line for _, line, _, _ in got if line is not None] == [
        line for line in lines if '"' not in line and "\r" not in line
    ]
    assert [n for n, *_ in got][-1] == len(lines) + 2  # two lines hold one record
    assert split  # the plain blocks were split whole


@pytest.mark.parametrize("width", WIDTHS)
def test_an_older_version_reads_empty_text_for_the_columns_it_lacks(
    tmp_path: Path, width: int
) -> None:
    lines = [plain(record(2)[:width]), plain(record(3, message="a,b")[:width])]
    lines[1] = lines[1].replace("a,b", '"a,b"')
    path = report(tmp_path / "r.csv", lines, header=",".join(REPORT_COLUMNS[:width]))

    got = list(ReportReader(LocalFile(path)).cells(("line", "error_message", "account_id")))

    assert [picked for _, _, picked, _ in got] == [("2", "", ""), ("3", "a,b", "")]
    assert [line is None for _, line, _, _ in got] == [False, True]


def test_kept_columns_are_read_on_the_fast_path_too(tmp_path: Path) -> None:
    path = report(
        tmp_path / "r.csv",
        [plain([*record(2), "alice"]), plain([*record(3), "bob,jr"]).replace("bob,jr", '"bob,jr"')],
        header=HEADER + ",owner",
    )
    reader = ReportReader(LocalFile(path))
    got = [reader.typed(cells, number) for number, _, _, cells in reader.cells(())]
    assert [r.extras for r in got] == [{"owner": "alice"}, {"owner": "bob,jr"}]
    assert [r.values[0] for r in got] == [2, 3]


# -- lines copied as read ----------------------------------------------------------------

# Cells a hand or a spreadsheet may leave in a report line without quotes.
_CELL = st.text(alphabet="0123456789-+=@\tab .'Z:", max_size=6)


class _Memory:
    """A report held in memory (the storage seam's reading side)."""

    def __init__(self, data: str) -> None:
        self.name = "mem.csv"
        self._data = data.encode("utf-8")

    def open_read(self) -> io.BytesIO:
        return io.BytesIO(self._data)


@settings(max_examples=300, deadline=None)
@given(st.lists(_CELL, min_size=len(REPORT_COLUMNS), max_size=len(REPORT_COLUMNS)))
def test_a_line_is_copied_as_read_only_when_the_encoder_writes_it_so(cells: list[str]) -> None:
    line = plain(cells)
    reader = ReportReader(_Memory(HEADER + "\n" + line))  # type: ignore[arg-type]
    ((number, text, _, read),) = list(reader.cells(()))
    assert text == line
    encoded = RecordEncoder(jsonl=False).encode_values(
        reader.typed(list(read), number).values, None
    )
    if as_encoded(line, read):
        assert encoded == line


def test_the_tools_own_lines_are_copied_as_read(tmp_path: Path) -> None:
    for line in (plain(record(2)), plain(record(9, account_id="111122223333"))):
        assert as_encoded(line, line[:-1].split(","))


def _as_encoded_before(paths: list[Path], jsonl: bool) -> list[str]:
    """What a merge wrote before lines were copied: every record decoded and encoded,
    sorted by line, the union of the extra columns appended."""
    got: list[tuple[int, Any, Any]] = []
    extra: dict[str, None] = {}
    for path in paths:
        for values, extras, _ in ReportReader(LocalFile(path)):
            got.append((values[0], values, extras))
            extra.update(dict.fromkeys(extras or ()))
    plain_encoder = RecordEncoder(jsonl=jsonl)
    encoder = RecordEncoder(jsonl=jsonl, extra_columns=tuple(extra))
    lines = [encoder.header()] if not jsonl else []
    for _, values, extras in sorted(got, key=lambda item: item[0]):
        lines.append(encoder.extend(plain_encoder.encode_values(values, None), extras))
    return lines


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_merge_writes_what_decoding_and_encoding_every_record_wrote(
    tmp_path: Path, suffix: str
) -> None:
    one = report(tmp_path / "one.csv", LINES[::2], bom=True)
    two = report(tmp_path / "two.csv", [crlf_ends(line) for line in LINES[1::2]])
    old = report(
        tmp_path / "old.csv",
        [plain([*record(30)[:14], "x"]), plain([*record(31, "failed", "=2")[:14], "=y"])],
        header=",".join(REPORT_COLUMNS[:14]) + ",owner",
    )
    out = tmp_path / f"merged{suffix}"

    merge_reports([one, two, old], out, memory_budget=1)  # every record spilled

    want = _as_encoded_before([one, two, old], jsonl=suffix == ".jsonl")
    text = out.read_bytes().decode("utf-8")
    assert text == "".join(want)
    if suffix == ".jsonl":
        assert [json.loads(line)["line"] for line in text.splitlines()][:3] == [2, 3, 4]


def test_a_merge_counts_lines_copied_as_read_by_status_and_account(tmp_path: Path) -> None:
    one = report(tmp_path / "one.csv", LINES[::2])
    two = report(tmp_path / "two.csv", LINES[1::2])
    result = merge_reports([one, two], tmp_path / "m.csv")
    assert result.rows == len(LINES)
    assert result.counts["succeeded"] == 4
    assert result.counts["failed"] == 4
    assert result.counts["skipped"] == 1
    summary = json.loads((tmp_path / "m.csv.summary.json").read_text())
    assert summary["counts_by_account"] == {
        "111122223333": {**dict.fromkeys(result.counts, 0), "succeeded": 1}
    }


# -- resume through the fast path --------------------------------------------------------


def test_resume_finds_the_successes_the_csv_module_reads(tmp_path: Path) -> None:
    path = report(tmp_path / "r.csv", [*LINES, plain(record(11))], bom=True)
    index = ResumeIndex.load([path])

    want: dict[int, str] = {}
    for cells in by_csv_module(path):
        status, message = cells[3], cells[7]
        if status == "succeeded" and not cells[15]:
            want[int(cells[0])] = f"{SUCCEEDED_IN}{path} at {cells[12]}"
        elif status == "skipped":
            want[int(cells[0])] = message
    assert want  # the report has successes of both kinds
    for i in range(2, 12):
        assert index.lookup(row(i)) == want.get(i), i


def test_columns_give_column_by_column_the_text_cells_gives(tmp_path: Path, block: int) -> None:
    lines = [plain(record(i)) for i in range(2, 300)]
    lines[100:100] = LINES
    path = report(tmp_path / "r.csv", lines)
    # The line column first (a plain block's lines but its first are split with a mark)
    # and last, and one this version lacks.
    columns = ("line", "status", "error_message", "account_id", "region", "later", "line")
    by_cells = [picked for _, _, picked, _ in ReportReader(LocalFile(path)).cells(columns)]
    batches = list(ReportReader(LocalFile(path)).columns(columns))
    assert all(len(batch) == len(columns) for batch in batches)
    assert [cells for batch in batches for cells in zip(*batch, strict=True)] == by_cells
    if block > 300:
        assert max(len(batch[0]) for batch in batches) > 1  # plain blocks came whole


@pytest.mark.parametrize("short", [False, True], ids=["a cell short", "and one more after"])
def test_columns_name_the_line_of_a_record_of_the_wrong_width(
    tmp_path: Path, block: int, short: bool
) -> None:
    """Also when a block of lines has as many cells as its lines should: one line a cell
    short, the next a cell over (past the first block, which holds the header)."""
    lines = [plain(record(i)) for i in range(2, 600)]
    lines[400] = plain(record(402)[:-1])  # a cell short, on line 402
    if short:
        lines[401] = plain([*record(403), ""])
    path = report(tmp_path / "r.csv", lines)
    with pytest.raises(InputError, match=r"r\.csv, line 402: not a report line: wrong number"):
        list(ReportReader(LocalFile(path)).columns(("status",)))
