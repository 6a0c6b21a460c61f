"""`synco mount` and `synco unmount` with real file systems on loop devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.cli import read_tree, synco, write_tree
from tests.support.loopfs import loop_device
from tests.support.scripts import toml_script


def label(n: int) -> str:
    return f"SYN{os.getpid() % 100000}T{n}"  # unique on this machine, within ext4's 16 bytes


def test_mount_by_label_is_verified_idempotent_and_undone(tmp_path: Path) -> None:
    disk = tmp_path / "mnt"
    disk.mkdir()
    name = label(1)
    with loop_device(tmp_path, "ext4", 32, label=name) as device:
        dry = synco("mount", "--dry-run", str(disk), name)
        assert dry.returncode == 0 and "would mount" in dry.stdout and not os.path.ismount(disk)
        done = synco("mount", "--json", str(disk), name)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["action"] == "mount"
        assert os.path.ismount(disk) and json.loads(done.stdout)["device"] == os.path.realpath(device)
        again = synco("mount", str(disk), name)
        assert again.returncode == 0 and "already mounted" in again.stdout

        with (disk / "busy").open("w"):  # a process using the disk keeps it mounted
            busy = synco("unmount", str(disk))
            assert busy.returncode == 1 and f"(pid {os.getpid()})" in busy.stderr
        assert os.path.ismount(disk)
        assert synco("unmount", "--dry-run", str(disk)).returncode == 0 and os.path.ismount(disk)
        gone = synco("unmount", str(disk))
        assert gone.returncode == 0 and "unmounted" in gone.stdout and not os.path.ismount(disk)
        nothing = synco("unmount", str(disk))
        assert nothing.returncode == 0 and nothing.stdout.startswith("nothing is mounted")


def test_refusals(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for path in (first, second):
        path.mkdir()
    missing = synco("mount", str(tmp_path / "nope"), label(2))
    assert missing.returncode == 2 and "create the mount point first" in missing.stderr
    unknown = synco("mount", str(first), label(9))
    assert unknown.returncode == 1 and "no file system is labelled" in unknown.stderr

    twin = label(3)
    with (
        loop_device(tmp_path, "ext4", 32, label=twin, name="one"),
        loop_device(tmp_path, "ext4", 32, label=twin, name="two"),
    ):
        both = synco("mount", str(first), twin)
        assert both.returncode == 1 and "2 file systems are labelled" in both.stderr
        assert not os.path.ismount(first)

    name, other = label(4), label(5)
    with (
        loop_device(tmp_path, "ext4", 32, label=name, name="one"),
        loop_device(tmp_path, "ext4", 32, label=other, name="two"),
    ):
        assert synco("mount", str(first), name).returncode == 0
        try:
            there = synco("mount", str(second), name)
            assert there.returncode == 1 and f"is mounted on {first}" in there.stderr
            taken = synco("mount", str(first), other)
            assert taken.returncode == 1 and "already has" in taken.stderr
        finally:
            synco("unmount", str(first))


def test_a_backup_script_mounts_its_disk_and_unmounts_it_after(tmp_path: Path) -> None:
    """The README's recipe: the backup server's handlers mount the disk by label before the
    copy and unmount it after; without the disk, nothing is written beneath the mount point,
    and a file system someone else mounted there is left alone."""
    disk, name = tmp_path / "mnt", label(6)
    disk.mkdir()
    write_tree(tmp_path / "web", {"srv/index.html": "hello"})
    synco_command = [sys.executable, "-m", "synco.cli.main"]
    handlers = (
        f'mountpoint = "{disk}"\n[servers.backup.events]\n'
        f'prepare = {{ run = [{json.dumps([*synco_command, "mount", str(disk), name])}], on = "local" }}\n'
        f'finish = {{ run = [{json.dumps([*synco_command, "unmount", str(disk), name])}], on = "local" }}\n'
    )
    script = toml_script(
        tmp_path / "backup.toml",
        master="web",
        direction="pull",
        servers={"web": f'root = "{tmp_path / "web"}"\n', "backup": f'root = "{disk / "web"}"\n' + handlers},
        directories=[{"path": "srv"}],
    )
    absent = synco("run", str(script))  # no disk with that label yet
    assert absent.returncode == 1 and "no file system is labelled" in absent.stderr
    assert list(disk.iterdir()) == []
    with loop_device(tmp_path, "ext4", 32, label=name) as device:
        subprocess.run(["mount", "-t", "tmpfs", "someone-elses", str(disk)], check=True)
        try:
            occupied = synco("run", str(script))
            assert occupied.returncode == 1 and "already has someone-elses" in occupied.stderr
            assert "not the file system labelled" in occupied.stderr  # the finish handler refused
            assert os.path.ismount(disk)  # still theirs
        finally:
            subprocess.run(["umount", str(disk)], check=True)

        result = synco("run", str(script))
        assert result.returncode == 0, result.stderr
        assert not os.path.ismount(disk)
        check = tmp_path / "check"
        check.mkdir()
        subprocess.run(["mount", "-o", "ro", device, str(check)], check=True)
        try:
            assert read_tree(check / "web") == {"srv/index.html": "hello"}
        finally:
            subprocess.run(["umount", str(check)], check=True)


def test_a_btrfs_file_system_on_two_devices_is_one_disk(tmp_path: Path) -> None:
    """Both devices carry the label; they are one file system (one UUID), mounted by either."""
    disk, name = tmp_path / "mnt", label(7)
    disk.mkdir()
    with (
        loop_device(tmp_path, "ext4", 128, name="one") as first,
        loop_device(tmp_path, "ext4", 128, name="two") as second,
    ):
        mkfs = subprocess.run(
            ["mkfs.btrfs", "-q", "-f", "-L", name, "-d", "raid1", "-m", "raid1", first, second],
            capture_output=True,
            text=True,
        )
        assert mkfs.returncode == 0, mkfs.stderr
        subprocess.run(["btrfs", "device", "scan"], capture_output=True, check=False)
        done = synco("mount", str(disk), name)
        assert done.returncode == 0, done.stderr
        try:
            assert os.path.ismount(disk)
            again = synco("mount", str(disk), name)
            assert again.returncode == 0 and "already mounted" in again.stdout
        finally:
            assert synco("unmount", str(disk), name).returncode == 0
        assert not os.path.ismount(disk)
