"""``SortedSpill``: records sorted by line in bounded memory, runs spilled and merged."""

from __future__ import annotations

import random

from batch_updater.spill import SortedSpill


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
