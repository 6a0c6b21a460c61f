"""Plan one copy: where rsync runs and its exact argv (pure)."""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Callable
from dataclasses import dataclass, replace

from synco.core.commands import remote_argv, rsync_location, ssh_argv
from synco.core.errors import ConfigError
from synco.core.model import Direction, Directory, Script, Server
from synco.core.overlap import colocated, overlapping
from synco.core.paths import normalize_relative
from synco.core.root_paths import Side, components
from synco.core.rsync import Features, follows_target_symlinks, refusal
from synco.core.snapshot_names import IN_PROGRESS, LATEST
from synco.core.staging import InView


@dataclass(frozen=True)
class Transfer:
    """rsync `argv`, run on `runs_on` (locally when `local`), copying master -> target."""

    master: Server
    target: Server
    directory: str
    runs_on: Server
    local: bool
    argv: tuple[str, ...]
    into: str | None = None  # the target's copy is in this snapshot directory of its root
    link_dest: bool = False  # rsync also reads the target's `latest/` copy (--link-dest)
    staged: InView | None = None  # rsync reads the master's directory in this view

    def guarded_server(self, side: Side) -> Server:
        """`side`'s server, with the root its guarded paths start from: a staged source's
        is its view (rsync walks the view, not the live tree)."""
        if side == Side.TARGET:
            return self.target
        return self.master if self.staged is None else replace(self.master, root=self.staged.view)

    def guarded_paths(self, side: Side) -> list[str]:
        """The paths below `side`'s root that must not be symlinks for this copy: those that
        lead to the directory (in its view, when staged), and on the target those of the
        snapshot it writes into and of the `latest/` copy it reads (`latest` itself is a
        symlink by design)."""
        if side == Side.SOURCE:
            return components(self.directory if self.staged is None else self.staged.below)
        in_latest = [posixpath.join(LATEST, c) for c in components(self.directory)]
        if self.into == LATEST:
            return in_latest
        return components(self.directory, self.into) + (in_latest if self.link_dest else [])

    def describe(self) -> str:
        return f"{self.directory}: {self.master.name} -> {self.target.name}"

    def command(self) -> list[str]:
        """The argv to run here: rsync itself, or rsync through ssh on `runs_on`."""
        return list(self.argv) if self.local else remote_argv(self.runs_on, self.argv)


def path_in(server: Server, relative: str, into: str | None = None) -> str:
    """`root[/into]/relative/`, always with a trailing slash (rsync copies contents)."""
    base = posixpath.join(server.root, into) if into else server.root
    full = base if relative in ("", ".") else posixpath.join(base, relative)
    return full.rstrip("/") + "/"


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
    verify: bool = False,
    link_dest: bool = True,
    nanoseconds: bool = False,
    source: InView | None = None,
) -> Transfer:
    """The rsync command that makes `target`'s copy of `directory` equal to the master's.

    Push runs rsync where the master is, pull where the target is; the other side is a
    local path when it shares the host, else `[user@]host:path` reached with its ssh options.
    The snapshot method writes into `latest.snapshot/`, hard-linking unchanged files to
    `latest/` (or updating a btrfs mirror in place). `verify` compares instead of copying:
    checksums of the master's files against the target's copy (`latest/` for snapshots).
    `nanoseconds`: the target's file system keeps them, so rsync may compare them.
    `source`: where rsync reads the master's directory instead of its live path (a staged
    view of it: synco.core.staging).
    """
    path = normalize_relative(directory.path)
    method = script.method
    _refuse_following_arguments([*method.arguments, *directory.arguments], path)
    runs_on, other = (master, target) if method.direction == Direction.PUSH else (target, master)
    shared = colocated(runs_on, other, is_local)
    if not shared and other.host is None:
        raise ConfigError(
            f"cannot copy {path!r} from {master.name} to {target.name}: rsync runs on "
            f"{runs_on.name} ({method.direction.value}) and {other.name} has no host to "
            f"reach it by; set servers.{other.name}.host"
        )
    if shared:
        clash = overlapping(master, target, path, method.snapshots)
        if clash:
            raise ConfigError(
                f"copying {path!r} from {master.name} to {target.name} would overlap on one host: "
                f"{clash[0]} and {clash[1]}"
            )
    argv = [
        "rsync",
        *features.comparison_arguments(nanoseconds),
        *method.arguments,
        *directory.arguments,
        *features.safety_arguments(),
    ]
    into: str | None = None
    linked = False
    if method.snapshots:
        into = LATEST if verify else IN_PROGRESS
        # No filter rule keeps the source's top-level .synco-snapshot out (any filter makes
        # rsync >= 3.4 several times slower): publication removes whatever the copy put at
        # that name, a symlink included, and makes the snapshot's own anew.
        argv.append("--delete")
        if not verify and method.snapshot_backend == "btrfs":
            argv += ["--inplace", "--no-whole-file"]
        elif not verify and link_dest:  # without a previous snapshot, rsync would look for each file in vain
            argv.append(f"--link-dest={path_in(target, path, LATEST)}")
            linked = True
    if verify:
        argv += ["--dry-run", "--checksum", "--itemize-changes"]
    elif dry_run:
        argv += ["--dry-run", "--itemize-changes"]
    elif progress:
        argv += ["--info=progress2"]
    else:
        argv += ["--stats"]
    if not shared:
        argv += ["-e", shlex.join(ssh_argv(other))]

    def location(server: Server, full: str) -> str:
        return full if shared or server is runs_on else rsync_location(server, full)

    read = source.path if source is not None else path_in(master, path)
    argv += ["--", location(master, read), location(target, path_in(target, path, into))]
    return Transfer(master, target, path, runs_on, is_local(runs_on), tuple(argv), into, linked, source)


def _refuse_following_arguments(arguments: list[str], path: str) -> None:
    """--keep-dirlinks (-K) would write outside the target's root: refused (see rsync.py)."""
    argument = follows_target_symlinks(arguments)
    if argument is not None:
        raise ConfigError(f"directory {path!r}: {refusal(argument)}")
