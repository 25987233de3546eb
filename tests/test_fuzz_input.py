"""Hostile and broken input files: never a traceback, never a half-parsed row.

Every input is either read into rows (each a :class:`Row` that passes every rule of the
README, re-checked here independently, or a :class:`Rejected` with a reason) or refused
with a :class:`SetupError` naming the file and the line. No other exception may escape
``RowPlan(path, default_region)`` or iterating it.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batch_updater.cli import main
from batch_updater.errors import InputError, SetupError
from batch_updater.rows import COLUMNS, Rejected, Row, RowPlan

from .conftest import read_report

UP = "us-east-1_AbC123xyz"
IP = "us-east-1:0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
WC = "4v7d2k9q1m3n5p7r9t1v3x5z7b"
HEADER = "app_id,region,identity_pool_id,cognito_region,user_pool_id,web_client_id"
SETTINGS = ("identity_pool_id", "cognito_region", "user_pool_id", "web_client_id")

# The rules of README.md ("Input CSV"), written out again on purpose: explicit ASCII
# classes for botocore's Java-flavoured \w, and a region is "like us-east-1, us-gov-west-1".
APP_ID = re.compile(r"d[a-z0-9]+")
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]{1,2}")
IDENTITY_POOL_ID = re.compile(r"[A-Za-z0-9_-]+:[0-9a-f-]+")
USER_POOL_ID = re.compile(r"[A-Za-z0-9_-]+_[0-9a-zA-Z]+")
WEB_CLIENT_ID = re.compile(r"[A-Za-z0-9_+]+")
WHERE = re.compile(r", line (\d+): ")
MAX_MESSAGE = 500  # characters of a setup error besides the path
MAX_REASON = 4000  # characters of a row's reason: bounded, whatever the cell held

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    # conftest's autouse fixtures only isolate AWS settings; reading a file ignores them.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# -- the invariants --------------------------------------------------------------------


def check_row(row: Row) -> None:
    """``row`` satisfies every validation rule (it could be sent as is)."""
    assert APP_ID.fullmatch(row.app_id), row
    assert len(row.app_id) <= 20, row
    assert REGION.fullmatch(row.region), row
    s = row.settings
    values = [s.identity_pool_id, s.cognito_region, s.user_pool_id, s.web_client_id]
    assert any(v is not None for v in values), row
    for value in values:
        assert value is None or (value and value == value.strip()), row
    if s.cognito_region is not None:
        assert REGION.fullmatch(s.cognito_region), row
    for value, pattern, sep in (
        (s.identity_pool_id, IDENTITY_POOL_ID, ":"),
        (s.user_pool_id, USER_POOL_ID, "_"),
    ):
        if value is None:
            continue
        assert len(value) <= 55, row
        assert pattern.fullmatch(value), row
        prefix = value.split(sep, 1)[0]
        assert REGION.fullmatch(prefix), row
        if s.cognito_region is not None:
            assert prefix == s.cognito_region, row
    if s.web_client_id is not None:
        assert len(s.web_client_id) <= 128, row
        assert WEB_CLIENT_ID.fullmatch(s.web_client_id), row
    assert row.digest == s.digest(), row
    assert re.fullmatch(r"[0-9a-f]{16}", row.digest), row


def check_setup_error(exc: SetupError, path: Path, data: bytes) -> None:
    """One short line that names the file and, when there is one, the line."""
    message = str(exc)
    assert "\n" not in message, message
    assert "\r" not in message, message
    assert message.startswith(f"{path}"), message
    assert len(message) - len(str(path)) < MAX_MESSAGE, message
    lines = data.count(b"\n") + 1
    where = WHERE.match(message, len(str(path)))
    if isinstance(exc, InputError):
        assert exc.path == str(path)
        if exc.line is None:
            assert where is None, message
            # Only a whole-file problem has no line: nothing to read at all.
            assert "a header row is required" in message or "cannot open" in message, message
            return
        assert where is not None, message
        assert int(where.group(1)) == exc.line
    assert where is not None, message
    assert 1 <= int(where.group(1)) <= lines, message


def read_plan(
    path: Path, data: bytes, default_region: str | None = "us-east-1"
) -> list[Row | Rejected] | SetupError:
    """Write ``data``, read it as a plan and check every invariant; the items or the error."""
    path.write_bytes(data)
    try:
        plan = RowPlan(path, default_region)
        items = list(plan)
    except SetupError as exc:
        check_setup_error(exc, path, data)
        return exc
    lines = [item.line for item in items]
    assert lines == sorted(set(lines)), lines  # unique and increasing
    assert all(2 <= line <= data.count(b"\n") + 1 for line in lines), lines
    assert plan.total == len(items)
    assert plan.invalid <= len(items)
    for item in items:
        if isinstance(item, Row):
            check_row(item)
            assert item.region in plan.regions
        else:
            assert isinstance(item, Rejected), item
            assert item.status in {"invalid", "skipped"}, item
            assert item.reason, item
            assert len(item.reason) < MAX_REASON, item.reason[:200]
    if any(isinstance(item, Rejected) and item.status == "invalid" for item in items):
        assert not plan.ok
    return items


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One file rewritten by every example (hypothesis wants no function-scoped fixture)."""
    return tmp_path_factory.mktemp("fuzz") / "in.csv"


