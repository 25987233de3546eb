"""A local AmplifyBackend ``UpdateBackendConfig`` endpoint speaking the real rest-json protocol.

Clients talk to it over HTTP with botocore's own serialization, SigV4 signing and error
parsing; only the server side is emulated. Paths, member names and error codes come from
botocore's service model.

One request is handled in this order. Steps 2-8 run without awaiting, so concurrent requests
are decided (and applied) in arrival order:

1. the whole body is read, on every path (see :meth:`Emulator.handle`);
2. no ``Authorization: AWS4-HMAC-SHA256 ...`` header: 403 ``UnrecognizedClientException``
   (the signature itself is not checked);
3. over the rate limit (``rate``, ``burst``; :meth:`RateLimiter.try_acquire`): 429
   ``TooManyRequestsException``; one limit for the endpoint, or one per signing region, or
   one per access key and signing region, the way AWS limits each account in each region
   (``limit_per``);
4. not ``POST /backend/{appId}/config/update``: 404 ``NotFoundException``;
5. the request is checked, and the answer held for step 7: malformed JSON, unknown field,
   missing or empty settings: 400 ``BadRequestException``; unknown app id, or one that is
   not ``d[a-z0-9]+`` of at most 20 characters: 404 ``NotFoundException`` (``resourceType:
   app``);
6. the :class:`FaultPlan` says which fault, if any, this request gets, first match wins:
   a. during a 429 storm (``storm_seconds``, :meth:`Emulator.storm`): ``"storm"``, a 429
      ``TooManyRequestsException``; the app's scripted outcomes are kept for later;
   b. the app's next scripted outcome (``script``, :meth:`Emulator.script`), consumed;
   c. a valid request only: one draw from the seeded source picks a fault by the
      ``faults`` probabilities (``batch-updater emulate --p504 P`` is ``{"504": P}``);
   any fault but ``"ok"`` and ``"slow"`` is answered at once (see :data:`OUTCOMES`);
7. the answer held at step 5, if any;
8. the settings are merged into the app's stored settings: 200.

The configured latency (plus ``slow_seconds`` for ``"slow"``) is then added before every
answer, whatever its status; ``"drop"`` then closes the connection instead of answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import random
import re
import signal
import ssl
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import Any, Final

import botocore.session
from aiohttp import web
from botocore.model import StructureShape

from .errors import SetupError
from .limiter import RateLimiter

__all__ = [
    "LIMIT_PER",
    "OUTCOMES",
    "Emulator",
    "EmulatorConfig",
    "EmulatorServer",
    "FaultPlan",
    "RequestRecord",
    "main_emulate",
]

#: Outcomes a :class:`FaultPlan` may give (scripted, or drawn at random), besides
#: ``"error:<text>"`` (200 with the top-level ``error`` field set, settings not applied):
#:
#: - ``"ok"``: the normal answer, without the random faults;
#: - ``"400"``, ``"404"``, ``"429"``, ``"504"``: the service's modeled errors;
#: - ``"403"``: 403 ``AccessDeniedException``, as for credentials without the permission
#:   (or an account's role that lacks it);
#: - ``"drop"``: the connection is closed with no answer (clients see it closed);
#: - ``"slow"``: the settings are applied, then the 200 comes ``slow_seconds`` late (past a
#:   client's read timeout, it models "applied, but the client gave up");
#: - ``"500html"``, ``"503html"``: a load balancer's HTML error page, no ``x-amzn-ErrorType``;
#: - ``"malformed"``: 200 with a truncated JSON body; settings not applied.
OUTCOMES: Final = frozenset(
    {"ok", "400", "403", "404", "429", "504", "drop", "slow", "500html", "503html", "malformed"}
)
#: Outcomes that go on to steps 7-8 (the held refusal, or applying the settings).
_APPLYING: Final = frozenset({"ok", "slow"})
_HTML_STATUS: Final = {"500html": 500, "503html": 503}
_ERROR_OUTCOME: Final = "error:"
_APP_ID: Final = re.compile(r"d[a-z0-9]{1,19}", re.ASCII)
_SIGV4: Final = "AWS4-HMAC-SHA256 "
# Credential=<access key id>/<date>/<region>/<service>/aws4_request
_CREDENTIAL: Final = re.compile(r"Credential=([^/,\s]*)/[^/,\s]*/([^/,\s]*)/")
#: What one server-side rate limit covers (``EmulatorConfig.limit_per``).
LIMIT_PER: Final = ("endpoint", "region", "access-key-region")
_UNRECOGNIZED_CLIENT: Final = "UnrecognizedClientException"
_ACCESS_DENIED: Final = "AccessDeniedException"
_LIMIT_TYPE: Final = "requests"
_RESOURCE_TYPE: Final = "app"
_STORM: Final = "storm"
_ERROR_FAULT: Final = "error"
_DROPPED: Final = 0  # RequestRecord.status when the connection was closed with no answer


def _check_outcome(outcome: str) -> None:
    if outcome not in OUTCOMES and not outcome.startswith(_ERROR_OUTCOME):
        raise ValueError(
            f"unknown scripted outcome {outcome!r}: use one of {sorted(OUTCOMES)} or 'error:<text>'"
        )


def _check_faults(faults: Mapping[str, float]) -> None:
    for outcome, probability in faults.items():
        _check_outcome(outcome)
        if outcome == "ok":
            raise ValueError("'ok' is not a fault: it is what remains of the probability")
        if not 0.0 <= probability <= 1.0:
            raise ValueError(
                f"fault probability must be between 0 and 1, got {outcome}={probability}"
            )
    if (total := sum(faults.values())) > 1.0 + 1e-9:
        raise ValueError(f"fault probabilities must add up to at most 1, got {total:g}")


def _check_storm(seconds: float) -> None:
    if not seconds >= 0:
        raise ValueError(f"storm seconds must be >= 0, got {seconds}")


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """How the emulator behaves; the defaults give a fast service that always succeeds.

    ``rate`` (requests/s, None or 0 = unlimited) and ``burst`` limit the requests that pass
    the signature check (GCRA on the loop clock): after an idle period ``burst`` requests
    pass back to back, then one every ``1 / rate`` seconds; the others get 429. The default
    ``burst=1`` spaces requests strictly. ``limit_per`` says what one limit covers: the
    whole ``"endpoint"`` (the default), each signing ``"region"``, or each
    ``"access-key-region"`` pair, the way AWS limits each account in each region (the
    access key id stands for the account).
    ``known_apps=None`` means every well-formed app id exists.
    The fault plan (:class:`FaultPlan`): ``script`` maps an app id to outcomes consumed one
    per request for that app (see :meth:`Emulator.script`). ``faults`` maps outcomes (any of
    :data:`OUTCOMES` but ``"ok"``, or ``"error:<text>"``) to the probability that a valid,
    unscripted request gets it, e.g. ``{"504": 0.05}`` or ``{"drop": 0.04, "500html": 0.04}``;
    the probabilities must add up to at most 1. ``storm_seconds > 0`` answers every request
    with 429 for that many seconds from the first request (after start or
    :meth:`Emulator.reset`). ``seed`` makes the random faults and the latency jitter
    repeatable (the n-th request that draws a fault gets the same one in every run with that
    seed). ``slow_seconds`` is how late a ``"slow"`` answer comes. ``keep_records``: keep a
    :class:`RequestRecord` of every request (tests read them; ``--local`` does not, so its
    memory stays flat over millions of rows).
    """

    rate: float | None = None
    burst: int = 1
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    known_apps: frozenset[str] | None = None
    seed: int | None = None
    script: Mapping[str, Sequence[str]] = field(default_factory=dict)
    faults: Mapping[str, float] = field(default_factory=dict)
    slow_seconds: float = 2.0
    storm_seconds: float = 0.0
    limit_per: str = "endpoint"
    region_rate: Mapping[str, float] = field(default_factory=dict)
    region_latency_ms: Mapping[str, float] = field(default_factory=dict)
    keep_records: bool = True

    def __post_init__(self) -> None:
        if self.limit_per not in LIMIT_PER:
            raise ValueError(
                f"limit_per must be one of {', '.join(LIMIT_PER)}, not {self.limit_per!r}"
            )
        if self.rate is not None and not self.rate >= 0:
            raise ValueError(f"rate must be >= 0 or None, got {self.rate}")
        if self.burst < 1:
            raise ValueError(f"burst must be at least 1, got {self.burst}")
        if not (self.latency_ms >= 0 and self.latency_jitter_ms >= 0):
            raise ValueError("latency_ms and latency_jitter_ms must be >= 0")
        for region, value in {**self.region_rate, **self.region_latency_ms}.items():
            if not value >= 0:
                raise ValueError(f"the rate and latency of {region} must be >= 0, got {value}")
        if not self.slow_seconds >= 0:
            raise ValueError(f"slow_seconds must be >= 0, got {self.slow_seconds}")
        _check_storm(self.storm_seconds)
        for outcomes in self.script.values():
            for outcome in outcomes:
                _check_outcome(outcome)
        _check_faults(self.faults)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request received, as it was answered."""

    time: float  # loop time when the body had been read
    app_id: str  # from the path; "" when the path is not UpdateBackendConfig's
    status: int  # 0: the connection was closed with no answer ("drop")
    error_type: str | None  # the x-amzn-ErrorType header; None on 200 and HTML errors
    # The settings were merged into the app's state (every plain 200, and "slow").
    applied: bool = False
    # The injected fault: the scripted or random outcome ("504", "drop", "slow", "error"
    # for "error:<text>", ...), or "storm" for a 429 storm; None for normal handling,
    # including the rate limiter's 429s.
    fault: str | None = None
    # From the SigV4 Authorization header's credential scope ("" when there is none).
    access_key: str = ""
    region: str = ""


