"""btrfs subvolumes and read-only snapshots, through btrfs-progs (adapter)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from synco.core.errors import OperationError

SUBVOLUME_ROOT_INODE = 256


def _btrfs(*arguments: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["btrfs", *arguments], capture_output=True, text=True, check=False)
    except FileNotFoundError as error:
        raise OperationError("btrfs-progs is not installed (the btrfs command is missing)") from error


def is_subvolume(path: Path) -> bool:
    """Whether `path` is the root of a btrfs subvolume (inode 256 on a btrfs file system)."""
    try:
        if os.lstat(path).st_ino != SUBVOLUME_ROOT_INODE:
            return False
    except FileNotFoundError:
        return False
    return _btrfs("subvolume", "show", str(path)).returncode == 0


def on_btrfs(path: Path) -> bool:
    result = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True)
    return result.returncode == 0 and result.stdout.strip() == "btrfs"


def _checked(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        raise OperationError(f"{what} failed: {result.stderr.strip() or result.stdout.strip()}")


def create_subvolume(path: Path) -> None:
    _checked(_btrfs("subvolume", "create", str(path)), f"btrfs subvolume create {path}")


def snapshot_readonly(source: Path, destination: Path) -> None:
    _checked(
        _btrfs("subvolume", "snapshot", "-r", str(source), str(destination)),
        f"btrfs subvolume snapshot -r {source} {destination}",
    )


def delete_subvolume(path: Path) -> None:
    _checked(_btrfs("subvolume", "delete", str(path)), f"btrfs subvolume delete {path}")
