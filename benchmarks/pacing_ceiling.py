"""What a burst-1 limit equal to ``--rate`` allows on this machine: the pacing ceiling.

Usage (from the repository root)::

    python benchmarks/pacing_ceiling.py [--rows 500] [--out FILE]

Runs scenario 10's shape (benchmarks/run.py: three regions at 20 ms and 20/s, one at 250 ms
and 2/s, burst 1, ``--rate 20``, rows sorted by region) with two clocks on the machine's
monotonic time: the client notes when each request's headers and body are handed to the
socket (aiohttp's writer), and the emulator notes when its limiter judges each request
(the time it passes to its limiter: its first bytes arrive, by ``data_received``, 0.02 ms
before at the median), both in this diagnostic only (it patches the two processes, not
batch_updater's code).

From the two it prints the transit time (write -> arrival) and, for every fast region, what
a perfect pacer would get: requests written exactly ``S`` apart whose arrivals move by the
transit times measured for that region, in order, against the emulator's burst-1 limit
(one request every 50 ms; a refused one takes no slot and is sent again at the next
spacing). A 429 there is no fault of the pacing: a request that takes 3 ms longer on its way
than the one before it lets the next one arrive 3 ms early. The best of these rates is the
ceiling for that target on this machine, whatever the controller does.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SLOW, FAST = "us-east-1", ("us-east-2", "us-west-1", "us-west-2")
LIMIT = 20.0  # the fast regions' limit, requests/s (burst 1)

# The emulator child: notes the arrival of each request's first bytes, then serves as usual.
EMULATOR = textwrap.dedent(
    """
    import sys
    from batch_updater import emulator
    from batch_updater.cli import main
    out = open(sys.argv.pop(1), "w")
    decide = emulator.Emulator._decide
    def logged(self, request, app_id, body, now, signer):
        # now: the loop's clock (time.monotonic), as the limiter judges the request
        reply = decide(self, request, app_id, body, now, signer)
        out.write(f"{now:.6f} {reply.status} {signer[1]} {app_id}\\n")
        out.flush()
        return reply
    emulator.Emulator._decide = logged
    main(sys.argv[1:])
    """
)

# The client: the real CLI, noting when each request is handed to the socket.
CLIENT = textwrap.dedent(
    """
    import sys, time
    import aiohttp.http_writer as hw
    from batch_updater.cli import main
    out = open(sys.argv.pop(1), "w")
    send = hw.StreamWriter._send_headers_with_payload
    def noted(self, chunk, is_eof):
        path = bytes(self._headers_buf or b"").split(b" ", 2)[1].decode()
        out.write(f"{time.monotonic():.6f} {path.split('/')[2]}\\n")
        out.flush()
        return send(self, chunk, is_eof)
    hw.StreamWriter._send_headers_with_payload = noted
    raise SystemExit(main(sys.argv[1:]))
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(tmp: Path, rows: int) -> tuple[Path, Path, dict[str, object]]:
    """Run the job; return the client's and the emulator's logs and the run's summary."""
    data = tmp / "slow-lane.csv"
    with data.open("w", encoding="utf-8") as out:
        out.write("app_id,region,user_pool_id\n")
        for r, (region, n) in enumerate([(SLOW, max(10, rows // 10))] + [(f, rows) for f in FAST]):
            for i in range(n):
                out.write(f"d{r}x{i}abc,{region},us-east-1_AbC123xyz\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AWS_ACCESS_KEY_ID": "x"}
    env["AWS_SECRET_ACCESS_KEY"] = "y"  # the emulator checks the signature's form only
    port, sent, arrived = free_port(), tmp / "sent.txt", tmp / "arrived.txt"
    emulate = (
        *("emulate", "--port", str(port), "--rate", f"{LIMIT:g}", "--latency-ms", "20"),
        *("--limit-per", "region", "--region-rate", f"{SLOW}=2"),
        *("--region-latency-ms", f"{SLOW}=250"),
    )
    server = subprocess.Popen(
        [sys.executable, "-c", EMULATOR, str(arrived), *emulate],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        server.stdout.readline()  # "listening on ...": ready
        client = subprocess.run(
            [
                *(sys.executable, "-c", CLIENT, str(sent), "run", str(data)),
                *("--endpoint-url", f"http://127.0.0.1:{port}", "--rate", f"{LIMIT:g}"),
                *("--report", str(tmp / "report.csv"), "--log-format", "json", "--no-progress"),
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    finally:
        server.terminate()
        server.wait()
    lines = (client.stderr + client.stdout).splitlines()
    ends = [line for line in lines if '"run_end"' in line]
    return sent, arrived, json.loads(ends[-1]) if ends else {}


def transits(sent: Path, arrived: Path) -> dict[str, list[tuple[float, float]]]:
    """(written, transit) of every request, by region, in the order they were written."""
    written: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
    for line in sent.read_text().splitlines():
        at, app = line.split()
        written[app].append(float(at))
    lanes: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    for line in arrived.read_text().splitlines():
        at, _status, region, app = line.split()
        start = written[app].popleft()  # a retry is the app's next write
        lanes[region].append((start, float(at) - start))
    return {region: sorted(xs) for region, xs in lanes.items()}


def fixed_pace(delays: list[float], spacing: float, limit: float = LIMIT) -> tuple[float, float]:
    """Requests written ``spacing`` apart arriving ``delays`` later, against one request per
    ``1/limit`` s (burst 1): (successes per second, share refused)."""
    due, refused = float("-inf"), 0
    for at in sorted(k * spacing + delay for k, delay in enumerate(delays)):  # as they arrive
        if at >= due:
            due = max(at, due) + 1 / limit
        else:
            refused += 1
    share = refused / len(delays)
    return (1 - share) / spacing, share


def percentile(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500, help="rows per fast region")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ceiling-") as tmp:
        sent, arrived, summary = run(Path(tmp), args.rows)
        lanes = transits(sent, arrived)
    every = [d * 1000 for region in FAST for _, d in lanes[region]]
    print(
        "transit write -> arrival, ms: "
        + ", ".join(f"p{q:g} {percentile(every, q / 100):.2f}" for q in (10, 50, 90, 99))
        + f", max {max(every):.2f} ({len(every)} requests)"
    )
    print(
        f"the run: {summary.get('rate_per_region')} settled; throttles {summary.get('throttles')}"
    )
    spacings = [1 / LIMIT + ms / 1000 for ms in (0, 0.5, 1, 1.5, 2, 2.6, 3, 4, 5)]
    for region in FAST:
        delays = [d for _, d in lanes[region]]
        results = [(s, *fixed_pace(delays, s)) for s in spacings]
        best = max(results, key=lambda r: r[1])
        cells = "; ".join(
            f"{1 / s:.2f}/s -> {rate:.2f} ({share:.1%})" for s, rate, share in results
        )
        print(f"{region}: perfect pacing at {cells}")
        first, last = lanes[region][0][0], max(at + d for at, d in lanes[region])
        reached = args.rows / (last - first)
        print(
            f"{region}: ceiling {best[1]:.2f}/s ({best[1] / LIMIT:.3f} of the limit); "
            f"the run reached {reached:.2f}/s (first write -> last arrival)"
        )
    # Issue 10's 3 accounts x 2 regions: --rate 10 against 10/s per lane, burst 1. The same
    # transit times (they come from the machine, not the rate), spaced for 10/s.
    delays = [d for region in FAST for _, d in lanes[region]]
    results = [
        (s, *fixed_pace(delays, s, 10.0))
        for s in (0.1 + ms / 1000 for ms in (0, 1, 2, 3, 4, 5, 6, 8))
    ]
    best = max(results, key=lambda r: r[1])
    cells = "; ".join(f"{1 / s:.2f}/s -> {ok:.2f} ({share:.1%})" for s, ok, share in results)
    print(f"at 10/s (issue 10's 3 x 2 lanes), perfect pacing at {cells}")
    print(f"at 10/s: ceiling {best[1]:.2f}/s a lane, {6 * best[1]:.1f} rows/s for six lanes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
