"""Plan one copy: where rsync runs and its exact argv (pure)."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass

from synco.errors import ConfigError
from synco.model import Direction, Directory, Script, Server
from synco.paths import normalize_relative
from synco.rsync import Features
from synco.shell import rsync_location, ssh_argv


@dataclass(frozen=True)
class Transfer:
    """rsync `argv`, run on `runs_on` (locally when `local`), copying master -> target."""

    master: Server
    target: Server
    directory: str
    runs_on: Server
    local: bool
    argv: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.directory}: {self.master.name} -> {self.target.name}"


def plan_transfer(
    script: Script,
    master: Server,
    target: Server,
    directory: Directory,
    *,
    is_local: Callable[[Server], bool],
    features: Features,
    dry_run: bool = False,
    progress: bool = False,
) -> Transfer:
    """The rsync command that makes `target`'s copy of `directory` equal to the master's.

    Push runs rsync where the master is, pull where the target is; the other side is a
    local path when it shares the host, else `[user@]host:path` reached with its ssh options.
    """
    path = normalize_relative(directory.path)
    runs_on, other = (master, target) if script.method.direction == Direction.PUSH else (target, master)
    colocated = (is_local(runs_on) and is_local(other)) or (
        runs_on.connection is not None and runs_on.connection == other.connection
    )
    if not colocated and other.host is None:
        raise ConfigError(
            f"cannot copy {path!r} from {master.name} to {target.name}: rsync runs on "
            f"{runs_on.name} ({script.method.direction.value}) and {other.name} has no host to "
            f"reach it by; set servers.{other.name}.host"
        )
    argv = ["rsync", *script.method.arguments, *directory.arguments, *features.safety_arguments()]
    if dry_run:
        argv += ["--dry-run", "--itemize-changes"]
    elif progress:
        argv += ["--info=progress2"]
    else:
        argv += ["--stats"]
    if not colocated:
        argv += ["-e", shlex.join(ssh_argv(other))]

    def location(server: Server) -> str:
        full = server.path(path)
        return full if colocated or server is runs_on else rsync_location(server, full)

    argv += ["--", location(master), location(target)]
    return Transfer(master, target, path, runs_on, is_local(runs_on), tuple(argv))
