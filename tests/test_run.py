"""End to end through the library: real botocore over HTTP against the emulator."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import aioboto3
import pytest
import structlog.testing

from batch_updater import RowResult, Status, run_batch
from batch_updater import emulator as emulator_module
from batch_updater.emulator import EmulatorConfig, EmulatorServer
from batch_updater.errors import SetupError
from batch_updater.rows import Row, RowPlan

from . import virtual_time
from .conftest import EXAMPLE, INVALID_EXAMPLE, fast, read_report, write_csv

HEADER = "app_id,region,user_pool_id,web_client_id"
UP = "us-east-1_AbC123xyz"


def expected_state(path: Path) -> dict[str, dict[str, str]]:
    """What the emulator should hold after every valid row of ``path`` succeeded."""
    wire = {
        "AwsCognitoIdentityPoolId": "aws_cognito_identity_pool_id",
        "AwsCognitoRegion": "aws_cognito_region",
        "AwsUserPoolsId": "aws_user_pools_id",
        "AwsUserPoolsWebClientId": "aws_user_pools_web_client_id",
    }
    state: dict[str, dict[str, str]] = {}
    for item in RowPlan(path, "us-east-1"):
        if isinstance(item, Row):
            state[item.app_id] = {wire[k]: v for k, v in item.settings.to_api().items()}
    return state


def assert_every_line_once(report: Path, source: Path) -> list[dict[str, Any]]:
    records = read_report(report)
    lines = [int(r["line"]) for r in records]
    assert sorted(lines) == [item.line for item in RowPlan(source, "us-east-1")]
    assert len(set(lines)) == len(lines)
    return records


async def test_example_runs_to_success_and_the_emulator_holds_exactly_its_settings(
    tmp_path: Path, server: EmulatorServer, session: Any
) -> None:
    config = fast(tmp_path, endpoint_url=server.url, concurrency=8)
    summary = await run_batch(EXAMPLE, config, session=session)

    assert summary.exit_code == 0
    assert summary.counts[Status.SUCCEEDED] == 50
    assert summary.requests == 50
    assert server.emulator.apps == expected_state(EXAMPLE)
    records = assert_every_line_once(config.output.report_path, EXAMPLE)  # type: ignore[arg-type]
    first = records[0]
    assert list(first) == [
        "line",
        "app_id",
        "region",
        "status",
        "attempts",
        "error_code",
        "http_status",
        "error_message",
        "request_id",
        "backend_manager_app_id",
        "settings_digest",
        "started_at",
        "finished_at",
        "duration_ms",
        "run_id",
        "account_id",
    ]
    assert first["run_id"] == summary.run_id
    assert first["account_id"] == ""  # the input names no account
    assert len(summary.run_id) == 12
    assert first["status"] == "succeeded"
    assert first["attempts"] == "1"
    assert first["http_status"] == "200"
    assert len(first["request_id"]) == 36
    assert first["backend_manager_app_id"]
    assert first["started_at"].endswith("Z")
    assert first["finished_at"] >= first["started_at"]
    summary_file = json.loads(Path(f"{config.output.report_path}.summary.json").read_text())
    assert summary_file["counts"]["succeeded"] == 50
    assert summary_file["requests"] == 50
    assert summary_file["settings"]["concurrency"] == 8
    assert "AKIATESTKEY" not in json.dumps(summary_file)


async def test_throttled_rows_succeed_after_retries(
    tmp_path: Path, server: EmulatorServer, session: Any
) -> None:
    path = write_csv(
        tmp_path / "in.csv", HEADER, f"d1abc,us-east-1,{UP},", f"d2abc,us-east-1,{UP},"
    )
    server.emulator.script("d1abc", ["429", "429", "ok"])
    summary = await run_batch(path, fast(tmp_path, endpoint_url=server.url), session=session)

    by_app = {r.app_id: r for r in summary.results or []}
    assert by_app["d1abc"].status is Status.SUCCEEDED
    assert by_app["d1abc"].attempts == 3
    assert by_app["d2abc"].attempts == 1
    assert summary.throttles == 2
    assert summary.retries == 2
    assert summary.requests == 4
    assert server.emulator.count("d1abc") == 3


async def test_gateway_timeout_every_time_fails_after_max_attempts(
    tmp_path: Path, server: EmulatorServer, session: Any
) -> None:
    path = write_csv(tmp_path / "in.csv", HEADER, f"d1abc,us-east-1,{UP},")
    server.emulator.script("d1abc", ["504"] * 20)
    config = fast(tmp_path, endpoint_url=server.url, max_attempts=5)
    summary = await run_batch(path, config, session=session)

    (result,) = summary.results or []
    assert result.status is Status.FAILED
    assert result.attempts == 5
    assert result.error_code == "GatewayTimeoutException"
    assert result.http_status == 504
    assert result.request_id
    assert server.emulator.count("d1abc") == 5
    assert summary.exit_code == 1
    assert "d1abc" not in server.emulator.apps


async def test_unknown_app_fails_after_exactly_one_attempt(tmp_path: Path, session: Any) -> None:
    path = write_csv(
        tmp_path / "in.csv", HEADER, f"d1abc,us-east-1,{UP},", f"d9missing,us-east-1,{UP},"
    )
    async with EmulatorServer(EmulatorConfig(known_apps=frozenset({"d1abc"}))) as server:
        summary = await run_batch(path, fast(tmp_path, endpoint_url=server.url), session=session)
        assert server.emulator.count("d9missing") == 1
        assert set(server.emulator.apps) == {"d1abc"}

    by_app = {r.app_id: r for r in summary.results or []}
    missing = by_app["d9missing"]
    assert missing.status is Status.FAILED
    assert missing.attempts == 1
    assert missing.error_code == "NotFoundException"
    assert missing.http_status == 404
    assert by_app["d1abc"].status is Status.SUCCEEDED


@pytest.mark.parametrize("code", ["400", "404"])
async def test_bad_request_and_not_found_are_never_retried(
    tmp_path: Path, server: EmulatorServer, session: Any, code: str
) -> None:
    path = write_csv(tmp_path / "in.csv", HEADER, f"d1abc,us-east-1,{UP},")
    server.emulator.script("d1abc", [code, "ok"])
    summary = await run_batch(path, fast(tmp_path, endpoint_url=server.url), session=session)
    (result,) = summary.results or []
    assert result.status is Status.FAILED
    assert result.attempts == 1
    assert result.http_status == int(code)


async def test_200_with_error_field_is_a_response_error(
    tmp_path: Path, server: EmulatorServer, session: Any
) -> None:
    path = write_csv(tmp_path / "in.csv", HEADER, f"d1abc,us-east-1,{UP},")
    server.emulator.script("d1abc", ["error:backend is being deleted"])
    summary = await run_batch(path, fast(tmp_path, endpoint_url=server.url), session=session)
    (result,) = summary.results or []
    assert result.status is Status.FAILED
    assert result.error_code == "ResponseError"
    assert result.error_message == "backend is being deleted"
    assert result.http_status == 200
    assert result.attempts == 1


async def test_invalid_input_makes_no_call_and_reports_every_row(
    tmp_path: Path, server: EmulatorServer, session: Any
) -> None:
    config = fast(tmp_path, endpoint_url=server.url)
    summary = await run_batch(INVALID_EXAMPLE, config, session=session)

    assert server.emulator.request_count == 0
    assert summary.exit_code == 1
    records = assert_every_line_once(config.output.report_path, INVALID_EXAMPLE)  # type: ignore[arg-type]
    statuses = Counter(r["status"] for r in records)
    assert statuses == {"invalid": 17, "not_attempted": 6, "skipped": 1}
    reasons = {int(r["line"]): r["error_message"] for r in records}
    assert reasons[23] == "duplicate of line 3"
    assert reasons[4].startswith("conflicts with line 24")
    assert "--skip-invalid" in reasons[2]


async def test_skip_invalid_sends_the_valid_rows(
    tmp_path: Path, server: EmulatorServer, session: Any
) -> None:
    config = fast(tmp_path, endpoint_url=server.url, skip_invalid=True)
    summary = await run_batch(INVALID_EXAMPLE, config, session=session)
    assert summary.counts[Status.SUCCEEDED] == 6
    assert server.emulator.request_count == 6
    assert server.emulator.apps == expected_state(INVALID_EXAMPLE) | {}
    assert summary.exit_code == 1  # invalid rows remain


async def test_dry_run_sends_nothing(tmp_path: Path, server: EmulatorServer, session: Any) -> None:
    config = fast(tmp_path, endpoint_url=server.url, dry_run=True)
    summary = await run_batch(EXAMPLE, config, session=session)
    assert server.emulator.request_count == 0
    assert summary.counts[Status.DRY_RUN] == 50
    assert summary.exit_code == 0
    records = read_report(config.output.report_path)  # type: ignore[arg-type]
    assert {r["status"] for r in records} == {"dry_run"}
    assert all(len(r["settings_digest"]) == 16 for r in records)


def test_requests_respect_rate_and_burst_in_every_window(tmp_path: Path, session: Any) -> None:
    rate, burst = 20.0, 2
    rows = [f"d{i}abc,us-east-1,{UP}," for i in range(30)]

    async def scenario() -> list[float]:
        async with EmulatorServer() as server:
            config = fast(tmp_path, endpoint_url=server.url, rate=rate, burst=burst, concurrency=8)
            await run_batch(write_csv(tmp_path / "in.csv", HEADER, *rows), config, session=session)
            return sorted(record.time for record in server.emulator.requests)

    times = virtual_time.run(scenario())  # on virtual time: arrival times are exact
    assert len(times) == 30
    assert times[-1] - times[0] == pytest.approx((30 - burst) / rate)  # no slower than the rate
    for i in range(len(times)):
        for j in range(i + 1, len(times)):
            assert j - i + 1 <= rate * (times[j] - times[i]) + burst + 1e-6


def test_a_request_delayed_on_its_way_to_the_wire_does_not_bring_the_next_one_closer(
    tmp_path: Path, session: Any
) -> None:
    # Every other request takes 10 ms longer between its slot and the wire (signing, a busy
    # event loop): paced from the slots alone, the next one would reach a burst-1 service
    # 40 ms after it, under the 50 ms the service allows, and be refused.
    rate, rows = 20.0, [f"d{i}abc,us-east-1,{UP}," for i in range(20)]
    signed = 0

    async def slow_signing(**_: Any) -> None:
        nonlocal signed
        signed += 1
        if signed % 2:
            await asyncio.sleep(0.01)

    session.events.register("before-sign.amplifybackend.UpdateBackendConfig", slow_signing)

    async def scenario() -> tuple[Any, list[float]]:
        async with EmulatorServer(EmulatorConfig(rate=rate, burst=1)) as server:
            config = fast(tmp_path, endpoint_url=server.url, rate=rate, concurrency=8)
            path = write_csv(tmp_path / "in.csv", HEADER, *rows)
            summary = await run_batch(path, config, session=session)
            return summary, sorted(record.time for record in server.emulator.requests)

    summary, times = virtual_time.run(scenario())
    assert summary.throttles == 0
    assert summary.counts[Status.SUCCEEDED] == 20
    assert min(b - a for a, b in itertools.pairwise(times)) >= 1 / rate - 1e-9


async def test_results_stream_to_the_callback_and_the_jsonl_report(
    tmp_path: Path, server: EmulatorServer, session: Any
) -> None:
    seen: list[RowResult] = []
    config = fast(tmp_path, endpoint_url=server.url, report_path=tmp_path / "r.jsonl")
    summary = await run_batch(EXAMPLE, config, session=session, on_result=seen.append)
    assert len(seen) == 50
    assert seen == summary.results
    records = read_report(tmp_path / "r.jsonl")
    assert len(records) == 50
    assert records[0]["attempts"] == 1  # JSON keeps types
    assert records[0]["status"] == "succeeded"


async def test_rows_as_mappings_and_region_from_the_session(
    tmp_path: Path, server: EmulatorServer, session: Any
) -> None:
    rows = [{"AppId": "d1abc", "AwsUserPoolsId": UP}, {"app_id": "d2abc", "user_pool_id": UP}]
    summary = await run_batch(rows, fast(tmp_path, endpoint_url=server.url), session=session)
    assert summary.counts[Status.SUCCEEDED] == 2
    assert {r.region for r in summary.results or []} == {"us-east-1"}


async def test_endpoint_from_the_standard_environment_variable(
    tmp_path: Path, server: EmulatorServer, session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_AMPLIFYBACKEND", server.url)
    path = write_csv(tmp_path / "in.csv", HEADER, f"d1abc,us-east-1,{UP},")
    summary = await run_batch(path, fast(tmp_path), session=session)
    assert summary.counts[Status.SUCCEEDED] == 1
    assert server.emulator.request_count == 1


async def test_transport_failure_is_retried_then_reported(tmp_path: Path, session: Any) -> None:
    path = write_csv(tmp_path / "in.csv", HEADER, f"d1abc,us-east-1,{UP},")
    # Port 9 (discard) on loopback: nothing listens, the connection is refused.
    config = fast(tmp_path, endpoint_url="http://127.0.0.1:9", max_attempts=3)
    summary = await run_batch(path, config, session=session)
    (result,) = summary.results or []
    assert result.status is Status.FAILED
    assert result.attempts == 3
    assert result.error_code == "EndpointConnectionError"
    assert result.http_status is None


async def test_no_region_anywhere_is_a_setup_error(tmp_path: Path, session: Any) -> None:
    no_region = aioboto3.Session(aws_access_key_id="a", aws_secret_access_key="b")
    path = write_csv(tmp_path / "in.csv", "app_id,user_pool_id", f"d1abc,{UP}")
    with pytest.raises(SetupError, match="line 2: no region"):
        await run_batch(path, fast(tmp_path), session=no_region)
    assert not (tmp_path / "report.csv").exists()


async def test_no_credentials_is_a_setup_error_before_any_call(
    tmp_path: Path, server: EmulatorServer
) -> None:
    path = write_csv(tmp_path / "in.csv", HEADER, f"d1abc,us-east-1,{UP},")
    with pytest.raises(SetupError, match="no AWS credentials"):
        await run_batch(
            path,
            fast(tmp_path, endpoint_url=server.url),
            session=aioboto3.Session(region_name="us-east-1"),
        )
    assert server.emulator.request_count == 0


async def test_local_mode_runs_against_the_embedded_emulator(tmp_path: Path) -> None:
    summary = await run_batch(EXAMPLE, fast(tmp_path, local=True))
    assert summary.counts[Status.SUCCEEDED] == 50
    assert summary.settings["local"] is True


async def test_local_mode_keeps_no_record_per_request_so_its_memory_stays_flat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[EmulatorServer] = []

    class Spy(EmulatorServer):
        def __init__(self, config: EmulatorConfig | None = None) -> None:
            super().__init__(config)
            made.append(self)

    monkeypatch.setattr(emulator_module, "EmulatorServer", Spy)
    summary = await run_batch(EXAMPLE, fast(tmp_path, local=True))
    assert summary.counts[Status.SUCCEEDED] == 50
    (server,) = made
    assert server.emulator.request_count == 50  # counted...
    assert server.emulator.requests == []  # ...not kept


def test_rows_throttled_by_a_real_server_limit_succeed_with_more_attempts(
    tmp_path: Path, session: Any
) -> None:
    rows = [f"d{i}abc,us-east-1,{UP}," for i in range(20)]
    path = write_csv(tmp_path / "in.csv", HEADER, *rows)
    config = fast(tmp_path, concurrency=8, backoff_base=0.05, backoff_cap=0.2, max_attempts=10)

    async def scenario() -> tuple[Any, list[float]]:
        async with EmulatorServer(EmulatorConfig(rate=100, burst=2)) as server:
            summary = await run_batch(
                path, replace(config, endpoint_url=server.url), session=session
            )
            assert server.emulator.status_counts()[429] == summary.throttles
            return summary, [r.time for r in server.emulator.requests if r.status == 200]

    summary, admitted = virtual_time.run(scenario())
    assert summary.counts[Status.SUCCEEDED] == 20
    assert summary.throttles > 0
    assert max(r.attempts for r in summary.results or []) > 1
    assert summary.requests == 20 + summary.throttles
    # The service's limit held for what it let through: at most rate * t + burst.
    for i in range(len(admitted)):
        for j in range(i + 1, len(admitted)):
            assert j - i + 1 <= 100 * (admitted[j] - admitted[i]) + 2 + 1e-6


def test_adaptive_rate_settles_under_a_lower_server_limit(tmp_path: Path, session: Any) -> None:
    rows = [f"d{i}abc,us-east-1,{UP}," for i in range(150)]
    path = write_csv(tmp_path / "in.csv", HEADER, *rows)
    config = fast(tmp_path, rate=1000, burst=1, concurrency=16, backoff_base=0.05)

    async def scenario() -> Any:
        async with EmulatorServer(EmulatorConfig(rate=100, burst=5)) as server:
            return await run_batch(path, replace(config, endpoint_url=server.url), session=session)

    with structlog.testing.capture_logs() as logs:
        summary = virtual_time.run(scenario())
    assert summary.counts[Status.SUCCEEDED] == 150
    settled = summary.to_json()["rate_per_region"]["us-east-1"]
    assert settled < 200  # came down from 1000 towards the service's 100/s
    assert summary.throttles < 0.25 * summary.requests
    changes = [e for e in logs if e["event"] == "rate_changed"]
    assert changes
    assert changes[0]["old_rate"] == 1000
    assert changes[0]["reason"] == "throttled"


def test_no_adaptive_keeps_the_configured_rate(tmp_path: Path, session: Any) -> None:
    path = write_csv(tmp_path / "in.csv", HEADER, *(f"d{i}abc,us-east-1,{UP}," for i in range(40)))
    config = fast(
        tmp_path, rate=1000, adaptive=False, backoff_base=0.05, backoff_cap=0.5, max_attempts=12
    )

    async def scenario() -> Any:
        async with EmulatorServer(EmulatorConfig(rate=200, burst=2)) as server:
            return await run_batch(path, replace(config, endpoint_url=server.url), session=session)

    summary = virtual_time.run(scenario())
    assert summary.counts[Status.SUCCEEDED] == 40
    assert summary.throttles > 0
    assert summary.to_json()["rate_per_region"] == {"us-east-1": 1000}
