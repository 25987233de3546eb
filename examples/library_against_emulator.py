"""Use batch_updater as a library, against the built-in emulator (no AWS account needed).

    python examples/library_against_emulator.py

It starts the emulator on 127.0.0.1, passes its own aioboto3 Session (as code using an
assumed role would), streams each row's result as it finishes, then prints the totals.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import aioboto3

from batch_updater import RowResult, RunConfig, Status, run_batch
from batch_updater.emulator import EmulatorConfig, EmulatorServer

ROWS = [
    {"app_id": "d1a2b3c4d5e6f7", "region": "us-east-1", "user_pool_id": "us-east-1_AbC123xyz"},
    {"app_id": "d7f6e5d4c3b2a1", "region": "us-east-1", "cognito_region": "us-east-1"},
    {"app_id": "dmissing000001", "region": "us-east-1", "user_pool_id": "us-east-1_AbC123xyz"},
]


async def main() -> int:
    known = frozenset({"d1a2b3c4d5e6f7", "d7f6e5d4c3b2a1"})  # the third app does not exist
    async with EmulatorServer(EmulatorConfig(known_apps=known)) as server:
        # Your own session: e.g. built from sts.assume_role credentials.
        session = aioboto3.Session(
            aws_access_key_id="example", aws_secret_access_key="example", region_name="us-east-1"
        )
        report = Path(tempfile.mkdtemp()) / "example-report.jsonl"
        config = RunConfig(endpoint_url=server.url, rate=20, output=report)

        def show(result: RowResult) -> None:
            print(f"line {result.line}: {result.app_id} {result.status} {result.error_code}")

        summary = await run_batch(ROWS, config, session=session, on_result=show)
        print(
            f"succeeded {summary.counts[Status.SUCCEEDED]}, failed {summary.counts[Status.FAILED]}"
        )
        print(f"emulator now holds settings for {sorted(server.emulator.apps)}")
        print(f"report: {report}")
        return summary.exit_code


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
