"""Backup disks by label: find the file system, mount it where the script expects it, and
unmount it, refusing whatever would surprise an operator (two disks with one label, the
disk already mounted elsewhere, something else on the mount point, a busy file system).

The decisions are pure functions of what the kernel reports (/proc/self/mountinfo) and
what blkid finds; the I/O around them is thin.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from synco.core.errors import ConfigError, OperationError

MOUNTINFO = Path("/proc/self/mountinfo")


@dataclass(frozen=True)
class Mount:
    mountpoint: str
    source: str  # the device (or "none", a server:path...)
    fstype: str
    root: str = "/"  # the part of the file system mounted there ("/": all of it; else a bind mount)


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
        mounts.append(
            Mount(
                _unescape(fields[4]),
                _unescape(fields[separator + 2]),
                fields[separator + 1],
                _unescape(fields[3]),
            )
        )
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


def plan_mount(mountpoint: str, label: str, filesystems: list[list[str]], mounts: list[Mount]) -> MountPlan:
    """What `synco mount MOUNTPOINT LABEL` does, given the file systems labelled LABEL (each
    the list of its devices: a btrfs file system may span several) and the current mounts."""
    if not filesystems:
        return MountPlan("refuse", f"no file system is labelled {label!r} (is the disk connected?)")
    if len(filesystems) > 1:
        devices = "; ".join(", ".join(f) for f in filesystems)
        return MountPlan(
            "refuse", f"{len(filesystems)} file systems are labelled {label!r} ({devices}); relabel one"
        )
    members = filesystems[0]
    device = members[0]
    here = _topmost(mounts, mountpoint)
    if here is not None:
        if here.source in members and here.root == "/":
            return MountPlan(
                "nothing", f"{here.source} ({label}) is already mounted on {mountpoint}", here.source
            )
        part = f" ({here.root} of it)" if here.root != "/" else ""
        other = f"{here.source}{part} ({here.fstype})"
        return MountPlan("refuse", f"{mountpoint} already has {other} mounted on it; unmount it first")
    elsewhere = [m.mountpoint for m in mounts if m.source in members]
    if elsewhere:
        where = ", ".join(elsewhere)
        return MountPlan(
            "refuse", f"{device} ({label}) is mounted on {where}; unmount it there first", device
        )
    return MountPlan("mount", f"mount {device} ({label}) on {mountpoint}", device)


def plan_unmount(
    mountpoint: str, mounts: list[Mount], label: str | None = None, filesystems: list[list[str]] | None = None
) -> MountPlan:
    """What `synco unmount MOUNTPOINT [LABEL]` does. With LABEL, only the file system that
    carries it is unmounted: a finish handler must not unmount a disk its prepare refused."""
    here = _topmost(mounts, mountpoint)
    if here is None:
        return MountPlan("nothing", f"nothing is mounted on {mountpoint}")
    if label is not None:
        members = [d for f in filesystems or [] for d in f]
        if here.source not in members:
            return MountPlan(
                "refuse",
                f"{mountpoint} has {here.source} ({here.fstype}) mounted on it, not the file system "
                f"labelled {label!r}; left mounted",
            )
    return MountPlan("unmount", f"unmount {here.source} from {mountpoint}", here.source)


def _topmost(mounts: list[Mount], mountpoint: str) -> Mount | None:
    """The mount visible at `mountpoint` (the last one mounted there)."""
    found = [m for m in mounts if m.mountpoint == mountpoint]
    return found[-1] if found else None


# -- I/O --------------------------------------------------------------------------------


def current_mounts() -> list[Mount]:
    """The mounts now, device sources resolved as blkid names them (/dev/mapper/x -> /dev/dm-0)."""
    mounts = parse_mountinfo(os.fsdecode(MOUNTINFO.read_bytes()))
    return [
        Mount(m.mountpoint, os.path.realpath(m.source), m.fstype, m.root)
        if m.source.startswith("/dev/")
        else m
        for m in mounts
    ]


def labelled(label: str) -> list[list[str]]:
    """The file systems carrying `label`, each as its devices (one UUID: one file system).
    blkid probes every device (`-c /dev/null`: not its cache, which misses a disk just
    connected or a second one with the same label)."""
    if not label:
        raise ConfigError("the label is empty")
    if os.geteuid() != 0:
        raise OperationError("finding disks by label and mounting them needs root")
    found = _run(["blkid", "-c", "/dev/null", "-o", "export"], "blkid")
    if found.returncode not in (0, 2):  # 2: no device has a file system
        raise OperationError(f"blkid failed: {found.stderr.strip()}")
    return filesystems_labelled(parse_blkid_export(found.stdout), label)


def parse_blkid_export(text: str) -> list[dict[str, str]]:
    """blkid's `-o export` output: one KEY=value block per device, values backslash-escaped."""
    devices: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if current:
                devices.append(current)
            current = {}
            continue
        key, _, value = line.partition("=")
        current[key] = re.sub(r"\\(.)", r"\1", value)
    return devices


def filesystems_labelled(devices: list[dict[str, str]], label: str) -> list[list[str]]:
    groups: dict[str, list[str]] = {}
    for device in devices:
        if device.get("LABEL") == label and "DEVNAME" in device:
            key = device.get("UUID") or device["DEVNAME"]
            groups.setdefault(key, []).append(os.path.realpath(device["DEVNAME"]))
    return [sorted(members) for _, members in sorted(groups.items())]


def checked_mountpoint(path: str) -> str:
    """An absolute existing directory, as the kernel names it (symlinks resolved)."""
    if not os.path.isabs(path):
        raise ConfigError(f"the mount point must be an absolute path, not {path!r}")
    if not os.path.isdir(path):
        raise ConfigError(f"{path} is not a directory: create the mount point first")
    return os.path.realpath(path)


def run_mount(device: str, mountpoint: str, options: str | None) -> None:
    argv = ["mount", *(["-o", options] if options else []), device, mountpoint]
    result = _run(argv, "mount")
    if result.returncode != 0:
        raise OperationError(f"mount {device} on {mountpoint} failed: {result.stderr.strip()}")


def run_unmount(mountpoint: str) -> None:
    """Unmount (never lazily: a busy disk stays mounted and says who uses it)."""
    result = _run(["umount", mountpoint], "umount")
    if result.returncode != 0:
        users = users_of(mountpoint)
        raise OperationError(
            f"unmounting {mountpoint} failed: {result.stderr.strip().rstrip('.')}"
            + (f"; in use by {', '.join(users)}" if users else "")
        )


def users_of(mountpoint: str) -> list[str]:
    """The processes holding anything on the file system mounted at `mountpoint`: an open
    file or directory, their working or root directory, their program (compared by device,
    so that paths seen from another mount namespace count too)."""
    try:
        device = os.stat(mountpoint).st_dev
    except OSError:
        return []
    users = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        links = ["cwd", "root", "exe"]
        try:
            links += [f"fd/{fd}" for fd in os.listdir(f"/proc/{entry.name}/fd")]
        except OSError:
            continue
        for link in links:
            try:
                if os.stat(f"/proc/{entry.name}/{link}").st_dev == device:
                    users.append(f"{_name(entry.name)} (pid {entry.name})")
                    break
            except OSError:
                continue
    return users


def _name(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _run(argv: list[str], program: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError as error:
        raise OperationError(f"{program} is not installed (util-linux)") from error
