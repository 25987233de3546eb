"""Input and reports on S3, end to end against moto's server (real HTTP, signing, errors).

AmplifyBackend calls go to the emulator; S3 requests to moto (``AWS_ENDPOINT_URL_S3``, set by
the ``moto`` fixture). Subprocess tests wait for a line from the child, never a fixed sleep;
checkpoint timing runs on an injected clock.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from batch_updater import RunConfig, Status, run_batch
from batch_updater.cli import main
from batch_updater.emulator import EmulatorConfig, EmulatorServer
from batch_updater.errors import SetupError
from batch_updater.report import ReportWriter
from batch_updater.results import RowResult
from batch_updater.s3 import S3Location, S3Report, S3Store, to_location

from .child_process import HANG_SECONDS, StderrLines
from .conftest import EXAMPLE, SECRET_KEY
from .moto_server import MotoServer

BUCKET = "jobs-bucket"
HEADER = "app_id,region,user_pool_id"
UP = "us-east-1_AbC123xyz"
CLI = [sys.executable, "-m", "batch_updater"]


def csv_rows(n: int) -> bytes:
    return ("\n".join([HEADER, *(f"d{i}abc,us-east-1,{UP}" for i in range(n))]) + "\n").encode()


@pytest.fixture
def s3(moto: MotoServer) -> Any:
    """A boto3 client on moto (the test's own look at the bucket) with the bucket made."""
    client = boto3.client(
        "s3",
        endpoint_url=moto.url,
        region_name="us-east-1",
        aws_access_key_id="AKIATESTKEY",
        aws_secret_access_key=SECRET_KEY,
    )
    client.create_bucket(Bucket=BUCKET)
    return client


def get(s3: Any, key: str) -> bytes:
    data: bytes = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return data


def records(s3: Any, key: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(get(s3, key).decode())))


def keys(s3: Any, prefix: str = "") -> list[str]:
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"] for item in listed.get("Contents", ()))


def config(**kw: Any) -> RunConfig:
    base: dict[str, Any] = {"rate": 0, "backoff_base": 0.001, "backoff_cap": 0.01}
    return RunConfig.from_flat(**{**base, **kw})


# -- locations ---------------------------------------------------------------------------


def test_an_s3_url_is_a_bucket_and_a_key_and_a_trailing_slash_makes_a_prefix() -> None:
    loc = S3Location.parse("s3://my-bucket/jobs/apps.csv")
    assert (loc.bucket, loc.key, loc.name, loc.stem, loc.prefix) == (
        "my-bucket",
        "jobs/apps.csv",
        "apps.csv",
        "apps",
        "jobs/",
    )
    assert not loc.is_prefix
    assert str(loc) == "s3://my-bucket/jobs/apps.csv"
    assert str(loc.summary()) == "s3://my-bucket/jobs/apps.csv.summary.json"
    assert S3Location.parse("s3://my-bucket/jobs/").is_prefix
    assert to_location("reports/x.csv") == Path("reports/x.csv")
    assert RunConfig(output="s3://my-bucket/r.csv").output.report_path == S3Location(
        "my-bucket", "r.csv"
    )
    assert RunConfig.from_flat(resume=["s3://my-bucket/a.csv", "b.csv"]).output.resume == (
        S3Location("my-bucket", "a.csv"),
        Path("b.csv"),
    )


@pytest.mark.parametrize("text", ["s3://", "s3:///key", "s3://ab/key"])
def test_an_s3_url_without_a_valid_bucket_is_refused(text: str) -> None:
    with pytest.raises(SetupError, match="bucket"):
        S3Location.parse(text)


def test_a_report_on_s3_needs_a_known_extension_too() -> None:
    with pytest.raises(SetupError, match=r"\.csv"):
        RunConfig(output="s3://my-bucket/report.txt")


# -- runs --------------------------------------------------------------------------------


