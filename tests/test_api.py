"""The public surface: names, types, docs, packaging, and the example script."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest
import structlog

import batch_updater
from batch_updater import RowResult, Status

from .conftest import ROOT


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
        batch_updater.RunConfig(dry_run=True, report_path=tmp_path / "r.csv"),
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
        batch_updater.RunConfig(dry_run=True, report_path=tmp_path / "r.csv", run_id="mine-1"),
        logger=Collect(),
    )
    assert [e["event"] for e in events if e["level"] == "info"] == ["run_start", "run_end"]
    assert [e["event"] for e in events if e["level"] == "debug"] == ["validation_started"]
    assert {e["run_id"] for e in events} == {"mine-1"}
