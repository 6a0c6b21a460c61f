"""Look at the path of a directory below a server's root just before a copy (adapter).

Here with lstat (never following a symlink), on another server with one ssh command that
also checks the mountpoint; `synco.core.root_paths` says what to look at and what it means.

The check is made just before each copy, not only at `synco check`: a copy can itself put a
symlink at another directory's path (directories `data` and `data/sub` with `data/sub` a
symlink on the source). A race remains: something that replaces a component with a
symlink between the check and rsync's walk is not caught. Only someone who can already
write inside the root can do that, and rsync offers no option that refuses to follow a
symlinked destination path (`--keep-dirlinks`, which follows more of them, is refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat

from synco import shell
from synco.core import commands
from synco.core.commands import RSYNC_ENVIRONMENT
from synco.core.model import Server
from synco.core.root_paths import (
    Kind,
    Observation,
    Side,
    parse_remote_guard,
    refusal,
    remote_guard_argv,
)
from synco.core.rsync import describe_exit


def observe_local(root: str, paths: list[str], mountpoint: str | None) -> Observation:
    """What is at each of `paths` below `root` on this machine, up to the first symlink."""
    mounted = None if mountpoint is None else os.path.ismount(mountpoint)
    kinds: list[Kind] = []
    link = None
    for path in paths:
        full = os.path.join(root, path)
        try:
            mode = os.lstat(full).st_mode
        except (FileNotFoundError, NotADirectoryError):
            kinds.append(Kind.MISSING)
            continue
        if stat.S_ISLNK(mode):
            kinds.append(Kind.SYMLINK)
            with contextlib.suppress(OSError):
                link = os.readlink(full)
            break
        kinds.append(Kind.DIRECTORY if stat.S_ISDIR(mode) else Kind.OTHER)
    return Observation(tuple(kinds), link, mounted)


def guard_argv(server: Server, paths: list[str]) -> list[str]:
    """The ssh command that looks at `paths` (and the mountpoint) on `server`."""
    return commands.remote_argv(server, remote_guard_argv(server.root, server.mountpoint, paths))


def verdict_of_remote(
    server: Server, directory: str, paths: list[str], side: Side, returncode: int, stdout: str, stderr: str
) -> str | None:
    """The refusal (or None) from the remote check's result; a check that could not run refuses."""
    if returncode != 0:
        detail = " / ".join((stderr.strip() or stdout.strip()).splitlines()[-2:])
        return (
            f"{server.name}: directory {directory}: cannot check its path on {server.name} "
            f"(exit {returncode}: {describe_exit(returncode)}){': ' + detail if detail else ''}; "
            "refusing to copy"
        )
    try:
        observation = parse_remote_guard(stdout, server.mountpoint)
    except ValueError as error:
        return f"{server.name}: directory {directory}: {error}; refusing to copy"
    return refusal(server.name, directory, paths, observation, side, server.mountpoint)


def check(server: Server, directory: str, paths: list[str], side: Side, *, local: bool) -> str | None:
    """Why `directory` must not be copied from/to `server` now, or None (blocking)."""
    if local:
        try:
            observation = observe_local(server.root, paths, server.mountpoint)
        except OSError as error:
            return f"{server.name}: directory {directory}: cannot check its path: {error}; refusing to copy"
        return refusal(server.name, directory, paths, observation, side, server.mountpoint)
    completed = shell.run(guard_argv(server, paths))
    return verdict_of_remote(
        server, directory, paths, side, completed.returncode, completed.stdout, completed.stderr
    )


async def check_async(
    server: Server, directory: str, paths: list[str], side: Side, *, local: bool
) -> str | None:
    """`check` for the agent's event loop: lstat in a thread, ssh as a child that a
    cancelled pull kills."""
    if local:
        return await asyncio.to_thread(check, server, directory, paths, side, local=True)
    environment = {k: v for k, v in os.environ.items() if k not in RSYNC_ENVIRONMENT}
    process = await asyncio.create_subprocess_exec(
        *guard_argv(server, paths),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
        start_new_session=True,
    )
    try:
        stdout, stderr = await process.communicate()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # it only reads: nothing to finish
        await asyncio.shield(process.wait())
        raise
    return verdict_of_remote(
        server,
        directory,
        paths,
        side,
        process.returncode or 0,
        stdout.decode("utf-8", "replace"),
        stderr.decode("utf-8", "replace"),
    )
