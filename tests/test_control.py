"""RunControl's two verbs, and the stop policy that owns the stop rules."""

from __future__ import annotations

import asyncio

import structlog

from batch_updater.breaker import ENDPOINT_UNREACHABLE, BreakerSettings
from batch_updater.control import FailureRules, RunControl, StopReason
from batch_updater.policy import StopPolicy
from batch_updater.results import RowResult, Status

SIGINT = StopReason("signal", "received SIGINT", 2)


def _policy(control: RunControl, max_failures: int | None = None) -> StopPolicy:
    return StopPolicy(
        control,
        FailureRules(0.5, 100, max_failures),
        breaker=BreakerSettings(),
        log=structlog.get_logger(),
    )


def test_stop_lets_calls_in_flight_finish_and_a_second_stop_cancels_them() -> None:
    control = RunControl()
    control.stop(SIGINT)
    assert (control.stopping, control.hurry) == (True, False)
    control.stop(SIGINT)
    assert control.hurry
    assert control.reason == SIGINT


def test_cancel_cancels_the_calls_in_flight_at_once() -> None:
    control = RunControl()
    control.cancel(StopReason("cancelled", "the task was cancelled"))
    assert (control.stopping, control.hurry) == (True, True)


async def test_a_stop_from_a_signal_handler_wakes_the_run_waiting_in_its_loop() -> None:
    control = RunControl()
    control.claim()
    waiting = asyncio.create_task(control.wait_stop())
    await asyncio.sleep(0)
    control.stop(SIGINT)  # as a signal handler would: the flag at once, the wake-up after
    assert control.stopping
    await asyncio.wait_for(waiting, timeout=10)  # bounds a hang only


async def test_a_control_stopped_before_its_run_starts_stops_the_run_at_once() -> None:
    control = RunControl()
    control.stop(SIGINT)
    control.claim()
    await asyncio.wait_for(control.wait_stop(), timeout=10)  # bounds a hang only


def test_the_stop_policy_stops_on_a_rule_and_names_it_in_unsent_rows() -> None:
    control = RunControl()
    policy = _policy(control, max_failures=0)
    assert policy.not_started() == "not started"
    policy.record(RowResult(2, "d1", "us-east-1", Status.FAILED, error_code="BadRequest"))
    assert control.reason is not None
    assert control.reason.kind == "max_failures"
    assert not control.hurry  # a rule lets calls in flight finish
    assert policy.not_started() == "not started: run stopped (max_failures)"


def test_rows_not_sent_because_every_lane_is_down_say_the_endpoint_was_unreachable() -> None:
    policy = _policy(RunControl())
    policy.halt(StopReason(ENDPOINT_UNREACHABLE, "down everywhere"))
    assert policy.not_started().startswith("not sent: ")
    assert "unreachable" in policy.not_started()


def test_only_sent_rows_count_towards_the_stop_rules() -> None:
    control = RunControl()
    policy = _policy(control, max_failures=0)
    policy.record(RowResult(2, "d1", "us-east-1", Status.NOT_ATTEMPTED))
    policy.record(RowResult(3, "d2", "us-east-1", Status.INVALID))
    assert not control.stopping
