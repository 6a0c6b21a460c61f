"""Staging: the commands that make, find and remove a frozen view of a master's tree (pure).

rsync then reads the view instead of the live tree, so that a copy is a point-in-time copy
(a database's files, a mail spool, a tree renamed mid-copy). Every view is named
`synco-stage-ID-STAMP-N`: ID tells the script and the machine that made it (two runs of
one script from two machines never touch each other's views), so that a view a crashed
run left behind is found by name on the next run of the same script and removed. A
thing at such a name that Synco did not make (not a read-only btrfs snapshot, an LV
without Synco's tag, a ZFS snapshot without Synco's property) is reported, never removed.

Each creation step carries the step that undoes it: the adapter (synco.staging) undoes,
in reverse, exactly what succeeded, on success, failure and interruption alike.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass
from datetime import datetime

from synco.core.errors import ConfigError
from synco.core.model import Directory, Server, Staging, StagingProvider
from synco.core.paths import normalize_relative

PREFIX = "synco-stage-"
LVM_TAG = "synco_staging"
ZFS_PROPERTY = "synco:staging"
LVM_MOUNTS = "/run/synco/staging"
BTRFS_SNAPSHOTS = ".synco-staging"  # beside the origin, by default
LVM_SIZE = re.compile(r"^(\d+(\.\d+)?[bBsSkKmMgGtTpPeE]?|\d+%(ORIGIN|VG|FREE|PVS))$")


@dataclass(frozen=True)
class Step:
    """One command on the master; `undo` reverses it once it succeeded. A `tolerated`
    failure is expected when the thing is already gone (a leftover half removed)."""

    argv: tuple[str, ...]
    undo: tuple[str, ...] | None = None
    tolerated: bool = False


@dataclass(frozen=True)
class StagePlan:
    """How to make one view of `origin` (a live path on the master) named `name`."""

    staging: Staging
    name: str
    origin: str
    create: tuple[Step, ...]
    view: str | None  # where the view is; None: the `path` command (or create's last line) says
    env: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        kind = {
            StagingProvider.BTRFS: "a read-only btrfs snapshot",
            StagingProvider.LVM: "an LVM snapshot mounted read-only",
            StagingProvider.ZFS: "a ZFS snapshot",
            StagingProvider.COMMAND: "the staging commands' view",
        }[self.staging.provider]
        return f"{self.origin} from {kind} ({self.name})"


@dataclass(frozen=True)
class Found:
    """A view at one of this script's names: `ours` if Synco made it (then it is removed)."""

    name: str
    ours: bool
    why: str = ""


def stage_id(source: str, runner: str) -> str:
    """Eight hex digits for the script file and the server (or machine) that runs it."""
    return hashlib.sha256(f"{source}\0{runner}".encode()).hexdigest()[:8]


def stage_name(identity: str, when: datetime, index: int) -> str:
    return f"{PREFIX}{identity}-{when.strftime('%Y%m%dT%H%M%SZ')}-{index}"


def is_this_scripts(name: str, identity: str) -> bool:
    return name.startswith(f"{PREFIX}{identity}-")


def staging_of(master: Server, directory: Directory) -> Staging | None:
    """The staging a copy of `directory` from `master` reads through: the directory's own,
    else the server's, else none."""
    return directory.staging if directory.staging is not None else master.staging


def origin_of(staging: Staging, master: Server, directory: Directory) -> str:
    """The live path the view stands for, checked to hold what the copy reads."""
    live = live_path(master, directory)
    own = directory.staging is staging
    default = live if own else master.root.rstrip("/") or "/"
    origin = posixpath.normpath(staging.origin) if staging.origin else default
    needed = live if own else (master.root.rstrip("/") or "/")
    if not _within(needed, origin):
        what = f"directory {directory.path!r}" if own else f"{master.name}'s root"
        raise ConfigError(
            f"staging of {what}: origin {origin} does not hold {needed}; "
            "it must be that path or a directory above it"
        )
    return origin


def live_path(master: Server, directory: Directory) -> str:
    relative = normalize_relative(directory.path)
    root = master.root.rstrip("/") or "/"
    return root if relative in ("", ".") else posixpath.join(root, relative)


