"""`synco run SCRIPT`: copy every directory from the master to every other server."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from synco.cli.output import emit_json
from synco.core.errors import EXIT_FAILED, EXIT_OK
from synco.core.model import Script
from synco.execution import Execution, stderr_line
from synco.lock import ScriptLock
from synco.report import RunReport
from synco.resolver import Resolver, resolve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dry-run",
        "-n",
        action="store_true",
        help="show what would be copied; run no handler, change nothing",
    )
    parser.add_argument(
        "--as",
        dest="as_server",
        metavar="SERVER",
        help="act as this server instead of finding it from this machine's names",
    )
    parser.add_argument(
        "--progress",
        action="store_true",
        help="show live progress of each directory (on a terminal)",
    )
    parser.add_argument("--json", action="store_true", help="print the run's report as JSON on stdout")
    parser.add_argument(
        "--if-master",
        action="store_true",
        help="do nothing (exit 0) unless this machine is the master: for a timer on every server",
    )


def execute(
    script: Script,
    *,
    dry_run: bool = False,
    as_server: str | None = None,
    progress: bool = False,
    resolver: Resolver | None = None,
    lock: bool = True,
    log: Callable[[str], None] | None = None,
    if_master: bool = False,
) -> RunReport:
    master, current = resolve(script, as_server, resolver)
    if if_master and current.server != master.server:
        (log or stderr_line)(
            f"{current.server or 'this machine'} is not the master ({master.reason}): nothing to do"
        )
        return RunReport(script.source, master.server, master.reason, current.server, current.reason, dry_run)
    execution = Execution(script, master, current, dry_run=dry_run, progress=progress, log=log or stderr_line)
    if dry_run or not lock:
        return execution.run()
    with ScriptLock(os.path.realpath(script.source) if script.source else repr(script.server_names)):
        return execution.run()


def command(script: Script, arguments: argparse.Namespace) -> int:
    report = execute(
        script,
        dry_run=arguments.dry_run,
        as_server=arguments.as_server,
        progress=arguments.progress and sys.stderr.isatty(),
        if_master=arguments.if_master,
    )
    if arguments.json:
        emit_json(report.to_json())
    elif not report.ok:
        for failure in report.failures:
            print(f"synco: failed: {failure}", file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_FAILED
