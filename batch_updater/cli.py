"""Command line: a thin layer over :func:`batch_updater.run_batch` and the emulator."""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO, cast

import structlog

from ._version import __version__
from .errors import SetupError
from .logs import LEVELS, configure_logging, json_lines
from .progress import BarStream
from .report import summary_path
from .results import RunSummary, Status
from .rows import ValidationInterrupted
from .runner import RunConfig, run_batch_with_signals
from .s3 import S3Location, to_location
from .shard import Shard, shard_from_environment

__all__ = ["main"]

EXIT_OK, EXIT_ROWS, EXIT_SETUP = 0, 1, 2
EXIT_SIGINT = 130  # Ctrl-C before the run's own handlers are installed
ENV_PREFIX = "BATCH_UPDATER_"
_BAR_REFRESH = 0.5  # seconds between redraws of the progress bar

EPILOG = """\
examples:
  batch-updater run --local inputs/example.csv          # whole job against the built-in emulator
  batch-updater run apps.csv --dry-run                  # validate only, write the report
  batch-updater run apps.csv --region us-east-1 --rate 5 --report reports/apps.csv
  batch-updater merge reports/apps-shard-*.csv --input apps.csv --output reports/apps.csv
  batch-updater emulate --port 4566 --rate 50           # standalone emulator

exit codes: 0 all rows succeeded or skipped; 1 some row failed, invalid or not attempted;
            2 usage or setup error before any call; 130 SIGINT; 143 SIGTERM
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage block: the message says what to fix.
        self.exit(EXIT_SETUP, f"{self.prog}: error: {message} (see --help)\n")


def _number(text: str, convert: type[int] | type[float]) -> Any:
    """``convert(text)``, or an error argparse shows after the flag's name.

    argparse would otherwise say "invalid _non_negative value", naming this module's
    function instead of what is expected.
    """
    try:
        return convert(text)
    except ValueError:
        what = "a whole number" if convert is int else "a number"
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def _positive_int(text: str) -> int:
    value: int = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value: int = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _non_negative(text: str) -> float:
    value: float = _number(text, float)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _positive(text: str) -> float:
    value: float = _number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _probability(text: str) -> float:
    value: float = _number(text, float)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _location(text: str) -> Path | S3Location:
    """A path or ``s3://bucket/key`` (argparse's type)."""
    try:
        return to_location(text)
    except SetupError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The ``batch-updater`` argument parser; ``env`` supplies ``BATCH_UPDATER_*`` defaults."""
    parser = _Parser(
        prog="batch-updater",
        description="Apply Amazon Cognito login settings to many AWS Amplify apps "
        "(AmplifyBackend UpdateBackendConfig).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser(
        "run",
        help="validate the input CSV and update every app",
        description="Validate every row of INPUT, then call UpdateBackendConfig for each "
        "valid row and write a per-row report.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "input",
        metavar="INPUT",
        type=_location,
        nargs="?",
        help="CSV of apps and settings (a path or s3://bucket/key); - reads standard input",
    )
    run.add_argument(
        "--report",
        type=_location,
        metavar="PATH",
        help="report file or s3://bucket/key (.csv, or .jsonl for JSON lines); "
        "default reports/<input stem>-<UTC time>.csv beside the input",
    )
    run.add_argument(
        "--checkpoint-interval",
        type=_positive,
        default=60.0,
        metavar="SECONDS",
        help="seconds between uploads of a report on S3 (default 60)",
    )
    run.add_argument(
        "--overwrite", action="store_true", help="replace the report if it already exists"
    )
    run.add_argument(
        "--resume",
        type=_location,
        action="append",
        default=[],
        metavar="REPORT",
        help="skip rows an earlier report (CSV or JSONL) lists as succeeded with the same "
        "settings; repeatable",
    )
    run.add_argument(
        "--keep-column",
        action="append",
        default=[],
        metavar="NAME",
        help="carry the input's extra column NAME (like notes or owner) into the report, "
        "after its own columns; repeatable",
    )
    run.add_argument("--region", metavar="R", help="region for rows without a region column")
    run.add_argument(
        "--allow-unknown-region",
        action="store_true",
        help="accept any name shaped like a region (us-east-1), not only the regions the "
        "installed botocore knows: for a region newer than the SDK",
    )
    run.add_argument("--profile", metavar="P", help="AWS profile (standard credential chain)")
    run.add_argument("--endpoint-url", metavar="URL", help="send the calls to this endpoint")
    run.add_argument(
        "--allow-insecure-endpoint",
        action="store_true",
        help="allow a plain http:// endpoint that is not on this machine",
    )
    run.add_argument(
        "--local",
        action="store_true",
        help="run against the built-in emulator on 127.0.0.1 (no AWS account needed)",
    )
    run.add_argument(
        "--rate",
        type=_non_negative,
        default=10.0,
        metavar="N",
        help="requests per second per region, retries included; 0 = unlimited (default 10)",
    )
    run.add_argument(
        "--no-adaptive",
        dest="adaptive",
        action="store_false",
        help="keep --rate fixed instead of lowering it when the service throttles",
    )
    run.add_argument(
        "--burst",
        type=_positive_int,
        default=1,
        metavar="N",
        help="requests allowed back to back (default 1: evenly spaced)",
    )
    run.add_argument(
        "--concurrency", type=_positive_int, default=16, metavar="N", help="workers (default 16)"
    )
    run.add_argument(
        "--max-attempts",
        type=_positive_int,
        default=8,
        metavar="N",
        help="attempts per row, first try included (default 8)",
    )
    run.add_argument(
        "--request-timeout",
        type=_positive,
        default=30.0,
        metavar="SECONDS",
        help="read timeout of one request (default 30)",
    )
    run.add_argument(
        "--backoff-cap",
        type=_non_negative,
        default=20.0,
        metavar="SECONDS",
        help="longest wait between retries (default 20)",
    )
    run.add_argument(
        "--grace-period",
        type=_non_negative,
        default=20.0,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, how long calls in flight may finish (default 20)",
    )
    run.add_argument(
        "--max-failure-rate",
        type=_probability,
        default=0.5,
        metavar="R",
        help="stop when more than this share of the last --failure-window rows failed "
        "(default 0.5)",
    )
    run.add_argument(
        "--failure-window",
        type=_positive_int,
        default=100,
        metavar="N",
        help="rows the failure rate is measured over (default 100)",
    )
    run.add_argument(
        "--max-failures",
        type=_non_negative_int,
        default=None,
        metavar="N",
        help="stop when more than N rows failed (default: no limit)",
    )
    run.add_argument(
        "--dry-run", action="store_true", help="validate and write the report; send nothing"
    )
    run.add_argument(
        "--skip-invalid",
        action="store_true",
        help="send the valid rows even when some rows are invalid",
    )
    run.add_argument(
        "--shard",
        metavar="K/N",
        type=Shard.parse,
        help="run only shard K of N (K from 0): rows whose stable hash of (region, app_id) "
        "modulo N is K; default from JOB_COMPLETION_INDEX or AWS_BATCH_JOB_ARRAY_INDEX",
    )
    run.add_argument(
        "--shard-count",
        type=_positive_int,
        metavar="N",
        help="number of shards for a Kubernetes Indexed Job (with JOB_COMPLETION_INDEX)",
    )
    run.add_argument(
        "--rate-per-shard",
        action="store_true",
        help="--rate is per shard; by default each of N shards gets --rate / N",
    )
    run.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bar or events"
    )
    run.add_argument(
        "--progress-interval",
        type=_positive,
        default=30.0,
        metavar="SECONDS",
        help="seconds between progress events when stderr is not a terminal (default 30)",
    )
    run.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default="auto",
        help="auto: console lines on a terminal, JSON lines otherwise",
    )
    run.add_argument(
        "--log-level", choices=LEVELS, default="info", type=str.lower, help="default info"
    )

    _document_environment(run)
    if env is not None:
        apply_environment(run, env)
        run.set_defaults(unknown_variables=unknown_variables(run, env))

    _add_merge(commands)
    _add_emulate(commands)
    return parser


def _add_merge(commands: Any) -> None:
    merge = commands.add_parser(
        "merge",
        help="merge shard reports into one report and summary",
        description="Merge the reports of a sharded run into one report (sorted by line) "
        "and its summary; with --input, check that every input line appears exactly once.",
    )
    merge.add_argument(
        "reports",
        nargs="+",
        type=_location,
        metavar="REPORT",
        help="a report (path or s3://bucket/key), or s3://bucket/prefix/ for every report under it",
    )
    merge.add_argument("--output", "-o", type=_location, required=True, metavar="PATH")
    merge.add_argument("--input", type=_location, dest="input_path", metavar="INPUT")
    merge.add_argument("--overwrite", action="store_true", help="replace an existing output")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a port number (0 to 65535; 0: any free port)"
        ) from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"must be a port number from 0 to 65535 (0: any free port), got {value}"
        )
    return value


def _add_emulate(commands: Any) -> None:
    emulate = commands.add_parser(
        "emulate",
        help="run the AmplifyBackend emulator in the foreground",
        description="A local AmplifyBackend endpoint speaking the real rest-json protocol.",
    )
    emulate.add_argument(
        "--port", type=_port, default=4566, help="port (default 4566; 0 = any free port)"
    )
    emulate.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    emulate.add_argument(
        "--rate", type=_non_negative, default=0.0, help="server rate limit per second (0 = none)"
    )
    emulate.add_argument("--burst", type=_positive_int, default=1, help="server burst")
    emulate.add_argument(
        "--p504", type=_probability, default=0.0, help="probability of a random 504 (0 to 1)"
    )
    emulate.add_argument("--latency-ms", type=_non_negative, default=0.0, help="added latency")
    emulate.add_argument(
        "--known-apps",
        metavar="IDS",
        help="comma-separated app ids that exist (default: every well-formed id)",
    )
    emulate.add_argument("--seed", type=int, default=None, help="random seed")
    emulate.add_argument(
        "--limit-per",
        default="endpoint",
        metavar="SCOPE",
        help="what one --rate limit covers: endpoint (default), region, or access-key-region "
        "(each access key in each signing region, the way AWS limits each account)",
    )


def resume_command(argv: Sequence[str], report: Path | None) -> str:
    """The command that finishes an interrupted run: same flags, resuming from ``report``
    (which lists the rows of the earlier reports too); with no ``report`` (it holds
    nothing), the same command with its own ``--resume`` flags, to a new report."""
    dropped = ("--report",) if report is None else ("--report", "--resume")
    out: list[str] = ["batch-updater"]
    skip_next = False
    for arg in argv:
        if skip_next:
            skip_next = False
            continue
        if arg in dropped:
            skip_next = True
            continue
        if arg == "--overwrite" or arg.startswith(tuple(f"{flag}=" for flag in dropped)):
            continue
        out.append(arg)
    return shlex.join(out if report is None else [*out, "--resume", str(report)])


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def env_name(action: argparse.Action) -> str:
    """``--max-attempts`` -> ``BATCH_UPDATER_MAX_ATTEMPTS``; INPUT -> ``BATCH_UPDATER_INPUT``."""
    flag = max(action.option_strings, key=len) if action.option_strings else action.dest
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def _from_env(action: argparse.Action, name: str, text: str) -> object:
    if isinstance(action, argparse._StoreConstAction):  # store_true / store_false
        lowered = text.strip().lower()
        if lowered not in _TRUE + _FALSE:
            raise SetupError(f"{name}={text!r}: use true or false")
        given = lowered in _TRUE
        return action.const if given else action.default
    convert = action.type if callable(action.type) else str
    try:
        if isinstance(action, argparse._AppendAction):
            return [convert(part.strip()) for part in text.split(",") if part.strip()]
        value = convert(text)
    except (argparse.ArgumentTypeError, ValueError, SetupError) as exc:
        raise SetupError(f"{name}={text!r}: {exc}") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise SetupError(f"{name}={text!r}: use one of {choices}")
    return value


def apply_environment(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    """Take each option's default from ``BATCH_UPDATER_<FLAG>``; the command line still wins."""
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = env_name(action)
        if name in env:
            value = _from_env(action, name, env[name])
            # argparse appends command-line values to a list default; keep the variable's
            # list apart so that the command line replaces it instead.
            dest = (
                f"env_{action.dest}" if isinstance(action, argparse._AppendAction) else action.dest
            )
            parser.set_defaults(**{dest: value})