async def test_a_run_reads_its_input_from_s3_and_writes_report_and_summary_to_s3(
    s3: Any, server: EmulatorServer, session: Any
) -> None:
    s3.put_object(Bucket=BUCKET, Key="in/apps.csv", Body=csv_rows(30))
    summary = await run_batch(
        f"s3://{BUCKET}/in/apps.csv",
        config(endpoint_url=server.url, report_path=f"s3://{BUCKET}/out/r.csv"),
        session=session,
    )
    assert summary.counts[Status.SUCCEEDED] == 30
    assert summary.exit_code == 0
    report = records(s3, "out/r.csv")
    assert sorted(int(r["line"]) for r in report) == list(range(2, 32))
    assert {r["status"] for r in report} == {"succeeded"}
    written = json.loads(get(s3, "out/r.csv.summary.json"))
    assert written["report"] == f"s3://{BUCKET}/out/r.csv"
    assert written["exit_code"] == 0
    assert written["settings"]["input"] == f"s3://{BUCKET}/in/apps.csv"
    assert server.emulator.request_count == 30


async def test_a_jsonl_report_on_s3_keeps_its_format(
    s3: Any, server: EmulatorServer, session: Any
) -> None:
    summary = await run_batch(
        EXAMPLE,
        config(endpoint_url=server.url, report_path=f"s3://{BUCKET}/r.jsonl"),
        session=session,
    )
    lines = get(s3, "r.jsonl").decode().splitlines()
    assert len(lines) == summary.rows == 50
    assert json.loads(lines[0])["attempts"] == 1


async def test_the_default_report_of_an_s3_input_goes_under_its_prefix(
    s3: Any, server: EmulatorServer, session: Any
) -> None:
    s3.put_object(Bucket=BUCKET, Key="team/jobs/apps.csv", Body=csv_rows(3))
    summary = await run_batch(
        f"s3://{BUCKET}/team/jobs/apps.csv", config(endpoint_url=server.url), session=session
    )
    report = str(summary.report_path)
    assert re.fullmatch(rf"s3://{BUCKET}/team/jobs/reports/apps-\d{{8}}T\d{{6}}Z\.csv", report)
    key = report.removeprefix(f"s3://{BUCKET}/")
    assert keys(s3, "team/jobs/reports/") == [key, key + ".summary.json"]
    assert len(records(s3, key)) == 3


async def test_a_default_report_name_taken_on_s3_moves_on_to_the_next(
    s3: Any, session: Any
) -> None:
    s3.put_object(Bucket=BUCKET, Key="reports/apps-x.csv", Body=b"theirs")
    async with S3Store(session) as store:
        report = S3Report(store, S3Location(BUCKET, "reports/apps-x.csv"), 60.0)
        writer = ReportWriter(report.local)
        await report.start(writer, pick_name=True)
        writer.close()
        assert await report.finish() is None
    assert report.location == S3Location(BUCKET, "reports/apps-x-2.csv")
    assert get(s3, "reports/apps-x.csv") == b"theirs"
    assert get(s3, "reports/apps-x-2.csv").startswith(b"line,app_id,")


async def test_an_existing_report_object_is_refused_before_any_request(
    s3: Any, server: EmulatorServer, session: Any
) -> None:
    s3.put_object(Bucket=BUCKET, Key="r.csv", Body=b"keep me\n")
    s3.put_object(Bucket=BUCKET, Key="r.csv.summary.json", Body=b"{}")
    given = config(endpoint_url=server.url, report_path=f"s3://{BUCKET}/r.csv")
    with pytest.raises(SetupError, match=f"the report s3://{BUCKET}/r.csv already exists"):
        await run_batch(EXAMPLE, given, session=session)
    assert server.emulator.request_count == 0
    assert get(s3, "r.csv") == b"keep me\n"

    summary = await run_batch(EXAMPLE, given.with_settings(overwrite=True), session=session)
    assert summary.exit_code == 0
    assert len(records(s3, "r.csv")) == 50
    assert json.loads(get(s3, "r.csv.summary.json"))["rows"] == 50  # the old one is gone


