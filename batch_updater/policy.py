"""When a run stops: the stop rules over finished rows, and the run's own failures.

:class:`StopPolicy` is the one place that decides to stop a run; it stops it through the
run's :class:`~batch_updater.control.RunControl`, which also carries the stops asked from
outside (a caller, a signal).
"""

from __future__ import annotations

from typing import Any

from .breaker import ENDPOINT_UNREACHABLE, BreakerSettings
from .control import FailureRules, RunControl, StopReason
from .results import RowResult, Status

__all__ = ["StopPolicy", "unreachable_note"]


def unreachable_note(settings: BreakerSettings) -> str:
    """The message of a row not sent (or not finished) because its lane is down."""
    return f"{settings.unreachable()}; re-running the row is safe"


class StopPolicy:
    """Applies the stop rules to each finished row and stops the run when one fires.

    :meth:`halt` stops the run as a stop rule does (rows in flight get the grace period);
    :meth:`abort` stops it and cancels the calls in flight (a bug, a cancelled task). Both
    log ``run_stopping`` once and never override an earlier reason.
    """

    __slots__ = ("_breaker", "_log", "_rules", "accounts_stopped", "control")

    def __init__(
        self,
        control: RunControl,
        rules: FailureRules,
        *,
        breaker: BreakerSettings,
        log: Any,
    ) -> None:
        self.control = control
        self._rules = rules
        self._breaker = breaker
        self._log = log
        self.accounts_stopped: dict[str, str] = {}  # account -> why its rows are not sent

    def stop_account(self, account: str, message: str) -> bool:
        """Send no more rows of ``account`` (its role was refused, or an answer said its
        credentials cannot work); the other accounts go on. True the first time."""
        if account in self.accounts_stopped:
            return False
        self.accounts_stopped[account] = message
        self._log.error("account_stopped", account_id=account, message=message)
        return True

    def account_note(self, account: str) -> str | None:
        """Why rows of ``account`` are not sent, or None while it runs."""
        return self.accounts_stopped.get(account) if self.accounts_stopped else None

    def record(self, result: RowResult) -> None:
        """A row is final: sent rows count towards the stop rules."""
        if result.account_id in self.accounts_stopped:
            return  # the account's own failure: handled by stopping the account
        if result.status is Status.SUCCEEDED or result.status is Status.FAILED:
            reason = self._rules.record(result.status is Status.FAILED, result.error_code)
            if reason is not None:
                self.halt(reason)

    def halt(self, reason: StopReason) -> None:
        """Stop starting rows, as a stop rule: calls in flight get the grace period."""
        if self.control.stopping:
            return
        self._log.error("run_stopping", reason=reason.kind, message=reason.message)
        self.control._rule(reason)

    def abort(self, reason: StopReason) -> None:
        """Stop starting rows and cancel the calls in flight."""
        self.control.cancel(reason)

    @property
    def stopping(self) -> bool:
        return self.control.stopping

    @property
    def requested(self) -> bool:
        """A stop was asked for (synchronous loops poll this)."""
        return self.control.stopping

    @property
    def reason(self) -> StopReason | None:
        return self.control.reason

    def not_started(self) -> str:
        """The message of a row the run will not send because it is stopping."""
        reason = self.control.reason
        if reason is None:
            return "not started"
        if reason.kind == ENDPOINT_UNREACHABLE:
            return f"not sent: {unreachable_note(self._breaker)}"
        return f"not started: run stopped ({reason.kind})"

    def __repr__(self) -> str:
        return f"<StopPolicy {self._rules!r} {self.control!r}>"
