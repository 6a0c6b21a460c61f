"""File systems in image files on loop devices, mounted for a test and removed after."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.components import in_ci, need


@contextlib.contextmanager
def loop_device(
    directory: Path,
    fstype: str,
    size_mb: int = 512,
    label: str | None = None,
    extra: list[str] | None = None,
    name: str | None = None,
) -> Iterator[str]:
    """Yield the loop device of a fresh, unmounted `fstype` file system of `size_mb` MiB
    (`extra`: mkfs options); the image file is `name` (default: the fstype) in `directory`."""
    if os.geteuid() != 0:
        if in_ci():
            pytest.fail("loop-device tests need root in CI")
        pytest.skip("loop devices need root")
    mkfs = need(f"mkfs.{fstype}")
    losetup = need("losetup")
    image = directory / f"{name or fstype}.img"
    with image.open("wb") as stream:
        stream.truncate(size_mb << 20)
    options = ["-L", label] if label else []
    quiet = ["-q"] if fstype == "btrfs" else ["-q", "-F"]
    subprocess.run([mkfs, *quiet, *options, *(extra or []), str(image)], check=True, capture_output=True)
    device = subprocess.run(
        [losetup, "--find", "--show", str(image)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["umount", device], check=False, capture_output=True)  # if a test left it mounted
        subprocess.run([losetup, "-d", device], check=False, capture_output=True)
        image.unlink(missing_ok=True)


@contextlib.contextmanager
def loop_filesystem(
    directory: Path, fstype: str, size_mb: int = 512, label: str | None = None, extra: list[str] | None = None
) -> Iterator[Path]:
    """Yield the mount point of a fresh `fstype` file system of `size_mb` MiB (`extra`: mkfs options)."""
    mountpoint = directory / f"{fstype}-mnt"
    mountpoint.mkdir()
    with loop_device(directory, fstype, size_mb, label, extra) as device:
        subprocess.run(["mount", device, str(mountpoint)], check=True, capture_output=True)
        try:
            yield mountpoint
        finally:
            subprocess.run(["umount", str(mountpoint)], check=False, capture_output=True)
