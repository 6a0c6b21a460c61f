"""A replica's pull from the master: rsync for each directory, cancellable (adapter)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

from synco.core.commands import RSYNC_ENVIRONMENT
from synco.core.errors import SyncoError
from synco.core.model import Direction, Directory, Script, Server
from synco.core.paths import normalize_relative
from synco.core.resolution import CurrentDecision, is_local
from synco.core.root_paths import Side
from synco.core.rsync import Verdict, classify, describe_exit
from synco.core.staging import InView
from synco.core.transfer import Transfer, path_in, plan_transfer
from synco.root_guard import check_async
from synco.rsync_probe import keeps_nanoseconds, local_features


@dataclass(frozen=True)
class PullResult:
    ok: bool
    message: str
    seconds: float
    generation: int  # the master generation the pull (or snapshot) started at
    snapshot: str | None = None  # a backup server: the snapshot published


def check_mounted(me: Server) -> str | None:
    """Why the agent must not write to its root: its backup disk is not mounted."""
    if me.mountpoint is not None and not os.path.ismount(me.mountpoint):
        return f"{me.mountpoint} is not mounted; refusing to write to the disk beneath it"
    return None


async def pull(
    script: Script, master: Server, me: Server, generation: int, keep_aside: str | None = None
) -> PullResult:
    """Make `me`'s copy of every directory equal to `master`'s (rsync runs here, pulling).

    With `keep_aside` (the first pull from a new master), every file the pull would
    overwrite or delete is moved under `keep_aside/<directory>/` instead (rsync --backup-dir).
    """
    started = time.monotonic()
    unmounted = await asyncio.to_thread(check_mounted, me)
    if unmounted is not None:
        return PullResult(False, unmounted, 0.0, generation)
    pulling = replace(script, method=replace(script.method, name="rsync", direction=Direction.PULL))
    if keep_aside is not None:
        pulling = await asyncio.to_thread(keeping_aside, pulling, keep_aside)
    try:
        failure = await copy_all(pulling, master, me)
    finally:  # cancelled too (it walks only what this pull kept aside)
        if keep_aside is not None:
            remove_empty(keep_aside)
    if failure is not None:
        return PullResult(False, failure, time.monotonic() - started, generation)
    return PullResult(True, "ok", time.monotonic() - started, generation)


DELETE_MODES = frozenset({"--delete-before", "--delete-during", "--del", "--delete-delay", "--delete-after"})


def keeping_aside(script: Script, keep_aside: str) -> Script:
    """`script` with every directory's overwritten and deleted files moved under
    `keep_aside/<directory>/` (rsync --backup-dir), which is created first.

    rsync's generator (backing up what --delete removes) and its receiver (backing up what
    it overwrites) would otherwise both create that tree and race ("make_backup failed:
    File exists"); deletions are also delayed to the end of the transfer (--delete-delay)
    unless the script chose when they happen.
    """
    directories = []
    for directory in script.directories:
        backup_dir = posixpath.join(keep_aside, normalize_relative(directory.path))
        os.makedirs(backup_dir, mode=0o700, exist_ok=True)
        arguments = [*script.method.arguments, *directory.arguments]
        delay = "--delete" in arguments and not DELETE_MODES.intersection(arguments)
        extra = ["--backup", f"--backup-dir={backup_dir}", *(["--delete-delay"] if delay else [])]
        directories.append(replace(directory, arguments=(*directory.arguments, *extra)))
    return replace(script, directories=tuple(directories))


def remove_empty(top: str) -> None:
    """Remove the directories under `top` (and `top`) that hold nothing: a first pull that
    kept nothing aside leaves no trace."""
    for directory, _, _ in os.walk(top, topdown=False):
        with contextlib.suppress(OSError):
            os.rmdir(directory)


async def copy_all(
    script: Script,
    master: Server,
    me: Server,
    link_dest: bool = True,
    sources: Mapping[str, InView] | None = None,
) -> str | None:
    """Copy every directory of `script` from `master` into `me` with its method, rsync
    running here; what went wrong, or None. Each copy first checks the directory's path on
    both sides (no symlink on it, the master's mountpoint mounted): see `guard`. `sources`:
    where rsync reads a directory (its staged view), by normalized path."""
    current = CurrentDecision(me.name, "the agent's own server")
    features = local_features()

    def plan(directory: Directory, nanoseconds: bool = False) -> Transfer:
        return plan_transfer(
            script,
            master,
            me,
            directory,
            is_local=lambda s: is_local(s, current, script),
            features=features,
            link_dest=link_dest,
            nanoseconds=nanoseconds,
            source=(sources or {}).get(normalize_relative(directory.path)),
        )

    for directory in script.directories:
        try:
            transfer = plan(directory)
        except SyncoError as error:
            return f"{normalize_relative(directory.path)}: {error}"
        refusal = await guard(transfer, master_is_local=is_local(master, current, script))
        if refusal is not None:
            return refusal
        # Probed only once the path is known to lead to no symlink: the probe creates a file there.
        where = path_in(me, transfer.directory, transfer.into)
        if await asyncio.to_thread(keeps_nanoseconds, where):
            transfer = plan(directory, nanoseconds=True)
        failure = await run_transfer(transfer)
        if failure is not None:
            return failure
    return None


async def guard(transfer: Transfer, *, master_is_local: bool) -> str | None:
    """Why this copy must not run now: a symlink on the directory's path on the master or
    here, or the master's mountpoint not mounted (read over ssh when the master is
    elsewhere, in the same command). Checked just before each copy: an earlier copy can
    have put a symlink there."""
    source = transfer.guarded_paths(Side.SOURCE)
    refusal = await check_async(
        transfer.guarded_server(Side.SOURCE), transfer.directory, source, Side.SOURCE, local=master_is_local
    )
    if refusal is None:
        target = transfer.guarded_paths(Side.TARGET)
        refusal = await check_async(transfer.target, transfer.directory, target, Side.TARGET, local=True)
    return refusal


async def run_transfer(transfer: Transfer) -> str | None:
    """Run one planned rsync; what went wrong, or None (warnings such as vanished files are fine)."""
    code, output = await run_rsync(transfer.command())
    if classify(code) != Verdict.ERROR:
        return None
    lines = output.strip().splitlines()[-3:]
    message = f"{transfer.directory}: rsync exit {code} ({describe_exit(code)})"
    return message + (": " + " / ".join(lines) if lines else "")


async def run_rsync(argv: list[str]) -> tuple[int, str]:
    """Run rsync in its own process group; cancelling stops it (and waits for it to be gone)."""
    environment = {k: v for k, v in os.environ.items() if k not in RSYNC_ENVIRONMENT}
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
        start_new_session=True,
    )
    try:
        _, stderr = await process.communicate()
    except asyncio.CancelledError:
        # Stop rsync and its children, and wait for them even if cancelled again meanwhile:
        # the next pull must not start while this one still writes.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while process.returncode is None:
            try:
                await asyncio.wait_for(
                    asyncio.shield(process.wait()), timeout=max(0.0, deadline - time.monotonic())
                )
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                deadline = time.monotonic() + 60
            except asyncio.CancelledError:
                continue
        raise
    return process.returncode or 0, stderr.decode(errors="replace")
