"""Staging: the commands that make, find and remove a frozen view of a master's tree (pure).

rsync then reads the view instead of the live tree, so that a copy is a point-in-time copy
(a database's files, a mail spool, a tree renamed mid-copy). Every view is named
`synco-stage-ID-STAMP-PID-N`: ID tells the script and the machine that made it (two runs of
one script from two machines never touch each other's views) and PID the process, so that
a view a crashed run left behind is found by name on the next run of the same script and
removed, while one that a run still going is reading is left alone. A thing at such a name
that Synco did not make (not a read-only btrfs snapshot of the origin, an LV without
Synco's tag, a ZFS snapshot without Synco's property) is reported, never removed.

A snapshot holds one file system: a btrfs subvolume, a mount or a child dataset below a
copied path is an empty directory in the view, and a copy with --delete would empty it on
every target. `nested_probe_argv` looks for them before any view is made, and `uncovered`
says which the copy does not leave out on purpose (an --exclude, or --one-file-system).

Each creation step carries the step that undoes it: the adapter (synco.staging) undoes,
in reverse, exactly what succeeded, on success, failure and interruption alike.
"""

from __future__ import annotations

import fnmatch
import hashlib
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

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
    label: str = ""  # what a message calls it, instead of its argv (a shell script)

    def describe(self) -> str:
        return self.label or " ".join(self.argv)


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


STAMP = "%Y%m%dT%H%M%SZ"


def stage_name(identity: str, when: datetime, pid: int, index: int) -> str:
    return f"{PREFIX}{identity}-{when.strftime(STAMP)}-{pid}-{index}"


def made_by(name: str) -> tuple[datetime, int] | None:
    """When, and by which process, a view at one of Synco's names was made (None: a name
    of an earlier version, without the process, or not Synco's form)."""
    parts = name[len(PREFIX) :].split("-")
    if not name.startswith(PREFIX) or len(parts) != 4 or not parts[2].isdigit():
        return None
    try:
        when = datetime.strptime(parts[1], STAMP).replace(tzinfo=UTC)
    except ValueError:
        return None
    return when, int(parts[2])


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


@dataclass(frozen=True)
class InView:
    """A live path as rsync reads it in a view: `below` (relative, "." for the view's top)
    inside the view at `view`."""

    view: str
    below: str

    @property
    def path(self) -> str:
        full = self.view if self.below == "." else posixpath.join(self.view, self.below)
        return full.rstrip("/") + "/"


def in_view(origin: str, view: str, live: str) -> InView:
    """Where `live` (a path at or below `origin`) is in the view of `origin` at `view`."""
    return InView(view, posixpath.relpath(live, origin))


def source_in_view(origin: str, view: str, live: str) -> str:
    """Where `live` (a path at or below `origin`) is in the view, with a trailing slash."""
    return in_view(origin, view, live).path


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
            Step(("sh", "-c", BTRFS_SNAPSHOTS_READY, "sh", directory), label=f"readying {directory}"),
            Step(("btrfs", "subvolume", "snapshot", "-r", origin, view), undo=_btrfs_delete(view)),
            Step(("sh", "-c", BTRFS_VIEW_MADE, "sh", view, origin), label=f"checking {view}"),
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


# The views' directory is made private to the user running Synco; one that is a symlink,
# someone else's, or writable by others is refused: whoever could write there could put a
# directory of their own at a view's name and have rsync copy it (and --delete with it).
BTRFS_SNAPSHOTS_READY = (
    'd=$1; no() { echo "$d $1: refusing to make views there" >&2; exit 1; }; '
    '[ -L "$d" ] && no "is a symlink"; mkdir -p -m 0700 -- "$d" || exit 1; [ -L "$d" ] && no "is a symlink"; '
    'set -- $(stat -c "%u %a" -- "$d") || exit 1; '
    '[ "$1" = "$(id -u)" ] || no "is owned by uid $1, not $(id -u)"; '
    '[ $((0$2 & 022)) -eq 0 ] || no "is writable by others (mode $2)"'
)
# A subvolume's top directory is inode 256: anything else at the view's name is not the
# snapshot just made.
BTRFS_VIEW_MADE = (
    'u() { btrfs subvolume show "$1" 2>/dev/null | sed -n "s/^[[:space:]]*$2:[[:space:]]*//p" | head -n1; }; '
    '[ ! -L "$1" ] && [ "$(stat -c %i -- "$1")" = 256 ] && '
    '[ "$(btrfs property get -ts "$1" ro 2>/dev/null)" = ro=true ] && '
    '[ -n "$(u "$2" UUID)" ] && [ "$(u "$1" "Parent UUID")" = "$(u "$2" UUID)" ] || '
    '{ echo "$1 is not the read-only snapshot of $2 just made: refusing to read it" >&2; exit 1; }'
)


def _btrfs_delete(path: str) -> tuple[str, ...]:
    return ("btrfs", "subvolume", "delete", path)


def _zfs_mark(name: str) -> str:
    """The property value Synco sets on its own ZFS snapshots: the identity in the name."""
    return name[len(PREFIX) :].split("-", 1)[0]


