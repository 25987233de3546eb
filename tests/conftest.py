"""Shared fixtures: an emulator on 127.0.0.1 and a session with test credentials."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aioboto3
import pytest
import structlog
from aiohttp import web

from batch_updater import RunConfig
from batch_updater.emulator import EmulatorServer
from batch_updater.logs import SDK_HANDLER_NAME

from .moto_server import moto, moto_server  # noqa: F401  (fixtures shared by every test module)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "inputs" / "example.csv"
INVALID_EXAMPLE = ROOT / "inputs" / "invalid-example.csv"
SECRET_KEY = "tEsT/SeCrEt+KeY0123456789abcdefGHIJKLmnop"


@pytest.fixture(autouse=True)
def _isolated_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's AWS config or talks to instance metadata."""
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_AMPLIFYBACKEND",
        "AWS_ENDPOINT_URL_STS",
        "AWS_ENDPOINT_URL_S3",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """The CLI configures structlog globally (to a captured stderr); undo it after each test."""
    yield
    structlog.reset_defaults()
    for name in ("botocore", "aiobotocore", "botocore.auth"):
        sdk_logger = logging.getLogger(name)
        for handler in [h for h in sdk_logger.handlers if h.get_name() == SDK_HANDLER_NAME]:
            sdk_logger.removeHandler(handler)
        sdk_logger.setLevel(logging.NOTSET)
        sdk_logger.propagate = True


@pytest.fixture
async def server() -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer() as running:
        yield running


@pytest.fixture
def session() -> Any:
    return aioboto3.Session(
        aws_access_key_id="AKIATESTKEY",
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )


def fast(tmp_path: Path, report: str = "report.csv", **kw: Any) -> RunConfig:
    """A run config for tests: no client-side limit, near-zero backoff, reporting to tmp.

    Settings go by their flat names (``concurrency=2``), as ``RunConfig.from_flat`` takes them.
    """
    base: dict[str, Any] = {
        "report_path": tmp_path / report,
        "rate": 0,
        "backoff_base": 0.001,
        "backoff_cap": 0.01,
    }
    return RunConfig.from_flat(**{**base, **kw})


def read_report(path: Path) -> list[dict[str, Any]]:
    """A report's records, CSV or JSON lines."""
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line]
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_csv(path: Path, header: str, *rows: str) -> Path:
    path.write_text("\n".join((header, *rows)) + "\n", encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def serving(
    handler: Callable[[web.Request], Awaitable[web.Response]],
) -> AsyncIterator[str]:
    """A service on 127.0.0.1 (a free port) that answers every request with ``handler``;
    yields its URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
