"""``SortedSpill``: records sorted by line in bounded memory, runs spilled and merged."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from batch_updater.spill import SortedSpill, pickled, unpickled


def test_records_come_back_sorted_and_stable_across_many_spilled_runs() -> None:
    rng = random.Random(3)
    records = [(rng.randrange(500), n, "x" * rng.randrange(40)) for n in range(5_000)]
    with SortedSpill(budget=2_000) as spill:
        for record in records:
            spill.add(record, len(record[2]) + 50)
        assert spill.runs > 50  # the budget forced many runs to disk
        got = list(spill)
    # Python's sort is stable: same lines keep the order they were added in.
    assert got == sorted(records, key=lambda r: r[0])


def test_within_the_budget_nothing_is_spilled() -> None:
    with SortedSpill(budget=1 << 20) as spill:
        for line in (5, 3, 9, 3):
            spill.add((line, "a"), 100)
        assert spill.runs == 0
        assert [r[0] for r in spill] == [3, 3, 5, 9]
        assert "runs=0" in repr(spill)


def test_no_records_yields_nothing() -> None:
    with SortedSpill(budget=10) as spill:
        assert list(spill) == []


def _reversed_pack(records: list[tuple[Any, ...]]) -> bytes:
    return pickled(records[::-1])


def _reversed_unpack(data: bytes) -> list[tuple[Any, ...]]:
    return unpickled(data)[::-1]


@pytest.mark.parametrize("budget", [60, 700, 5_000, 1 << 20])
def test_batches_are_the_records_sorted_stably_and_no_key_spans_two_batches(
    budget: int,
) -> None:
    rng = random.Random(budget)
    # Few keys, many records each: runs of one key span many chunks.
    records = [(rng.randrange(40), n, "x" * rng.randrange(30)) for n in range(3_000)]
    with SortedSpill(budget, _reversed_pack, _reversed_unpack) as spill:
        for start in range(0, len(records), 37):
            part = records[start : start + 37]
            spill.extend(part, sum(len(r[2]) + 50 for r in part))
        batches = list(spill.batches())
    assert [r for batch in batches for r in batch] == sorted(records, key=lambda r: r[0])
    keys = [{r[0] for r in batch} for batch in batches]
    assert all(not a & b for a, b in itertools.pairwise(keys))
    if budget < 1 << 20:
        assert len(batches) > 1