def source_in_view(origin: str, view: str, live: str) -> str:
    """Where `live` (a path at or below `origin`) is in the view, with a trailing slash."""
    below = posixpath.relpath(live, origin)
    full = view if below == "." else posixpath.join(view, below)
    return full.rstrip("/") + "/"


def _within(path: str, ancestor: str) -> bool:
    return ancestor == "/" or path == ancestor or path.startswith(ancestor.rstrip("/") + "/")


def _snapshots(staging: Staging, origin: str) -> str:
    if staging.snapshots:
        return staging.snapshots.rstrip("/") or "/"
    return posixpath.join(posixpath.dirname(origin.rstrip("/")) or "/", BTRFS_SNAPSHOTS)


def views_directory(staging: Staging, origin: str) -> str | None:
    """Where the views of `origin` are made or mounted (None: the provider decides)."""
    if staging.provider == StagingProvider.BTRFS:
        return _snapshots(staging, origin)
    if staging.provider == StagingProvider.LVM:
        return staging.snapshots.rstrip("/") or LVM_MOUNTS
    return None


def _volume(staging: Staging) -> tuple[str, str]:
    group, _, volume = staging.volume.partition("/")
    return group, volume


def _env(staging: Staging, name: str, origin: str) -> tuple[tuple[str, str], ...]:
    if staging.provider != StagingProvider.COMMAND:
        return ()
    return (("SYNCO_STAGING_NAME", name), ("SYNCO_STAGING_ORIGIN", origin))


def plan(staging: Staging, origin: str, name: str) -> StagePlan:
    """The creation of view `name` of `origin`, each step with its undo."""
    provider = staging.provider
    env = _env(staging, name, origin)
    if provider == StagingProvider.BTRFS:
        directory = _snapshots(staging, origin)
        view = posixpath.join(directory, name)
        steps: tuple[Step, ...] = (
            Step(("mkdir", "-p", "--", directory)),
            Step(("btrfs", "subvolume", "snapshot", "-r", origin, view), undo=_btrfs_delete(view)),
        )
        return StagePlan(staging, name, origin, steps, view, env)
    if provider == StagingProvider.LVM:
        group, volume = _volume(staging)
        mount = posixpath.join(staging.snapshots.rstrip("/") or LVM_MOUNTS, name)
        size = ("--extents" if "%" in staging.size else "--size", staging.size)
        steps = (
            Step(
                ("lvcreate", "--snapshot", "--name", name, *size, "--addtag", LVM_TAG, f"{group}/{volume}"),
                undo=("lvremove", "--yes", f"{group}/{name}"),
            ),
            Step(("mkdir", "-p", "--", mount), undo=("rmdir", "--", mount)),
            Step(
                ("mount", "-o", staging.mount_options, f"/dev/{group}/{name}", mount),
                undo=("umount", "--", mount),
            ),
        )
        return StagePlan(staging, name, origin, steps, mount, env)
    if provider == StagingProvider.ZFS:
        snapshot = f"{staging.dataset}@{name}"
        steps = (
            Step(
                ("zfs", "snapshot", "-o", f"{ZFS_PROPERTY}={_zfs_mark(name)}", snapshot),
                undo=("zfs", "destroy", snapshot),
            ),
        )
        view = posixpath.join(origin, ".zfs", "snapshot", name)
        return StagePlan(staging, name, origin, steps, view, env)
    return StagePlan(staging, name, origin, (Step(staging.create, undo=staging.destroy),), None, env)


def _btrfs_delete(path: str) -> tuple[str, ...]:
    return ("btrfs", "subvolume", "delete", path)


def _zfs_mark(name: str) -> str:
    """The property value Synco sets on its own ZFS snapshots: the identity in the name."""
    return name[len(PREFIX) :].split("-", 1)[0]


# -- what an earlier run left behind -----------------------------------------------------------

BTRFS_SURVEY = (
    'cd "$1" 2>/dev/null || exit 0; for n in "$2"*; do [ -e "$n" ] || continue; '
    'printf "%s %s\\n" "$(btrfs property get -ts "$n" ro 2>/dev/null || echo none)" "$n"; done'
)


