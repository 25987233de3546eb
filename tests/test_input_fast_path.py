"""The input reader's fast path (a line without quotes, split at commas) reads exactly
what the csv module alone reads, on every kind of line, errors included; the plan's
second pass tests again only the rows the first found invalid."""

from __future__ import annotations

import csv
import io
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch_updater import csvinput, rules
from batch_updater.csvinput import _MAX_LINE_BYTES, _csv_problem, _decoded_lines, _records
from batch_updater.errors import InputError
from batch_updater.rows import Rejected, Row, RowPlan


def by_csv_module(data: bytes) -> list[tuple[int, list[str]]] | str:
    """Each record and the line it starts on as the csv module alone reads the lines
    (strict), or the error the reader gives: the reading before the fast path."""
    handle = io.BytesIO(data)
    lines = _decoded_lines("in.csv", iter(partial(handle.readline, _MAX_LINE_BYTES + 1), b""))
    reader = csv.reader(lines, strict=True)
    got: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for cells in reader:
            got.append((start, cells))
            start = reader.line_num + 1
    except csv.Error as exc:
        return str(InputError("in.csv", start, f"broken CSV: {_csv_problem(exc)}"))
    except InputError as exc:
        return str(exc)
    return got


def by_fast_path(data: bytes, block_size: int = 1 << 18) -> list[tuple[int, list[str]]] | str:
    try:
        return list(_records("in.csv", io.BytesIO(data), block_size))
    except InputError as exc:
        return str(exc)


EXAMPLES = [
    b"app_id,region\nd1,us-east-1\nd2,eu-west-1\n",
    b"app_id,region\r\nd1,us-east-1\r\nd2,eu-west-1\r\n",  # CRLF, as Excel saves
    b"\xef\xbb\xbfapp_id,region\nd1,us-east-1",  # a BOM, no line end at the end
    b'app_id,note\nd1,"a, b"\nd2,"two\nlines"\nd3,plain\n',
    b'app_id,note\r\nd1,"two\r\nlines"\r\nd3,plain\r\n',
    b"app_id,note\n\n  \nd1,x\n\n",  # blank lines
    b"app_id,note\nd1,a\rb\n",  # a lone CR in a line
    b"app_id,note\nd1,a\r\r\n",
    b"app_id,note\nd1,a\x00b\n",  # a NUL
    b'app_id,note\nd1,"open\nd2,x\n',  # a quote never closed
    b'app_id,note\nd1,"a"b\n',  # a character after a closing quote (strict)
    b'app_id,note\nd1,a"b\n',  # a quote inside an unquoted cell
    b"app_id,note\nd1,\xff\n",  # not UTF-8
    b"app_id,note\nd1," + b"x" * (csv.field_size_limit() + 5) + b"\n",  # over the limit
    b"",
    b"\n\n",
    b"app_id,note\nd1,a\nd2,b\r\nd3,c\n",  # LF and CRLF lines mixed
    b"app_id,note\r\nd1,a\r\n\r\nd2,b\r\nd3,c",  # CRLF, a blank line, no end at the end
    b"app_id,note\nd1,a\nd2,\xc3\xa9\nd3,\xe2\x82",  # a character cut at the end
    b"app_id,note\nd1,a\nd2,b\xff\nd3,c\n",  # not UTF-8 after plain lines
    b"app_id,note\nd1,a\nd2," + b"y" * (_MAX_LINE_BYTES + 3) + b"\r\nd3,c\n",  # too long
    b"app_id,note\nd1,a\nd2," + b"y" * _MAX_LINE_BYTES,  # too long, the last line
]
# Blocks of every size: a line cut anywhere, several lines to a block, blocks of one line.
BLOCK_SIZES = [1, 3, 16, 1 << 18]


@pytest.mark.parametrize("block_size", BLOCK_SIZES)
@pytest.mark.parametrize("data", EXAMPLES)
def test_the_fast_path_reads_what_the_csv_module_reads(data: bytes, block_size: int) -> None:
    assert by_fast_path(data, block_size) == by_csv_module(data)


@pytest.mark.parametrize("end", ["\n", "\r\n"])
def test_blocks_of_plain_lines_are_split_whole_and_read_as_the_csv_module_reads_them(
    end: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = ["app_id,region,note", *(f"d{i:x},us-east-1,n {i}" for i in range(500)), ""]
    data = end.join(lines).encode()
    split: list[int] = []
    plain_lines = csvinput._plain_lines

    def counting(block: bytes, limit: int) -> list[str] | None:
        bodies = plain_lines(block, limit)
        split.append(0 if bodies is None else len(bodies))
        return bodies

    monkeypatch.setattr(csvinput, "_plain_lines", counting)
    assert by_fast_path(data, 256) == by_csv_module(data)
    assert sum(split) > 450  # nearly every line came through a block split whole


def test_both_paths_run_on_a_file_of_mixed_lines() -> None:
    data = EXAMPLES[3]
    assert by_fast_path(data) == [
        (1, ["app_id", "note"]),
        (2, ["d1", "a, b"]),
        (3, ["d2", "two\nlines"]),
        (5, ["d3", "plain"]),
    ]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.text(alphabet='ab ,"\r\n\x00é', max_size=12), max_size=8),
    st.integers(min_value=1, max_value=40),
)
def test_any_text_is_read_as_the_csv_module_reads_it(lines: list[str], block_size: int) -> None:
    data = "\n".join(lines).encode("utf-8")
    assert by_fast_path(data, block_size) == by_csv_module(data)


# -- the plan's second pass -----------------------------------------------------------------


def test_the_second_pass_tests_again_only_the_rows_the_first_found_invalid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    up = "us-east-1_AbC123xyz"
    bad = {9, 17, 1000, 1001}  # lines of invalid rows, in several bytes of the bitmap
    lines = ["app_id,region,user_pool_id"]
    for line in range(2, 1200):
        lines.append(f"d{line:x}x,us-east-1,{'nope' if line in bad else up}")
    path = tmp_path / "in.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tested: list[str] = []
    fast_ok = rules._fast_ok

    def counting(app_id: str, *args: Any) -> bool:
        tested.append(app_id)
        return fast_ok(app_id, *args)

    monkeypatch.setattr(rules, "_fast_ok", counting)
    with RowPlan(path, None) as plan:
        first = len(tested)
        got = list(plan)

    assert first == len(lines) - 1  # pass 1 tests every row
    assert tested[first:] == [f"d{line:x}x" for line in sorted(bad)]  # pass 2: the invalid
    assert [r.line for r in got if isinstance(r, Rejected)] == sorted(bad)
    assert all(isinstance(r, Row) for r in got if r.line not in bad)
    assert len(got) == len(lines) - 1
