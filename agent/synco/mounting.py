"""Backup disks by label: find the file system, mount it where the script expects it, and
unmount it, refusing whatever would surprise an operator (two disks with one label, the
disk already mounted elsewhere, something else on the mount point, a busy file system).

The decisions are pure functions of what the kernel reports (/proc/self/mountinfo) and
what blkid finds; the I/O around them is thin.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil

from synco.errors import ConfigError, OperationError

MOUNTINFO = Path("/proc/self/mountinfo")


@dataclass(frozen=True)
class Mount:
    mountpoint: str
    source: str  # the device (or "none", a server:path...)
    fstype: str


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts in /proc/self/mountinfo's format (proc(5)), paths unescaped."""
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        if "-" not in fields:
            continue
        separator = fields.index("-")
        if separator < 5 or len(fields) < separator + 3:
            continue
        mounts.append(Mount(_unescape(fields[4]), _unescape(fields[separator + 2]), fields[separator + 1]))
    return mounts


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040...)."""
    out, index = [], 0
    while index < len(field):
        if field[index] == "\\" and field[index + 1 : index + 4].isdigit():
            out.append(chr(int(field[index + 1 : index + 4], 8)))
            index += 4
        else:
            out.append(field[index])
            index += 1
    return "".join(out)


@dataclass(frozen=True)
class MountPlan:
    action: str  # "mount", "nothing" (already done) or "refuse"
    reason: str
    device: str | None = None


def plan_mount(mountpoint: str, label: str, devices: list[str], mounts: list[Mount]) -> MountPlan:
    """What `synco mount MOUNTPOINT LABEL` does, given the devices labelled LABEL (resolved
    paths) and the current mounts."""
    if not devices:
        return MountPlan("refuse", f"no file system is labelled {label!r} (is the disk connected?)")
    if len(devices) > 1:
        return MountPlan(
            "refuse", f"{len(devices)} file systems are labelled {label!r}: {', '.join(devices)}; relabel one"
        )
    device = devices[0]
    here = _topmost(mounts, mountpoint)
    if here is not None:
        if here.source == device:
            return MountPlan("nothing", f"{device} ({label}) is already mounted on {mountpoint}", device)
        return MountPlan(
            "refuse",
            f"{mountpoint} already has {here.source} ({here.fstype}) mounted on it; unmount it first",
        )
    elsewhere = [m.mountpoint for m in mounts if m.source == device]
    if elsewhere:
        return MountPlan(
            "refuse",
            f"{device} ({label}) is mounted on {', '.join(elsewhere)}; unmount it there first",
            device,
        )
    return MountPlan("mount", f"mount {device} ({label}) on {mountpoint}", device)


def plan_unmount(mountpoint: str, mounts: list[Mount]) -> MountPlan:
    here = _topmost(mounts, mountpoint)
    if here is None:
        return MountPlan("nothing", f"nothing is mounted on {mountpoint}")
    return MountPlan("unmount", f"unmount {here.source} from {mountpoint}", here.source)


def _topmost(mounts: list[Mount], mountpoint: str) -> Mount | None:
    """The mount visible at `mountpoint` (the last one mounted there)."""
    found = [m for m in mounts if m.mountpoint == mountpoint]
    return found[-1] if found else None


# -- I/O --------------------------------------------------------------------------------


def current_mounts() -> list[Mount]:
    """The mounts now, device sources resolved as blkid names them (/dev/mapper/x -> /dev/dm-0)."""
    mounts = parse_mountinfo(MOUNTINFO.read_text())
    return [
        Mount(m.mountpoint, os.path.realpath(m.source), m.fstype) if m.source.startswith("/dev/") else m
        for m in mounts
    ]


def labelled(label: str) -> list[str]:
    """The devices whose file system carries `label`. blkid probes every device (`-c /dev/null`:
    not its cache, which misses a disk just connected or a second one with the same label)."""
    try:
        found = subprocess.run(
            ["blkid", "-c", "/dev/null", "-t", f"LABEL={label}", "-o", "device"],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError as error:
        raise OperationError("blkid is not installed (util-linux)") from error
    if found.returncode not in (0, 2):  # 2: nothing found
        raise OperationError(f"blkid failed: {found.stderr.strip()}")
    return sorted({os.path.realpath(line) for line in found.stdout.split() if line})


def checked_mountpoint(path: str) -> str:
    """An absolute existing directory, as the kernel names it (symlinks resolved)."""
    if not os.path.isabs(path):
        raise ConfigError(f"the mount point must be an absolute path, not {path!r}")
    if not os.path.isdir(path):
        raise ConfigError(f"{path} is not a directory: create the mount point first")
    return os.path.realpath(path)


def run_mount(device: str, mountpoint: str, options: str | None) -> None:
    argv = ["mount", *(["-o", options] if options else []), device, mountpoint]
    result = _run(argv)
    if result.returncode != 0:
        raise OperationError(f"mount {device} on {mountpoint} failed: {result.stderr.strip()}")


def run_unmount(mountpoint: str) -> None:
    """Flush, then unmount (never lazily: a busy disk stays mounted and says who uses it)."""
    os.sync()
    result = _run(["umount", mountpoint])
    if result.returncode != 0:
        users = users_of(mountpoint)
        raise OperationError(
            f"unmounting {mountpoint} failed: {result.stderr.strip()}"
            + (f"; in use by {', '.join(users)}" if users else "")
        )


def users_of(mountpoint: str) -> list[str]:
    """The processes with a file or their working directory under `mountpoint`."""
    inside = mountpoint.rstrip("/") + "/"
    users = []
    for process in psutil.process_iter(["pid", "name"]):
        try:
            paths = [f.path for f in process.open_files()] + [process.cwd()]
        except (psutil.Error, OSError):
            continue
        if any(path == mountpoint or path.startswith(inside) for path in paths):
            users.append(f"{process.info['name']} (pid {process.info['pid']})")
    return users


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError as error:
        raise OperationError(f"{argv[0]} is not installed (util-linux)") from error
