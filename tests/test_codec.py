"""The report codec: columns and versions, encode and typed decode in both formats, torn
lines, kept columns, the account column; and the storage seam beneath it."""

from __future__ import annotations

import enum
import io
import json
from collections.abc import Hashable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch_updater import RowResult, Status
from batch_updater.codec import (
    COLUMNS,
    REPORT_COLUMNS,
    VERSION,
    WIDTHS,
    Record,
    RecordEncoder,
    ReportReader,
)
from batch_updater.errors import InputError
from batch_updater.merge import merge_reports
from batch_updater.report import ReportWriter, write_summary
from batch_updater.results import RunSummary, exit_code
from batch_updater.resume import ResumeIndex
from batch_updater.rows import Row
from batch_updater.storage import LocalFile, Location

T0 = datetime(2026, 11, 29, 10, 0, 0, 123000, tzinfo=UTC)

FULL = RowResult(
    7,
    "d1abc",
    "eu-west-1",
    Status.FAILED,
    attempts=3,
    error_code="ThrottlingException",
    http_status=429,
    error_message='slow down,\n"please"',  # a comma, a line break, quotes
    request_id="req-1",
    backend_manager_app_id="bm-1",
    settings_digest="abc123",
    started_at=T0,
    finished_at=T0.replace(second=2),
    duration_ms=2000,
    kept=("alice", "=1+2"),
    account_id="123456789012",
)
BARE = RowResult(8, "d2abc", "us-east-1", Status.NOT_ATTEMPTED)
KEPT = ("owner", "note")

# What either format decodes FULL to (the CSV defuses the formula in the kept cell).
FULL_VALUES = [
    7,
    "d1abc",
    "eu-west-1",
    "failed",
    3,
    "ThrottlingException",
    429,
    'slow down,\n"please"',
    "req-1",
    "bm-1",
    "abc123",
    "2026-11-29T10:00:00.123Z",
    "2026-11-29T10:00:02.123Z",
    2000,
    "run-1",
    "123456789012",
]
# Empty typed cells are None in both formats; empty text stays "".
BARE_VALUES = [
    8,
    "d2abc",
    "us-east-1",
    "not_attempted",
    0,
    "",
    None,
    "",
    "",
    "",
    "",
    None,
    None,
    None,
    "run-1",
    None,
]


def write(path: Path, *results: RowResult, kept: tuple[str, ...] = ()) -> Path:
    with ReportWriter(path, run_id="run-1", kept_columns=kept) as writer:
        for result in results:
            writer.write(result)
    assert writer.error is None
    return path


def records(path: Path | Location, warn: Any = None) -> list[Record]:
    location = LocalFile(path) if isinstance(path, Path) else path
    return list(ReportReader(location, warn))


# -- columns and versions --------------------------------------------------------------


def test_the_columns_of_each_version_are_a_prefix_of_the_next() -> None:
    assert REPORT_COLUMNS[:14] == (
        "line",
        "app_id",
        "region",
        "status",
        "attempts",
        "error_code",
        "http_status",
        "error_message",
        "request_id",
        "backend_manager_app_id",
        "settings_digest",
        "started_at",
        "finished_at",
        "duration_ms",
    )
    assert REPORT_COLUMNS[14:] == ("run_id", "account_id")
    assert WIDTHS == (14, 15, 16)
    assert VERSION == 3
    assert [c.since for c in COLUMNS] == sorted(c.since for c in COLUMNS)


# -- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_every_column_type_round_trips_to_the_same_typed_values(
    tmp_path: Path, suffix: str
) -> None:
    path = write(tmp_path / f"r{suffix}", FULL, replace(BARE, kept=("", "")), kept=KEPT)

    full, bare = records(path)

    assert full.values == FULL_VALUES
    assert bare.values == BARE_VALUES
    assert full.get("line") == 7
    kept_note = "'=1+2" if suffix == ".csv" else "=1+2"  # CSV defuses formulas
    assert full.extras == {"owner": "alice", "note": kept_note}
    assert bare.extras == {"owner": "", "note": ""}
    assert full.get("note") == kept_note
    assert full.get("nothing") is None