# -- property tests ---------------------------------------------------------------------

HEADERS = [
    HEADER,
    "app_id,user_pool_id",
    "AppId,Region,AwsUserPoolsWebClientId",
    "\ufeffapp_id,cognito_region",
    "app_id",
]


@FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=400),
        st.tuples(st.sampled_from(HEADERS), st.binary(max_size=400)).map(
            lambda t: (t[0] + "\n").encode() + t[1]
        ),
    ),
    default_region=st.sampled_from(["us-east-1", None]),
)
def test_random_bytes(fuzz_file: Path, data: bytes, default_region: str | None) -> None:
    read_plan(fuzz_file, data, default_region)


TOKENS = [
    ",",
    '"',
    '""',
    "\r",
    "\n",
    "\r\n",
    "\x00",
    "\ufeff",
    " ",
    "\t",
    "\x1c",
    "\xa0",
    "\u2028",
    "\U000e0001",
    "é",
    "d1abc",
    "d2abc",
    "D1ABC",
    "us-east-1",
    "eu-west-1",
    UP,
    IP,
    WC,
    "us-east-1_",
    "us-east-1:",
    *COLUMNS,
    *COLUMNS.values(),
    "AWSUSERPOOLSID",
]
CSVISH = st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=3)), max_size=60).map("".join)


@FUZZ
@given(
    header=st.one_of(st.just(""), st.sampled_from(HEADERS).map(lambda h: h + "\n"), CSVISH),
    body=CSVISH,
    default_region=st.sampled_from(["us-east-1", None]),
)
def test_random_csvish_text(
    fuzz_file: Path, header: str, body: str, default_region: str | None
) -> None:
    read_plan(fuzz_file, (header + body).encode("utf-8", "surrogatepass"), default_region)