def survey_argv(staging: Staging, origin: str, identity: str) -> tuple[str, ...] | None:
    """The command that lists what exists at this script's names (None: the provider has
    no way to list: a `command` staging without `list`)."""
    provider = staging.provider
    prefix = f"{PREFIX}{identity}-"
    if provider == StagingProvider.BTRFS:
        return ("sh", "-c", BTRFS_SURVEY, "sh", _snapshots(staging, origin), prefix)
    if provider == StagingProvider.LVM:
        group, _ = _volume(staging)
        return ("lvs", "--noheadings", "--separator", "|", "-o", "lv_name,lv_tags", group)
    if provider == StagingProvider.ZFS:
        columns = f"name,{ZFS_PROPERTY}"
        return ("zfs", "list", "-H", "-t", "snapshot", "-o", columns, "-d", "1", staging.dataset)
    return staging.list or None


def found(staging: Staging, identity: str, output: str) -> list[Found]:
    """What the survey's output says is at this script's names."""
    results: list[Found] = []
    provider = staging.provider
    for line in output.splitlines():
        if not line.strip():
            continue
        if provider == StagingProvider.BTRFS:
            mark, _, name = line.partition(" ")
            ours = mark.strip() == "ro=true"
            why = "" if ours else "not a read-only btrfs snapshot"
        elif provider == StagingProvider.LVM:
            name, _, tags = line.strip().partition("|")
            ours = LVM_TAG in tags.split(",")
            why = "" if ours else f"an LV without the {LVM_TAG} tag"
        elif provider == StagingProvider.ZFS:
            full, _, mark = line.partition("\t")
            name = full.rsplit("@", 1)[-1]
            ours = mark.strip() == identity
            why = "" if ours else f"a ZFS snapshot without {ZFS_PROPERTY}={identity}"
        else:
            name, ours, why = line.strip(), True, ""
        name = name.strip()
        if is_this_scripts(name, identity):
            results.append(Found(name, ours, why))
    return results


def removal(staging: Staging, origin: str, name: str) -> tuple[Step, ...]:
    """How to remove a leftover view `name` (each step may find its part already gone)."""
    provider = staging.provider
    if provider == StagingProvider.BTRFS:
        return (Step(_btrfs_delete(posixpath.join(_snapshots(staging, origin), name))),)
    if provider == StagingProvider.LVM:
        group, _ = _volume(staging)
        mount = posixpath.join(staging.snapshots.rstrip("/") or LVM_MOUNTS, name)
        return (
            Step(("umount", "--", mount), tolerated=True),
            Step(("rmdir", "--", mount), tolerated=True),
            Step(("lvremove", "--yes", f"{group}/{name}")),
        )
    if provider == StagingProvider.ZFS:
        return (Step(("zfs", "destroy", f"{staging.dataset}@{name}")),)
    return (Step(staging.destroy),)


def environment(staging: Staging, name: str, origin: str) -> dict[str, str]:
    return dict(_env(staging, name, origin))


# -- checks of a staging table (synco check) ---------------------------------------------------


def problems(staging: Staging) -> list[tuple[str, str]]:
    """(key, message) for each thing wrong with `staging` on its own."""
    found_problems: list[tuple[str, str]] = []
    for key in ("origin", "snapshots"):
        value = getattr(staging, key)
        if value and not value.startswith("/"):
            found_problems.append((key, f"must be an absolute path, not {value!r}"))
    provider = staging.provider
    if provider == StagingProvider.LVM:
        group, volume = _volume(staging)
        if not group or not volume or "/" in volume:
            found_problems.append(("volume", 'is required for lvm, as "VG/LV" (e.g. "vg0/data")'))
        if not LVM_SIZE.match(staging.size):
            sizes = '"1G", "512M", "10%ORIGIN"'
            found_problems.append(("size", f"{staging.size!r} is not an LVM size ({sizes})"))
    if provider == StagingProvider.ZFS and (not staging.dataset or "@" in staging.dataset):
        found_problems.append(("dataset", 'is required for zfs (e.g. "tank/data")'))
    if provider == StagingProvider.COMMAND:
        for key in ("create", "destroy"):
            if not getattr(staging, key):
                found_problems.append((key, "is required for the command provider (an argv list)"))
    else:
        for key in ("create", "path", "destroy", "list"):
            if getattr(staging, key):
                found_problems.append((key, f"is only for the command provider, not {provider.value}"))
    return found_problems
