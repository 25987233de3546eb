"""Write N valid input rows for batch-updater, for benchmarks and load tests.

Usage::

    python benchmarks/generate_rows.py N OUTPUT [--seed S]
        [--regions us-east-1,eu-west-1] [--unique]

    python benchmarks/generate_rows.py 1000000 /tmp/rows.csv --seed 7

The output has the same header as ``inputs/example.csv``
(``app_id,region,identity_pool_id,cognito_region,user_pool_id,web_client_id``), is UTF-8
with LF line endings, and every row passes the tool's validation:

* Regions are assigned round-robin over ``--regions``.
* App ids look real (``d`` + 13 lowercase letters and digits) and are derived from the row
  index by a seeded bijection, so they never repeat and no set of seen ids is kept. By
  default an app id is unique within its region (the same id appears once per region, as
  the tool keys rows on region and app_id); ``--unique`` makes every app id in the file
  distinct.
* Most rows carry all four settings. About 8% of rows keep their Cognito pools in the
  first region listed (so Cognito is in another region than the app for rows outside
  it), about 8% omit the identity pool, and about 2% give only ``cognito_region`` and
  ``web_client_id``.

Rows are generated in chunks and streamed to the file: memory stays flat and a million
rows take a few seconds. The same arguments and seed always produce the same file.

Library use (from the repository root)::

    from benchmarks.generate_rows import write_rows

    write_rows(Path("rows.csv"), 10_000, seed=1, regions=("us-east-1", "eu-west-1"))
"""

from __future__ import annotations

import argparse
import random
import re
import string
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

__all__ = ["DEFAULT_REGIONS", "HEADER", "main", "write_rows"]

HEADER: Final = "app_id,region,identity_pool_id,cognito_region,user_pool_id,web_client_id"
DEFAULT_REGIONS: Final[tuple[str, ...]] = ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2")

_REGION: Final = re.compile(r"[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}", re.ASCII)
_CHUNK: Final = 8192  # rows generated and written at a time

# App ids: x = (index * _MULTIPLIER + offset) mod 36**13 is a bijection on [0, 36**13)
# because the multiplier shares no factor with 36, so distinct indexes give distinct ids.
_APP_DIGITS: Final = 13
_APP_SPACE: Final = 36**_APP_DIGITS
_MULTIPLIER: Final = 1_442_695_040_888_963_407  # odd and not a multiple of 3
_BASE36: Final = string.digits + string.ascii_lowercase
_PAIRS: Final[tuple[str, ...]] = tuple(a + b for a in _BASE36 for b in _BASE36)


def _byte_table(alphabet: str) -> bytes:
    """A ``bytes.translate`` table mapping every byte onto ``alphabet`` (slight bias is fine)."""
    return bytes(ord(alphabet[i % len(alphabet)]) for i in range(256))


_CLIENT_TABLE: Final = _byte_table(string.ascii_lowercase + string.digits)
_POOL_TABLE: Final = _byte_table(string.ascii_letters + string.digits)
_VARIANT: Final[dict[str, str]] = {c: "89ab"[int(c, 16) % 4] for c in "0123456789abcdef"}


def _app_id(index: int, offset: int) -> str:
    """``d`` + 13 base-36 digits of the scrambled ``index``."""
    x = (index * _MULTIPLIER + offset) % _APP_SPACE
    digits: list[str] = []
    for _ in range(_APP_DIGITS // 2):
        x, pair = divmod(x, 1296)
        digits.append(_PAIRS[pair])
    digits.append(_BASE36[x])  # x < 36 here: 13 digits = 6 pairs + 1
    return "d" + "".join(reversed(digits))


def _check_regions(regions: Sequence[str]) -> tuple[str, ...]:
    out = tuple(r.strip() for r in regions if r.strip())
    if not out:
        raise ValueError("at least one region is required")
    for region in out:
        if not _REGION.fullmatch(region):
            raise ValueError(f"{region!r} is not a region name like us-east-1")
    if len(set(out)) != len(out):
        raise ValueError("regions must not repeat")
    return out


def _chunk_lines(
    rng: random.Random,
    start: int,
    count: int,
    regions: tuple[str, ...],
    offset: int,
    *,
    unique: bool,
) -> list[str]:
    """Generate rows ``start .. start + count - 1`` as CSV lines (with their newline)."""
    clients = rng.randbytes(count * 26).translate(_CLIENT_TABLE).decode("ascii")
    pools = rng.randbytes(count * 9).translate(_POOL_TABLE).decode("ascii")
    uuids = rng.randbytes(count * 16).hex()
    kinds = rng.randbytes(count * 2)
    home = regions[0]
    n_regions = len(regions)
    lines: list[str] = []
    append = lines.append
    for k in range(count):
        index = start + k
        region = regions[index % n_regions]
        app_id = _app_id(index if unique else index // n_regions, offset)
        cognito = home if kinds[2 * k] < 20 else region
        client = clients[26 * k : 26 * k + 26]
        user_pool = f"{cognito}_{pools[9 * k : 9 * k + 9]}"
        h = uuids[32 * k : 32 * k + 32]
        identity_pool = (
            f"{cognito}:{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"
        )
        kind = kinds[2 * k + 1]
        if kind < 5:  # ~2%: web client id only (with its Cognito region)
            append(f"{app_id},{region},,{cognito},,{client}\n")
        elif kind < 25:  # ~8%: user pool without an identity pool
            append(f"{app_id},{region},,{cognito},{user_pool},{client}\n")
        else:
            append(f"{app_id},{region},{identity_pool},{cognito},{user_pool},{client}\n")
    return lines


def write_rows(
    path: Path,
    n: int,
    *,
    seed: int = 0,
    regions: Sequence[str] = DEFAULT_REGIONS,
    unique: bool = False,
) -> None:
    """Write a header and ``n`` valid rows to ``path`` (overwritten), streaming in chunks.

    Raises ValueError for a negative ``n``, a bad region name, or more rows than there are
    distinct app ids.
    """
    if n < 0:
        raise ValueError(f"n must be 0 or more, not {n}")
    checked = _check_regions(regions)
    if (n if unique else -(-n // len(checked))) > _APP_SPACE:
        raise ValueError(f"at most {_APP_SPACE} app ids exist per region")
    rng = random.Random(seed)
    offset = rng.randrange(_APP_SPACE)
    with path.open("w", encoding="utf-8", newline="\n") as out:
        out.write(HEADER + "\n")
        for start in range(0, n, _CHUNK):
            count = min(_CHUNK, n - start)
            out.write("".join(_chunk_lines(rng, start, count, checked, offset, unique=unique)))


def _row_count(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(
        description="Write N valid batch-updater input rows to OUTPUT (CSV).",
    )
    parser.add_argument("n", metavar="N", type=_row_count, help="number of data rows")
    parser.add_argument("output", metavar="OUTPUT", type=Path, help="CSV file to write")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--regions",
        default=",".join(DEFAULT_REGIONS),
        help="comma-separated regions, assigned round-robin (default: %(default)s)",
    )
    parser.add_argument(
        "--unique",
        action="store_true",
        help="make app ids distinct across all regions, not only within each region",
    )
    args = parser.parse_args(argv)
    try:
        write_rows(
            args.output,
            args.n,
            seed=args.seed,
            regions=args.regions.split(","),
            unique=args.unique,
        )
    except ValueError as exc:
        parser.error(str(exc))
    except OSError as exc:
        print(f"error: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
