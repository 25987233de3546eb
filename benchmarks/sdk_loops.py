"""Baselines for ``benchmarks/run.py``: plain SDK loops calling UpdateBackendConfig N times.

Usage::

    python benchmarks/sdk_loops.py aiobotocore --endpoint-url URL [--n 5000] [--concurrency 32]
    python benchmarks/sdk_loops.py boto3 --endpoint-url URL [--n 5000] [--threads 32]
        [--retry-mode off|standard|adaptive] [--max-attempts 10]

``aiobotocore``: one aioboto3 client (aiobotocore underneath) with the same botocore
``Config`` as ``batch_updater.client.Clients``, ``asyncio.Semaphore(concurrency)`` over N
``update_backend_config`` calls. ``boto3``: one shared boto3 client and a
``ThreadPoolExecutor(threads)``; ``--retry-mode off`` is batch_updater's
``retries={"total_max_attempts": 1}``, ``standard``/``adaptive`` are botocore's retry modes
with ``--max-attempts``. No CSV, no report, no logging: the request parameters are built in
memory before the clock starts.

Prints one JSON object on stdout: calls, succeeded, failed, error codes, requests sent and
429 answers (counted per attempt with botocore's ``response-received`` event), and
``elapsed`` = time from the first call to the last answer (client creation excluded).
Credentials and region come from the environment (dummy values are fine for the emulator).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

SERVICE: Final = "amplifybackend"
REGION: Final = "us-east-1"
EVENT: Final = "response-received.amplifybackend.UpdateBackendConfig"
READ_TIMEOUT: Final = 30.0  # batch_updater's --request-timeout default
CONNECT_TIMEOUT: Final = 10.0  # batch_updater.client.Clients' default


def make_params(n: int, region: str = REGION) -> list[dict[str, Any]]:
    """N distinct requests shaped like batch_updater's (all four settings set)."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        out.append(
            {
                "AppId": f"d{i:013x}",
                "LoginAuthConfig": {
                    "AwsCognitoIdentityPoolId": (f"{region}:{i:08x}-0000-4000-8000-000000000000"),
                    "AwsCognitoRegion": region,
                    "AwsUserPoolsId": f"{region}_Pool{i:05d}",
                    "AwsUserPoolsWebClientId": f"client{i:020d}",
                },
            }
        )
    return out


class Tally:
    """Counts shared by every call; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.throttles = 0
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.succeeded = 0
        self.last_answer = 0.0

    def on_response(self, response_dict: dict[str, Any] | None = None, **_: Any) -> None:
        """botocore ``response-received`` handler: one call per attempt."""
        status = int(response_dict["status_code"]) if response_dict else 0
        with self.lock:
            self.requests += 1
            self.statuses[status] += 1
            if status == 429:
                self.throttles += 1

    def done(self, error: str | None) -> None:
        now = time.perf_counter()
        with self.lock:
            if error is None:
                self.succeeded += 1
            else:
                self.errors[error] += 1
            self.last_answer = max(self.last_answer, now)


def _error_code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "ClientError")
    return type(exc).__name__


def _result(kind: str, n: int, tally: Tally, first_call: float, setup: float) -> dict[str, Any]:
    elapsed = tally.last_answer - first_call if tally.last_answer else 0.0
    return {
        "kind": kind,
        "calls": n,
        "succeeded": tally.succeeded,
        "failed": n - tally.succeeded,
        "errors": dict(tally.errors),
        "requests": tally.requests,
        "throttles": tally.throttles,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "setup_seconds": round(setup, 4),
        "elapsed": round(elapsed, 4),
        "rows_per_second": round(n / elapsed, 2) if elapsed > 0 else 0.0,
        "succeeded_per_second": round(tally.succeeded / elapsed, 2) if elapsed > 0 else 0.0,
    }


async def run_aiobotocore(endpoint_url: str, n: int, concurrency: int) -> dict[str, Any]:
    """One aioboto3 client, ``Semaphore(concurrency)`` over ``n`` calls."""
    import aioboto3  # noqa: PLC0415 - only this mode needs it

    params = make_params(n)
    tally = Tally()
    config = Config(
        retries={"total_max_attempts": 1},
        max_pool_connections=max(10, concurrency),
        read_timeout=READ_TIMEOUT,
        connect_timeout=CONNECT_TIMEOUT,
        user_agent_extra="batch-updater-bench/1",
    )
    t0 = time.perf_counter()
    session = aioboto3.Session()
    async with session.client(
        SERVICE, region_name=REGION, endpoint_url=endpoint_url, config=config
    ) as client:
        client.meta.events.register(EVENT, tally.on_response)
        semaphore = asyncio.Semaphore(concurrency)

        async def call(kwargs: dict[str, Any]) -> None:
            async with semaphore:
                try:
                    await client.update_backend_config(**kwargs)
                except (ClientError, BotoCoreError) as exc:
                    tally.done(_error_code(exc))
                else:
                    tally.done(None)

        first_call = time.perf_counter()
        await asyncio.gather(*(call(kwargs) for kwargs in params))
    return _result("aiobotocore", n, tally, first_call, first_call - t0)


def run_boto3(
    endpoint_url: str, n: int, threads: int, retry_mode: str, max_attempts: int
) -> dict[str, Any]:
    """One shared boto3 client, ``ThreadPoolExecutor(threads)`` over ``n`` calls."""
    import boto3  # type: ignore[import-untyped,unused-ignore]  # noqa: PLC0415

    params = make_params(n)
    tally = Tally()
    retries: dict[str, Any] = (
        {"total_max_attempts": 1}
        if retry_mode == "off"
        else {"mode": retry_mode, "max_attempts": max_attempts}
    )
    config = Config(
        retries=retries,  # type: ignore[arg-type]
        max_pool_connections=threads,
        read_timeout=READ_TIMEOUT,
        connect_timeout=CONNECT_TIMEOUT,
        user_agent_extra="batch-updater-bench/1",
    )
    t0 = time.perf_counter()
    client = boto3.session.Session().client(
        SERVICE, region_name=REGION, endpoint_url=endpoint_url, config=config
    )
    client.meta.events.register(EVENT, tally.on_response)

    def call(kwargs: dict[str, Any]) -> None:
        try:
            client.update_backend_config(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            tally.done(_error_code(exc))
        else:
            tally.done(None)

    first_call = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(call, params):
            pass
    result = _result("boto3", n, tally, first_call, first_call - t0)
    result["retry_mode"] = retry_mode
    client.close()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints the result as JSON on stdout."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("aiobotocore", "boto3"))
    parser.add_argument("--endpoint-url", required=True)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32, help="aiobotocore semaphore")
    parser.add_argument("--threads", type=int, default=32, help="boto3 thread pool size")
    parser.add_argument("--retry-mode", choices=("off", "standard", "adaptive"), default="off")
    parser.add_argument("--max-attempts", type=int, default=10)
    args = parser.parse_args(argv)
    if args.kind == "aiobotocore":
        result = asyncio.run(run_aiobotocore(args.endpoint_url, args.n, args.concurrency))
    else:
        result = run_boto3(
            args.endpoint_url, args.n, args.threads, args.retry_mode, args.max_attempts
        )
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
