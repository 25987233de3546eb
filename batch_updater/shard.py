"""Sharding: split one input over N workers, by lane or by a stable hash of the app.

A lane is (account, region): what AWS limits separately. (Rows without an account are in
the lane of the caller's own account when the input names that account too: ``RowPlan``
merges the two before the lanes are assigned, the same way in every shard.) With at least
as many lanes as shards, :func:`assign_lanes` gives each lane whole to one shard, so N
shards together reach ``--rate`` on every lane without exceeding it. With fewer lanes than
shards, rows are split by a stable hash of (account, region, app_id) and each shard's rate
is divided.
"""

from __future__ import annotations

import hashlib
import heapq
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import SetupError

__all__ = ["Lane", "Shard", "assign_lanes", "shard_from_environment"]

# (account_id, region); account "": rows without an account, in the base credentials'
# own account (keyed by it instead when the input names it too: RowPlan.own_lane)
Lane = tuple[str, str]

_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` of ``count`` (index from 0)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise SetupError(
                f"shard {self.index}/{self.count}: the index must be 0 to count - 1 "
                "and the count at least 1"
            )

    @classmethod
    def parse(cls, spec: str) -> Shard:
        """``"K/N"`` -> ``Shard(K, N)``."""
        match = _SPEC.fullmatch(spec)
        if not match:
            raise SetupError(f"--shard: {spec!r} is not K/N, e.g. 0/4 for the first of 4 shards")
        return cls(int(match[1]), int(match[2]))

    def owns(self, region: str, app_id: str, account: str = "") -> bool:
        """True when the row with this (account, region, app_id) belongs to this shard
        by hash (used when there are fewer lanes than shards, and for invalid rows).

        The hash is stable across processes and machines (unlike Python's ``hash``); the
        account is hashed only when set, so rows without one hash as before accounts.
        """
        if self.count == 1:
            return True
        text = f"{account} {region} {app_id}" if account else f"{region} {app_id}"
        raw = hashlib.blake2b(text.encode(), digest_size=8).digest()
        return int.from_bytes(raw, "big") % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def assign_lanes(rows: Mapping[Lane, int], shard: Shard) -> frozenset[Lane] | None:
    """The lanes ``shard`` owns, given the valid rows of every lane; None when there are
    fewer lanes than shards (then rows are split by hash).

    Balanced by row count and the same in every shard process: lanes from the busiest
    (ties by name) each go to the least loaded shard so far (ties to the lowest index).
    """
    if len(rows) < shard.count:
        return None
    loads = [(0, index) for index in range(shard.count)]  # a heap of (rows, shard index)
    mine: set[Lane] = set()
    for lane in sorted(rows, key=lambda lane: (-rows[lane], lane)):
        load, index = loads[0]
        if index == shard.index:
            mine.add(lane)
        heapq.heapreplace(loads, (load + rows[lane], index))
    return frozenset(mine)


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise SetupError(f"{name}={env[name]!r} is not a whole number") from None


def shard_from_environment(
    count: int | None = None, env: Mapping[str, str] | None = None
) -> Shard | None:
    """The shard a job engine assigned: a Kubernetes Indexed Job (``JOB_COMPLETION_INDEX``
    with ``count`` from ``--shard-count``) or an AWS Batch array job
    (``AWS_BATCH_JOB_ARRAY_INDEX`` and ``AWS_BATCH_JOB_ARRAY_SIZE``); None when neither."""
    env = os.environ if env is None else env
    if "JOB_COMPLETION_INDEX" in env:
        if count is None:
            raise SetupError(
                "JOB_COMPLETION_INDEX is set (Kubernetes Indexed Job) but the number of shards "
                "is not: pass --shard-count N or set BATCH_UPDATER_SHARD_COUNT to the Job's "
                "completions"
            )
        return Shard(_int(env, "JOB_COMPLETION_INDEX"), count)
    if "AWS_BATCH_JOB_ARRAY_INDEX" in env:
        if "AWS_BATCH_JOB_ARRAY_SIZE" in env:
            size = _int(env, "AWS_BATCH_JOB_ARRAY_SIZE")
        elif count is not None:
            size = count
        else:
            raise SetupError(
                "AWS_BATCH_JOB_ARRAY_INDEX is set but AWS_BATCH_JOB_ARRAY_SIZE is not: "
                "pass --shard-count N"
            )
        return Shard(_int(env, "AWS_BATCH_JOB_ARRAY_INDEX"), size)
    if count is not None and count != 1:
        raise SetupError(
            "--shard-count is set but no shard index: pass --shard K/N, or run as a "
            "Kubernetes Indexed Job (JOB_COMPLETION_INDEX) or an AWS Batch array job"
        )
    return None