async def test_a_run_that_never_starts_leaves_no_report_object(s3: Any, session: Any) -> None:
    async with S3Store(session) as store:
        report = S3Report(store, S3Location(BUCKET, "r.csv"), 60.0)
        writer = ReportWriter(report.local)
        await report.start(writer)
        assert keys(s3) == ["r.csv"]  # claimed before the first row
        writer.discard()
        await report.discard()  # what the runner does on a setup error before any call
    assert keys(s3) == []
    assert not report.local.parent.exists()


def test_a_missing_bucket_is_one_line_naming_it(
    moto: MotoServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    code = main(["run", "s3://no-such-bucket/apps.csv", "--local", "--region", "us-east-1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert "s3://no-such-bucket/apps.csv: no such bucket 'no-such-bucket'" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("in", "s3://jobs-bucket/in is a prefix (a folder), not an object"),
        ("in/", "s3://jobs-bucket/in/ is a prefix (a folder), not an object"),
        ("In/apps.csv", "s3://jobs-bucket/In/apps.csv: no such object"),
    ],
)
def test_an_input_key_that_is_a_prefix_or_missing_is_one_line(
    s3: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    key: str,
    message: str,
) -> None:
    s3.put_object(Bucket=BUCKET, Key="in/apps.csv", Body=csv_rows(1))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    code = main(["run", f"s3://{BUCKET}/{key}", "--local", "--region", "us-east-1"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.count("\n") == 1, err


async def test_access_denied_and_an_expired_token_say_what_to_fix() -> None:
    store = S3Store(None)
    loc = S3Location(BUCKET, "r.csv")

    def error(code: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": "no"}}, "PutObject")

    denied = str(store._error("put", loc, error("AccessDenied")))
    assert denied == (
        f"cannot write s3://{BUCKET}/r.csv: access denied; the credentials need "
        f"s3:PutObject on arn:aws:s3:::{BUCKET}/r.csv"
    )
    expired = str(store._error("get", loc, error("ExpiredToken")))
    assert expired.startswith(f"cannot read s3://{BUCKET}/r.csv: the credentials expired")
    assert "refresh them" in expired


async def test_an_input_changed_during_the_run_is_reported_and_no_row_is_lost(
    s3: Any, server: EmulatorServer, session: Any
) -> None:
    s3.put_object(Bucket=BUCKET, Key="apps.csv", Body=csv_rows(20))
    replaced: list[int] = []

    def replace_once(result: RowResult) -> None:
        if not replaced:  # the object changes while the run is going on
            s3.put_object(Bucket=BUCKET, Key="apps.csv", Body=csv_rows(5))
            replaced.append(result.line)

    summary = await run_batch(
        f"s3://{BUCKET}/apps.csv",
        config(endpoint_url=server.url, report_path=f"s3://{BUCKET}/r.csv"),
        session=session,
        on_result=replace_once,
    )
    assert replaced
    assert summary.counts[Status.SUCCEEDED] == 20  # the version read at the start, whole
    assert summary.input_problem is not None
    assert "the input changed during the run" in summary.input_problem
    assert f"--resume s3://{BUCKET}/r.csv" in summary.input_problem
    assert summary.exit_code == 1
    assert sorted(int(r["line"]) for r in records(s3, "r.csv")) == list(range(2, 22))
    assert json.loads(get(s3, "r.csv.summary.json"))["input_problem"] == summary.input_problem


async def test_an_input_replaced_between_head_and_get_is_read_again_whole(
    s3: Any, session: Any
) -> None:
    s3.put_object(Bucket=BUCKET, Key="apps.csv", Body=csv_rows(2))

    class ReplacedAfterTheFirstHead(S3Store):
        __slots__ = ()

        async def head(self, location: S3Location) -> dict[str, Any]:
            answer = await super().head(location)
            if self.requests == 1:
                s3.put_object(Bucket=BUCKET, Key="apps.csv", Body=csv_rows(4))
            return answer

    async with ReplacedAfterTheFirstHead(session) as store:
        copy = io.BytesIO()
        await store.download(S3Location(BUCKET, "apps.csv"), copy)
    assert store.requests == 4  # HEAD, GET refused (412), HEAD, GET
    assert copy.getvalue() == csv_rows(4)  # never a mix, never the stale version


async def test_resume_from_an_s3_report_skips_what_succeeded(
    s3: Any, server: EmulatorServer, session: Any
) -> None:
    s3.put_object(Bucket=BUCKET, Key="apps.csv", Body=csv_rows(10))
    first = config(endpoint_url=server.url, report_path=f"s3://{BUCKET}/first.csv")
    await run_batch(f"s3://{BUCKET}/apps.csv", first, session=session)
    s3.put_object(Bucket=BUCKET, Key="apps.csv", Body=csv_rows(12))
    second = config(
        endpoint_url=server.url,
        report_path=f"s3://{BUCKET}/second.csv",
        resume=[f"s3://{BUCKET}/first.csv"],
    )
    summary = await run_batch(f"s3://{BUCKET}/apps.csv", second, session=session)
    assert summary.counts[Status.SKIPPED] == 10
    assert summary.counts[Status.SUCCEEDED] == 2
    assert server.emulator.request_count == 12
    notes = [r["error_message"] for r in records(s3, "second.csv") if r["status"] == "skipped"]
    assert len(notes) == 10
    assert all(note.startswith(f"succeeded in s3://{BUCKET}/first.csv at ") for note in notes)


async def test_resume_into_the_s3_report_it_resumes_from(
    s3: Any, server: EmulatorServer, session: Any
) -> None:
    s3.put_object(Bucket=BUCKET, Key="apps.csv", Body=csv_rows(5))
    here = f"s3://{BUCKET}/r.csv"
    await run_batch(
        f"s3://{BUCKET}/apps.csv",
        config(endpoint_url=server.url, report_path=here),
        session=session,
    )
    s3.put_object(Bucket=BUCKET, Key="apps.csv", Body=csv_rows(8))
    summary = await run_batch(
        f"s3://{BUCKET}/apps.csv",
        config(endpoint_url=server.url, report_path=here, resume=[here]),
        session=session,
    )
    assert (summary.counts[Status.SKIPPED], summary.counts[Status.SUCCEEDED]) == (5, 3)
    assert Counter(r["status"] for r in records(s3, "r.csv")) == {"skipped": 5, "succeeded": 3}
    assert json.loads(get(s3, "r.csv.summary.json"))["rows"] == 8


# -- checkpoints -------------------------------------------------------------------------


class _Clock:
    """An injected sleep: each call waits until the test lets one checkpoint interval pass."""

    __slots__ = ("_next", "asked", "sleeping")

    def __init__(self) -> None:
        self.asked: list[float] = []
        self.sleeping: asyncio.Queue[asyncio.Future[None]] = asyncio.Queue()
        self._next: asyncio.Future[None] | None = None

    async def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)
        woken = asyncio.get_running_loop().create_future()
        self.sleeping.put_nowait(woken)
        await woken

    async def tick(self) -> None:
        """Let one interval pass; return once the checkpoint after it is done (the
        checkpoint loop sleeps again)."""
        woken = self._next or await self.sleeping.get()
        woken.set_result(None)
        self._next = await self.sleeping.get()


def _result(line: int) -> RowResult:
    return RowResult(line=line, app_id=f"d{line}abc", region="us-east-1", status=Status.SUCCEEDED)


async def test_checkpoints_upload_every_interval_only_what_is_new_and_the_rest_at_the_end(
    s3: Any, session: Any
) -> None:
    clock = _Clock()
    async with S3Store(session) as store:
        report = S3Report(store, S3Location(BUCKET, "r.csv"), 60.0, sleep=clock.sleep)
        writer = ReportWriter(report.local)
        await report.start(writer)
        assert records(s3, "r.csv") == []  # claimed: the header is there before any row
        after_claim = store.requests

        writer.write(_result(2))
        await clock.tick()
        assert [r["line"] for r in records(s3, "r.csv")] == ["2"]
        await clock.tick()  # nothing new: no upload
        assert store.requests == after_claim + 1
        writer.write(_result(3))
        writer.write(_result(4))
        await clock.tick()
        assert [r["line"] for r in records(s3, "r.csv")] == ["2", "3", "4"]
        writer.write(_result(5))
        writer.close()
        assert await report.finish() is None
        assert [r["line"] for r in records(s3, "r.csv")] == ["2", "3", "4", "5"]
        assert report.checkpoints == 3
        assert clock.asked == [60.0] * 4  # slept the interval each time, then was stopped


async def test_a_failed_upload_stops_the_run_and_names_the_kept_spool(
    s3: Any, session: Any
) -> None:
    clock = _Clock()
    errors: list[str] = []
    async with S3Store(session) as store:
        report = S3Report(store, S3Location(BUCKET, "r.csv"), 60.0, sleep=clock.sleep)
        writer = ReportWriter(report.local)
        await report.start(writer, errors.append)
        s3.delete_object(Bucket=BUCKET, Key="r.csv")
        s3.delete_bucket(Bucket=BUCKET)  # the bucket goes away mid-run
        writer.write(_result(2))
        await clock.tick()
        writer.close()
        error = await report.finish()
    assert len(errors) == 1  # the run heard of it at the checkpoint
    assert error == errors[0]  # and the last upload failed the same way
    assert error.startswith(f"s3://{BUCKET}/r.csv: no such bucket") or "NoSuchBucket" in error
    assert f"the report so far is kept at {report.local}" in error
    assert report.local.read_text().count("\n") == 2  # header and the row


# -- merge -------------------------------------------------------------------------------


def test_merge_reads_every_report_under_a_prefix_and_writes_to_s3(
    s3: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.chdir(tmp_path)
    s3.put_object(Bucket=BUCKET, Key="apps.csv", Body=csv_rows(40))
    for k in range(2):
        code = main(
            [
                "run",
                f"s3://{BUCKET}/apps.csv",
                "--local",
                "--rate",
                "0",
                "--shard",
                f"{k}/2",
                "--report",
                f"s3://{BUCKET}/shards/part-{k}.csv",
                "--no-progress",
                "--log-format",
                "console",
            ]
        )
        err = capsys.readouterr().err
        assert code == 0, err
        assert f"report:  s3://{BUCKET}/shards/part-{k}.csv\n" in err
        assert f"summary: s3://{BUCKET}/shards/part-{k}.csv.summary.json\n" in err
    code = main(
        [
            "merge",
            f"s3://{BUCKET}/shards/",
            "--input",
            f"s3://{BUCKET}/apps.csv",
            "--output",
            f"s3://{BUCKET}/merged.csv",
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert "merged 2 reports, 40 rows: 40 succeeded" in err
    assert f"report:  s3://{BUCKET}/merged.csv" in err
    assert f"summary: s3://{BUCKET}/merged.csv.summary.json" in err
    merged = records(s3, "merged.csv")
    assert [int(r["line"]) for r in merged] == list(range(2, 42))
    summary = json.loads(get(s3, "merged.csv.summary.json"))
    assert summary["input"] == f"s3://{BUCKET}/apps.csv"
    assert summary["summaries_missing"] == []
    assert summary["exit_code"] == 0

    code = main(["merge", f"s3://{BUCKET}/shards/", "--output", f"s3://{BUCKET}/merged.csv"])
    assert code == 2
    assert f"the merged report s3://{BUCKET}/merged.csv already exists" in capsys.readouterr().err


# -- the CLI in a subprocess -------------------------------------------------------------


class ThreadedEmulator:
    """The emulator on its own loop in a thread of the test process: a child process calls
    it, and the test counts the requests it received."""

    __slots__ = ("_loop", "_stop", "_thread", "server", "url")

    def __init__(self, config: EmulatorConfig) -> None:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None

        async def serve() -> None:
            self._stop = asyncio.Event()
            async with EmulatorServer(config) as server:
                self.server, self.url = server, server.url
                ready.set()
                await self._stop.wait()

        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(serve(),))
        self._thread.start()
        assert ready.wait(HANG_SECONDS)

    def counts(self) -> Counter[str]:
        """Requests received per app id (read on the emulator's own loop)."""
        future = asyncio.run_coroutine_threadsafe(self._counts(), self._loop)
        return future.result(HANG_SECONDS)

    async def _counts(self) -> Counter[str]:
        return Counter(record.app_id for record in self.server.emulator.requests)

    def stop(self) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(HANG_SECONDS)
        self._loop.close()


@pytest.fixture
def emulator() -> Iterator[ThreadedEmulator]:
    running = ThreadedEmulator(EmulatorConfig(latency_ms=20))
    yield running
    running.stop()


@pytest.fixture
def env(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAPROCESSTEST1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return dict(os.environ)


def start(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], StderrLines]:
    proc = subprocess.Popen(
        [*CLI, "run", *args, "--log-format", "json", "--progress-interval", "0.1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, StderrLines(proc)


def test_sigterm_mid_run_leaves_the_whole_report_and_its_summary_in_s3(
    s3: Any, env: dict[str, str], emulator: ThreadedEmulator
) -> None:
    n = 300
    s3.put_object(Bucket=BUCKET, Key="apps.csv", Body=csv_rows(n))
    proc, stderr = start(
        env,
        f"s3://{BUCKET}/apps.csv",
        "--endpoint-url",
        emulator.url,
        "--rate",
        "60",
        "--report",
        f"s3://{BUCKET}/r.csv",
    )
    stderr.wait_for_event("progress", lambda fields: fields["done"] >= 20)
    proc.send_signal(signal.SIGTERM)
    err = stderr.rest()
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    report = records(s3, "r.csv")
    assert sorted(int(r["line"]) for r in report) == list(range(2, n + 2))  # every row once
    assert {r["status"] for r in report} == {"succeeded", "not_attempted"}
    summary = json.loads(get(s3, "r.csv.summary.json"))
    assert summary["exit_code"] == 143
    assert summary["stopped"]["reason"] == "signal"
    assert f"--resume s3://{BUCKET}/r.csv" in summary["resume_command"]


def test_kill_9_then_resume_from_the_s3_checkpoint_sends_no_succeeded_row_twice(
    s3: Any, env: dict[str, str], emulator: ThreadedEmulator
) -> None:
    n = 300
    s3.put_object(Bucket=BUCKET, Key="apps.csv", Body=csv_rows(n))
    source, report = f"s3://{BUCKET}/apps.csv", f"s3://{BUCKET}/killed.csv"
    proc, stderr = start(
        env,
        source,
        "--endpoint-url",
        emulator.url,
        "--rate",
        "60",
        "--report",
        report,
        "--checkpoint-interval",
        "0.2",
    )
    stderr.wait_for_event("progress", lambda fields: fields["done"] >= 20)
    stderr.wait_for_event("report_uploaded", lambda fields: fields["bytes"] > 1000)
    proc.kill()
    stderr.rest()
    assert proc.returncode == -signal.SIGKILL
    checkpoint = records(s3, "killed.csv")
    done = {r["app_id"] for r in checkpoint if r["status"] == "succeeded"}
    assert len(done) >= 10
    assert not keys(s3, "killed.csv.summary.json")  # no summary: the report is not complete

    argv = ["run", source, "--endpoint-url", emulator.url, "--rate", "0", "--resume", report]
    resumed = subprocess.run(
        [*CLI, *argv, "--report", f"s3://{BUCKET}/after.csv"],
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    after = Counter(r["status"] for r in records(s3, "after.csv"))
    assert after == {"skipped": len(done), "succeeded": n - len(done)}
    sent = emulator.counts()
    assert all(sent[app] == 1 for app in done)  # a row the checkpoint has was not sent again
    assert set(sent) == {f"d{i}abc" for i in range(n)}
