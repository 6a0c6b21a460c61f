"""The `synco` command: parse arguments, dispatch to one command module, map errors to exit codes."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from synco import __version__, staged_run
from synco.cli import check, dns, list_snapshots, master, mount, prune, rotate, run, verify
from synco.cli.output import emit_json, error, flushed, leave_quietly, reader_gone
from synco.core.errors import EXIT_FAILED, EXIT_USAGE, ConfigError, SyncoError, Terminated
from synco.core.model import Script
from synco.loader import checked, load

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
    parser.add_argument(
        "--root",
        default=".",
        metavar="DIR",
        help="snapshot root for rotate, prune, list and verify (default: here)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module, help_text in (
        ("run", run, "run a backup script once"),
        ("check", check, "validate a backup script and list every problem"),
        ("master", master, "show which server is the master, and why"),
    ):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if with_script and name == "run":
            sub.add_argument(
                "script",
                metavar="SCRIPT",
                nargs="+",
                help="backup script (.toml or .py); several run one after another; or one plan "
                "file (TOML with a top-level `stages` array) of stages of scripts",
            )
        elif with_script:
            sub.add_argument(
                "script",
                metavar="SCRIPT",
                help="backup script (.toml or .py)" + (", or a plan" if name == "check" else ""),
            )
        module.add_arguments(sub)
    dns.add_arguments(
        commands.add_parser(
            "dns", help="change the master's DNS record (compare-and-set)", description=dns.__doc__
        )
    )
    mount.mount_arguments(commands.add_parser("mount", help="mount a backup disk by its label"))
    mount.unmount_arguments(commands.add_parser("unmount", help="unmount a backup disk"))
    for name, add, help_text in (
        ("rotate", rotate.add_arguments, "publish latest.snapshot and point latest at it"),
        ("prune", prune.add_arguments, "erase the snapshots the retention policy does not keep"),
        ("list", list_snapshots.add_arguments, "list snapshots, their age and size"),
        ("verify", verify.add_arguments, "check a snapshot against its manifest or its source"),
        (
            "snapshot-begin",
            rotate.begin_arguments,
            "prepare latest.snapshot for writing (btrfs: a subvolume)",
        ),
    ):
        add(commands.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if arguments.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return _guarded(lambda: _dispatch(arguments, None), getattr(arguments, "json", False))


def main_for_script(script: Script, argv: list[str]) -> int:
    """An executable Python script's command line: the same commands without SCRIPT."""
    if not argv or argv[0].startswith("-"):
        argv = ["run", *argv]
    arguments = build_parser(with_script=False).parse_args(argv)
    return _guarded(lambda: _dispatch(arguments, script), getattr(arguments, "json", False))


ROOT_COMMANDS = {
    "rotate": rotate.command,
    "prune": prune.command,
    "list": list_snapshots.command,
    "verify": verify.command,
    "snapshot-begin": rotate.begin,
}


def _dispatch(arguments: argparse.Namespace, script: Script | None) -> int:
    if arguments.command in ROOT_COMMANDS:
        root = Path(arguments.root).absolute()
        if arguments.command != "snapshot-begin":  # which makes a new target's root
            _existing(root)
        return ROOT_COMMANDS[arguments.command](root, arguments)
    if arguments.command == "mount":
        return mount.mount(arguments)
    if arguments.command == "unmount":
        return mount.unmount(arguments)
    if arguments.command == "dns":
        return dns.command(load(arguments.script), arguments)
    if arguments.command == "run" and script is None:
        scripts = list(arguments.script)
        if len(scripts) > 1 or staged_run.is_plan_file(Path(scripts[0])):
            return staged_run.command(scripts, arguments)
        arguments.script = scripts[0]
    if arguments.command == "check" and script is None and staged_run.is_plan_file(Path(arguments.script)):
        return staged_run.check_command(Path(arguments.script), arguments)
    if arguments.command == "check":
        if script is not None:
            checked(script)
            print("ok")
            return 0
        return check.command(Path(arguments.script), arguments)
    script = load(arguments.script) if script is None else checked(script, os.path.abspath(sys.argv[0]))
    if arguments.command == "run":
        return run.command(script, arguments)
    return master.command(script, arguments)


def _existing(root: Path) -> None:
    """A snapshot root to read or change must exist: a misspelled --root would otherwise
    list nothing, prune nothing, and exit 0 as if all were well."""
    if not root.is_dir():
        raise ConfigError(f"no such directory: {root}" if not root.exists() else f"not a directory: {root}")


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def _guarded(action: Callable[[], int], as_json: bool = False) -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return flushed(action())
    except Terminated:
        return _failed("terminated", 143, as_json)
    except SyncoError as failure:
        problems = failure.problems if isinstance(failure, ConfigError) else ()
        return _failed(str(failure), failure.exit_code, as_json, problems)
    except KeyboardInterrupt:
        return _failed("interrupted", 130, as_json)
    except BrokenPipeError as failure:  # `synco ... | head -1`: the reader went away
        return leave_quietly() if reader_gone() else _internal(failure, as_json)
    except Exception as failure:  # the contract: an error message, never a bare traceback
        return _internal(failure, as_json)


def _internal(failure: Exception, as_json: bool) -> int:
    if os.environ.get("SYNCO_DEBUG"):
        traceback.print_exc()
    message = f"internal error: {type(failure).__name__}: {failure} (SYNCO_DEBUG=1 shows the traceback)"
    return _failed(message, EXIT_FAILED, as_json)


def _failed(message: str, code: int, as_json: bool, problems: tuple[str, ...] = ()) -> int:
    error(message)
    if as_json:
        first_line = message.splitlines()[0] if message else message
        emit_json({"ok": False, "exit_code": code, "error": first_line, "problems": list(problems)})
    return code


if __name__ == "__main__":
    sys.exit(main())