def test_csv_and_jsonl_lines_of_a_record_decode_alike(tmp_path: Path) -> None:
    as_csv = records(write(tmp_path / "r.csv", FULL, BARE))
    as_jsonl = records(write(tmp_path / "r.jsonl", FULL, BARE))
    assert [r.values for r in as_csv] == [r.values for r in as_jsonl]


def test_a_multi_line_cell_survives_a_csv_round_trip_and_lines_are_counted(
    tmp_path: Path,
) -> None:
    path = write(tmp_path / "r.csv", FULL, BARE)
    got = records(path)
    assert got[0].get("error_message") == 'slow down,\n"please"'
    assert [r.number for r in got] == [3, 4]  # FULL spans lines 2 and 3


def test_the_raw_reading_keeps_csv_cells_as_text(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", BARE)
    (raw,) = ReportReader(LocalFile(path)).raw()
    assert raw["line"] == "8"
    assert raw["http_status"] == ""
    assert raw["account_id"] == ""
    assert list(raw) == list(REPORT_COLUMNS)


def test_the_account_column_is_blank_in_csv_and_null_in_jsonl(tmp_path: Path) -> None:
    write(tmp_path / "r.csv", BARE)
    write(tmp_path / "r.jsonl", BARE)
    header, line = (tmp_path / "r.csv").read_text(encoding="utf-8").splitlines()
    assert header.endswith(",run_id,account_id")
    assert line.endswith(",run-1,")
    record = json.loads((tmp_path / "r.jsonl").read_text(encoding="utf-8"))
    assert record["account_id"] is None
    assert list(record) == list(REPORT_COLUMNS)


def test_csv_defuses_every_text_cell_that_starts_like_a_formula(tmp_path: Path) -> None:
    evil = RowResult(
        2,
        "=app",
        "+region",
        Status.FAILED,
        error_code="-code",
        error_message="@msg",
        request_id="\treq",
        backend_manager_app_id="\rbm",
        account_id="=acct",
        kept=("=k",),
    )
    (got,) = records(write(tmp_path / "r.csv", evil, kept=("k",)))
    assert got.values[1:3] == ["'=app", "'+region"]
    assert got.get("error_code") == "'-code"
    assert got.get("error_message") == "'@msg"
    assert got.get("request_id") == "'\treq"
    assert got.get("backend_manager_app_id") == "'\rbm"
    assert got.get("account_id") == "'=acct"
    assert got.get("k") == "'=k"


def test_an_encoder_writes_one_line_per_record_and_a_header_for_csv() -> None:
    csv_encoder = RecordEncoder(jsonl=False, run_id="r")
    assert csv_encoder.header() == ",".join(REPORT_COLUMNS) + "\n"
    assert csv_encoder.encode(BARE).count("\n") == 1
    jsonl = RecordEncoder(jsonl=True, run_id="r", extra_columns=("x",))
    assert jsonl.header() == ""
    line = jsonl.encode_values(BARE_VALUES, {"x": 1})
    assert json.loads(line) == {**dict(zip(REPORT_COLUMNS, BARE_VALUES, strict=True)), "x": 1}
    known_only = RecordEncoder(jsonl=True).encode_values(BARE_VALUES, None)
    assert jsonl.extend(known_only, {"x": 1}) == line


# -- older versions and kept columns ---------------------------------------------------


def cut_columns(path: Path, keep: int, *, kept: int = 0) -> Path:
    """The report as a version with ``keep`` known columns wrote it (then ``kept``
    columns of the input)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for line in lines:
        cells = line.split(",")
        out.append(",".join(cells[:keep] + cells[len(cells) - kept :] if kept else cells[:keep]))
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("width", [14, 15])
def test_a_report_of_an_older_version_decodes_with_none_for_later_columns(
    tmp_path: Path, width: int
) -> None:
    path = cut_columns(write(tmp_path / "old.csv", BARE), width)
    (got,) = records(path)
    assert got.values == BARE_VALUES[:width] + [None] * (16 - width)
    assert got.extras is None


def test_an_older_version_with_kept_columns_is_read(tmp_path: Path) -> None:
    bare = RowResult(8, "d2abc", "us-east-1", Status.SUCCEEDED, kept=("bob", "n"))
    path = cut_columns(write(tmp_path / "old.csv", bare, kept=KEPT), 15, kept=2)
    assert path.read_text(encoding="utf-8").startswith(",".join([*REPORT_COLUMNS[:15], "owner"]))
    (got,) = records(path)
    assert got.get("account_id") is None
    assert got.extras == {"owner": "bob", "note": "n"}


def test_a_jsonl_record_lacking_columns_decodes_with_none(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"line": 2, "status": "succeeded", "x": "y"}) + "\n")
    (got,) = records(path)
    assert got.values[0] == 2
    assert got.values[3] == "succeeded"
    assert got.get("run_id") is None
    assert got.extras == {"x": "y"}


@pytest.mark.parametrize(
    "header",
    [
        "not,a,report",
        ",".join(REPORT_COLUMNS[:13]),  # shorter than the first version
        ",".join([*REPORT_COLUMNS[:14], "account_id"]),  # a known column out of place
        ",".join([*REPORT_COLUMNS, "x", "x"]),  # an extra column twice
        ",".join([*REPORT_COLUMNS, ""]),  # an extra column without a name
    ],
)
def test_a_header_that_is_no_versions_is_refused(tmp_path: Path, header: str) -> None:
    path = tmp_path / "r.csv"
    path.write_text(header + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"r\.csv, line 1: not a batch-updater report"):
        records(path)


def test_a_line_with_the_wrong_number_of_cells_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", FULL, BARE)
    with path.open("a", encoding="utf-8") as handle:
        handle.write("9,d3abc\n")
    with pytest.raises(InputError, match=r"r\.csv, line 5: not a report line: wrong number"):
        records(path)


# -- torn last lines -------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_torn_last_line_is_ignored_with_a_warning(tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path / f"r{suffix}", BARE, BARE)
    data = path.read_bytes()
    path.write_bytes(data[:-10])  # the last record cut mid-write
    heard: list[str] = []
    got = records(path, heard.append)
    assert len(got) == 1
    line = 3 if suffix == ".csv" else 2
    assert heard == [f"{path}, line {line}: incomplete last line ignored (torn write)"]


def test_a_record_torn_inside_a_multi_line_cell_is_ignored_whole(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", BARE, FULL)
    text = path.read_text(encoding="utf-8")
    path.write_text(text[: text.index("slow down,\n") + len("slow down,\n")], encoding="utf-8")
    heard: list[str] = []
    got = records(path, heard.append)
    assert [r.values for r in got] == [BARE_VALUES]
    assert heard == [f"{path}, line 3: incomplete last line ignored (torn write)"]


def test_a_quoted_cell_that_never_ends_is_not_read_as_torn_forever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batch_updater import codec  # noqa: PLC0415 - to shrink its limit

    monkeypatch.setattr(codec, "_MAX_PENDING", 100)
    path = write(tmp_path / "r.csv", BARE)
    with path.open("a", encoding="utf-8") as handle:
        handle.write('9,"open\n' + "more\n" * 50)
    with pytest.raises(InputError, match=r"line 3: not a report line: a quoted cell never ends"):
        records(path)


def test_a_report_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"line": 2}\n\xff\xfe\n')
    with pytest.raises(InputError, match="not valid UTF-8"):
        records(path)


# -- the storage seam ------------------------------------------------------------------


class Counting(io.RawIOBase):
    """A stream of bytes that counts what was read from it."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.taken = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._data.readinto(buffer)
        self.taken += n
        return n


class MemorySink:
    """Records kept in memory, put in place at each checkpoint once committed."""

    def __init__(self, place: Memory, staged: bool) -> None:
        self.place = place
        self.staged = staged
        self.buffer: list[str] = []

    def write(self, text: str) -> None:
        self.buffer.append(text)

    def flush(self) -> None:
        pass

    def checkpoint(self) -> None:
        if not self.staged:
            self.place.data = "".join(self.buffer).encode()

    def commit(self) -> None:
        self.staged = False
        self.checkpoint()

    def close(self, *, publish: bool = True) -> None:
        if publish:
            self.commit()

    def discard(self) -> None:
        self.place.data = None


class Memory:
    """A Location in memory: the seam needs nothing a file system has."""

    def __init__(self, name: str, store: dict[str, Memory] | None = None) -> None:
        self.name = name
        self.store = {} if store is None else store
        self.store[name] = self
        self.data: bytes | None = None
        self.stream: Counting | None = None

    def key(self) -> Hashable:
        return self.name

    def exists(self) -> bool:
        return self.data is not None

    def open_read(self) -> IO[bytes]:
        if self.data is None:
            raise FileNotFoundError(2, "no such object")
        self.stream = Counting(self.data)
        return io.BufferedReader(self.stream)

    def create(self, *, overwrite: bool = False, staged: str | None = None) -> MemorySink:
        if self.data is not None and not overwrite:
            raise FileExistsError(17, "exists")
        return MemorySink(self, staged is not None)

    def replace_with(self, data: bytes) -> None:
        self.data = data

    def remove(self) -> None:
        self.data = None

    def beside(self, suffix: str) -> Memory:
        return self.store.get(self.name + suffix) or Memory(self.name + suffix, self.store)


def test_reading_a_report_streams_it(tmp_path: Path) -> None:
    many = [RowResult(n, f"d{n}abc", "us-east-1", Status.SUCCEEDED) for n in range(2, 5000)]
    place = Memory("mem://r.csv")
    place.data = write(tmp_path / "r.csv", *many).read_bytes()
    reader = iter(ReportReader(place))
    assert next(reader).values[0] == 2
    assert place.stream is not None
    assert place.stream.taken < len(place.data) // 4  # not read whole


def test_the_writer_resume_and_merge_work_on_any_location() -> None:
    store: dict[str, Memory] = {}
    first = Memory("mem://a.jsonl", store)
    done = RowResult(2, "d1abc", "us-east-1", Status.SUCCEEDED, settings_digest="x")
    with ReportWriter(first, run_id="r1") as writer:
        writer.write(done)
        writer.write(BARE)
    summary = RunSummary(report_path=None, run_id="r1")
    assert first.exists()

    index = ResumeIndex.load([first])
    assert index.reports == ["mem://a.jsonl"]
    row = Row(2, "d1abc", "us-east-1", None, "x")  # type: ignore[arg-type]
    assert index.lookup(row) == "succeeded in mem://a.jsonl at ?"

    first.beside(".summary.json").replace_with(
        json.dumps({"requests": 1, "retries": 0, "throttles": 0, "elapsed_seconds": 1}).encode()
    )
    out = Memory("mem://merged.csv", store)
    result = merge_reports([first], out)
    assert result.rows == 2
    assert out.data is not None
    assert out.data.decode().count("\n") == 3
    written = json.loads(store["mem://merged.csv.summary.json"].data or b"")
    assert written["requests"] == 1
    assert summary.to_json()["counts_by_account"] == {}


def test_a_replacing_writer_leaves_the_old_report_until_commit() -> None:
    place = Memory("mem://r.csv")
    place.data = b"old"
    place.beside(".summary.json").data = b"{}"
    writer = ReportWriter(place, replacing=True)
    writer.write(BARE)
    writer.checkpoint()
    assert place.data == b"old"
    writer.commit()
    assert place.data.startswith(b"line,")
    assert not place.beside(".summary.json").exists()  # the stale summary goes first
    writer.write(BARE)
    writer.checkpoint()  # once committed, a checkpoint reaches the location
    assert place.data.count(b"\n") == 3
    writer.close()
    assert (writer.written, writer.saved, writer.error) == (2, 2, None)


# -- resume keys and account counts ----------------------------------------------------


def test_resume_keys_on_the_account_and_old_reports_count_as_no_account(tmp_path: Path) -> None:
    done = RowResult(2, "d1abc", "us-east-1", Status.SUCCEEDED, settings_digest="x")
    with_account = write(tmp_path / "a.csv", replace(done, account_id="111111111111"))
    old = cut_columns(write(tmp_path / "old.csv", done), 15)

    row = Row(2, "d1abc", "us-east-1", None, "x")  # type: ignore[arg-type]
    assert ResumeIndex.load([with_account]).lookup(row) is None  # another account's success
    assert ResumeIndex.load([old]).lookup(row) is not None  # no account column: account ""


def test_a_merge_counts_rows_by_account(tmp_path: Path) -> None:
    rows = [
        RowResult(2, "d1abc", "us-east-1", Status.SUCCEEDED, account_id="111111111111"),
        RowResult(3, "d2abc", "us-east-1", Status.FAILED, account_id="111111111111"),
        RowResult(4, "d3abc", "us-east-1", Status.SUCCEEDED, account_id="222222222222"),
        RowResult(5, "d4abc", "us-east-1", Status.SUCCEEDED),
    ]
    a = write(tmp_path / "a.csv", *rows[:2])
    b = write(tmp_path / "b.jsonl", *rows[2:])
    result = merge_reports([a, b], tmp_path / "m.csv")
    summary = json.loads(Path(result.summary_path).read_text(encoding="utf-8"))  # type: ignore[arg-type]
    by_account = summary["counts_by_account"]
    assert set(by_account) == {"111111111111", "222222222222"}
    assert by_account["111111111111"]["succeeded"] == 1
    assert by_account["111111111111"]["failed"] == 1
    assert by_account["222222222222"]["succeeded"] == 1


def test_a_run_summary_writes_its_account_counts(tmp_path: Path) -> None:
    summary = RunSummary(report_path=tmp_path / "r.csv")
    summary.counts_by_account = {"111111111111": {"succeeded": 2}}
    assert write_summary(summary) is None
    data = json.loads((tmp_path / "r.csv.summary.json").read_text(encoding="utf-8"))
    assert data["counts_by_account"] == {"111111111111": {"succeeded": 2}}


@pytest.mark.parametrize(
    ("counts", "code"),
    [
        ({"succeeded": 2, "skipped": 1, "dry_run": 1}, 0),
        ({"succeeded": 2, "failed": 1}, 1),
        ({"invalid": 1}, 1),
        ({"not_attempted": 1}, 1),
        ({}, 0),
    ],
)
def test_one_exit_code_rule_for_runs_and_merges(
    tmp_path: Path, counts: dict[str, int], code: int
) -> None:
    assert exit_code(counts) == code
    summary = RunSummary(report_path=None)
    summary.counts.update(counts)  # type: ignore[arg-type]
    assert summary.exit_code == code
    results = [
        RowResult(line, f"d{line}abc", "us-east-1", Status(status))
        for line, status in enumerate((s for s, n in counts.items() for _ in range(n)), start=2)
    ]
    if results:
        report = write(tmp_path / "r.csv", *results)
        assert merge_reports([report], tmp_path / "m.csv").exit_code == code


@pytest.mark.parametrize(
    "result",
    [
        FULL,
        BARE,
        replace(BARE, error_message="lone\rcarriage return"),
        replace(FULL, kept=("x\ry", "=z")),
    ],
)
@pytest.mark.parametrize("jsonl", [False, True])
def test_writing_into_a_sink_gives_the_line_encode_gives(result: RowResult, jsonl: bool) -> None:
    out = io.StringIO()
    kept = KEPT[: len(result.kept)]
    writing = RecordEncoder(jsonl=jsonl, run_id="=r", extra_columns=kept, out=out)
    writing.write(result)
    writing.write(result)
    line = RecordEncoder(jsonl=jsonl, run_id="=r", extra_columns=kept).encode(result)
    assert out.getvalue() == line * 2


# Cell text with what a CSV writer quotes or a spreadsheet runs, among plain characters.
_CELL = st.text(alphabet=st.sampled_from('ab1 ,"\n\r=+-@\t\0é'), max_size=8)


@settings(max_examples=300, deadline=None)
@given(
    texts=st.lists(_CELL, min_size=8, max_size=8),
    kept=st.lists(_CELL, min_size=0, max_size=2),
    run_id=_CELL,
    numbers=st.tuples(st.integers(0, 10**6), st.none() | st.integers(100, 599)),
)
def test_writing_any_cells_gives_the_line_the_csv_writer_gives(
    texts: list[str], kept: list[str], run_id: str, numbers: tuple[int, int | None]
) -> None:
    # write() joins a usual record's cells itself; encode() always goes through csv.
    app_id, region, code, message, request_id, manager, digest, account = texts
    result = replace(
        FULL,
        app_id=app_id,
        region=region,
        error_code=code,
        error_message=message,
        request_id=request_id,
        backend_manager_app_id=manager,
        settings_digest=digest,
        account_id=account,
        line=numbers[0],
        http_status=numbers[1],
        kept=tuple(kept),
    )
    names = KEPT[: len(kept)]
    out = io.StringIO()
    RecordEncoder(jsonl=False, run_id=run_id, extra_columns=names, out=out).write(result)
    line = RecordEncoder(jsonl=False, run_id=run_id, extra_columns=names).encode(result)
    assert out.getvalue() == line


class _Code(str, enum.Enum):  # noqa: UP042 - under test: str() of its member is its name
    DENIED = "AccessDenied"


class _Shown(str):
    """A str whose str() is not its text (the CSV writer writes the text)."""

    def __str__(self) -> str:
        return "shown"


class _Count(enum.IntEnum):
    THREE = 3


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("error_code", _Code.DENIED),
        ("error_message", _Shown("the text")),
        ("app_id", _Shown("d1abc")),
        ("error_code", enum.StrEnum("Code", {"X": "Throttled"}).X),
        ("attempts", _Count.THREE),
        ("http_status", True),
    ],
)
@pytest.mark.parametrize("run_id", ["r1", _Shown("r1")])
def test_writing_cells_of_str_and_int_subclasses_gives_the_line_the_csv_writer_gives(
    field: str, value: object, run_id: str
) -> None:
    # The csv writer writes a str subclass's text (not its str()), an int subclass's str().
    result = replace(FULL, **{"error_message": "slow down", "kept": (), field: value})
    out = io.StringIO()
    RecordEncoder(jsonl=False, run_id=run_id, out=out).write(result)
    assert out.getvalue() == RecordEncoder(jsonl=False, run_id=run_id).encode(result)
    assert "shown" not in out.getvalue()


def test_a_cell_with_a_lone_carriage_return_reads_back(tmp_path: Path) -> None:
    """csv quotes a bare CR only when it ends lines: the report's writer quotes it anyway."""
    odd = replace(BARE, error_message="lone\rcarriage return", kept=("a\rb",))
    (got,) = records(write(tmp_path / "r.csv", odd, kept=("k",)))
    assert got.get("error_message") == "lone\rcarriage return"
    assert got.get("k") == "a\rb"


def test_a_url_of_a_registered_scheme_is_its_location_and_anything_else_a_local_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batch_updater import storage  # noqa: PLC0415 - its scheme table

    monkeypatch.setitem(storage.SCHEMES, "mem", Memory)
    assert isinstance(storage.location_of("mem://bucket/r.csv"), Memory)
    local = storage.location_of(str(tmp_path / "r.csv"))
    assert isinstance(local, LocalFile)
    assert local.name == str(tmp_path / "r.csv")
    assert isinstance(storage.location_of("other://x"), LocalFile)  # no such scheme: a path
    place = Memory("mem://x.csv")
    assert storage.location_of(place) is place
