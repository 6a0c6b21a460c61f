"""What `synco mount` and `unmount` decide from the kernel's mount table, as a table."""

from __future__ import annotations

import pytest

from synco.mounting import (
    Mount,
    filesystems_labelled,
    parse_blkid_export,
    parse_mountinfo,
    plan_mount,
    plan_unmount,
)

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
35 22 7:3 / /mnt/back\\040up rw,relatime shared:9 - ext4 /dev/loop3 rw
36 22 0:45 / /srv rw,nosuid shared:10 master:2 - tmpfs none rw
37 22 7:6 /sub /mnt/part rw - ext4 /dev/loop6 rw
"""


def test_mountinfo_is_parsed_and_unescaped() -> None:
    assert parse_mountinfo(MOUNTINFO) == [
        Mount("/", "/dev/sda1", "ext4"),
        Mount("/mnt/back up", "/dev/loop3", "ext4"),  # optional fields (master:2) skipped
        Mount("/srv", "none", "tmpfs"),
        Mount("/mnt/part", "/dev/loop6", "ext4", "/sub"),  # a bind mount of part of a disk
    ]


def test_blkid_export_groups_devices_by_file_system() -> None:
    text = (
        "DEVNAME=/dev/loop0\nLABEL=POOL\nUUID=aaa\nTYPE=btrfs\n\n"
        "DEVNAME=/dev/loop1\nLABEL=POOL\nUUID=aaa\nTYPE=btrfs\n\n"
        "DEVNAME=/dev/loop2\nLABEL=my\\ disk\nUUID=bbb\nTYPE=ext4\n"
    )
    devices = parse_blkid_export(text)
    assert devices[2]["LABEL"] == "my disk"
    assert filesystems_labelled(devices, "POOL") == [["/dev/loop0", "/dev/loop1"]]  # one btrfs, two devices
    assert filesystems_labelled(devices, "my disk") == [["/dev/loop2"]]
    assert filesystems_labelled(devices, "POO") == []


MOUNTS = parse_mountinfo(MOUNTINFO)


@pytest.mark.parametrize(
    ("mountpoint", "filesystems", "action", "words"),
    [
        ("/mnt/backup", [["/dev/loop4"]], "mount", "mount /dev/loop4 (B) on /mnt/backup"),
        ("/mnt/back up", [["/dev/loop3"]], "nothing", "already mounted on /mnt/back up"),
        ("/mnt/back up", [["/dev/loop2", "/dev/loop3"]], "nothing", "already mounted"),  # multi-device
        ("/mnt/backup", [], "refuse", "no file system is labelled 'B'"),
        ("/mnt/backup", [["/dev/loop4"], ["/dev/loop5"]], "refuse", "2 file systems are labelled 'B'"),
        ("/srv", [["/dev/loop4"]], "refuse", "/srv already has none (tmpfs) mounted on it"),
        ("/mnt/other", [["/dev/loop3"]], "refuse", "is mounted on /mnt/back up; unmount it there first"),
        ("/mnt/part", [["/dev/loop6"]], "refuse", "already has /dev/loop6 (/sub of it) (ext4)"),
    ],
)
def test_mount_decisions(mountpoint: str, filesystems: list[list[str]], action: str, words: str) -> None:
    plan = plan_mount(mountpoint, "B", filesystems, MOUNTS)
    assert plan.action == action and words in plan.reason


def test_unmount_decisions() -> None:
    assert plan_unmount("/mnt/back up", MOUNTS).action == "unmount"
    assert plan_unmount("/mnt/nothing", MOUNTS).action == "nothing"
    stacked = [*MOUNTS, Mount("/srv", "/dev/loop9", "ext4")]
    assert plan_unmount("/srv", stacked).device == "/dev/loop9"  # the one on top
    # with a label, only that file system: a finish handler never unmounts another disk
    assert plan_unmount("/mnt/back up", MOUNTS, "B", [["/dev/loop3"]]).action == "unmount"
    other = plan_unmount("/srv", MOUNTS, "B", [["/dev/loop3"]])
    assert other.action == "refuse" and "not the file system labelled 'B'; left mounted" in other.reason
