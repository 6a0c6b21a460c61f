"""A backup server's snapshot of the master, as its agent takes it: real rsync into the
snapshot layout, publication, pruning, cancellation and refusals."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest

from synco.core.model import BackupSettings, Directory, Method, Role, Script, Server
from synco.core.retention import Policy
from synco.node.backup import take_snapshot
from synco.node.pull import PullResult
from synco.snapshot_store import SnapshotStore
from tests.support.cli import read_tree, write_tree

pytestmark = pytest.mark.usefixtures("rsync")


def script_in(tmp_path: Path, arguments: tuple[str, ...] = ("--archive",), **backup: object) -> Script:
    return Script(
        servers=(
            Server("s01", str(tmp_path / "master")),
            Server("b01", str(tmp_path / "backup"), role=Role.BACKUP),
        ),
        directories=(Directory("srv"), Directory("etc/app")),
        master="s01",
        method=Method(arguments=arguments),
        backup=BackupSettings(**backup),  # type: ignore[arg-type]
    )


def snapshot(script: Script, clock: Callable[[], datetime] | None = None, generation: int = 5) -> PullResult:
    master, me = script.server("s01"), script.server("b01")
    if clock is None:
        return asyncio.run(take_snapshot(script, master, me, generation))
    return asyncio.run(take_snapshot(script, master, me, generation, clock))


def hours(start: datetime) -> Callable[[], datetime]:
    """A clock that moves on one hour each time it is read: every snapshot gets its own name."""
    reads = [0]

    def now() -> datetime:
        reads[0] += 1
        return start + timedelta(hours=reads[0])

    return now


def test_snapshots_share_unchanged_files_and_keep_old_versions(tmp_path: Path) -> None:
    script = script_in(tmp_path)
    master = tmp_path / "master"
    write_tree(master / "srv", {"index.html": "v1", "big.bin": "x" * 100_000})
    write_tree(master / "etc/app", {"app.conf": "a=1"})
    first = snapshot(script)
    assert first.ok, first.message
    store = SnapshotStore(tmp_path / "backup")
    assert first.snapshot == store.latest_name()
    latest = tmp_path / "backup" / "latest"
    assert read_tree(latest / "srv") == read_tree(master / "srv")
    assert read_tree(latest / "etc/app") == {"app.conf": "a=1"}
    assert not (tmp_path / "backup" / "srv").exists()  # no mirror: snapshots only
    metadata = store.metadata(first.snapshot or "")
    assert metadata is not None and metadata["generation"] == 5 and metadata["source"] == "s01"

    (master / "srv/index.html").write_text("v2")
    second = snapshot(script, hours(datetime.now(UTC) + timedelta(hours=1)))
    assert second.ok and second.snapshot != first.snapshot
    old, new = tmp_path / "backup" / (first.snapshot or ""), tmp_path / "backup" / (second.snapshot or "")
    assert (old / "srv/index.html").read_text() == "v1"
    assert (new / "srv/index.html").read_text() == "v2"
    assert os.stat(old / "srv/big.bin").st_ino == os.stat(new / "srv/big.bin").st_ino


def test_pruned_by_the_policy_after_each_snapshot(tmp_path: Path) -> None:
    script = script_in(tmp_path, policy=Policy(keep_last=2))
    write_tree(tmp_path / "master", {"srv/a": "1", "etc/app/b": "2"})
    clock = hours(datetime(2026, 11, 26, 8, tzinfo=UTC))
    results = [snapshot(script, clock) for _ in range(4)]
    assert all(r.ok for r in results), [r.message for r in results]
    store = SnapshotStore(tmp_path / "backup")
    assert [s.name for s in store.snapshots()] == [r.snapshot for r in results[-2:]]
    assert "pruned 1" in results[-1].message

    unpruned = script_in(tmp_path, policy=Policy(keep_last=1), prune=False)
    assert snapshot(unpruned, clock).ok
    assert len(store.snapshots()) == 3


def test_a_failed_copy_publishes_nothing(tmp_path: Path) -> None:
    script = script_in(tmp_path)
    write_tree(tmp_path / "master" / "srv", {"a": "1"})  # etc/app is missing on the master
    result = snapshot(script)
    assert not result.ok and "etc/app" in result.message and "rsync exit" in result.message
    assert result.snapshot is None
    assert SnapshotStore(tmp_path / "backup").snapshots() == []
    assert not (tmp_path / "backup" / "latest").exists()


def test_refuses_to_write_beneath_an_unmounted_backup_disk(tmp_path: Path) -> None:
    script = script_in(tmp_path)
    disk = tmp_path / "disk"
    backup = replace(script.server("b01"), root=str(disk / "backup"), mountpoint=str(disk))
    script = replace(script, servers=(script.server("s01"), backup))
    write_tree(tmp_path / "master" / "srv", {"a": "1"})
    result = snapshot(script)
    assert not result.ok and "is not mounted" in result.message
    assert not disk.exists()


def test_cancelled_snapshot_leaves_latest_intact_and_stops_rsync(tmp_path: Path) -> None:
    script = script_in(tmp_path)
    master = tmp_path / "master"
    write_tree(master / "srv", {"a": "1"})
    write_tree(master / "etc/app", {"b": "2"})
    first = snapshot(script)
    assert first.ok
    (master / "srv/slow.bin").write_bytes(os.urandom(4 << 20))
    slow = script_in(tmp_path, arguments=("--archive", "--bwlimit=256"))  # 4 MiB: about 16 s

    async def cancel_midway() -> list[psutil.Process]:
        task = asyncio.create_task(take_snapshot(slow, slow.server("s01"), slow.server("b01"), 6))
        running: list[psutil.Process] = []
        for _ in range(100):
            await asyncio.sleep(0.1)
            running = [p for p in psutil.Process().children(recursive=True) if p.name() == "rsync"]
            if running:
                break
        assert running, "rsync never started"
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return running

    for process in asyncio.run(asyncio.wait_for(cancel_midway(), timeout=60)):
        assert not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    store = SnapshotStore(tmp_path / "backup")
    assert [s.name for s in store.snapshots()] == [first.snapshot]
    assert store.latest_name() == first.snapshot
    again = snapshot(script, hours(datetime.now(UTC) + timedelta(hours=1)))
    assert again.ok, again.message
    assert (tmp_path / "backup" / "latest" / "srv/slow.bin").stat().st_size == 4 << 20


def test_a_root_refusing_the_latest_link_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot published without `latest` would be taken again at every retry, each one a
    full copy: `latest` is prepared first, and its failure publishes nothing."""
    script = script_in(tmp_path)
    write_tree(tmp_path / "master", {"srv/a": "1", "etc/app/b": "2"})

    def refuse(*arguments: object, **options: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "symlink", refuse)  # the OS boundary: a file system without symlinks
    result = snapshot(script)
    assert not result.ok and "publishing snapshot " in result.message and ".latest.synco-" in result.message
    store = SnapshotStore(tmp_path / "backup")
    assert store.snapshots() == []
    assert (tmp_path / "backup" / "latest.snapshot" / "srv/a").exists()  # kept for the next attempt
    monkeypatch.undo()
    assert snapshot(script).ok and len(store.snapshots()) == 1


