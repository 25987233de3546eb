"""The ``--resume`` index: succeeded rows of several reports in fixed-size slots."""

from __future__ import annotations

import csv
import random
import tracemalloc
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from batch_updater import RowResult, Status
from batch_updater.duplicates import _DuplicateIndex, app_key, app_keys
from batch_updater.report import ReportWriter
from batch_updater.resume import SUCCEEDED_IN, ResumeIndex, read_report
from batch_updater.rows import LoginSettings, Row
from batch_updater.rules import digest_number, digest_numbers

T0 = datetime(2026, 11, 26, 10, 15, tzinfo=UTC)
UP = "us-east-1_AbC123xyz"


def row(i: int, region: str = "us-east-1", client: str = "c") -> Row:
    settings = LoginSettings(user_pool_id=UP, web_client_id=f"{client}{i}")
    return Row(i + 2, f"d{i:06x}abc", region, settings, settings.digest())


def result(r: Row, status: Status, message: str = "", at: int | None = 0) -> RowResult:
    finished = None if at is None else T0 + timedelta(milliseconds=at)
    return RowResult(
        r.line,
        r.app_id,
        r.region,
        status,
        attempts=1,
        error_message=message,
        settings_digest=r.digest,
        finished_at=finished,
    )


def write(path: Path, results: list[RowResult]) -> Path:
    with ReportWriter(path, run_id="job") as writer:
        for item in results:
            writer.write(item)
    return path


def reference(paths: list[Path]) -> dict[tuple[str, str, str], str]:
    """What --resume did before the compact index: a dict of strings, first report wins."""
    done: dict[tuple[str, str, str], str] = {}
    for path in paths:
        for record in read_report(path):
            status, message = record["status"], str(record["error_message"] or "")
            if status == "succeeded":
                note = f"{SUCCEEDED_IN}{path} at {record['finished_at'] or '?'}"
            elif status == "skipped" and message.startswith(SUCCEEDED_IN):
                note = message
            else:
                continue
            key = (record["region"], record["app_id"], record["settings_digest"])
            done.setdefault(key, note)
    return done


def test_several_reports_make_one_index_with_the_notes_of_the_first_that_has_a_row(
    tmp_path: Path,
) -> None:
    rng = random.Random(5)
    rows = [row(i, rng.choice(("us-east-1", "eu-west-1"))) for i in range(400)]
    changed = [row(i, r.region, client="z") for i, r in enumerate(rows)]  # other settings
    odd_notes = [
        f"{SUCCEEDED_IN}old.csv at ?",
        f"{SUCCEEDED_IN}old.csv at yesterday",  # hand-edited: kept verbatim
        f"{SUCCEEDED_IN}a report at the end.csv at 2026-01-02T03:04:05.678Z",
        f"{SUCCEEDED_IN} at 2026-01-02T03:04:05.678Z",
        SUCCEEDED_IN,
    ]
    reports: list[Path] = []
    for k, suffix in enumerate((".csv", ".jsonl", ".csv")):
        results: list[RowResult] = []
        for i, r in enumerate(rows):
            pick = rng.random()
            if pick < 0.4:
                # Mostly within days of each other; some months before or after.
                day = 86_400_000
                at = rng.choice((rng.randrange(10**9),) * 8 + (90 * day + i, -40 * day - i))
                results.append(result(r, Status.SUCCEEDED, at=at))
            elif pick < 0.5:
                results.append(result(r, Status.SUCCEEDED, at=None))  # no finished_at
            elif pick < 0.6:
                results.append(result(changed[i], Status.SUCCEEDED, at=i))
            elif pick < 0.75:
                results.append(result(r, Status.SKIPPED, rng.choice(odd_notes)))
            elif pick < 0.85:
                results.append(result(r, Status.SKIPPED, "duplicate of line 2"))
            else:
                results.append(result(r, Status.FAILED, "boom"))
        rng.shuffle(results)
        reports.append(write(tmp_path / f"r{k}{suffix}", results))

    index = ResumeIndex.load(reports)
    expected = reference(reports)

    assert len(index) == len(expected)
    assert index.reports == [str(p) for p in reports]
    hits = 0
    for r in rows + changed:
        want = expected.get((r.region, r.app_id, r.digest))
        assert index.lookup(r) == want, r
        hits += want is not None
    assert hits == len(expected) > 300
    assert "succeeded=" in repr(index)


