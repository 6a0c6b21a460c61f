"""LVM and ZFS staging with RECORDING STAND-INS for their commands (lvs, lvcreate, lvremove,
mount, umount, zfs): these machines have no device-mapper and no ZFS module. The stand-ins
record every argv and emulate the view (a copy of the origin where the snapshot would be
mounted), so the tests check the exact command sequence, cleanup on failure included, with
real rsync copying from the emulated view."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from synco.loader import load
from synco.staging import identity_of
from tests.support.cli import read_tree, synco, write_tree
from tests.support.scripts import root, toml_script

pytestmark = pytest.mark.usefixtures("rsync")

STAND_IN = """#!{python}
import json, os, shutil, subprocess, sys
name = os.path.basename(sys.argv[0])
argv = [name, *sys.argv[1:]]
with open(os.environ["STANDIN_LOG"], "a") as log:
    log.write(json.dumps(argv) + "\\n")
if os.environ.get("STANDIN_FAIL") == name:
    sys.stderr.write(name + ": failing as told\\n")
    sys.exit(5)
origin = os.environ["STANDIN_ORIGIN"]
def emulate(view):
    os.makedirs(view, exist_ok=True)
    subprocess.run(["rsync", "-a", "--exclude=/.zfs", origin + "/", view + "/"], check=True)
if name in ("lvs", "zfs") and argv[1] in ("--noheadings", "list"):
    listing = os.environ.get("STANDIN_LISTING", "")
    if listing and os.path.exists(listing):
        sys.stdout.write(open(listing).read())
elif name == "mount":
    emulate(argv[-1])
    with open(os.path.join(os.path.dirname(sys.argv[0]), "mounts"), "a") as mounts:
        mounts.write(argv[-2] + " " + argv[-1] + "\\n")
elif name == "umount":
    try:
        with open(os.path.join(os.path.dirname(sys.argv[0]), "mounts")) as mounts:
            table = dict(line.split() for line in mounts if line.strip())
    except FileNotFoundError:
        table = dict()
    point = table.get(argv[-1], argv[-1])  # a device, or a mount point
    if not os.path.isdir(point):
        sys.stderr.write("umount: " + argv[-1] + ": not mounted\\n")
        sys.exit(32)
    for entry in os.listdir(point):
        path = os.path.join(point, entry)
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
elif name == "zfs" and argv[1] == "snapshot":
    emulate(os.path.join(origin, ".zfs", "snapshot", argv[-1].split("@", 1)[1]))
elif name == "zfs" and argv[1] == "destroy":
    shutil.rmtree(os.path.join(origin, ".zfs", "snapshot", argv[-1].split("@", 1)[1]))