@dataclass(frozen=True, slots=True)
class _Wire:
    """UpdateBackendConfig's names on the wire, read from botocore's service model."""

    method: str
    path: str
    app_id: str
    config: str
    settings: tuple[str, ...]
    out_app_id: str
    out_manager_id: str
    out_error: str
    error_status: Mapping[str, int]
    message: str
    limit_type: str
    resource_type: str


def _name(shape: StructureShape, member: str) -> str:
    return str(shape.members[member].serialization.get("name", member))


@functools.cache
def _wire() -> _Wire:
    model = botocore.session.get_session().get_service_model("amplifybackend")
    operation = model.operation_model("UpdateBackendConfig")
    request, response = operation.input_shape, operation.output_shape
    if request is None or response is None:
        raise RuntimeError("botocore's UpdateBackendConfig model has no input or output")
    login = request.members["LoginAuthConfig"]
    if not isinstance(login, StructureShape):
        raise TypeError("botocore's LoginAuthConfig is not a structure")
    errors = {s.name: s for s in operation.error_shapes if isinstance(s, StructureShape)}
    return _Wire(
        method=operation.http["method"],
        path=operation.http["requestUri"],
        app_id=_name(request, "AppId"),
        config=_name(request, "LoginAuthConfig"),
        settings=tuple(_name(login, member) for member in login.members),
        out_app_id=_name(response, "AppId"),
        out_manager_id=_name(response, "BackendManagerAppId"),
        out_error=_name(response, "Error"),
        error_status={n: int(s.metadata["error"]["httpStatusCode"]) for n, s in errors.items()},
        message=_name(errors["NotFoundException"], "Message"),
        limit_type=_name(errors["TooManyRequestsException"], "LimitType"),
        resource_type=_name(errors["NotFoundException"], "ResourceType"),
    )


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int  # _DROPPED: close the connection instead
    body: dict[str, Any] = field(default_factory=dict)
    error_type: str | None = None
    raw: str | None = None  # sent as is, instead of ``body`` as JSON
    content_type: str = "application/json"
    aws_headers: bool = True  # x-amzn-RequestId (and x-amzn-ErrorType); not on an LB's page
    fault: str | None = None
    applied: bool = False


