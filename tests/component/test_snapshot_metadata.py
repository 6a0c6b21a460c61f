"""A snapshot's own `.synco-snapshot/` is made by publication inside the snapshot, whatever
the source holds at that name, and only a real directory is read back by verify; a failed
publication names its step and path. Real rsync, real symlinks, a real full file system."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from synco import manifest
from synco.core.errors import OperationError
from synco.core.model import BackupSettings, Directory, Role, Script, Server
from synco.node.backup import take_snapshot
from synco.snapshot_store import SnapshotStore
from tests.support.cli import read_tree, synco, write_tree
from tests.support.loopfs import loop_filesystem
from tests.support.scripts import root, toml_script

pytestmark = pytest.mark.usefixtures("rsync")

PRECIOUS = {"meta.json": "precious, not synco's", "manifest.jsonl": "precious too"}


def hostile_source(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    """A master tree whose top-level `.synco-snapshot` leads out of it: a symlink to a
    directory elsewhere, or a directory whose files are symlinks to files elsewhere."""
    master, elsewhere = tmp_path / "master", tmp_path / "elsewhere"
    write_tree(master, {"srv/index.html": "v1"})
    write_tree(elsewhere, PRECIOUS)
    if kind == "symlink":
        os.symlink(elsewhere, master / ".synco-snapshot")
    else:
        (master / ".synco-snapshot").mkdir()
        for name in PRECIOUS:
            os.symlink(elsewhere / name, master / ".synco-snapshot" / name)
    return master, elsewhere


def assert_own_metadata(backup: Path, elsewhere: Path) -> None:
    assert read_tree(elsewhere) == PRECIOUS
    own = backup / "latest" / ".synco-snapshot"
    assert own.is_dir() and not own.is_symlink()
    for name in ("meta.json", "manifest.jsonl"):
        assert not (own / name).is_symlink()
    assert json.loads((own / "meta.json").read_text())["manifest"] is True
    verified = synco("--root", str(backup), "verify")
    assert verified.returncode == 0, verified.stderr


@pytest.mark.parametrize("kind", ["symlink", "directory of symlinks"])
def test_synco_run_publishes_its_own_metadata(tmp_path: Path, kind: str) -> None:
    master, elsewhere = hostile_source(tmp_path, kind)
    backup = tmp_path / "backup"
    script = toml_script(
        tmp_path / "snap.toml",
        master="web",
        servers={"web": root(master), "backup": root(backup)},
        directories=[{"path": "."}],
        arguments=["--archive"],
    )
    script.write_text(
        script.read_text().replace("[method]\n", '[method]\nname = "snapshot"\nverify = true\n')
    )
    for _ in range(2):  # the second snapshot hard-links to the first
        result = synco("run", str(script))
        assert result.returncode == 0, result.stderr
        assert_own_metadata(backup, elsewhere)


def test_a_backup_servers_snapshot_publishes_its_own_metadata(tmp_path: Path) -> None:
    master, elsewhere = hostile_source(tmp_path, "symlink")
    backup = tmp_path / "backup"
    script = Script(
        servers=(Server("s01", str(master)), Server("b01", str(backup), role=Role.BACKUP)),
        directories=(Directory("."),),
        master="s01",
        backup=BackupSettings(verify=True),
    )
    result = asyncio.run(take_snapshot(script, script.server("s01"), script.server("b01"), 4))
    assert result.ok, result.message
    assert_own_metadata(backup, elsewhere)


def test_verify_reads_only_a_real_metadata_directory(tmp_path: Path) -> None:
    """A snapshot whose `.synco-snapshot` is a symlink (as an older synco published it) to a
    manifest that matches: verify refuses to trust it."""
    backup, outside = tmp_path / "backup", tmp_path / "outside"
    snapshot = backup / "2026.01.01-00.00.00"
    write_tree(snapshot, {"a": "1"})
    entry = manifest.Entry("a", 1, hashlib.sha256(b"1").hexdigest())
    write_tree(outside, {"manifest.jsonl": entry.to_json() + "\n", "meta.json": "{}"})
    os.symlink(outside, snapshot / ".synco-snapshot")
    os.symlink(snapshot.name, backup / "latest")
    result = synco("--root", str(backup), "verify")
    assert result.returncode == 1
    assert (
        "is not a directory (a symlink or a file)" in result.stderr and "refusing to read it" in result.stderr
    )
    assert SnapshotStore(backup).metadata(snapshot.name) is None


# -- a failed publication says what it was doing, and where --------------------------------


def fill(path: Path) -> None:
    """Write to `path` until not one more byte fits."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1):
            with pytest.raises(OSError, match="No space left"):
                while True:
                    os.write(descriptor, b"\0" * size)  # ext4 reserves the blocks at write()
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def test_a_full_disk_at_publication_names_the_step_and_the_path(tmp_path: Path) -> None:
    """A real ext4 file system on a loop device, filled up after the copy (no blocks reserved
    for root)."""
    with loop_filesystem(tmp_path, "ext4", size_mb=16, extra=["-m", "0"]) as disk:
        store = SnapshotStore(disk / "backup")
        write_tree(disk / "backup" / "latest.snapshot", {"srv/a": "1"})
        fill(disk / "filler")
        subprocess.run(["sync"], check=True)
        with pytest.raises(OperationError) as failure:
            store.publish({"source": "s01"}, with_manifest=True)
        message = str(failure.value)
        in_progress = re.escape(str(disk / "backup" / "latest.snapshot" / ".synco-snapshot"))
        assert re.fullmatch(
            rf"publishing snapshot \S+: (creating|writing) {in_progress}(/\S+)?: No space left on device",
            message,
        ), message
        assert store.snapshots() == [] and not (disk / "backup" / "latest").exists()


def test_a_failed_manifest_write_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The manifest itself on a full disk, injected at the write (the OS boundary): a real
    full disk fails earlier, at the metadata directory."""
    master, backup = tmp_path / "master", tmp_path / "backup"
    write_tree(master, {"srv/a": "1"})
    script = Script(
        servers=(Server("s01", str(master)), Server("b01", str(backup), role=Role.BACKUP)),
        directories=(Directory("srv"),),
        master="s01",
        backup=BackupSettings(verify=True),
    )

    def full(path: Path, entries: list[manifest.Entry]) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(manifest, "write", full)
    result = asyncio.run(take_snapshot(script, script.server("s01"), script.server("b01"), 4))
    assert not result.ok
    written = backup / "latest.snapshot" / ".synco-snapshot" / "manifest.jsonl"
    assert re.fullmatch(
        rf"publishing snapshot \S+: writing {re.escape(str(written))}: No space left on device",
        result.message,
    ), result.message


def test_a_symlinked_snapshot_in_progress_is_refused(tmp_path: Path) -> None:
    """`latest.snapshot -> /victim` on a backup server: neither pruned of what the script
    does not copy (it would delete the victim's files) nor written into."""
    master, backup, victim = tmp_path / "master", tmp_path / "backup", tmp_path / "victim"
    write_tree(master, {"srv/a": "1"})
    write_tree(victim, {"precious": "not a snapshot"})
    backup.mkdir()
    os.symlink(victim, backup / "latest.snapshot")
    script = Script(
        servers=(Server("s01", str(master)), Server("b01", str(backup), role=Role.BACKUP)),
        directories=(Directory("srv"),),
        master="s01",
    )
    result = asyncio.run(take_snapshot(script, script.server("s01"), script.server("b01"), 4))
    assert read_tree(victim) == {"precious": "not a snapshot"}
    assert not result.ok and f"latest.snapshot is a symlink (-> {victim})" in result.message
