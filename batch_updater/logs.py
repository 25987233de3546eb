"""structlog set-up for the CLI, and the processor that keeps secrets out of the logs."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Final, TextIO

import structlog

__all__ = [
    "configure_logging",
    "default_logger",
    "json_lines",
    "mask",
    "redact_sensitive",
    "register_secrets",
    "scrub",
]

LEVELS: Final = ("debug", "info", "warning", "error", "critical")
# AWS marks the user pool web client id as sensitive: show only its last 4 characters.
_MASKED_KEYS: Final = frozenset(
    {"web_client_id", "AwsUserPoolsWebClientId", "aws_user_pools_web_client_id"}
)
_SECRET_WORDS: Final = ("secret", "session_token", "password", "credential")


def mask(value: str) -> str:
    """``abcdefgh`` -> ``****efgh``."""
    return "****" + value[-4:] if len(value) > 4 else "****"


def _redact(mapping: MutableMapping[str, Any]) -> None:
    for key, value in mapping.items():
        lowered = key.lower()
        if key in _MASKED_KEYS and isinstance(value, str):
            mapping[key] = mask(value)
        elif any(word in lowered for word in _SECRET_WORDS):
            mapping[key] = "[redacted]"
        elif isinstance(value, str) and _SECRETS:
            mapping[key] = scrub(value)
        elif isinstance(value, dict):
            mapping[key] = dict(value)
            _redact(mapping[key])


def redact_sensitive(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask web client ids and drop anything that looks like a secret."""
    _redact(event_dict)
    return event_dict


# Shapes of secrets in botocore's debug output: signatures, session tokens, key ids.
_BOTOCORE_SECRETS: Final = (
    (re.compile(r"(Signature=)[0-9a-f]+"), r"\1[redacted]"),
    (re.compile(r"(Credential=)[A-Z0-9]{4,}(/)"), r"\1[redacted]\2"),
    (
        re.compile(r"""((?:X-Amz-Security-Token|x-amz-security-token)['"]?:\s*b?['"])[^'"]+"""),
        r"\1[redacted]",
    ),
    (
        re.compile(r"""((?:aws_)?secret_access_key['"]?[:=]\s*['"]?)[^'",\s]+""", re.I),
        r"\1[redacted]",
    ),
    (re.compile(r"(x-amz-security-token:)\S+", re.I), r"\1[redacted]"),
    # STS answers (AssumeRole's XML body at debug level, before its credentials are
    # registered) and their parsed form: the key, the secret and the token.
    (
        re.compile(r"(<(?:AccessKeyId|SecretAccessKey|SessionToken)>)[^<]*"),
        r"\1[redacted]",
    ),
    (
        re.compile(r"""((?:AccessKeyId|SecretAccessKey|SessionToken)['"]?\s*:\s*['"])[^'"]*"""),
        r"\1[redacted]",
    ),
    # Request bodies and parameters: the web client id is sensitive, keep its last 4.
    (
        re.compile(
            r"""((?:AwsUserPoolsWebClientId|aws_user_pools_web_client_id)\\?['"]?\s*:\s*"""
            r"""\\?['"])[\w+]*?([\w+]{4})(?=\\?['"])"""
        ),
        r"\1****\2",
    ),
)
# The credentials actually in use, registered by the client once loaded: scrubbed wherever
# they would appear, whatever the shape of the message.
_SECRETS: set[str] = set()


def register_secrets(*values: str | None) -> None:
    """Never show these values in any log line (credentials in use)."""
    _SECRETS.update(v for v in values if v and len(v) >= 8)


def scrub(text: str) -> str:
    """``text`` with registered secrets and secret-shaped substrings redacted."""
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    for pattern, replacement in _BOTOCORE_SECRETS:
        text = pattern.sub(replacement, text)
    return text


class _RedactingFilter(logging.Filter):
    """Scrub secrets from stdlib log records (botocore's debug logs) before they are shown."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = scrub(record.getMessage()), None
        return True


SDK_HANDLER_NAME: Final = "batch_updater.sdk-debug"


class _SdkWarnings(logging.Handler):
    """The SDK's warnings (e.g. aiobotocore's "Refreshing temporary credentials failed") as
    one scrubbed log event each, in the run's format: never a bare traceback on stderr,
    which Python's last-resort handler would print between JSON lines."""

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        fields = {"error": scrub(f"{type(error).__name__}: {error}")} if error else {}
        structlog.get_logger("batch_updater").warning(
            "sdk_warning", source=record.name, message=scrub(record.getMessage()), **fields
        )


def _route_sdk(handler: logging.Handler, level: int) -> None:
    handler.set_name(SDK_HANDLER_NAME)
    for name in ("botocore", "aiobotocore"):
        sdk_logger = logging.getLogger(name)
        sdk_logger.setLevel(level)
        # Configuring twice replaces our handler instead of stacking a second one.
        for old in [h for h in sdk_logger.handlers if h.get_name() == SDK_HANDLER_NAME]:
            sdk_logger.removeHandler(old)
        sdk_logger.addHandler(handler)
        sdk_logger.propagate = False


def _route_botocore_debug(stream: TextIO) -> None:
    handler = logging.StreamHandler(stream)
    handler.addFilter(_RedactingFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    _route_sdk(handler, logging.DEBUG)
    # botocore.auth prints canonical requests and strings to sign, token included: too close
    # to key material to show even scrubbed.
    logging.getLogger("botocore.auth").setLevel(logging.INFO)


def json_lines(log_format: str, stream: TextIO) -> bool:
    """Whether ``log_format`` means JSON lines on ``stream`` (``auto``: off a terminal).

    Then nothing but JSON lines should be written there: no bar, no plain-text summary.
    """
    if log_format not in ("auto", "json", "console"):
        raise ValueError(f"log format must be auto, json or console, not {log_format!r}")
    return log_format == "json" or (log_format == "auto" and not stream.isatty())


def configure_logging(
    log_format: str = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    """Configure structlog for the CLI: JSON lines, or console lines on a terminal.

    The library itself never calls this; applications configure logging as they like.
    """
    stream = stream or sys.stderr
    as_json = json_lines(log_format, stream)
    if level.lower() not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    # Tracebacks as plain text, never with local variables (they hold settings and
    # credentials); JSON gets them as a field.
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(
            colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_sensitive,
            *([structlog.processors.format_exc_info] if as_json else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    if level.lower() == "debug":
        # The SDK's own debug logs help when a call misbehaves; they go through a filter
        # that removes signatures, tokens and key material first.
        _route_botocore_debug(stream)
    else:
        _route_sdk(_SdkWarnings(), logging.WARNING)


def default_logger() -> Any:
    """The library's logger: the application's structlog set-up when it has one.

    When structlog is not configured, a private logger writes info and above as console
    lines to stderr, so library use is not flooded with debug output, and the global
    configuration is left alone.
    """
    if structlog.is_configured():
        return structlog.get_logger("batch_updater")
    return structlog.wrap_logger(
        structlog.WriteLogger(sys.stderr),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_sensitive,
            structlog.dev.ConsoleRenderer(
                colors=False, exception_formatter=structlog.dev.plain_traceback
            ),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