# Structured files: a valid header, rows mixing valid and invalid cells; the expected
# outcome of every row is known, so a row read wrong (not only a crash) fails the test.
GOOD: dict[str, list[str]] = {
    "app_id": ["d1abc", "d2abc", " d1abc\t", "d" + "9" * 19],
    "region": ["", "  ", "us-east-1", " eu-west-1 ", "us-gov-west-1"],
    "identity_pool_id": ["", " ", IP, "us-east-1:0f1e"],
    "cognito_region": ["", "us-east-1"],
    "user_pool_id": ["", UP, " us-east-1_Other9 "],
    "web_client_id": ["", WC, "a+b_C9", "x" * 128],
}
BAD: dict[str, list[str]] = {  # invalid even after trimming
    "app_id": ["", "D1ABC", "d", "d" * 21, "d1\x00abc", "\ufeffd1abc", "d1-abc", 'd1"abc', "d1,a"],
    "region": ["useast1", "US-EAST-1", "us-east-1\x00", "x" * 500, "us-east-1,eu", "us-east-1\n2"],
    "identity_pool_id": ["us-east-1:ABC", "nocolon", "pool:0f1e", "us-east-1:" + "a" * 50],
    "cognito_region": ["moon", "eu west 1", "é" * 300],
    "user_pool_id": ["nounderscore", "pool_abc", "us-east-1_" + "a" * 50, "us-east-1_a-b"],
    "web_client_id": ["abc-def", "a" * 129, "ab c", "ü", "a\r\nb"],
}
HEADER_NAMES = {
    name: [name, api, name.upper(), f" {api.lower()} "] for name, api in COLUMNS.items()
}


@st.composite
def structured_csv(draw: st.DrawFn) -> tuple[bytes, list[str], list[tuple[int, list[str]]]]:
    """(file bytes, column names, [(line, cells)] of every record that is not blank)."""
    others = draw(st.lists(st.sampled_from([c for c in COLUMNS if c != "app_id"]), unique=True))
    columns = draw(st.permutations(["app_id", *others]))
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    text = "\ufeff" if draw(st.booleans()) else ""

    def record(cells: list[str]) -> str:
        out = io.StringIO()
        csv.writer(out, lineterminator="\r\n").writerow(cells)  # quotes CR and LF in cells
        return out.getvalue()[:-2] + ending

    text += record([draw(st.sampled_from(HEADER_NAMES[c])) for c in columns])
    records: list[tuple[int, list[str]]] = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["row", "row", "row", "blank", "short", "long"]))
        line = text.count("\n") + 1
        if kind == "blank":
            text += draw(st.sampled_from(["", " ", "\t ", '""'])) + ending
            continue
        cells = [
            draw(st.sampled_from(GOOD[c] if draw(st.integers(0, 4)) else BAD[c])) for c in columns
        ]
        if kind == "short":
            cells = cells[:-1]
        elif kind == "long":
            cells.append(draw(st.sampled_from(["", "x", UP])))
        text += record(cells)
        if cells and not (len(cells) == 1 and not cells[0].strip()):
            records.append((line, cells))
    return text.encode(), columns, records


def expected_outcomes(
    columns: list[str], records: list[tuple[int, list[str]]], default_region: str
) -> dict[int, tuple[str, object]]:
    """line -> ("row", (app_id, region, settings)) | ("invalid", None) | ("skipped", first)."""
    out: dict[int, tuple[str, object]] = {}
    groups: dict[tuple[str, str], list[tuple[int, tuple[str, ...]]]] = {}
    for line, cells in records:
        if len(cells) != len(columns):
            out[line] = ("invalid", None)
            continue
        row = dict(zip(columns, cells, strict=True))
        good = all(row[c] in GOOD[c] for c in columns)
        values = tuple(row.get(c, "").strip() for c in SETTINGS)
        if not good or not row["app_id"].strip() or not any(values):
            out[line] = ("invalid", None)
            continue
        key = (row["app_id"].strip(), row.get("region", "").strip() or default_region)
        groups.setdefault(key, []).append((line, values))
    for (app_id, region), members in groups.items():
        if len({values for _, values in members}) > 1:
            out.update((line, ("invalid", None)) for line, _ in members)
            continue
        first = members[0][0]
        out[first] = ("row", (app_id, region, members[0][1]))
        out.update((line, ("skipped", first)) for line, _ in members[1:])
    return out


