"""What a copy must find on the way to a directory below a server's root (pure).

Nothing is read or written outside a server's root: no component of a configured
directory's path below the root may be a symlink, on the source or on the target (rsync
follows a symlink given as, or on the way to, its source or destination directory, so a
link there makes it read or write, and with --delete remove, whatever the link points at).
Symlinks *inside* the copied trees are fine: rsync -a copies them as symlinks. And a
server's `mountpoint` guards reads as well as writes: an unmounted source reads as an
empty tree, which --delete would copy over every target.

This module says which components to look at, how a remote server reports them (one
shell command per server and copy, with the mountpoint) and what the verdict is; the
looking is done by `synco.root_guard`.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    DIRECTORY = "D"
    SYMLINK = "L"
    MISSING = "M"  # rsync creates it (and what is below it): nothing to follow
    OTHER = "O"  # a file where a directory should be: rsync fails on its own


class Side(StrEnum):
    SOURCE = "source"
    TARGET = "target"


@dataclass(frozen=True)
class Observation:
    """What was found at each component, in order, up to the first symlink; `link` is what
    that symlink (if any) points at; `mounted` is None without a mountpoint."""

    kinds: tuple[Kind, ...]
    link: str | None = None
    mounted: bool | None = None


def components(relative: str, into: str | None = None) -> list[str]:
    """The paths, relative to the root, that lead to `relative` (normalized; "." is the root
    itself, which has none) inside `into` (a snapshot in progress), outermost first."""
    parts = [] if into is None else [into]
    if relative not in ("", "."):
        parts += relative.split("/")
    return [posixpath.join(*parts[: i + 1]) for i in range(len(parts))]


def refusal(
    server: str,
    directory: str,
    paths: list[str],
    observation: Observation,
    side: Side,
    mountpoint: str | None = None,
) -> str | None:
    """Why `directory` must not be copied from (SOURCE) or to (TARGET) `server`, or None.

    `paths` are the components looked at (see `components`), in the observation's order.
    """
    if mountpoint is not None and observation.mounted is False:
        return f"{server}: {unmounted(server, mountpoint, side)}"
    for path, kind in zip(paths, observation.kinds, strict=False):
        if kind == Kind.SYMLINK:
            points = f" (-> {observation.link})" if observation.link is not None else ""
            return (
                f"{server}: directory {directory}: {path} is a symlink{points} on {server}; "
                "refusing to copy through it"
            )
    return None


def unmounted(server: str, mountpoint: str, side: Side) -> str:
    """Why nothing is copied from (SOURCE) or to (TARGET) a server whose disk is not mounted."""
    if side == Side.SOURCE:
        return (
            f"{mountpoint} is not mounted on {server}; refusing to copy from it "
            "(an unmounted source reads as an empty tree, and --delete would empty every target)"
        )
    return f"{mountpoint} is not mounted on {server}; refusing to write to the disk beneath it"


# Run as `sh -c REMOTE_GUARD sh ROOT MOUNTPOINT PATH...` (MOUNTPOINT "" for none). Prints the
# mount state ("mounted", "unmounted" or "-"), then one kind per component up to the first
# symlink; after an "L" the rest of the output is the symlink's target.
REMOTE_GUARD = (
    'r=$1; m=$2; shift 2; if [ -z "$m" ]; then echo -; '
    'elif mountpoint -q -- "$m"; then echo mounted; else echo unmounted; fi; '
    'for p in "$@"; do f=$r/$p; '
    'if [ -L "$f" ]; then echo L; printf %s "$(readlink -- "$f")"; exit 0; '
    'elif [ -d "$f" ]; then echo D; elif [ -e "$f" ]; then echo O; else echo M; fi; done'
)


def remote_guard_argv(root: str, mountpoint: str | None, paths: list[str]) -> list[str]:
    """The command that reports `paths` below `root` (and `mountpoint`) on another server."""
    return ["sh", "-c", REMOTE_GUARD, "sh", root, mountpoint or "", *paths]


def parse_remote_guard(output: str, mountpoint: str | None) -> Observation:
    """The observation REMOTE_GUARD printed; ValueError if it is not such output."""
    state, _, rest = output.partition("\n")
    mounted = {"mounted": True, "unmounted": False, "-": None}.get(state)
    if state not in ("mounted", "unmounted", "-") or (mounted is None) != (mountpoint is None):
        raise ValueError(f"unexpected answer from the path check: {output[:200]!r}")
    kinds: list[Kind] = []
    link = None
    while rest:
        line, _, rest = rest.partition("\n")
        kinds.append(Kind(line))
        if line == Kind.SYMLINK:
            link = rest
            break
    return Observation(tuple(kinds), link, mounted)
