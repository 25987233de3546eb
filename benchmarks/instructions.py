"""Scenario 1's overhead counted in instructions, not seconds: a basis noise does not move.

Usage (from the repository root; needs ``valgrind``, not a project dependency)::

    python benchmarks/instructions.py [--rows 1000] [--more 1000] [--l2]

Starts the emulator (no limits), then runs under ``valgrind --tool=cachegrind
--cache-sim=no`` the real CLI (``python -m batch_updater run ROWS --rate 0 --concurrency
32``) and ``benchmarks/sdk_loops.py aiobotocore --concurrency 32`` against it, each at
``--rows`` and at ``--rows + --more`` rows. The difference between the two sizes is the work
per row; what is left at zero rows is the fixed work (interpreter, imports, set-up, exit).
Prints both for each, and the ratio they give for scenario 1's 5,000 rows.

Why: wall-clock rounds of scenario 1 on a shared 2-core VM differ by a third between runs of
the same command, so a change of a few percent in the tool's own work cannot be seen there.
Instruction counts barely move run after run: per row within about 1% (15-35k of 3.6-3.9M
with ``--more 1000``, from paths that depend on timing, such as the event loop's turns; a
larger ``--more`` narrows it). They are not time: the tool's own work may run at another
rate than the SDK's (caches, branches), which only a wall-clock run shows.

``--l2`` also simulates the caches of this machine's cores (32 KiB L1 for code and for data,
1 MiB L2, cachegrind's last level set to the L2) and prints the L2 misses of each a row:
what the tool's work between two requests costs the SDK's code and data in the core's
cache. Each miss waits for the shared L3 (or memory), so a row that misses more costs more
wall time than its instructions say, the more so the busier the host's other cores.
About three times slower than the instruction count alone.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.run import (
    CLI,
    LOOPS,
    Bench,
    Emulator,
    Sizes,
    child_env,
    compile_package,
    write_input,
)

SUMMARY = re.compile(r"^summary:((?:\s+\d+)+)", re.MULTILINE)
ROWS_SCENARIO_1 = 5_000
# This machine's cores (lscpu): 32 KiB L1 code and data, 1 MiB L2; the L2 as the last level.
CACHES = ("--cache-sim=yes", "--I1=32768,8,64", "--D1=32768,8,64", "--LL=1048576,16,64")


def instructions(bench: Bench, name: str, args: Sequence[str], *, l2: bool = False) -> list[int]:
    """Instructions the child ``args`` executed (user space, whole process); with ``l2``,
    then its L2 misses (code reads, data reads, data writes)."""
    out = bench.tmp / f"{name}.cachegrind"
    command = (
        "valgrind",
        "--tool=cachegrind",
        *(CACHES if l2 else ("--cache-sim=no",)),
        f"--cachegrind-out-file={out}",
        *args,
    )
    done = subprocess.run(
        command, env=bench.env, cwd=bench.tmp, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{name}: exit {done.returncode}: {done.stderr[-500:]}")
    match = SUMMARY.search(out.read_text())
    if match is None:
        raise RuntimeError(f"{name}: no summary line in {out}")
    events = [int(n) for n in match.group(1).split()]
    # Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw with the caches, Ir alone without.
    return [events[0], events[2], events[5], events[8]] if l2 else [events[0]]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; prints per-row and fixed instructions of the CLI and the bare loop."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000, help="the smaller size (1000)")
    parser.add_argument("--more", type=int, default=1_000, help="rows the larger adds (1000)")
    parser.add_argument("--l2", action="store_true", help="also count L2 misses (see above)")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: nothing measured", file=sys.stderr)
        return 2
    sizes = (args.rows, args.rows + args.more)
    with tempfile.TemporaryDirectory(prefix="instructions-") as tmp:
        bench = Bench(Path(tmp), Sizes(), child_env(Path(tmp)))
        compile_package(bench)
        counts: dict[str, list[list[int]]] = {"batch_updater CLI": [], "bare aiobotocore loop": []}
        with Emulator(bench, "instructions") as emu:
            for n in sizes:
                rows = write_input(bench, f"rows-{n}", n)
                report = bench.tmp / f"report-{n}.csv"
                cli = (*CLI, "run", str(rows), "--report", str(report), "--overwrite")
                cli += ("--log-format", "json", "--endpoint-url", emu.url)
                cli += ("--rate", "0", "--concurrency", "32")
                counts["batch_updater CLI"].append(instructions(bench, f"cli-{n}", cli, l2=args.l2))
                loop = (*LOOPS, "aiobotocore", "--endpoint-url", emu.url, "--n", str(n))
                loop += ("--concurrency", "32")
                counts["bare aiobotocore loop"].append(
                    instructions(bench, f"loop-{n}", loop, l2=args.l2)
                )
    totals = {}
    for name, (small, large) in counts.items():
        per_row = (large[0] - small[0]) / args.more
        fixed = small[0] - per_row * args.rows
        totals[name] = fixed + per_row * ROWS_SCENARIO_1
        print(f"{name}: {per_row / 1e3:,.0f}k instructions a row, {fixed / 1e6:,.0f}M fixed")
        if args.l2:
            pairs = zip(small[1:], large[1:], strict=True)
            code, reads, writes = ((b - a) / args.more for a, b in pairs)
            print(
                f"  L2 misses a row: {code + reads + writes:,.0f} (code {code:,.0f}, data read "
                f"{reads:,.0f}, data write {writes:,.0f}); "
                f"{sum(small[1:]) - (code + reads + writes) * args.rows:,.0f} fixed"
            )
    ratio = totals["bare aiobotocore loop"] / totals["batch_updater CLI"]
    print(f"for {ROWS_SCENARIO_1:,} rows: batch_updater / bare aiobotocore = {ratio:.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