@FUZZ
@given(generated=structured_csv())
def test_structured_csv_rows_are_read_exactly(
    fuzz_file: Path, generated: tuple[bytes, list[str], list[tuple[int, list[str]]]]
) -> None:
    data, columns, records = generated
    items = read_plan(fuzz_file, data)
    assert not isinstance(items, SetupError), items
    expected = expected_outcomes(columns, records, "us-east-1")
    assert [item.line for item in items] == sorted(expected)
    for item in items:
        kind, detail = expected[item.line]
        if kind == "row":
            assert isinstance(item, Row), item
            s = item.settings
            values = (s.identity_pool_id, s.cognito_region, s.user_pool_id, s.web_client_id)
            got = tuple(v or "" for v in values)  # in the order of SETTINGS
            assert (item.app_id, item.region, got) == detail
        elif kind == "skipped":
            assert isinstance(item, Rejected), item
            assert (item.status, item.reason) == ("skipped", f"duplicate of line {detail}")
        else:
            assert isinstance(item, Rejected), item
            assert item.status == "invalid", item


# -- explicit hostile files --------------------------------------------------------------


def expect_error(path: Path, data: bytes, line: int | None, *fragments: str) -> str:
    result = read_plan(path, data)
    assert isinstance(result, SetupError), result
    message = str(result)
    assert isinstance(result, InputError)
    assert result.line == line, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_ten_megabyte_field_is_refused_quickly_naming_its_line(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    for cell in (b"a" * 10_000_000, b'"' + b"a" * 10_000_000 + b'"'):
        data = b"app_id,user_pool_id\nd1abc,%s\nd2abc,%s\n" % (UP.encode(), cell)
        path.write_bytes(data)
        tracemalloc.start()
        try:
            with pytest.raises(InputError) as info:
                RowPlan(path, "us-east-1")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert info.value.line == 3
        assert "longer than" in str(info.value)
        assert peak < 8_000_000  # the line is not read whole into memory
        check_setup_error(info.value, path, data)


def test_cell_over_the_csv_field_limit_across_lines_names_its_line(tmp_path: Path) -> None:
    cell = "\n".join(["a" * 1000] * 200)  # 200 KB in short lines: one quoted cell
    data = f'app_id,user_pool_id\nd1abc,{UP}\nd2abc,"{cell}"\n'.encode()
    expect_error(tmp_path / "f.csv", data, 3, "broken CSV: a cell is longer than")


def test_header_only_is_an_empty_job(tmp_path: Path) -> None:
    assert read_plan(tmp_path / "h.csv", f"{HEADER}\n".encode()) == []
    assert read_plan(tmp_path / "h.csv", f"\n{HEADER}\r\n\r\n".encode()) == []
    assert read_plan(tmp_path / "h.csv", b"\xef\xbb\xbfAppId") == []


def test_no_header_is_an_unknown_column_on_line_1(tmp_path: Path) -> None:
    expect_error(
        tmp_path / "n.csv",
        b"d1abc,us-east-1_x\nd2abc,us-east-1_y\n",
        1,
        "unknown column 'd1abc' at position 1",
        "accepted columns: app_id (or AppId)",
    )


def test_header_errors_name_the_header_line_after_blank_lines(tmp_path: Path) -> None:
    expect_error(tmp_path / "b.csv", b"\n \r\napp_id,bogus\n", 3, "unknown column 'bogus'")
    expect_error(tmp_path / "b.csv", b"\n\nregion\nus-east-1\n", 3, "no app_id")


def test_quote_left_open(tmp_path: Path) -> None:
    data = f'app_id,user_pool_id\nd1abc,{UP}\nd2abc,"{UP}\nd3abc,{UP}\n'.encode()
    expect_error(tmp_path / "q.csv", data, 3, "broken CSV", "never closed")
    expect_error(tmp_path / "q.csv", b'app_id,user_pool_id\n"d1abc"x,y\n', 2, "broken CSV")


def test_million_columns_in_the_header_fail_fast_with_a_short_message(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    for cells in (
        ["app_id"] * 1_000_000,
        [f"col{i}" for i in range(1_000_000)],
        ["app_id", *[f"c{i}" for i in range(200_000)]],  # under the line limit: parsed
        ["app_id", "\U000e0001" * 1000],  # escapes make repr() ten times longer
    ):
        data = ",".join(cells).encode() + b"\n"
        message = expect_error(path, data, 1)
        assert len(message) - len(str(path)) < MAX_MESSAGE


def test_million_columns_in_a_data_row(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    items = read_plan(path, b"app_id,user_pool_id\n" + b"," * 999_999 + b"\nd1abc,x\n")
    assert isinstance(items, list)
    assert isinstance(items[0], Rejected)
    assert (items[0].line, items[0].reason) == (2, "has 1000000 cells, the header has 2")
    # Longer than the line limit: refused as a whole.
    expect_error(path, b"app_id,user_pool_id\n" + b"d1," * 1_000_000 + b"\n", 2, "longer than")


def test_nul_bytes(tmp_path: Path) -> None:
    path = tmp_path / "nul.csv"
    items = read_plan(path, f"app_id,user_pool_id\nd1abc,{UP}\x00\n\x00\nd2abc,{UP}\n".encode())
    assert isinstance(items, list)
    assert [(i.line, type(i).__name__) for i in items] == [
        (2, "Rejected"),
        (3, "Rejected"),
        (4, "Row"),
    ]
    expect_error(path, b"app_id,\x00\n", 1, "unknown column '\\x00' at position 2")
    expect_error(path, b"\x00" * 5_000_000, 1, "longer than")


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    expect_error(path, b"app_id,user_p\xffool_id\nd1abc,x\n", 1, "not valid UTF-8")
    expect_error(path, b"app_id,user_pool_id\nd1abc,x\nd2abc,caf\xc3\n", 3, "not valid UTF-8")
    # A sequence cut short by the end of the file: still names its line.
    expect_error(path, b"app_id,user_pool_id\nd1abc,x\nd2abc,\xe2\x82", 3, "not valid UTF-8")
    expect_error(path, b"app_id,user_pool_id\n\xed\xa0\x80\n", 2, "not valid UTF-8")  # surrogate
    expect_error(path, "app_id,region\n".encode("utf-16"), 1, "UTF-16")


def test_bom_in_the_middle(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    items = read_plan(path, f"app_id,user_pool_id\n\ufeffd1abc,{UP}\nd2abc,{UP}\n".encode())
    assert isinstance(items, list)
    assert isinstance(items[0], Rejected)
    assert "\\ufeffd1abc" in items[0].reason
    assert isinstance(items[1], Row)
    expect_error(path, "app_id,\ufeffregion\n".encode(), 1, "unknown column '\\ufeffregion'")


def test_cr_only_line_ends(tmp_path: Path) -> None:
    data = f"app_id,user_pool_id\rd1abc,{UP}\rd2abc,{UP}\r".encode()
    expect_error(tmp_path / "mac.csv", data, 1, "broken CSV", "LF or CRLF")
    data = f"app_id,user_pool_id\nd1abc,{UP}\nd2abc,us-east-1\r_x\n".encode()
    expect_error(tmp_path / "mac.csv", data, 3, "LF or CRLF")
    expect_error(tmp_path / "mac.csv", b"app_id\r" * 400_000, 1, "longer than", "LF or CRLF")


def test_directory_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot open") as info:
        RowPlan(tmp_path, "us-east-1")
    assert info.value.path == str(tmp_path)
    expect_error(tmp_path / "e.csv", b"", None, "the file is empty: a header row is required")
    for data in (b"\n\n", b" \r\n\t\n", b'""\n\x1c\n'):
        expect_error(tmp_path / "e.csv", data, None, "only blank lines: a header row is required")


def test_long_region_cells_are_not_echoed_whole(tmp_path: Path) -> None:
    long = "x" * 100_000
    data = f"app_id,region,cognito_region\nd1abc,{long},{long}\n".encode()
    items = read_plan(tmp_path / "r.csv", data)
    assert isinstance(items, list)
    assert isinstance(items[0], Rejected)
    assert "region:" in items[0].reason
    assert "cognito_region:" in items[0].reason
    assert len(items[0].reason) < 1000


# -- the command line --------------------------------------------------------------------


@pytest.fixture
def _sdk_loggers_of_this_test() -> Iterator[None]:
    """No SDK log handler left by an earlier ``--log-level debug`` test.

    Such a handler writes to that test's captured (now closed) stderr, and the logging
    module then prints "--- Logging error --- Traceback" to this test's stderr.
    """
    saved = []
    for name in ("botocore", "aiobotocore"):
        sdk = logging.getLogger(name)
        saved.append((sdk, sdk.handlers[:], sdk.level, sdk.propagate))
        for handler in sdk.handlers[:]:
            sdk.removeHandler(handler)
        sdk.setLevel(logging.NOTSET)
        sdk.propagate = True
    yield
    for sdk, handlers, level, propagate in saved:
        for handler in sdk.handlers[:]:
            sdk.removeHandler(handler)
        for handler in handlers:
            sdk.addHandler(handler)
        sdk.setLevel(level)
        sdk.propagate = propagate


def hostile_files(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """(file, the line its error must name) for the CLI cases."""
    cases: list[tuple[str, bytes, int]] = [
        ("big.csv", b"app_id,user_pool_id\nd1abc," + b"a" * 10_000_000 + b"\n", 2),
        ("open.csv", f'app_id,user_pool_id\nd1abc,{UP}\nd2abc,"{UP}\n'.encode(), 3),
        ("noheader.csv", b"d1abc,us-east-1_x\n", 1),
        ("utf8.csv", b"app_id,user_pool_id\nd1abc,x\nd2abc,caf\xe9\n", 3),
        ("wide.csv", b",".join([b"app_id"] * 1_000_000) + b"\n", 1),
        ("mac.csv", f"app_id,user_pool_id\rd1abc,{UP}\r".encode(), 1),
    ]
    for name, data, line in cases:
        path = tmp_path / name
        path.write_bytes(data)
        yield path, line


@pytest.mark.usefixtures("_sdk_loggers_of_this_test")
def test_cli_reports_setup_errors_on_one_line_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for path, line in hostile_files(tmp_path):
        report = tmp_path / "r.csv"
        argv = ["run", "--dry-run", "--region", "us-east-1", str(path), "--report", str(report)]
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2, (path, err)
        assert "Traceback" not in err
        (error_line,) = err.strip().splitlines()
        assert error_line.startswith(f"batch-updater: error: {path}, line {line}: "), error_line
        assert len(error_line) < MAX_MESSAGE + len(str(path)), error_line
        assert not report.exists()


@pytest.mark.usefixtures("_sdk_loggers_of_this_test")
def test_cli_row_level_problems_exit_1_with_reasons_in_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rows.csv"
    path.write_bytes(
        f"app_id,user_pool_id\nd1\x00abc,{UP}\n\ufeffd2abc,{UP}\nd3abc,{UP},x\nd4abc,{UP}\n".encode()
    )
    report = tmp_path / "r.csv"
    code = main(["run", "--dry-run", "--region", "us-east-1", str(path), "--report", str(report)])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err
    records = read_report(report)
    assert [r["status"] for r in records] == ["invalid", "invalid", "invalid", "dry_run"]
    assert all(r["error_message"] for r in records[:3])


@pytest.mark.usefixtures("_sdk_loggers_of_this_test")
def test_cli_header_only_is_an_empty_job_that_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "h.csv"
    path.write_text(HEADER + "\n")
    report = tmp_path / "r.csv"
    code = main(["run", "--dry-run", "--region", "us-east-1", str(path), "--report", str(report)])
    err = capsys.readouterr().err
    assert code == 1, err  # an empty export must not look like success
    assert f"{path} has a header but no rows: nothing to do" in err
    assert "Traceback" not in err
    assert read_report(report) == []
