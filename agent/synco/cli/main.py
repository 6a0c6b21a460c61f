"""The `synco` command: parse arguments, dispatch to one command module, map errors to exit codes."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from synco import __version__
from synco.cli import check, master, run
from synco.cli.output import error
from synco.errors import EXIT_FAILED, EXIT_USAGE, SyncoError
from synco.loader import load
from synco.model import Script

DESCRIPTION = "Synco keeps servers in sync and backed up with rsync."


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise SystemExit(_usage(f"{self.prog}: error: {message}"))


def _usage(message: str) -> int:
    print(message, file=sys.stderr)
    return EXIT_USAGE


def build_parser(with_script: bool = True) -> argparse.ArgumentParser:
    parser = _Parser(prog="synco", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"synco {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module, help_text in (
        ("run", run, "run a backup script once"),
        ("check", check, "validate a backup script and list every problem"),
        ("master", master, "show which server is the master, and why"),
    ):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if with_script:
            sub.add_argument("script", metavar="SCRIPT", help="backup script (.toml or .py)")
        module.add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if arguments.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return _guarded(lambda: _dispatch(arguments, None))


def main_for_script(script: Script, argv: list[str]) -> int:
    """An executable Python script's command line: the same commands without SCRIPT."""
    if not argv or argv[0].startswith("-"):
        argv = ["run", *argv]
    arguments = build_parser(with_script=False).parse_args(argv)
    return _guarded(lambda: _dispatch(arguments, script))


def _dispatch(arguments: argparse.Namespace, script: Script | None) -> int:
    if arguments.command == "check":
        if script is not None:
            from synco.loader import checked

            checked(script)
            print("ok")
            return 0
        return check.command(Path(arguments.script), arguments)
    if script is None:
        script = load(arguments.script)
    else:
        from synco.loader import checked

        script = checked(script, os.path.abspath(sys.argv[0]))
    if arguments.command == "run":
        return run.command(script, arguments)
    return master.command(script, arguments)


class Terminated(BaseException):
    """SIGTERM: unwind like an interruption so that child processes are stopped first."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def _guarded(action: object) -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return action()  # type: ignore[operator,no-any-return]
    except Terminated:
        error("terminated")
        return 143
    except SyncoError as failure:
        error(str(failure))
        return failure.exit_code
    except KeyboardInterrupt:
        error("interrupted")
        return 130
    except Exception as failure:  # the contract: an error message, never a bare traceback
        if os.environ.get("SYNCO_DEBUG"):
            traceback.print_exc()
        error(f"internal error: {type(failure).__name__}: {failure} (SYNCO_DEBUG=1 shows the traceback)")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