class _BadRequest(Exception):
    """The request body is refused with 400; the message says why."""


def _parse_settings(body: bytes, wire: _Wire) -> dict[str, str]:
    try:
        document = json.loads(body) if body.strip() else {}
    except ValueError:  # also UnicodeDecodeError
        raise _BadRequest("the request body is not valid JSON") from None
    if not isinstance(document, dict):
        raise _BadRequest("the request body must be a JSON object")
    if unknown := sorted(set(document) - {wire.config}):
        raise _BadRequest(f"unknown field {unknown[0]!r:.80}")
    settings = document.get(wire.config)
    if settings is None:
        raise _BadRequest(f"{wire.config} is required")
    if not isinstance(settings, dict):
        raise _BadRequest(f"{wire.config} must be a JSON object")
    if unknown := sorted(set(settings) - set(wire.settings)):
        raise _BadRequest(f"unknown field {unknown[0]!r:.80} in {wire.config}")
    if not settings:
        raise _BadRequest(
            f"{wire.config} is empty: give at least one of {', '.join(wire.settings)}"
        )
    for key, value in settings.items():
        # Values are never echoed: a web client id is sensitive.
        if not isinstance(value, str) or not value:
            raise _BadRequest(f"{wire.config}.{key} must be a non-empty string")
    return settings


