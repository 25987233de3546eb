"""The public surface: names, types, docs, packaging, and the example script."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
import types
import zipfile
from pathlib import Path
from typing import Any

import pytest
import structlog

import batch_updater
from batch_updater import RowResult, Status

from .conftest import EXAMPLE, ROOT


def test_exported_names_equal___all__() -> None:
    exported = {
        name
        for name, value in vars(batch_updater).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert exported | {"__version__"} == set(batch_updater.__all__)
    assert sorted(batch_updater.__all__) == batch_updater.__all__


def test_every_public_name_has_a_docstring() -> None:
    for name in batch_updater.__all__:
        value = getattr(batch_updater, name)
        if name == "__version__":
            assert isinstance(value, str)
            continue
        assert inspect.getdoc(value), name


def test_results_are_frozen_dataclasses() -> None:
    result = RowResult(2, "d1abc", "us-east-1", Status.SUCCEEDED)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.attempts = 3  # type: ignore[misc]
    assert dataclasses.fields(RowResult)[0].name == "line"


def test_the_wheel_ships_the_package_types_and_the_console_script(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("batch_updater-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    assert "batch_updater/py.typed" in names
    assert "batch_updater/emulator.py" in names
    assert "batch-updater = batch_updater.cli:main" in scripts


def test_dockerfile_lint_multi_stage_non_root_with_the_cli_as_entrypoint() -> None:
    """A lint of the Dockerfile's text (no image is built): two slim stages, a non-root
    user, the CLI as entrypoint, every copied path present and let through .dockerignore."""
    text = (ROOT / "Dockerfile").read_text()
    froms = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert len(froms) == 2
    assert all("-slim" in line for line in froms)
    assert "USER 10001" in text
    assert 'ENTRYPOINT ["batch-updater"]' in text
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            for part in line.split()[1:-1]:
                assert (ROOT / part).exists(), part
    ignored = (ROOT / ".dockerignore").read_text()
    assert "!batch_updater/" in ignored


def test_the_library_example_runs_against_the_emulator() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "library_against_emulator.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr  # one app of three does not exist, on purpose
    assert "line 4: dmissing000001 failed NotFoundException" in done.stdout
    assert "succeeded 2, failed 1" in done.stdout


async def test_the_library_leaves_global_logging_alone(tmp_path: Path) -> None:
    assert not structlog.is_configured()
    summary = await batch_updater.run_batch(
        ROOT / "inputs" / "example.csv",
        batch_updater.RunConfig(dry_run=True, output=tmp_path / "r.csv"),
    )
    assert summary.counts[Status.DRY_RUN] == 50
    assert not structlog.is_configured()


async def test_a_caller_logger_gets_the_events(tmp_path: Path) -> None:
    events: list[dict[str, object]] = []

    class Collect:
        def __init__(self, bound: dict[str, object] | None = None) -> None:
            self.bound = bound or {}

        def bind(self, **kw: object) -> Collect:
            return Collect({**self.bound, **kw})

        def _log(self, level: str, event: str, **kw: object) -> None:
            events.append({"event": event, "level": level, **self.bound, **kw})

        def info(self, event: str, **kw: object) -> None:
            self._log("info", event, **kw)

        def debug(self, event: str, **kw: object) -> None:
            self._log("debug", event, **kw)

        warning = error = info

    await batch_updater.run_batch(
        ROOT / "inputs" / "example.csv",
        batch_updater.RunConfig(dry_run=True, output=tmp_path / "r.csv", run_id="mine-1"),
        logger=Collect(),
    )
    assert [e["event"] for e in events if e["level"] == "info"] == ["run_start", "run_end"]
    assert [e["event"] for e in events if e["level"] == "debug"] == ["validation_started"]
    assert {e["run_id"] for e in events} == {"mine-1"}


# -- library callers get clear errors --------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: batch_updater.run_batch_sync(123), "source: expected a CSV path"),  # type: ignore[arg-type]
        (
            lambda: batch_updater.run_batch_sync({"app_id": "d1"}),  # type: ignore[dict-item]
            "source: got one row (a mapping); pass a list of rows",
        ),
        (lambda: batch_updater.run_batch_sync(["d1,us-east-1"]), "source: row 0 is a str"),  # type: ignore[list-item]
        (
            lambda: batch_updater.run_batch_sync(EXAMPLE, {"dry_run": True}),  # type: ignore[arg-type]
            "config: expected a RunConfig (for a dict d: RunConfig(**d)), got dict",
        ),
        (
            lambda: batch_updater.run_batch_sync(EXAMPLE, session="nope"),
            "session: expected an aioboto3.Session, got str 'nope'",
        ),
        (
            lambda: batch_updater.run_batch_sync(EXAMPLE, logger=print),
            "logger: expected a structlog-style logger (with bind()), got builtin_function",
        ),
        (
            lambda: batch_updater.run_batch_sync(EXAMPLE, on_result="print"),  # type: ignore[arg-type]
            "on_result: expected a function",
        ),
        (
            lambda: batch_updater.RunConfig(rate="fast"),  # type: ignore[arg-type]
            "RunConfig.rate: expected a Rate or a number, got str 'fast'",
        ),
        (
            lambda: batch_updater.Rate(concurrency=2.5),  # type: ignore[arg-type]
            "Rate.concurrency: expected a whole number, got float 2.5",
        ),
        (
            lambda: batch_updater.RunConfig(stop=0.5),  # type: ignore[arg-type]
            "RunConfig.stop: expected a StopRules, got float 0.5",
        ),
        (lambda: batch_updater.Retries(max_attempts=0), "Retries.max_attempts: must be at least 1"),
        (
            lambda: batch_updater.RunConfig.from_flat(concurency=2),
            "RunConfig has no setting 'concurency'; did you mean 'concurrency'?",
        ),
        (
            lambda: batch_updater.RunConfig(dry_run="no"),  # type: ignore[arg-type]
            "RunConfig.dry_run: expected true or false",
        ),
        (
            lambda: batch_updater.Output(resume="old.csv"),  # type: ignore[arg-type]
            "Output.resume: expected a list or tuple",
        ),
        (
            lambda: batch_updater.RunConfig(output=7),  # type: ignore[arg-type]
            "RunConfig.output: expected an Output or a path (str, os.PathLike or "
            "s3://bucket/key), got int 7",
        ),
        (
            lambda: batch_updater.Output(report_path=7),  # type: ignore[arg-type]
            "Output.report_path: expected a path",
        ),
    ],
)
def test_arguments_of_the_wrong_type_raise_setup_error_naming_the_argument(
    call: Any, message: str
) -> None:
    with pytest.raises(batch_updater.SetupError) as info:
        call()
    assert message in str(info.value)


def test_str_paths_are_accepted_wherever_a_path_is_meant(tmp_path: Path) -> None:
    first = str(tmp_path / "first.csv")
    config = batch_updater.RunConfig(dry_run=True, output=first, rate=5)  # type: ignore[arg-type]
    assert config.output.report_path == Path(first)
    assert isinstance(config.rate.rate, float)
    summary = batch_updater.run_batch_sync(str(EXAMPLE), config)
    assert summary.counts[Status.DRY_RUN] == 50
    resumed = batch_updater.RunConfig(
        dry_run=True,
        output=batch_updater.Output(tmp_path / "second.csv", resume=[first]),  # type: ignore[arg-type]
    )
    assert resumed.output.resume == (Path(first),)
    assert batch_updater.run_batch_sync(EXAMPLE, resumed).rows == 50


async def test_run_batch_sync_inside_a_running_loop_says_to_await_run_batch() -> None:
    with pytest.raises(RuntimeError, match=r"use `await run_batch\(\.\.\.\)`"):
        batch_updater.run_batch_sync(EXAMPLE, batch_updater.RunConfig(dry_run=True))


async def test_a_run_control_serves_one_run(tmp_path: Path) -> None:
    control = batch_updater.RunControl()
    config = batch_updater.RunConfig(dry_run=True, output=tmp_path / "a.csv")
    await batch_updater.run_batch(EXAMPLE, config, control=control)
    control.stop(batch_updater.StopReason("cancelled", "done with it"))
    again = batch_updater.RunConfig(dry_run=True, output=tmp_path / "b.csv")
    with pytest.raises(batch_updater.SetupError, match="already used by a run"):
        await batch_updater.run_batch(EXAMPLE, again, control=control)
    assert not (tmp_path / "b.csv").exists()


async def test_a_control_stopped_before_its_run_stops_the_run_at_once(tmp_path: Path) -> None:
    control = batch_updater.RunControl()
    control.stop(batch_updater.StopReason("cancelled", "changed my mind"))
    config = batch_updater.RunConfig(output=tmp_path / "r.csv", region="us-east-1")
    summary = await batch_updater.run_batch(EXAMPLE, config, control=control)
    assert summary.counts[Status.NOT_ATTEMPTED] == 50
    assert summary.requests == 0
