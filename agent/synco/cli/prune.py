"""`synco [--root DIR] prune`: erase the snapshots the retention policy does not keep."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from synco.cli.output import emit_json
from synco.cli.rotate import add_store_arguments, store
from synco.core.errors import EXIT_FAILED, EXIT_OK, ConfigError
from synco.core.retention import DEFAULT_COUNTS, PERIODS, Policy, parse_duration
from synco.lock import snapshot_lock
from synco.pruning import prune

HELP = (
    "Rules keep one snapshot per hour, day, ISO week, month, quarter or year for the N most "
    "recent such periods that have a snapshot. With no rule given, the default policy is "
    + ", ".join(f"--{p} {n}" for p, n in DEFAULT_COUNTS.items())
    + "; with any rule given, only the rules given apply. The snapshot `latest` points at is always kept."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = HELP
    add_store_arguments(parser, snapshot=False)
    for period in PERIODS:
        parser.add_argument(
            f"--{period}", type=_count, metavar="N", help=f"keep {period} snapshots for N periods"
        )
    parser.add_argument(
        "--keep",
        choices=("old", "new"),
        default="old",
        help="which snapshot represents a period: the oldest (default) or the newest",
    )
    parser.add_argument("--keep-last", type=_count, metavar="N", help="keep the N newest snapshots")
    parser.add_argument(
        "--keep-within",
        type=_duration,
        metavar="DURATION",
        help="keep every snapshot newer than DURATION (e.g. 36h, 14d)",
    )
    parser.add_argument("--timezone", help="time zone of the periods (default UTC), e.g. Europe/Paris")
    parser.add_argument("--now", type=_moment, help="decide as if it were this time (ISO 8601)")
    parser.add_argument("--dry-run", "--dry", action="store_true", help="list the decisions, erase nothing")
    parser.add_argument("--json", action="store_true", help="print the decisions as JSON on stdout")


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _duration(text: str) -> object:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from error
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def policy_of(arguments: argparse.Namespace) -> Policy:
    timezone = UTC if not arguments.timezone else _zone(arguments.timezone)
    counts = {p: getattr(arguments, p) for p in PERIODS if getattr(arguments, p) is not None}
    return Policy(counts, arguments.keep, arguments.keep_last, arguments.keep_within, timezone)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ConfigError(f"--timezone: unknown time zone {name!r}") from error


def command(root: Path, arguments: argparse.Namespace) -> int:
    snapshots_store = store(root, arguments)
    policy = policy_of(arguments)
    now = arguments.now or datetime.now(UTC)
    log = sys.stderr if arguments.json else sys.stdout
    print(
        f"prune {root}: {policy.effective().describe()}{' (dry run)' if arguments.dry_run else ''}", file=log
    )
    if arguments.dry_run:
        pruning = prune(snapshots_store, policy, now, dry_run=True)
    else:
        with snapshot_lock(root):
            pruning = prune(snapshots_store, policy, now)
    latest, failures = pruning.latest, pruning.failures
    results = []
    for outcome in pruning.outcomes:
        decision, error = outcome.decision, outcome.error
        line = decision.describe() + (f"  FAILED: {error}" if error else "")
        print(line, file=log)
        results.append(
            {
                "name": decision.snapshot.name,
                "time": decision.snapshot.time.isoformat(),
                "keep": decision.keep,
                "reasons": list(decision.reasons),
                "erased": None if decision.keep or arguments.dry_run else error is None,
                "error": error,
            }
        )
    if arguments.json:
        emit_json(
            {
                "ok": not failures,
                "root": str(root),
                "dry_run": arguments.dry_run,
                "now": now.isoformat(),
                "policy": policy.effective().describe(),
                "latest": latest,
                "snapshots": results,
                "failures": failures,
            }
        )
    for message in failures:
        print(f"synco: failed to erase {message}", file=sys.stderr)
    return EXIT_FAILED if failures else EXIT_OK
