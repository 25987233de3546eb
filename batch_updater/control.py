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
    """Stops a running batch from outside: a library caller, or a signal handler.

    :meth:`stop` stops starting rows and gives the calls in flight the grace period to
    finish; asked a second time, it cancels them. :meth:`cancel` stops starting rows and
    cancels the calls in flight at once. Both may be called from a signal handler: they set
    the stop at once (synchronous loops such as validation see it) and wake the run's event
    loop thread-safely.

    A RunControl serves one run: passing one that a run already used to another run raises
    :class:`SetupError` (its stop would otherwise end the new run at once); make a new one.
    Stopping a control before its run starts is fine: that run stops at once.
    """

    __slots__ = ("_asks", "_hurry", "_loop", "_stop", "hurry", "reason", "used")

    def __init__(self) -> None:
        self._stop = asyncio.Event()  # wakes whoever waits for a stop
        self._hurry = asyncio.Event()  # wakes whoever waits for calls in flight to be cancelled
        self._loop: asyncio.AbstractEventLoop | None = None  # the run's loop, once claimed
        self._asks = 0  # stops asked from outside; the second one hurries
        self.reason: StopReason | None = None  # set at once, even while the loop is busy
        self.hurry = False  # calls in flight are to be cancelled
        self.used = False  # a run has taken this control

    def claim(self) -> None:
        """Taken by a run (inside its event loop); raises :class:`SetupError` if another run
        already took it."""
        if self.used:
            raise SetupError(
                "control: this RunControl was already used by a run; "
                "pass a new RunControl() to each run"
            )
        self.used = True
        self._loop = asyncio.get_running_loop()
        self._wake()  # stopped before the run started: the events are set in its loop

    def stop(self, reason: StopReason) -> None:
        """Stop starting rows; calls in flight get the grace period. A second stop cancels
        them."""
        self._asks += 1
        if self.reason is None:
            self.reason = reason
        elif self._asks == 1:
            # A signal after a stop rule: the signal decides the exit code, both are told.
            self.reason = StopReason(
                reason.kind, f"{reason.message} (after: {self.reason.message})", reason.signal
            )
        if self._asks > 1:
            self.hurry = True
        self._wake()

    def cancel(self, reason: StopReason) -> None:
        """Stop starting rows and cancel the calls in flight now."""
        if self.reason is None:
            self.reason = reason
        self.hurry = True
        self._wake()

    def _rule(self, reason: StopReason) -> None:
        """A stop rule's stop (see :class:`StopPolicy`): like :meth:`stop`, but it is not
        an ask from outside, so the first signal after it still counts as the first."""
        if self.reason is None:
            self.reason = reason
        self._wake()

    def _wake(self) -> None:
        # Thread-safe even from the loop's own thread: a signal handler runs between two
        # bytecodes, maybe while the loop sleeps in select(), which only a write to the
        # loop's self-pipe ends.
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._set_events)

    def _set_events(self) -> None:
        if self.reason is not None:
            self._stop.set()
        if self.hurry:
            self._hurry.set()

    @property
    def stopping(self) -> bool:
        """True once a stop was asked for."""
        return self.reason is not None

    async def wait_stop(self) -> None:
        """Return once a stop is asked for."""
        await self._stop.wait()

    async def wait_hurry(self) -> None:
        """Return once the calls in flight are to be cancelled."""
        await self._hurry.wait()

    def __repr__(self) -> str:
        state = "hurry" if self.hurry else "stopping" if self.stopping else "running"
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
