"""Event handlers: the scope they receive and how one event is fired."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from synco.core.errors import OperationError, SyncoError
from synco.core.model import CommandHandler, Directory, Event, Events, Script, Server, Side
from synco.shell import Completed

DEFAULT_SIDES = {
    "script": Side.LOCAL,
    "method": Side.LOCAL,
    "master": Side.SERVER,
    "server": Side.SERVER,
    "directory": Side.TARGET,
}


class CommandRunner(Protocol):
    def run_on(self, server: Server | None, argv: list[str], env: dict[str, str]) -> Completed:
        """Run argv on `server` (None: where synco runs) and return what happened."""
        ...


@dataclass
class Scope:
    """What a handler sees: the objects involved, and `run()` to execute a command."""

    event: Event
    level: str  # script | master | method | server | directory
    script: Script
    master: Server
    target: Server | None = None
    server: Server | None = None  # the server a server handler is declared on
    directory: Directory | None = None
    error: str | None = None
    dry_run: bool = False
    runner: CommandRunner | None = field(default=None, repr=False)
    log: Callable[[str], None] = field(default=print, repr=False)

    def where(self, on: Side | str | None = None) -> Server | None:
        """The server a command for side `on` runs on; None for the machine synco runs on."""
        side = Side(on) if on is not None else DEFAULT_SIDES[self.level]
        if side == Side.LOCAL:
            return None
        if side == Side.MASTER:
            return self.master
        if side == Side.TARGET and self.level == "server":
            return self.server
        if side == Side.TARGET:
            if self.target is None:
                raise OperationError(f"a {self.level} {self.event} handler has no target server")
            return self.target
        if self.server is None:
            raise OperationError(
                f"a {self.level} handler has no server of its own; use on='local' or 'master'"
            )
        return self.server

    def environment(self, runs_on: Server | None) -> dict[str, str]:
        env = {
            "SYNCO_EVENT": self.event.value,
            "SYNCO_LEVEL": self.level,
            "SYNCO_MASTER": self.master.name,
            "SYNCO_MASTER_ROOT": self.master.root,
            "SYNCO_DRY_RUN": "1" if self.dry_run else "0",
        }
        if self.target is not None:
            env["SYNCO_TARGET"] = self.target.name
            env["SYNCO_TARGET_ROOT"] = self.target.root
        if self.server is not None:
            env["SYNCO_SERVER"] = self.server.name
        if self.directory is not None:
            env["SYNCO_DIRECTORY"] = self.directory.path
        if runs_on is not None:
            env["SYNCO_ROOT"] = runs_on.root
        if self.error is not None:
            env["SYNCO_ERROR"] = self.error
        return env

    def run(self, *argv: str, on: Side | str | None = None) -> Completed | None:
        """Run a command on the side `on`, in that server's root; raise OperationError if it fails.

        In a dry run nothing is executed: the command is only reported.
        """
        if not argv:
            raise OperationError("run() needs a command")
        runs_on = self.where(on)
        place = "locally" if runs_on is None else f"on {runs_on.name}"
        if self.dry_run:
            self.log(f"  would run {place}: {shlex.join(argv)}")
            return None
        if self.runner is None:
            raise OperationError("this scope cannot run commands")
        completed = self.runner.run_on(runs_on, list(argv), self.environment(runs_on))
        for line in (completed.stdout + completed.stderr).splitlines():
            self.log(f"  | {line}")
        if completed.returncode != 0:
            detail = completed.last_lines(3)
            raise OperationError(
                f"{shlex.join(argv)} {place} failed with exit status {completed.returncode}"
                + (f": {detail}" if detail else "")
            )
        return completed


def fire(events: Events, event: Event, scope: Scope) -> str | None:
    """Run every handler of `event` in order; the first failure stops them and is returned.

    In a dry run, commands are only shown and Python handlers are not called.
    """
    for handler in events.of(event):
        if scope.dry_run and not isinstance(handler, CommandHandler):
            scope.log(f"  would call {getattr(handler, '__qualname__', repr(handler))}")
            continue
        try:
            if isinstance(handler, CommandHandler):
                for argv in handler.commands:
                    scope.run(*argv, on=handler.side)
            else:
                handler(scope)
        except SyncoError as error:
            return str(error)
        except SystemExit as error:
            return f"the handler called sys.exit({error.code!r})"
        except Exception as error:  # a Python handler's bug must not abort the other targets
            return f"{type(error).__name__}: {error}"
    return None
