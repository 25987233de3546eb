"""Command line: a thin layer over :func:`batch_updater.run_batch` and the emulator."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO, cast

import structlog

from . import options
from ._version import __version__
from .config import AT_LEAST_0, AT_LEAST_1, SHARE, RunConfig
from .errors import SetupError
from .logs import configure_logging, json_lines
from .options import number
from .progress import BarStream
from .report import summary_path
from .results import RunSummary, Status
from .rows import ValidationInterrupted
from .runner import run_batch_with_signals
from .s3 import S3Location
from .shard import shard_from_environment

__all__ = ["main"]

EXIT_OK, EXIT_ROWS, EXIT_SETUP = 0, 1, 2
EXIT_SIGINT = 130  # Ctrl-C before the run's own handlers are installed
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


def build_parser() -> argparse.ArgumentParser:
    """The ``batch-updater`` argument parser. The ``run`` options come from
    :data:`batch_updater.options.RUN_OPTIONS`; :func:`batch_updater.options.resolve` gives
    each its value (command line, else ``BATCH_UPDATER_*`` variable, else default)."""
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
        "valid row and write a per-row report. Every option can also be set as the "
        "variable shown after it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    options.add_to(run)
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
        type=options.location,
        metavar="REPORT",
        help="a report (path or s3://bucket/key), or s3://bucket/prefix/ for every report under it",
    )
    merge.add_argument("--output", "-o", type=options.location, required=True, metavar="PATH")
    merge.add_argument("--input", type=options.location, dest="input_path", metavar="INPUT")
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
        "--rate",
        type=number(float, AT_LEAST_0),
        default=0.0,
        help="server rate limit per second (0 = none)",
    )
    emulate.add_argument("--burst", type=number(int, AT_LEAST_1), default=1, help="server burst")
    emulate.add_argument(
        "--p504",
        type=number(float, SHARE),
        default=0.0,
        help="probability of a random 504 (0 to 1)",
    )
    emulate.add_argument(
        "--latency-ms", type=number(float, AT_LEAST_0), default=0.0, help="added latency"
    )
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
    emulate.add_argument(
        "--region-rate",
        type=_region_number,
        action="append",
        default=[],
        metavar="REGION=N",
        help="rate limit of the requests signed for REGION instead of --rate; repeatable",
    )
    emulate.add_argument(
        "--region-latency-ms",
        type=_region_number,
        action="append",
        default=[],
        metavar="REGION=MS",
        help="latency of the requests signed for REGION instead of --latency-ms; repeatable",
    )


def _region_number(text: str) -> tuple[str, float]:
    """``us-west-2=2`` -> ``("us-west-2", 2.0)``."""
    region, sep, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not sep or not region.strip() or not number >= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r}: use REGION=NUMBER (0 or more), e.g. us-west-2=2"
        )
    return region.strip(), number


def resume_command(argv: Sequence[str], report: Path | None) -> str:
    """The command that finishes an interrupted run: same flags, resuming from ``report``
    (which lists the rows of the earlier reports too); with no ``report`` (it holds
    nothing), the same command with its own ``--resume`` flags, to a new report. Always
    without ``--overwrite``."""
    dropped = {"--report", "--overwrite"} | (set() if report is None else {"--resume"})
    out: list[str] = ["batch-updater"]
    words = iter(argv)
    for arg in words:
        option = options.option_for(arg)
        with_value = option is not None and option.takes_value and "=" not in arg
        value = [next(words, None)] if with_value else []
        if option is None or option.flag not in dropped:
            out += [arg, *(v for v in value if v is not None)]
    return shlex.join(out if report is None else [*out, "--resume", str(report)])


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
    for account, why in summary.accounts_stopped.items():
        print(f"  account {account} stopped (its rows not sent): {why}", file=sys.stderr)
    for check in summary.access_checks or ():
        verdict = "ok" if check["ok"] else f"FAILED: {check['reason']}"
        role = f" ({check['role_arn']})" if check["role_arn"] else " (base credentials)"
        print(f"  access {check['account_id'] or '-'}{role}: {verdict}", file=sys.stderr)
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


def _run(values: dict[str, Any], argv: Sequence[str], env: Mapping[str, str]) -> int:
    if values["input"] is None:
        raise SetupError("no INPUT: give the CSV path, or set BATCH_UPDATER_INPUT")
    as_json = json_lines(values["log_format"], sys.stderr)
    on_terminal = values["progress"] and sys.stderr.isatty() and not as_json
    bar = BarStream(sys.stderr) if on_terminal else None
    configure_logging(values["log_format"], values["log_level"], stream=cast("TextIO", bar))
    log = structlog.get_logger("batch_updater")
    for name, close in options.unknown_variables(env):
        hint = f"; did you mean {close}?" if close else ""
        log.warning(
            "unknown_variable",
            variable=name,
            did_you_mean=close,
            message=f"{name} matches no option and is ignored{hint}",
        )
    config = RunConfig.from_flat(
        **{
            **options.config_settings(values),
            "shard": values["shard"] or shard_from_environment(values["shard_count"]),
            "progress_log": values["progress"] and bar is None,
            "progress_interval": _BAR_REFRESH if bar is not None else values["progress_interval"],
            "collect_results": False,
        }
    )
    try:
        summary = asyncio.run(
            run_batch_with_signals(
                values["input"],
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
            region_rate=dict(args.region_rate),
            region_latency_ms=dict(args.region_latency_ms),
        )
    except ValueError as exc:  # the one place that checks the emulator's settings
        raise SetupError(f"emulate: {exc}") from None
    main_emulate(args.port, config, host=args.host)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``batch-updater`` and ``python -m batch_updater``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        if args.command == "run":
            return _run(options.resolve(vars(args), os.environ), argv, os.environ)
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