def test_one_writer_of_a_snapshot_root_at_a_time(tmp_path: Path) -> None:
    """A `synco prune` or `rotate` (or another agent) writing the root: the snapshot waits its turn."""
    from synco.lock import snapshot_lock
    from tests.support.cli import synco

    script = script_in(tmp_path)
    write_tree(tmp_path / "master", {"srv/a": "1", "etc/app/b": "2"})
    with snapshot_lock(tmp_path / "backup", create=True):
        result = snapshot(script)
        assert not result.ok and "another synco is writing snapshots in" in result.message
        prune = synco("--root", str(tmp_path / "backup"), "prune", "--keep-last", "1")
        assert prune.returncode == 1 and "another synco is writing snapshots" in prune.stderr
    assert snapshot(script).ok


def test_cancelled_while_publishing_publishes_completely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Publication runs to its end even when the agent cancels: half-watched, the next snapshot
    could start beside it."""
    import time

    script = script_in(tmp_path)
    write_tree(tmp_path / "master", {"srv/a": "1", "etc/app/b": "2"})
    original = SnapshotStore.publish

    def slow_publish(self: SnapshotStore, *arguments: object, **options: object) -> str:
        time.sleep(1.0)
        return original(self, *arguments, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(SnapshotStore, "publish", slow_publish)

    async def cancel_while_publishing() -> None:
        task = asyncio.create_task(take_snapshot(script, script.server("s01"), script.server("b01"), 1))
        await asyncio.sleep(0.6)  # the copy is done; publication sleeps
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(cancel_while_publishing(), timeout=60))
    store = SnapshotStore(tmp_path / "backup")
    assert len(store.snapshots()) == 1 and store.latest_name() == store.snapshots()[0].name
    assert not (tmp_path / "backup" / "latest.snapshot").exists()