class FaultPlan:
    """Which fault, if any, a request for ``app_id`` arriving at ``now`` gets.

    :meth:`next` is asked once per request that reached ``UpdateBackendConfig`` (step 6 of
    the module's order) and answers with the first that applies:

    1. a 429 storm is on: ``"storm"``; scripted outcomes are kept for later;
    2. the app's next scripted outcome (see :meth:`script`), consumed;
    3. for a valid request, one draw from the seeded source: an outcome of ``faults``
       (outcome -> probability), or None with what remains of the probability;
    4. None: no fault.

    Times are the caller's clock (the emulator's loop time); nothing here reads a clock.
    """

    __slots__ = ("_faults", "_random", "_scripts", "_storm_next", "_storm_until")

    def __init__(
        self,
        faults: Mapping[str, float] | None = None,
        *,
        script: Mapping[str, Sequence[str]] | None = None,
        storm_seconds: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self._faults: Mapping[str, float] = {}
        self._random = random.Random(seed)
        self._scripts: dict[str, deque[str]] = {}
        self._storm_until = float("-inf")  # when the current storm ends
        self._storm_next = 0.0  # > 0: a storm of this many seconds starts with the next request
        self.faults = faults or {}
        self.load(script or {})
        self.storm(storm_seconds)

    @property
    def faults(self) -> Mapping[str, float]:
        """Outcome -> probability that a valid, unscripted request gets it."""
        return self._faults

    @faults.setter
    def faults(self, faults: Mapping[str, float]) -> None:
        _check_faults(faults)
        self._faults = dict(faults)

    def seed(self, seed: int | None) -> None:
        """Restart the random draws: the same seed gives the same sequence of faults."""
        self._random.seed(seed)

    def load(self, script: Mapping[str, Sequence[str]]) -> None:
        """Replace every pending scripted outcome with ``script`` (app id -> outcomes)."""
        for outcomes in script.values():
            for outcome in outcomes:
                _check_outcome(outcome)
        self._scripts = {app_id: deque(outcomes) for app_id, outcomes in script.items()}

    def script(self, app_id: str, outcomes: Iterable[str]) -> None:
        """Queue outcomes for ``app_id``'s next requests, after any already queued."""
        outcomes = list(outcomes)
        for outcome in outcomes:
            _check_outcome(outcome)
        self._scripts.setdefault(app_id, deque()).extend(outcomes)

    def pending(self, app_id: str) -> list[str]:
        """Scripted outcomes not yet consumed for ``app_id``."""
        return list(self._scripts.get(app_id, ()))

    def storm(self, seconds: float, start: float | None = None) -> None:
        """A 429 storm of ``seconds`` from ``start`` (None: from the next request); 0 ends it."""
        _check_storm(seconds)
        if start is None:
            self._storm_until, self._storm_next = float("-inf"), seconds
        else:
            self._storm_until, self._storm_next = start + seconds, 0.0

    def next(self, app_id: str, now: float, *, valid: bool = True) -> str | None:
        """The fault for this request (an outcome, or ``"storm"``), or None; see the class."""
        if self._storm_next:
            self._storm_until, self._storm_next = now + self._storm_next, 0.0
        if now < self._storm_until:
            return _STORM
        if queue := self._scripts.get(app_id):
            return queue.popleft()
        if not valid or not self._faults:
            return None
        draw = self._random.random()
        for outcome, probability in self._faults.items():
            if draw < probability:
                return outcome
            draw -= probability
        return None

    def __repr__(self) -> str:
        pending = sum(len(queue) for queue in self._scripts.values())
        faults = ", ".join(f"{k}={v:g}" for k, v in self._faults.items()) or "none"
        if self._storm_next:
            storm = f"{self._storm_next:g}s from the next request"
        elif self._storm_until > float("-inf"):
            storm = f"until {self._storm_until:g}"
        else:
            storm = "none"
        return f"<FaultPlan scripted={pending} faults={{{faults}}} storm={storm}>"


class Emulator:
    """The emulated service: configuration, per-app settings and the request log.

    ``apps`` maps app id to its stored settings (wire names such as ``aws_user_pools_id``);
    an app appears there on its first successful update. ``requests`` has one
    :class:`RequestRecord` per request received, in arrival order (unless
    ``keep_records`` is off; :attr:`request_count` counts them all the same).
    """

    __slots__ = (
        "_config",
        "_jitter",
        "_limiters",
        "_received",
        "_wire",
        "apps",
        "plan",
        "requests",
    )

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self._config = config = config if config is not None else EmulatorConfig()
        self._wire = _wire()
        self.apps: dict[str, dict[str, str]] = {}
        self.requests: list[RequestRecord] = []  # empty unless config.keep_records
        self._received = 0
        #: The faults injected (``script``, ``faults``, ``storm_seconds``, ``seed``); the
        #: scripts, storm and seed are loaded by :meth:`reset`.
        self.plan = FaultPlan(config.faults)
        # One GCRA limiter per (access key, region) scope, made on first use; see limit_per.
        self._limiters: dict[tuple[str, str], RateLimiter] = {}
        # Faults and latency draw from separate sources, so that the sequence of faults
        # does not depend on how requests with and without a draw interleave.
        self._jitter = random.Random()
        self.reset()

    @property
    def config(self) -> EmulatorConfig:
        """The current configuration (see :meth:`configure`)."""
        return self._config

    def configure(self, **changes: Any) -> EmulatorConfig:
        """Change configuration fields at runtime, e.g. ``configure(faults={"504": 0.5})``.

        A new ``rate``, ``burst`` or ``limit_per`` restarts the rate limiters, a new
        ``seed`` reseeds the random sources, new ``faults`` apply from the next request, a
        new ``script`` replaces every pending scripted outcome and a new ``storm_seconds``
        starts a storm with the next request (0: ends the current one).
        """
        self._config = config = replace(self._config, **changes)
        if changes.keys() & {"rate", "burst", "limit_per", "region_rate"}:
            self._limiters.clear()
        if "faults" in changes:
            self.plan.faults = config.faults
        if "storm_seconds" in changes:
            self.plan.storm(config.storm_seconds)
        if "seed" in changes:
            self._seed()
        if "script" in changes:
            self.plan.load(config.script)
        return config

    def script(self, app_id: str, outcomes: Iterable[str]) -> None:
        """Queue outcomes for ``app_id``'s next requests, after any already queued.

        Each is one of :data:`OUTCOMES` (``"ok"``, ``"400"``, ``"403"``, ``"404"``, ``"429"``,
        ``"504"``, ``"drop"``, ``"slow"``, ``"500html"``, ``"503html"``, ``"malformed"``) or
        ``"error:<text>"`` (200 with ``error`` set and the settings not applied). When the
        queue is empty the configured behaviour applies again.
        """
        self.plan.script(app_id, outcomes)

    def storm(self, seconds: float) -> None:
        """Answer every request with 429 ``TooManyRequestsException`` for ``seconds`` from now.

        Measured on the running loop's clock (the request log's); 0 ends a storm.
        """
        try:
            now = asyncio.get_running_loop().time()
        except RuntimeError:  # no running loop: asyncio's default clock
            now = time.monotonic()
        self.plan.storm(seconds, now)

    def pending(self, app_id: str) -> list[str]:
        """Scripted outcomes not yet consumed for ``app_id``."""
        return self.plan.pending(app_id)

    def reset(self) -> None:
        """Forget apps, requests, the rate limiter and any storm; reload the configured scripts.

        With ``storm_seconds`` set, a storm starts again with the next request.
        """
        self.apps.clear()
        self.requests.clear()
        self._received = 0
        self._limiters.clear()
        self.plan.storm(self._config.storm_seconds)
        self.plan.load(self._config.script)
        self._seed()

    def _limiter(self, access_key: str, region: str) -> RateLimiter:
        """The limiter of this request's scope (see ``EmulatorConfig.limit_per``)."""
        per = self._config.limit_per
        scope = (
            (access_key, region)
            if per == "access-key-region"
            else ("", region)
            if per == "region"
            else ("", "")
        )
        limiter = self._limiters.get(scope)
        if limiter is None:
            config = self._config
            rate = config.region_rate.get(region, config.rate or 0.0)
            limiter = self._limiters[scope] = RateLimiter(rate, config.burst)
        return limiter

    def _seed(self) -> None:
        seed = self._config.seed
        self.plan.seed(seed)
        self._jitter.seed(None if seed is None else f"{seed}/latency")

    @property
    def request_count(self) -> int:
        """Requests received so far, whatever their answer."""
        return self._received

    def count(self, app_id: str) -> int:
        """Requests received for ``app_id``, whatever their answer."""
        return sum(1 for record in self.requests if record.app_id == app_id)

    def status_counts(self) -> dict[int, int]:
        """HTTP status -> how many requests got it."""
        return dict(Counter(record.status for record in self.requests))

    def make_app(self) -> web.Application:
        """An aiohttp application serving this emulator."""
        app = web.Application()
        app.router.add_route("*", self._wire.path, self.handle)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        """Answer one HTTP request."""
        # Read the body before answering, on every path: when aiohttp answers without
        # reading it, the next request on that keep-alive connection waits about 0.5 s.
        body = await request.read()
        now = asyncio.get_running_loop().time()
        app_id = request.match_info.get(self._wire.app_id, "")
        authorization = request.headers.get("Authorization", "")
        signed = _CREDENTIAL.search(authorization) if authorization.startswith(_SIGV4) else None
        access_key, region = signed.groups() if signed else ("", "")
        reply = self._decide(request, app_id, body, now, (access_key, region))
        self._received += 1
        if self._config.keep_records:
            self.requests.append(
                RequestRecord(
                    now,
                    app_id,
                    reply.status,
                    reply.error_type,
                    reply.applied,
                    reply.fault,
                    access_key=access_key,
                    region=region,
                )
            )
        config = self._config
        delay = config.region_latency_ms.get(region, config.latency_ms) / 1000.0
        if config.latency_jitter_ms > 0:
            delay += self._jitter.uniform(0.0, config.latency_jitter_ms) / 1000.0
        if reply.fault == "slow":
            delay += config.slow_seconds
        if delay > 0:
            await asyncio.sleep(delay)
        if reply.status == _DROPPED:
            # Close with no answer: the client sees the connection closed after sending its
            # request (aiohttp: ServerDisconnectedError; botocore: ConnectionClosedError).
            # aiohttp then fails to write the response below and drops it quietly.
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)
        headers: dict[str, str] = {}
        if reply.aws_headers:
            headers["x-amzn-RequestId"] = str(uuid.uuid4())
            if reply.error_type is not None:
                headers["x-amzn-ErrorType"] = reply.error_type
        if reply.raw is not None:
            return web.Response(
                text=reply.raw,
                status=reply.status,
                headers=headers,
                content_type=reply.content_type,
            )
        return web.json_response(reply.body, status=reply.status, headers=headers)

    def _decide(
        self, request: web.Request, app_id: str, body: bytes, now: float, signer: tuple[str, str]
    ) -> _Reply:
        """Steps 2-8 of the module's order; ``signer`` is (access key id, region)."""
        wire = self._wire
        if not request.headers.get("Authorization", "").startswith(_SIGV4):
            return self._error(
                _UNRECOGNIZED_CLIENT,
                "missing or malformed AWS Signature Version 4 Authorization header",
                status=403,
            )
        if not self._limiter(*signer).try_acquire(now):
            return self._throttled()
        if request.method != wire.method or wire.app_id not in request.match_info:
            return self._error(
                "NotFoundException", f"no such operation: {request.method} {request.path:.100}"
            )
        settings: dict[str, str] = {}
        refusal: _Reply | None = None
        try:
            settings = _parse_settings(body, wire)
        except _BadRequest as exc:
            refusal = self._error("BadRequestException", str(exc))
        else:
            if not self._exists(app_id):
                refusal = self._not_found(app_id)
        fault = self.plan.next(app_id, now, valid=refusal is None)
        if fault is not None and fault not in _APPLYING:
            return self._fault(app_id, fault)
        if refusal is not None:
            return refusal
        self.apps.setdefault(app_id, {}).update(settings)
        slow = fault if fault == "slow" else None
        return replace(self._success(app_id), applied=True, fault=slow)

    def _exists(self, app_id: str) -> bool:
        known = self._config.known_apps
        if known is not None:
            return app_id in known
        return _APP_ID.fullmatch(app_id) is not None

    def _fault(self, app_id: str, outcome: str) -> _Reply:
        """The answer to a fault that does not apply the settings (not "ok" or "slow")."""
        if outcome.startswith(_ERROR_OUTCOME):
            error = outcome.removeprefix(_ERROR_OUTCOME)
            return replace(self._success(app_id, error=error), fault=_ERROR_FAULT)
        if outcome in ("429", _STORM):
            reply = self._throttled()
        elif outcome == "504":
            reply = self._error("GatewayTimeoutException", "Gateway Timeout")
        elif outcome == "404":
            reply = self._not_found(app_id)
        elif outcome == "400":
            reply = self._error("BadRequestException", "scripted bad request")
        elif outcome == "403":
            reply = self._error(
                _ACCESS_DENIED,
                "User is not authorized to perform: amplifybackend:UpdateBackendConfig",
                status=HTTPStatus.FORBIDDEN,
            )
        elif outcome == "drop":
            reply = _Reply(_DROPPED)
        elif outcome in _HTML_STATUS:
            status = _HTML_STATUS[outcome]
            reason = HTTPStatus(status).phrase
            page = f"<html><body><h1>{status} {reason}</h1></body></html>"
            reply = _Reply(status, raw=page, content_type="text/html", aws_headers=False)
        elif outcome == "malformed":
            whole = json.dumps(self._success(app_id).body)
            reply = _Reply(200, raw=whole[: len(whole) // 2])
        else:
            raise AssertionError(f"unhandled outcome {outcome!r}")  # pragma: no cover
        return replace(reply, fault=outcome)

    def _throttled(self) -> _Reply:
        return self._error("TooManyRequestsException", "Rate exceeded", limit=True)

    def _success(self, app_id: str, *, error: str | None = None) -> _Reply:
        wire = self._wire
        body: dict[str, Any] = {wire.out_app_id: app_id, wire.out_manager_id: app_id}
        if error is not None:
            body[wire.out_error] = error
        body[wire.config] = dict(self.apps.get(app_id, {}))
        return _Reply(200, body)

    def _not_found(self, app_id: str) -> _Reply:
        return self._error("NotFoundException", f"App {app_id:.64} not found", resource=True)

    def _error(
        self,
        name: str,
        message: str,
        *,
        status: int | None = None,
        limit: bool = False,
        resource: bool = False,
    ) -> _Reply:
        wire = self._wire
        body: dict[str, Any] = {wire.message: message}
        if limit:
            body[wire.limit_type] = _LIMIT_TYPE
        if resource:
            body[wire.resource_type] = _RESOURCE_TYPE
        return _Reply(status or wire.error_status[name], body, name)

    def __repr__(self) -> str:
        return f"<Emulator apps={len(self.apps)} requests={len(self.requests)}>"


class EmulatorServer:
    """Serves an :class:`Emulator` on ``host:port`` (port 0: a free port).

    ``async with EmulatorServer(config) as server:`` then point clients at ``server.url``
    and inspect ``server.emulator``. The server stops on exit. With ``ssl_context`` (a
    server-side context with its certificate loaded) it serves HTTPS.
    """

    __slots__ = ("_runner", "_ssl", "_url", "emulator", "host", "port")

    #: Seconds to let in-flight requests (e.g. sleeping latency) finish when stopping.
    SHUTDOWN_TIMEOUT: Final = 1.0

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.emulator = Emulator(config)
        self.host = host
        self.port = port
        self._ssl = ssl_context
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """The endpoint URL, e.g. ``http://127.0.0.1:54321``."""
        if self._url is None:
            raise RuntimeError("the emulator server is not started")
        return self._url

    async def start(self) -> str:
        """Bind and serve; returns :attr:`url`. Raises :class:`SetupError` if it cannot bind."""
        if self._runner is not None:
            return self.url
        runner = web.AppRunner(
            self.emulator.make_app(),
            access_log=None,
            shutdown_timeout=self.SHUTDOWN_TIMEOUT,
            handler_cancellation=True,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port, ssl_context=self._ssl).start()
        except (OSError, OverflowError) as exc:  # OverflowError: a port beyond 65535
            await runner.cleanup()
            code = getattr(exc, "errno", None)  # negative for a host name that does not resolve
            why = os.strerror(code) if code and code > 0 else getattr(exc, "strerror", None)
            why = (why or str(exc)).rstrip(".")
            raise SetupError(f"cannot listen on {self.host}:{self.port}: {why}") from None
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._url = f"{'https' if self._ssl else 'http'}://{host}:{self.port}"
        return self._url

    async def close(self) -> None:
        """Stop serving; idempotent."""
        runner, self._runner, self._url = self._runner, None, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> EmulatorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<EmulatorServer {self._url or 'stopped'} {self.emulator!r}>"


async def _serve_forever(port: int, config: EmulatorConfig | None, host: str) -> None:
    stop = asyncio.Event()
    # SIGINT too, so that an emulator started in the background (where a shell ignores
    # SIGINT) still stops on `kill -INT`. No signal handlers on Windows loops or outside the
    # main thread; Ctrl-C still works there.
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    async with EmulatorServer(config, host=host, port=port) as server:
        print(f"AmplifyBackend emulator listening on {server.url}", file=sys.stderr, flush=True)
        await stop.wait()


def main_emulate(
    port: int, config: EmulatorConfig | None = None, *, host: str = "127.0.0.1"
) -> None:
    """Serve in the foreground until Ctrl-C or SIGTERM (``batch-updater emulate``).

    Prints one line with the URL to stderr. Raises :class:`SetupError` if it cannot bind.
    """
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(port, config, host))