def test_colliding_key_hashes_never_skip_a_row_that_did_not_succeed() -> None:
    """All keys share the first hash (one long probe chain): the second hash and the
    digest still tell them apart."""

    class Colliding(ResumeIndex):
        __slots__ = ()
        hashes = staticmethod(lambda a, r, app_id, digest: (7, hash(app_id + digest) & (2**64 - 1)))

    index = Colliding(expected=4)
    done = [row(i) for i in range(0, 200, 2)]
    for r in done:
        index.add(
            "succeeded",
            message="",
            finished_at="2026-11-26T10:15:00.000Z",
            account="",
            region=r.region,
            app_id=r.app_id,
            digest=r.digest,
            report="a.csv",
        )
    assert len(index) == 100
    for i in range(200):
        note = index.lookup(row(i))
        assert (note is not None) == (i % 2 == 0)
        assert index.lookup(row(i, client="other")) is None  # same key, other settings
    assert index.lookup(done[0]) == f"{SUCCEEDED_IN}a.csv at 2026-11-26T10:15:00.000Z"


def test_a_digest_no_row_can_have_is_kept_but_never_matches() -> None:
    index = ResumeIndex()
    r = row(1)
    for digest in ("x", "", r.digest.upper(), "0x" + r.digest[2:]):
        index.add(
            "succeeded",
            message="",
            finished_at="",
            account="",
            region=r.region,
            app_id=r.app_id,
            digest=digest,
            report="a.csv",
        )
    assert len(index) == 4
    assert index.lookup(r) is None


def test_each_success_takes_about_32_bytes_in_fixed_size_slots() -> None:
    """100,000 successes, counted by tracemalloc, in a table sized up front (24-byte slots
    at most 75% full): no string is kept per row, and loading makes no garbage to speak of."""
    n = 100_000
    tracemalloc.start()
    try:
        index = ResumeIndex(expected=n)
        for i in range(n):
            index.add(
                "succeeded",
                message="",
                finished_at="2026-11-26T10:15:00.120Z",
                account="",
                region="us-east-1",
                app_id=f"d{i:08x}",
                digest=f"{i:016x}",
                report="big.csv",
            )
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(index) == n
    assert held < 36 * n
    assert peak < 40 * n
    probe = Row(2, "d00000005", "us-east-1", LoginSettings(), f"{5:016x}")
    assert index.lookup(probe) == f"{SUCCEEDED_IN}big.csv at 2026-11-26T10:15:00.120Z"


def test_a_dry_run_report_does_not_flush_each_skipped_row(tmp_path: Path) -> None:
    """A dry run sends nothing, so a rerun recomputes its skips: they ride along with the
    next flush (a million-row dry run with --resume saves a million system calls). A live
    run's skips are flushed at once: its report must stand alone after kill -9."""
    skip = result(row(1), Status.SKIPPED, f"{SUCCEEDED_IN}old.csv at ?")
    with ReportWriter(tmp_path / "dry.csv", dry_run=True) as dry:
        dry.write(skip)
        assert (dry.written, dry.saved) == (1, 0)
    assert dry.saved == 1  # closing flushes
    with ReportWriter(tmp_path / "live.csv") as live:
        live.write(skip)
        assert (live.written, live.saved) == (1, 1)
    assert list(read_report(tmp_path / "dry.csv")) == list(read_report(tmp_path / "live.csv"))


def test_a_report_of_the_first_version_resumes_too(tmp_path: Path) -> None:
    """A CSV report written before run_id and account_id existed (14 columns)."""
    done = row(3)
    new = write(tmp_path / "new.csv", [result(done, Status.SUCCEEDED, at=120)])
    lines = new.read_text(encoding="utf-8").splitlines()
    old = tmp_path / "old.csv"
    old.write_text("".join(",".join(line.split(",")[:14]) + "\n" for line in lines))
    assert old.read_text().splitlines()[0].endswith(",finished_at,duration_ms")

    index = ResumeIndex.load([old])

    assert index.lookup(done) == f"{SUCCEEDED_IN}{old} at 2026-11-26T10:15:00.120Z"
    assert index.lookup(row(4)) is None