"""


class StandIns:
    def __init__(self, directory: Path, origin: Path) -> None:
        self.bin = directory / "stand-in-bin"
        self.bin.mkdir()
        program = self.bin / "stand-in"
        program.write_text(STAND_IN.format(python=sys.executable))
        program.chmod(program.stat().st_mode | stat.S_IXUSR)
        for name in ("lvs", "lvcreate", "lvremove", "mount", "umount", "zfs"):
            (self.bin / name).symlink_to(program)
        self.log = directory / "commands.log"
        self.listing = directory / "listing"
        self.env = {
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "STANDIN_LOG": str(self.log),
            "STANDIN_ORIGIN": str(origin),
            "STANDIN_LISTING": str(self.listing),
        }

    def commands(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


def script_with(tmp_path: Path, source: Path, target: Path, staging: str) -> Path:
    path = toml_script(
        tmp_path / "staged.toml",
        master="db",
        servers={"db": root(source), "copy": root(target)},
        directories=[{"path": "."}],
        arguments=["--archive", "--delete"],
    )
    path.write_text(path.read_text().replace("[servers.copy]", f"{staging}\n[servers.copy]"))
    return path


def staged_name(result_stdout: str) -> str:
    (staged,) = json.loads(result_stdout)["staged"]
    return str(staged["name"])


@pytest.fixture
def source(tmp_path: Path) -> Path:
    tree = tmp_path / "db"
    write_tree(tree, {"a": "1", "sub/b": "2"})
    return tree


def lvm(tmp_path: Path) -> str:
    return (
        f'[servers.db.staging]\nprovider = "lvm"\nvolume = "vg0/data"\nsize = "2G"\n'
        f'snapshots = "{tmp_path / "mnt"}"\n'
    )


def test_lvm_with_recording_stand_ins_runs_the_exact_sequence(tmp_path: Path, source: Path) -> None:
    fake = StandIns(tmp_path, source)
    script = script_with(tmp_path, source, tmp_path / "copy", lvm(tmp_path))
    result = synco("run", "--json", str(script), env=fake.env)
    assert result.returncode == 0, result.stderr
    name = staged_name(result.stdout)
    mount = str(tmp_path / "mnt" / name)
    assert fake.commands() == [
        ["lvs", "--noheadings", "--separator", "|", "-o", "lv_name,lv_tags", "vg0"],
        ["lvcreate", "--snapshot", "--name", name, "--size", "2G", "--addtag", "synco_staging", "vg0/data"],
        ["mount", "-o", "ro", f"/dev/vg0/{name}", mount],
        ["umount", "--", mount],
        ["lvremove", "--yes", f"vg0/{name}"],
    ]
    assert read_tree(tmp_path / "copy") == {"a": "1", "sub/b": "2"}
    assert not os.path.exists(mount)  # the mount directory is removed too


def test_lvm_with_recording_stand_ins_removes_the_snapshot_when_mounting_fails(
    tmp_path: Path, source: Path
) -> None:
    fake = StandIns(tmp_path, source)
    script = script_with(tmp_path, source, tmp_path / "copy", lvm(tmp_path))
    result = synco("run", str(script), env={**fake.env, "STANDIN_FAIL": "mount"})
    assert result.returncode == 1
    assert "mount: failing as told" in result.stderr
    recorded = [argv[0] for argv in fake.commands()]
    assert recorded == ["lvs", "lvcreate", "mount", "lvremove"]  # no umount: it never was mounted
    assert list((tmp_path / "mnt").iterdir()) == []
    assert not (tmp_path / "copy").exists()


def test_lvm_with_recording_stand_ins_extents_and_mount_options(tmp_path: Path, source: Path) -> None:
    fake = StandIns(tmp_path, source)
    staging = lvm(tmp_path).replace('size = "2G"', 'size = "10%ORIGIN"\nmount_options = "ro,nouuid"')
    script = script_with(tmp_path, source, tmp_path / "copy", staging)
    result = synco("run", "--json", str(script), env=fake.env)
    assert result.returncode == 0, result.stderr
    lvcreate, mount = fake.commands()[1:3]
    assert lvcreate[4:6] == ["--extents", "10%ORIGIN"] and mount[1:3] == ["-o", "ro,nouuid"]


def test_lvm_with_recording_stand_ins_removes_a_crashed_runs_snapshot_and_reports_a_foreign_lv(
    tmp_path: Path, source: Path
) -> None:
    fake = StandIns(tmp_path, source)
    script = script_with(tmp_path, source, tmp_path / "copy", lvm(tmp_path))
    identity = identity_of(load(str(script)), "db")
    left, foreign = f"synco-stage-{identity}-20260101T000000Z-1", f"synco-stage-{identity}-mine"
    other = "synco-stage-0000abcd-20260101T000000Z-1|synco_staging"  # another script's
    fake.listing.write_text(f"  {left}|synco_staging\n  {foreign}|\n  data|\n  {other}\n")
    result = synco("run", str(script), env=fake.env)
    assert result.returncode == 0, result.stderr
    assert fake.commands()[1:3] == [
        ["umount", "--", f"/dev/vg0/{left}"],
        ["lvremove", "--yes", f"vg0/{left}"],
    ]
    assert f"removed {left} on db, left by an earlier run" in result.stderr
    assert f"{foreign} is at one of Synco's names but is an LV without the synco_staging tag" in result.stderr
    assert not any(foreign in argv[-1] or "0000abcd" in argv[-1] for argv in fake.commands()[1:])


def zfs(source: Path) -> str:
    return f'[servers.db.staging]\nprovider = "zfs"\ndataset = "tank/data"\norigin = "{source}"\n'


def test_zfs_with_recording_stand_ins_runs_the_exact_sequence_and_reads_dot_zfs(
    tmp_path: Path, source: Path
) -> None:
    fake = StandIns(tmp_path, source)
    script = script_with(tmp_path, source, tmp_path / "copy", zfs(source))
    result = synco("run", "--json", str(script), env=fake.env)
    assert result.returncode == 0, result.stderr
    name = staged_name(result.stdout)
    identity = identity_of(load(str(script)), "db")
    assert fake.commands() == [
        ["zfs", "list", "-H", "-t", "snapshot", "-o", "name,synco:staging", "-d", "1", "tank/data"],
        ["zfs", "snapshot", "-o", f"synco:staging={identity}", f"tank/data@{name}"],
        ["zfs", "destroy", f"tank/data@{name}"],
    ]
    assert f"reading {source}/.zfs/snapshot/{name}" in result.stderr
    assert read_tree(tmp_path / "copy") == {"a": "1", "sub/b": "2"}


def test_zfs_with_recording_stand_ins_destroys_the_snapshot_when_the_copy_fails(
    tmp_path: Path, source: Path
) -> None:
    fake = StandIns(tmp_path, source)
    target = tmp_path / "copy"
    target.write_text("a file where the copy's directory should be: rsync fails")
    script = script_with(tmp_path, source, target, zfs(source))
    result = synco("run", "--json", str(script), env=fake.env)
    assert result.returncode == 1
    assert [c["status"] for c in json.loads(result.stdout)["copies"]] == ["failed"]
    assert [argv[1] for argv in fake.commands()] == ["list", "snapshot", "destroy"]
    assert list((source / ".zfs" / "snapshot").iterdir()) == []


def test_zfs_with_recording_stand_ins_removes_its_leftover_and_reports_a_snapshot_without_its_property(
    tmp_path: Path, source: Path
) -> None:
    fake = StandIns(tmp_path, source)
    script = script_with(tmp_path, source, tmp_path / "copy", zfs(source))
    identity = identity_of(load(str(script)), "db")
    left, foreign = f"synco-stage-{identity}-20260101T000000Z-1", f"synco-stage-{identity}-by-hand"
    (source / ".zfs" / "snapshot" / left).mkdir(parents=True)
    fake.listing.write_text(f"tank/data@{left}\t{identity}\ntank/data@{foreign}\t-\ntank/data@daily\t-\n")
    result = synco("run", str(script), env=fake.env)
    assert result.returncode == 0, result.stderr
    assert fake.commands()[1] == ["zfs", "destroy", f"tank/data@{left}"]
    assert (
        f"{foreign} is at one of Synco's names but is a ZFS snapshot without synco:staging" in result.stderr
    )
    assert [argv[1] for argv in fake.commands()] == ["list", "destroy", "snapshot", "destroy"]
