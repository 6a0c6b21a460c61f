"""The btrfs snapshot backend on a real btrfs file system (an image on a loop device)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import read_tree, synco, write_tree
from tests.support.loopfs import loop_filesystem
from tests.support.scripts import root, toml_script
from tests.support.snapshots import latest, snapshot_dirs

pytestmark = pytest.mark.usefixtures("rsync")


@pytest.fixture
def btrfs_root(tmp_path: Path) -> Iterator[Path]:
    with loop_filesystem(tmp_path, "btrfs") as mountpoint:
        yield mountpoint


def read_only(path: Path) -> bool:
    result = subprocess.run(
        ["btrfs", "property", "get", "-ts", str(path), "ro"], capture_output=True, text=True
    )
    return result.stdout.strip() == "ro=true"


def script_for(tmp_path: Path, backup: Path, verify: bool = False) -> Path:
    path = toml_script(
        tmp_path / "s.toml",
        master="web",
        direction="pull",
        servers={"web": root(tmp_path / "web"), "backup": root(backup)},
        directories=[{"path": "."}],
    )
    method = '[method]\nname = "snapshot"\nsnapshot_backend = "btrfs"\n' + (
        "verify = true\n" if verify else ""
    )
    path.write_text(path.read_text().replace("[method]\n", method))
    return path


def test_each_snapshot_is_a_read_only_subvolume(tmp_path: Path, btrfs_root: Path) -> None:
    backup = btrfs_root / "backups"
    write_tree(tmp_path / "web", {"a": "1", "sub/b": "2", "sub/c": "3"})
    script = script_for(tmp_path, backup, verify=True)
    assert synco("run", str(script)).returncode == 0
    first = latest(backup)
    os.chmod(tmp_path / "web/sub/b", 0o600)  # an attribute change: must not reach the older snapshot
    (tmp_path / "web/a").write_text("changed, longer")
    (tmp_path / "web/sub/c").unlink()
    result = synco("run", "--json", str(script))
    assert result.returncode == 0, result.stderr
    second = latest(backup)
    assert [first, second] == snapshot_dirs(backup)
    assert read_only(first) and read_only(second)
    assert not read_only(backup / "latest.snapshot")  # the writable mirror
    assert {k: v for k, v in read_tree(first).items() if not k.startswith(".synco")} == {
        "a": "1",
        "sub/b": "2",
        "sub/c": "3",
    }
    assert {k: v for k, v in read_tree(second).items() if not k.startswith(".synco")} == {
        "a": "changed, longer",
        "sub/b": "2",
    }
    assert (first / "sub/b").stat().st_mode & 0o777 == 0o644
    assert (second / "sub/b").stat().st_mode & 0o777 == 0o600
    assert synco("--root", str(backup), "verify").returncode == 0
    assert (
        json.loads(synco("--root", str(backup), "list", "--json").stdout)["snapshots"][0]["name"]
        == second.name
    )

    pruned = synco("--root", str(backup), "prune", "--keep-last", "1")
    assert pruned.returncode == 0, pruned.stderr
    assert snapshot_dirs(backup) == [second]


def test_btrfs_backend_refuses_other_file_systems(tmp_path: Path) -> None:
    write_tree(tmp_path / "web", {"a": "1"})
    result = synco("run", str(script_for(tmp_path, tmp_path / "backup")))
    assert result.returncode == 1
    assert "is not on btrfs" in result.stderr


def test_mounted_disk_is_written_to(tmp_path: Path) -> None:
    with loop_filesystem(tmp_path, "ext4", size_mb=64) as disk:
        write_tree(tmp_path / "a", {"d/f": "1"})
        script = toml_script(
            tmp_path / "s.toml",
            master="s01",
            servers={
                "s01": root(tmp_path / "a"),
                "s02": root(disk / "backup") + f'\nmountpoint = "{disk}"\n',
            },
            directories=[{"path": "d"}],
        )
        assert synco("run", str(script)).returncode == 0
        assert read_tree(disk / "backup") == {"d/f": "1"}


def test_mirror_forgets_directories_the_script_stops_copying(tmp_path: Path, btrfs_root: Path) -> None:
    backup = btrfs_root / "backups"
    write_tree(tmp_path / "web", {"keep/a": "1", "drop/b": "2"})
    script = toml_script(
        tmp_path / "s.toml",
        master="web",
        direction="pull",
        servers={"web": root(tmp_path / "web"), "backup": root(backup)},
        directories=[{"path": "keep"}, {"path": "drop"}],
    )
    text = script.read_text().replace(
        "[method]\n", '[method]\nname = "snapshot"\nsnapshot_backend = "btrfs"\n'
    )
    script.write_text(text)
    assert synco("run", str(script)).returncode == 0
    script.write_text(text.replace('[[directories]]\npath = "drop"\n', ""))
    assert synco("run", str(script)).returncode == 0
    first, second = snapshot_dirs(backup)
    assert (first / "drop/b").exists()
    assert sorted(p.name for p in second.iterdir()) == [".synco-snapshot", "keep"]


def test_full_disk_fails_the_run_and_publishes_nothing(tmp_path: Path) -> None:
    """The target's file system fills up mid-snapshot: the run fails, `latest` stays as it was."""
    with loop_filesystem(tmp_path, "ext4", size_mb=16) as disk:
        web = tmp_path / "web"
        write_tree(web, {"small": "fits"})
        script = toml_script(
            tmp_path / "s.toml",
            master="web",
            direction="pull",
            servers={"web": root(web), "backup": root(disk / "backups")},
            directories=[{"path": "."}],
        )
        script.write_text(script.read_text().replace("[method]\n", '[method]\nname = "snapshot"\n'))
        assert synco("run", str(script)).returncode == 0
        good = latest(disk / "backups")
        (web / "huge").write_bytes(os.urandom(40 << 20))
        result = synco("run", "--json", str(script))
        assert result.returncode == 1
        copy = json.loads(result.stdout)["copies"][0]
        assert copy["status"] == "failed" and "No space left" in copy["message"]
        assert latest(disk / "backups") == good
        assert {k: v for k, v in read_tree(good).items() if not k.startswith(".synco")} == {"small": "fits"}
        (web / "huge").unlink()
        assert synco("run", str(script)).returncode == 0  # room again: the next run completes
        assert latest(disk / "backups") != good