def test_notes_within_the_input_apps_are_those_of_an_index_of_its_own(tmp_path: Path) -> None:
    """The notes of successes noted on the input's apps (``within``), made from the note of
    the second made last, are those of the general path, in input order and shuffled:
    many successes a second across second boundaries, two reports, times far from the
    rest, no time, and notes kept whole."""
    rng = random.Random(9)
    rows = [row(i, rng.choice(("us-east-1", "eu-west-1", "ap-south-1"))) for i in range(3000)]
    reports: list[Path] = []
    for k, suffix in enumerate((".csv", ".jsonl")):
        results: list[RowResult] = []
        for i, r in enumerate(rows):
            pick = rng.random()
            if pick < 0.6:  # three a millisecond apart, then a gap: seconds end mid-run
                results.append(result(r, Status.SUCCEEDED, at=7 * i + i % 3 + 1000 * k))
            elif pick < 0.65:
                results.append(result(r, Status.SUCCEEDED, at=rng.choice((None, 50 * 86_400_000))))
            elif pick < 0.7:
                results.append(result(r, Status.SKIPPED, f"{SUCCEEDED_IN}old.csv at yesterday"))
            elif pick < 0.8:
                results.append(result(r, Status.FAILED, "boom"))
        reports.append(write(tmp_path / f"r{k}{suffix}", results))
    apps = _DuplicateIndex(len(rows))
    for r in rows:
        apps.add(app_key(r.region, r.app_id), r.line, digest_number(r.digest))

    plain = ResumeIndex.load(reports)
    within = ResumeIndex.load(reports, within=apps)

    shuffled = rows[:]
    rng.shuffle(shuffled)
    hits = 0
    for r in rows + shuffled + rows:
        want = plain.lookup(r)
        assert within.lookup(r) == want, r
        hits += want is not None
    assert hits > 3 * 2000


def test_a_digest_is_its_number_only_when_written_as_the_tool_writes_it() -> None:
    """16 lowercase hex digits are the number itself; any other text (which ``int(, 16)``
    may still read) is a hash of the text, never the number of a digest it resembles."""
    assert digest_number("1e7ae465a6e6c15f") == 0x1E7AE465A6E6C15F
    assert digest_number("0000000000000000") == 0
    for text in (
        "1E7AE465A6E6C15F",
        "1e7ae465a6e6c15",
        "01e7ae465a6e6c15f",
        "1e7ae465a6e_c15f",
        " e7ae465a6e6c15f",
        "+e7ae465a6e6c15f",
        "0x7ae465a6e6c15f",
        "1e7ae465a6e6c15g",
        "",
    ):
        assert digest_number(text) == hash(text) & (2**64 - 1), text


def test_a_time_of_the_second_read_last_is_read_only_when_the_report_writes_it_so(
    tmp_path: Path,
) -> None:
    """Records of one second come quickly, but one whose time is not written as the
    report writes times keeps its note verbatim, whatever second came before it."""
    rows = [row(i) for i in range(8)]
    odd = [
        "2026-11-26T10:15:00.12Z",
        "2026-11-26T10:15:00.1234Z",
        "2026-11-26T10:15:00.+12Z",
        "2026-11-26T10:15:00. 12Z",
        "2026-11-26T10:15:00.\u0661\u0662\u0663Z",  # digits, not ASCII ones
        "2026-11-26T10:15:00.123z",
    ]
    path = write(tmp_path / "r.csv", [result(r, Status.SUCCEEDED, at=5) for r in rows])
    with path.open(newline="", encoding="utf-8") as f:
        records = list(csv.reader(f))
    at = records[0].index("finished_at")
    for record, text in zip(records[3:], odd, strict=False):
        record[at] = text
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(records)
    apps = _DuplicateIndex(len(rows))
    for r in rows:
        apps.add(app_key(r.region, r.app_id), r.line, digest_number(r.digest))

    for index in (ResumeIndex.load([path]), ResumeIndex.load([path], within=apps)):
        notes = [index.lookup(r) for r in rows]
        assert notes[:2] == [f"{SUCCEEDED_IN}{path} at 2026-11-26T10:15:00.005Z"] * 2
        assert notes[2:] == [f"{SUCCEEDED_IN}{path} at {text}" for text in odd]


