"""Where scenario 1's overhead goes: profile the CLI and the bare aiobotocore loop side by side.

Usage (from the repository root; needs ``pip install pyinstrument``, not a project
dependency)::

    python benchmarks/profile_overhead.py [--rows 5000] [--interval 0.0005]

Starts the emulator in a child process (no limits), then runs under pyinstrument
``python -m batch_updater run ROWS --rate 0 --concurrency 32`` and
``benchmarks/sdk_loops.py aiobotocore --concurrency 32`` against it, one after the other.
Prints for each the sampled time per library (leaf samples attributed to the library of
their nearest known frame; anything under an import is "imports"), and for the CLI the time
spent in batch_updater's own frames outside the SDK, per function (tenacity's frames count
towards the batch_updater function that called them).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.run import (
    CLI,
    LOOPS,
    PY,
    Bench,
    Emulator,
    Sizes,
    child_env,
    run_child,
    write_input,
)

LIBRARIES: Final = (
    "batch_updater",
    "tenacity",
    "structlog",
    "aiobotocore",
    "botocore",
    "aiohttp",
    "multidict",
    "yarl",
    "asyncio",
    "sdk_loops",
    "json",
    "csv",
    "urllib",
    "email",
    "datetime",
    "uuid",
    "hmac",
    "concurrent",
)
SDK: Final = ("/aiobotocore/", "/botocore/", "/aiohttp/", "/yarl/", "/multidict/", "importlib")


def _library(path: str) -> str | None:
    for name in LIBRARIES:
        if f"/{name}/" in path or path.endswith(f"/{name}.py"):
            return name
    return None


def by_library(root: Any) -> Counter[str]:
    """Leaf sample time per library."""
    out: Counter[str] = Counter()

    def walk(frame: Any, owner: str, in_import: bool) -> None:
        path = frame.file_path or ""
        in_import = in_import or "importlib" in path
        owner = _library(path) or owner
        if not frame.children:
            out["imports" if in_import else owner] += frame.time
        for child in frame.children:
            walk(child, owner, in_import)

    walk(root, "other", False)
    return out


def batch_updater_functions(root: Any) -> Counter[str]:
    """Leaf time outside the SDK, per nearest batch_updater function."""
    out: Counter[str] = Counter()

    def walk(frame: Any, owner: str, in_sdk: bool) -> None:
        path = frame.file_path or ""
        if any(part in path for part in SDK):
            in_sdk = True
        if "/batch_updater/" in path:
            owner, in_sdk = f"{path.rsplit('/', 1)[-1]}:{frame.function}", False
        if not frame.children and not in_sdk and owner:
            out[owner] += frame.time
        for child in frame.children:
            walk(child, owner, in_sdk)

    walk(root, "", False)
    return out


def show(label: str, session_path: Path, *, functions: bool) -> None:
    from pyinstrument.session import Session  # noqa: PLC0415 - optional tool

    root = Session.load(str(session_path)).root_frame()
    if root is None:
        print(f"== {label}: no samples")
        return
    total = root.time
    print(f"== {label}: {total:.3f} s sampled")
    for name, seconds in by_library(root).most_common():
        if seconds >= 0.005:
            print(f"  {name:16s} {seconds:7.3f} s {seconds / total:6.1%}")
    if functions:
        own = batch_updater_functions(root)
        print(f"  -- outside the SDK, under batch_updater frames: {sum(own.values()):.3f} s")
        for name, seconds in own.most_common(20):
            print(f"     {seconds:6.3f} s {seconds / total:6.1%}  {name}")


def main(argv: Sequence[str] | None = None) -> int:
    """Profile both, print the breakdowns."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--interval", type=float, default=0.0005, help="sampling interval")
    args = parser.parse_args(argv)
    try:
        import pyinstrument  # noqa: F401, PLC0415
    except ImportError:
        print("needs pyinstrument: pip install pyinstrument", file=sys.stderr)
        return 2
    profiler = (PY, "-m", "pyinstrument", "-i", str(args.interval), "-r", "session", "-o")
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        bench = Bench(Path(tmp), Sizes(), child_env(Path(tmp)))
        rows = write_input(bench, "profile", args.rows)
        cli_session, loop_session = Path(tmp) / "cli.pyisession", Path(tmp) / "loop.pyisession"
        with Emulator(bench, "profile") as emu:
            common = ("--endpoint-url", emu.url)
            cli = run_child(
                (
                    *profiler,
                    str(cli_session),
                    *CLI[1:],
                    "run",
                    str(rows),
                    *common,
                    "--rate",
                    "0",
                    "--concurrency",
                    "32",
                    "--report",
                    str(Path(tmp) / "report.csv"),
                    "--log-format",
                    "json",
                ),
                bench.env,
                bench.tmp,
            )
            loop = run_child(
                (
                    *profiler,
                    str(loop_session),
                    *LOOPS[1:],
                    "aiobotocore",
                    *common,
                    "--n",
                    str(args.rows),
                    "--concurrency",
                    "32",
                ),
                bench.env,
                bench.tmp,
            )
        for child in (cli, loop):
            if child.returncode != 0:
                print(f"{child.args[-1]}: exit {child.returncode}: {child.stderr_tail}")
        show("batch_updater CLI", cli_session, functions=True)
        show("bare aiobotocore loop", loop_session, functions=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