def unknown_variables(
    parser: argparse.ArgumentParser, env: Mapping[str, str]
) -> list[tuple[str, str | None]]:
    """``BATCH_UPDATER_*`` variables in ``env`` that match no option of ``parser``, each
    with the closest variable that does (or None)."""
    known = {
        env_name(action)[len(ENV_PREFIX) :]
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction)
    }
    out: list[tuple[str, str | None]] = []
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name[len(ENV_PREFIX) :] not in known:
            close = difflib.get_close_matches(name[len(ENV_PREFIX) :], known, n=1)
            out.append((name, ENV_PREFIX + close[0] if close else None))
    return out


def _document_environment(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if not isinstance(action, argparse._HelpAction) and action.help:
            action.help += f" [env {env_name(action)}]"


def _print_summary(summary: RunSummary) -> None:
    counts = ", ".join(f"{n} {s}" for s, n in summary.counts.items() if n)
    print(
        f"batch-updater: {summary.rows} rows in {summary.elapsed_seconds:.1f} s "
        f"({summary.rows_per_second:.1f} rows/s): {counts or 'no rows'}\n"
        f"  requests {summary.requests}, retries {summary.retries}, "
        f"throttled {summary.throttles}\n"
        f"  report:  {summary.report_path}",
        file=sys.stderr,
    )
    assert summary.report_path is not None
    written: Path | S3Location | None
    if isinstance(summary.report_path, S3Location):  # uploaded unless an output failed
        written = summary.report_path.summary() if summary.output_error is None else None
    else:
        local = summary_path(summary.report_path)
        written = local if local.is_file() else None
    if written is not None:
        print(f"  summary: {written}", file=sys.stderr)
    _print_invalid(summary)
    if summary.stop_reason is not None:
        print(f"  stopped early: {summary.stop_reason.message}", file=sys.stderr)
    if summary.input_problem is not None:
        print(f"  {summary.input_problem}", file=sys.stderr)
    if summary.lanes_down:
        print(
            f"  unreachable (rows not sent, re-running them is safe): "
            f"{', '.join(summary.lanes_down)}",
            file=sys.stderr,
        )
    error = summary.output_error
    if error is not None and (summary.stop_reason is None or error != summary.stop_reason.message):
        print(f"  error: {error}", file=sys.stderr)
    if written is None:
        print(f"  summary (not written): {json.dumps(summary.to_json())}", file=sys.stderr)
    if summary.resume_command:
        print(f"  to finish the job: {summary.resume_command}", file=sys.stderr)


def _print_invalid(summary: RunSummary) -> None:
    """The count of invalid rows and the first few (line and reason), if there are any."""
    invalid = summary.counts[Status.INVALID]
    if not invalid:
        return
    shown = summary.first_invalid
    noun = "row" if invalid == 1 else "rows"
    head = f"; first {len(shown)}:" if len(shown) < invalid else ":"
    lines = [f"  {invalid} invalid {noun}{head}"]
    lines += [f"    line {r.line}: {r.error_message}" for r in shown]
    if not summary.settings.get("skip_invalid"):
        lines.append("  fix them, or pass --skip-invalid to send the valid rows")
    print("\n".join(lines), file=sys.stderr)


def _run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    if args.input is None:
        raise SetupError("no INPUT: give the CSV path, or set BATCH_UPDATER_INPUT")
    as_json = json_lines(args.log_format, sys.stderr)
    on_terminal = args.progress and sys.stderr.isatty() and not as_json
    bar = BarStream(sys.stderr) if on_terminal else None
    configure_logging(args.log_format, args.log_level, stream=cast("TextIO", bar))
    log = structlog.get_logger("batch_updater")
    for name, close in getattr(args, "unknown_variables", ()):
        hint = f"; did you mean {close}?" if close else ""
        log.warning(
            "unknown_variable",
            variable=name,
            did_you_mean=close,
            message=f"{name} matches no option and is ignored{hint}",
        )
    shard = args.shard or shard_from_environment(args.shard_count)
    config = RunConfig(
        shard=shard,
        rate_per_shard=args.rate_per_shard,
        progress_log=args.progress and bar is None,
        progress_interval=_BAR_REFRESH if bar is not None else args.progress_interval,
        report_path=args.report,
        overwrite=args.overwrite,
        resume=tuple(args.resume or getattr(args, "env_resume", ())),
        keep_columns=tuple(args.keep_column or getattr(args, "env_keep_column", ())),
        checkpoint_interval=args.checkpoint_interval,
        allow_insecure_endpoint=args.allow_insecure_endpoint,
        grace_period=args.grace_period,
        max_failure_rate=args.max_failure_rate,
        failure_window=args.failure_window,
        max_failures=args.max_failures,
        region=args.region,
        allow_unknown_region=args.allow_unknown_region,
        profile=args.profile,
        endpoint_url=args.endpoint_url,
        local=args.local,
        rate=args.rate,
        adaptive=args.adaptive,
        burst=args.burst,
        concurrency=args.concurrency,
        max_attempts=args.max_attempts,
        request_timeout=args.request_timeout,
        backoff_cap=args.backoff_cap,
        dry_run=args.dry_run,
        skip_invalid=args.skip_invalid,
        collect_results=False,
    )
    try:
        summary = asyncio.run(
            run_batch_with_signals(
                args.input,
                config,
                on_progress=bar.show if bar is not None else None,
                resume_command=lambda report: resume_command(argv, report),
            )
        )
    finally:
        if bar is not None:
            bar.clear()
    if not as_json:  # in JSON mode the run_end event carries the summary
        _print_summary(summary)
    return summary.exit_code


def _merge(args: argparse.Namespace) -> int:
    from .merge import merge_reports  # noqa: PLC0415 - merge only

    def warn(message: str) -> None:
        print(f"batch-updater: warning: {message}", file=sys.stderr)

    given = [*args.reports, args.output, args.input_path]
    if any(isinstance(location, S3Location) for location in given):
        from .client import make_session  # noqa: PLC0415 - the SDK only for S3
        from .s3 import merge_on_s3  # noqa: PLC0415 - merge only

        result, merged = asyncio.run(
            merge_on_s3(
                args.reports,
                args.output,
                input_path=args.input_path,
                overwrite=args.overwrite,
                warn=warn,
                session=make_session(),
            )
        )
    else:
        merged = len(args.reports)
        result = merge_reports(
            args.reports,
            args.output,
            input_path=args.input_path,
            overwrite=args.overwrite,
            warn=warn,
        )
    counts = ", ".join(f"{n} {s}" for s, n in result.counts.items() if n)
    print(
        f"batch-updater: merged {merged} reports, {result.rows} rows: "
        f"{counts or 'no rows'}\n  report:  {result.output}\n  summary: {result.summary_path}",
        file=sys.stderr,
    )
    return result.exit_code


def _emulate(args: argparse.Namespace) -> int:
    from .emulator import EmulatorConfig, main_emulate  # noqa: PLC0415 - emulate only

    known = (
        frozenset(a.strip() for a in args.known_apps.split(",") if a.strip())
        if args.known_apps
        else None
    )
    try:
        config = EmulatorConfig(
            rate=args.rate or None,
            burst=args.burst,
            faults={"504": args.p504} if args.p504 else {},
            latency_ms=args.latency_ms,
            known_apps=known,
            seed=args.seed,
            limit_per=args.limit_per,
        )
    except ValueError as exc:  # the one place that checks the emulator's settings
        raise SetupError(f"emulate: {exc}") from None
    main_emulate(args.port, config, host=args.host)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``batch-updater`` and ``python -m batch_updater``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser(os.environ).parse_args(argv)
        if args.command == "run":
            return _run(args, argv)
        if args.command == "merge":
            return _merge(args)
        return _emulate(args)
    except SetupError as exc:
        print(f"batch-updater: error: {exc}", file=sys.stderr)
        return EXIT_SETUP
    except ValidationInterrupted as exc:
        print(f"batch-updater: {exc}; no report was written", file=sys.stderr)
        return 128 + exc.signal if exc.signal else EXIT_ROWS
    except KeyboardInterrupt:
        print("batch-updater: interrupted", file=sys.stderr)
        return EXIT_SIGINT
