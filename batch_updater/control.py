"""Stopping a run: from outside (signals, cancellation) or by the stop rules."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Final

from .errors import SetupError

__all__ = ["FATAL_CODES", "FailureRules", "RunControl", "StopReason"]

# Errors meaning every following call will fail too: stop at once instead of burning rows.
FATAL_CODES: Final = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "ExpiredToken",
        "InvalidClientTokenId",
        "AccessDeniedException",
        "NoCredentialsError",
        "PartialCredentialsError",
        "CredentialRetrievalError",
        "RefreshWithMFAUnsupportedError",
        "TokenRetrievalError",
        "SSOTokenLoadError",
        "UnauthorizedSSOTokenError",
    }
)

_ADVICE: Final = {
    "AccessDeniedException": "grant amplifybackend:UpdateBackendConfig to the caller's role",
    "ExpiredTokenException": "refresh the credentials (e.g. aws sso login) and resume",
    "ExpiredToken": "refresh the credentials (e.g. aws sso login) and resume",
}
_DEFAULT_ADVICE: Final = "check the credentials, profile and region, then resume"


@dataclass(frozen=True, slots=True)
class StopReason:
    """Why a run stopped early. ``signal`` is set for SIGINT/SIGTERM."""

    # "signal", "cancelled", "fatal_error", "failure_rate", "max_failures", "output_error",
    # "setup_error", "internal_error", "endpoint_unreachable" (breaker.ENDPOINT_UNREACHABLE)
    kind: str
    message: str
    signal: int | None = None


class RunControl:
    """Asks a running batch to stop: first gracefully, then (asked again) at once.

    :meth:`stop` is what SIGINT/SIGTERM or a library caller asks for: the first call stops
    starting rows and gives calls in flight the grace period, the second cancels them.
    :meth:`halt` is the stop rules' way: it never escalates, and a signal after it still
    counts as the first. :meth:`request` may be called from a signal handler: it only sets a
    flag (which synchronous loops such as validation poll) and schedules :meth:`stop`.

    A RunControl serves one run: passing one that a run already used to another run raises
    :class:`SetupError` (its stop would otherwise end the new run at once); make a new one.
    Stopping a control before its run starts is fine: that run stops at once.
    """

    __slots__ = (
        "_external",
        "_hurry",
        "_stop",
        "reason",
        "requested",
        "requested_reason",
        "used",
    )

    def __init__(self) -> None:
        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()
        self._external = 0
        self.reason: StopReason | None = None
        self.requested = False  # set at once, even while the event loop is busy
        self.requested_reason: StopReason | None = None
        self.used = False  # a run has taken this control

    def claim(self) -> None:
        """Taken by a run; raises :class:`SetupError` if another run already took it."""
        if self.used:
            raise SetupError(
                "control: this RunControl was already used by a run; "
                "pass a new RunControl() to each run"
            )
        self.used = True

    def stop(self, reason: StopReason) -> None:
        """Stop starting rows; asked a second time, also cancel the calls in flight."""
        self.requested = True
        self._external += 1
        if self.reason is None:
            self.reason = reason
        elif self._external == 1:
            # A signal after a stop rule: the signal decides the exit code, both are told.
            self.reason = StopReason(
                reason.kind, f"{reason.message} (after: {self.reason.message})", reason.signal
            )
        if self._external > 1:
            self._hurry.set()
        self._stop.set()

    def halt(self, reason: StopReason) -> None:
        """Stop starting rows, as a stop rule: calls in flight still get the grace period."""
        self.requested = True
        if self.reason is None:
            self.reason = reason
        self._stop.set()

    def stop_now(self, reason: StopReason) -> None:
        """Stop starting rows and cancel the calls in flight."""
        self.requested = True
        if self.reason is None:
            self.reason = reason
        self._stop.set()
        self._hurry.set()

    def request(self, loop: asyncio.AbstractEventLoop, reason: StopReason) -> None:
        """:meth:`stop` from a signal handler: safe to call between any two bytecodes."""
        self.requested = True
        if self.requested_reason is None:
            self.requested_reason = reason
        loop.call_soon_threadsafe(self.stop, reason)

    @property
    def stopping(self) -> bool:
        """True once a stop was asked for."""
        return self._stop.is_set() or self.requested

    async def wait_stop(self) -> None:
        """Return once a stop is asked for."""
        await self._stop.wait()

    async def wait_hurry(self) -> None:
        """Return once an immediate stop is asked for."""
        await self._hurry.wait()

    def __repr__(self) -> str:
        state = "hurry" if self._hurry.is_set() else "stopping" if self.stopping else "running"
        used = " used" if self.used else ""
        return f"<RunControl {state}{used} reason={self.reason!r}>"


class FailureRules:
    """The stop rules: a fatal error code, a failure rate over a window, a failure count."""

    __slots__ = ("_failures", "_max_failures", "_max_rate", "_window", "_window_failures")

    def __init__(self, max_rate: float, window: int, max_failures: int | None) -> None:
        self._max_rate = max_rate
        self._window: deque[bool] = deque(maxlen=window)
        self._window_failures = 0
        self._max_failures = max_failures
        self._failures = 0

    def record(self, failed: bool, error_code: str = "") -> StopReason | None:
        """Record one finished row that was sent; return a reason to stop, if any."""
        window = self._window
        if len(window) == window.maxlen and window[0]:
            self._window_failures -= 1
        window.append(failed)
        if not failed:
            return None
        self._window_failures += 1
        self._failures += 1
        if error_code in FATAL_CODES:
            advice = _ADVICE.get(error_code, _DEFAULT_ADVICE)
            return StopReason(
                "fatal_error", f"{error_code}: every following call would fail too; {advice}"
            )
        if self._max_failures is not None and self._failures > self._max_failures:
            return StopReason(
                "max_failures", f"{self._failures} rows failed, more than --max-failures"
            )
        if len(window) == window.maxlen and self._window_failures / len(window) > self._max_rate:
            return StopReason(
                "failure_rate",
                f"{self._window_failures} of the last {len(window)} rows failed, more than "
                f"--max-failure-rate {self._max_rate:g}",
            )
        return None

    def __repr__(self) -> str:
        return (
            f"<FailureRules failures={self._failures} "
            f"window={self._window_failures}/{len(self._window)}>"
        )