# -- what an earlier run left behind -----------------------------------------------------------

# One line per thing at this script's names: "ro=true|none PARENT-UUID|- NAME", after a
# first line "origin UUID" (a symlink is "link - NAME": never followed, never removed).
BTRFS_SURVEY = (
    'u() { btrfs subvolume show "$1" 2>/dev/null | sed -n "s/^[[:space:]]*$2:[[:space:]]*//p" | head -n1; }; '
    'printf "origin %s\\n" "$(u "$3" UUID)"; '
    '[ -L "$1" ] && { echo "$1 is a symlink: refusing to look for views there" >&2; exit 1; }; '
    'cd -P "$1" 2>/dev/null || exit 0; for n in "$2"*; do '
    '[ -L "$n" ] && { printf "link - %s\\n" "$n"; continue; }; [ -e "$n" ] || continue; '
    'p=$(u "$n" "Parent UUID"); '
    'printf "%s %s %s\\n" "$(btrfs property get -ts "$n" ro 2>/dev/null || echo none)" "${p:--}" "$n"; done'
)


def survey_argv(staging: Staging, origin: str, identity: str) -> tuple[str, ...] | None:
    """The command that lists what exists at this script's names (None: the provider has
    no way to list: a `command` staging without `list`)."""
    provider = staging.provider
    prefix = f"{PREFIX}{identity}-"
    if provider == StagingProvider.BTRFS:
        return ("sh", "-c", BTRFS_SURVEY, "sh", _snapshots(staging, origin), prefix, origin)
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
    origin_uuid = ""
    for line in output.splitlines():
        if not line.strip():
            continue
        if provider == StagingProvider.BTRFS:
            if line.startswith("origin "):
                origin_uuid = line.split(" ", 1)[1].strip()
                continue
            mark, _, rest = line.partition(" ")
            parent, _, name = rest.partition(" ")
            if mark == "link":
                ours, why = False, "a symlink"
            elif mark.strip() != "ro=true":
                ours, why = False, "not a read-only btrfs snapshot"
            else:
                ours = bool(origin_uuid) and parent == origin_uuid
                why = "" if ours else "a read-only btrfs snapshot of another subvolume than the origin"
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
        return (  # unmounted by its device: another staging of the VG may mount elsewhere
            Step(("umount", "--", f"/dev/{group}/{name}"), tolerated=True),
            Step(("rmdir", "--", mount), tolerated=True),
            Step(("lvremove", "--yes", f"{group}/{name}")),
        )
    if provider == StagingProvider.ZFS:
        return (Step(("zfs", "destroy", f"{staging.dataset}@{name}")),)
    return (Step(staging.destroy),)


# -- file systems nested below a copied path -----------------------------------------------

# Lines: "origin REALPATH", for btrfs "self PATH" (the origin subvolume's path from the
# file system's top) and "sub PATH" per subvolume directly in it, then "mount POINT" per
# mount of the master (escaped as in mountinfo).
NESTED_PROBE = (
    # an origin below the root must be reached through no symlink (a snapshot follows one)
    'p=$1; while [ "${#p}" -gt "${#3}" ]; do [ -L "$p" ] && '
    '{ echo "$p is a symlink: refusing to stage through it" >&2; exit 1; }; p=$(dirname -- "$p"); done; '
    'o=$(readlink -f -- "$1") || { echo "$1: cannot resolve" >&2; exit 1; }; printf "origin %s\\n" "$o"; '
    'if [ "$2" = btrfs ]; then '
    'if s=$(btrfs subvolume show "$o" 2>/dev/null); then '  # else the snapshot says what is wrong
    'printf "self %s\\n" "$(printf "%s\\n" "$s" | head -n 1)"; '
    'l=$(btrfs subvolume list -o "$o") || exit 1; '
    'printf "%s\\n" "$l" | sed -n "s/^ID [0-9]* gen [0-9]* top level [0-9]* path /sub /p"; fi; fi; '
    'while read -r _ _ _ _ m _; do printf "mount %s\\n" "$m"; done < /proc/self/mountinfo'
)


def nested_probe_argv(staging: Staging, origin: str, root: str) -> tuple[str, ...] | None:
    """The command that lists the file systems nested below `origin`, having checked that
    no path from the master's `root` down to an origin below it is a symlink (None: the
    `command` provider's view is the operator's to make whole)."""
    if staging.provider == StagingProvider.COMMAND:
        return None
    return ("sh", "-c", NESTED_PROBE, "sh", origin, staging.provider.value, root.rstrip("/") or "/")


@dataclass(frozen=True)
class Nested:
    """A file system below the origin that its view does not hold: `path` relative to the origin."""

    path: str
    kind: str  # "btrfs subvolume" or "mount"


UNPLACED = "btrfs subvolume that cannot be placed below the origin"
SUBVOLUME = "btrfs subvolume"


def _unescape_mount(point: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), point)