def _block_reports(tmp_path: Path) -> tuple[list[Row], list[Path]]:
    """Rows (two fifths of them of an account, in a run of lines) and two CSV reports of
    them with records of every kind, each kind in a run of lines of many blocks; a
    block's times within ten seconds, or across them."""
    rng = random.Random(12)
    rows = [
        Row(r.line, r.app_id, r.region, r.settings, r.digest, (), "111122223333")
        if 1200 <= i < 2400
        else r
        for i, r in enumerate(row(i, rng.choice(("us-east-1", "eu-west-1"))) for i in range(3000))
    ]
    reports = []
    for k in range(2):
        results: list[RowResult] = []
        for i, r in enumerate(rows):
            done = result(r, Status.SUCCEEDED, at=17 * i + 500 * k)  # across ten seconds
            kind = (i // 600 + k) % 5
            if kind == 1 and i % 7 == 0:
                done = result(r, Status.FAILED, "boom")
            elif kind == 2 and i % 5 == 0:
                done = result(r, Status.SKIPPED, f"{SUCCEEDED_IN}old.csv at yesterday")
            elif kind == 3 and i % 9 == 0:
                done = result(r, Status.SUCCEEDED, at=rng.choice((None, 30 * 86_400_000)))
            elif kind == 4 and i % 11 == 0:
                done = replace(done, settings_digest=r.digest.upper())
            elif kind == 4 and i % 13 == 0:
                done = replace(done, settings_digest="0123456789abcdef")  # other settings
            elif kind == 4 and i % 17 == 0:
                done = replace(done, account_id="444455556666")
            elif kind == 4 and i % 3 == 0:
                done = replace(done, error_message="a, quoted cell")
            results.append(replace(done, account_id=done.account_id or r.account_id))
            if kind == 0 and i % 19 == 0:  # the same success twice: the first is noted
                results.append(result(r, Status.SUCCEEDED, at=17 * i + 1))
        # Apps the input lacks, and a day later: a block of another day.
        results += [result(row(i + 5000), Status.SUCCEEDED, at=i) for i in range(300)]
        results += [result(r, Status.SUCCEEDED, at=86_400_000 + i) for i, r in enumerate(rows)]
        reports.append(write(tmp_path / f"r{k}.csv", results))
    return rows, reports


def test_a_block_read_at_once_notes_what_its_records_one_at_a_time_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The block path of the index (a block's columns with loops in C) leaves the index,
    within the input's apps and in a table of its own, exactly as noting its records one
    at a time does; and it takes most blocks of a report of the tool's own making."""
    rows, reports = _block_reports(tmp_path)
    seen: list[bool] = []
    note_block = ResumeIndex._note_block

    def counted(index: ResumeIndex, report: str, columns: tuple[list[str], ...]) -> bool:
        seen.append(note_block(index, report, columns))
        return seen[-1]

    def apps() -> _DuplicateIndex:
        index = _DuplicateIndex(len(rows))
        for r in rows:
            index.add(app_key(r.region, r.app_id, r.account_id), r.line, digest_number(r.digest))
        return index

    monkeypatch.setattr(ResumeIndex, "_note_block", counted)
    fast = [ResumeIndex.load(reports), ResumeIndex.load(reports, within=apps())]
    monkeypatch.setattr(ResumeIndex, "_note_block", lambda index, report, columns: False)
    general = [ResumeIndex.load(reports), ResumeIndex.load(reports, within=apps())]

    blocks = len([ok for ok in seen if ok])
    assert blocks > len(seen) // 2 > 10  # most blocks of many lines
    for got, want in zip(fast, general, strict=True):
        assert len(got) == len(want) > 2000
        assert got._strings == want._strings
        assert got._bases == want._bases
        if want.within is None:
            table, other = got._table, want._table
            for name in ("_firsts", "_seconds", "_times", "_sources"):
                assert getattr(table, name) == getattr(other, name), name
        else:
            assert got.within is not None
            assert got.within._done == want.within._done
        assert [got.lookup(r) for r in rows] == [want.lookup(r) for r in rows]


def test_digests_and_app_keys_of_a_block_are_each_ones() -> None:
    """A block's digests and app keys at once are those of each cell, or None when the
    block holds one the one-at-a-time function reads otherwise."""
    texts = [row(i).digest for i in range(50)]
    assert digest_numbers(texts) == [digest_number(text) for text in texts]
    for odd in (
        "1E7AE465A6E6C15F",
        "1e7ae465a6e6c15",
        "1e7ae465a6e6c15f0",
        " e7ae465a6e6c15f",
        "1e7ae465 6e6c15f",  # whitespace between two digits, which bytes.fromhex skips
        "1e7ae465a6e6c1\t5",
        "\u0661e7ae465a6e6c15f",  # a digit, not an ASCII one
        "1e7ae465a6e6c15g",
    ):
        assert digest_numbers([*texts, odd]) is None, odd
    assert digest_numbers(["1e7ae465a6e6c15", "1e7ae465a6e6c15ff"]) is None  # 32 characters
    regions, apps = ["us-east-1", "eu-west-1"] * 3, [f"d{i:06x}abc" for i in range(6)]
    for accounts in ([""] * 6, ["111122223333"] * 6):
        want = [app_key(*cells) for cells in zip(regions, apps, accounts, strict=True)]
        assert app_keys(regions, apps, accounts) == want
    assert app_keys(regions, apps, ["", *["111122223333"] * 5]) is None