def nested_in(output: str) -> list[Nested]:
    """What the probe's output says is nested below the origin, outermost first."""
    origin, own = "", ""
    nested: list[Nested] = []
    for line in output.splitlines():
        key, _, value = line.partition(" ")
        if key == "origin":
            origin = value.rstrip("/") or "/"
        elif key == "self":
            own = value.strip().strip("/")
            own = "" if own in ("", "<FS_TREE>") else own
        elif key == "sub" and value:
            path = value.strip("/")
            if not own:
                nested.append(Nested(path, "btrfs subvolume"))
            elif path.startswith(own + "/"):
                nested.append(Nested(path[len(own) + 1 :], "btrfs subvolume"))
            else:  # not where the origin is said to be: refused rather than guessed at
                nested.append(Nested(path, UNPLACED))
        elif key == "mount" and origin:
            point = _unescape_mount(value)
            if point != origin and _within(point, origin):
                nested.append(Nested(posixpath.relpath(point, origin), "mount"))
    return sorted(set(nested), key=lambda n: (n.path.count("/"), n.path))


def uncovered(
    nested: Sequence[Nested], staging: Staging, origin: str, live: str, arguments: Sequence[str]
) -> list[Nested]:
    """The nested file systems at, above or inside `live` (a copied path at or below
    `origin`) that the copy, with rsync `arguments`, does not leave out. One at or above the
    copied path cannot be left out (its path is "." then). One inside is left out by an
    --exclude rule that matches it or a directory above it (any --include or filter rule,
    or --delete-excluded, and excludes count for nothing: the order of rules decides), and
    a btrfs subvolume also by --one-file-system (in a view it is on another device; a mount
    is not, so that rsync would walk into it and delete). Synco's own views are not counted."""
    below = posixpath.relpath(live, origin)
    patterns = [] if _rules_reorder(arguments) else _excludes(arguments)
    one_file_system = any(_one_file_system(a) for a in arguments)
    views = views_directory(staging, origin)
    if staging.provider == StagingProvider.ZFS:
        views = posixpath.join(origin, ".zfs", "snapshot")  # its snapshots, mounted when read
    left: list[Nested] = []
    for item in nested:
        full = posixpath.join(origin, item.path)
        if (
            views is not None
            and posixpath.dirname(full) == views
            and posixpath.basename(full).startswith(PREFIX)
        ):
            continue
        if item.kind == UNPLACED:
            left.append(item)
            continue
        if below == "." or item.path == below or below.startswith(item.path + "/"):
            if below != ".":  # the copied path itself, or one above it
                left.append(Nested(".", f"{item.kind} at {full}, above or at the copied path"))
                continue
            inside = item.path
        elif item.path.startswith(below + "/"):
            inside = item.path[len(below) + 1 :]
        else:
            continue
        if item.kind == SUBVOLUME and one_file_system:
            continue
        if not any(_excluded(inside, pattern) for pattern in patterns):
            left.append(Nested(inside, item.kind))
    return left


def _one_file_system(argument: str) -> bool:
    if argument in ("-x", "--one-file-system"):
        return True
    # a cluster of short options (-ax); one taking a value (-e, -f, ...) ends the cluster
    return bool(re.fullmatch(r"-[aAcDgHlogprtuvzxXSWPqi]+", argument)) and "x" in argument


REORDERING = (
    "--include",
    "--include-from",
    "--filter",
    "--files-from",
    "--exclude-from",
    "--delete-excluded",
)


def _rules_reorder(arguments: Sequence[str]) -> bool:
    """Whether filter rules other than plain excludes, or --delete-excluded, are present."""
    for argument in arguments:
        name = argument.split("=", 1)[0]
        if name in (
            "--include",
            "--include-from",
            "--filter",
            "--files-from",
            "--exclude-from",
            "--delete-excluded",
        ):
            return True
        if re.fullmatch(r"-[a-zA-Z]*[fF][a-zA-Z]*", argument) or argument.startswith("-f"):
            return True
    return False


def _excludes(arguments: Sequence[str]) -> list[str]:
    patterns: list[str] = []
    for index, argument in enumerate(arguments):
        if argument.startswith("--exclude="):
            patterns.append(argument.split("=", 1)[1])
        elif argument == "--exclude" and index + 1 < len(arguments):
            patterns.append(arguments[index + 1])
    return patterns


def _excluded(path: str, pattern: str) -> bool:
    """Whether rsync's exclude `pattern` leaves out `path` (relative to the copied
    directory), or a directory above it. Conservative: a pattern it cannot read (`**`)
    counts as not matching, so that the copy is refused rather than emptied."""
    for suffix in ("/***", "/"):
        if pattern.endswith(suffix):
            pattern = pattern[: -len(suffix)]
            break
    if not pattern or "**" in pattern or "[" in pattern:
        return False
    parts = path.split("/")
    wanted = pattern.lstrip("/").split("/")
    # anchored: from the copied directory; else at any depth (rsync matches the end of
    # each path it walks, at a "/")
    starts = [0] if pattern.startswith("/") else range(len(parts))
    for start in starts:
        window = parts[start : start + len(wanted)]
        if len(window) == len(wanted) and all(map(fnmatch.fnmatchcase, window, wanted)):
            return True
    return False


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
