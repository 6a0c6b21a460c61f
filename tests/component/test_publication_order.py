"""Durability by order of operations: data is flushed to disk before the rename that makes it
visible. A power cut cannot be reproduced here, so these tests record the order of the real
system calls (monkeypatched wrappers that call through, on a real store and real files)
instead: a mock at an OS boundary that cannot be reached, named as such."""

from __future__ import annotations

import ctypes
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from synco.node.state import NodeState, load_state, save_state
from synco.snapshot_store import SnapshotStore

Call = tuple[str, str, str]  # (call, first path, second path)


def fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


class RecordingLibc:
    """libc as ctypes.CDLL gives it, with syncfs(2) recorded (and still made)."""

    def __init__(self, real: Any, calls: list[Call]) -> None:
        self._real, self._calls = real, calls

    def syncfs(self, fd: int) -> int:
        self._calls.append(("syncfs", fd_path(fd), ""))
        return int(self._real.syncfs(fd))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    """Every flush (syncfs, sync, fsync) and rename (rename, replace), in order, each made for real."""
    recorded: list[Call] = []
    real_cdll, real_sync, real_fsync = ctypes.CDLL, os.sync, os.fsync
    real_rename, real_replace = os.rename, os.replace

    def cdll(*arguments: Any, **options: Any) -> RecordingLibc:
        return RecordingLibc(real_cdll(*arguments, **options), recorded)

    def sync() -> None:
        recorded.append(("sync", "", ""))
        real_sync()

    def fsync(fd: Any) -> None:
        number = fd if isinstance(fd, int) else fd.fileno()
        recorded.append(("fsync", fd_path(number), ""))
        real_fsync(fd)

    def rename(source: Any, target: Any, *rest: Any, **options: Any) -> None:
        recorded.append(("rename", os.fspath(source), os.fspath(target)))
        real_rename(source, target, *rest, **options)

    def replace(source: Any, target: Any, *rest: Any, **options: Any) -> None:
        recorded.append(("replace", os.fspath(source), os.fspath(target)))
        real_replace(source, target, *rest, **options)

    monkeypatch.setattr(ctypes, "CDLL", cdll)
    monkeypatch.setattr(os, "sync", sync)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "replace", replace)
    return recorded


def test_snapshot_publication_flushes_the_file_system_before_the_rename_and_the_latest_swap(
    tmp_path: Path, calls: list[Call]
) -> None:
    """Recorded order, not a power cut (which cannot be reproduced here): the file system
    holding the root is flushed (syncfs, or sync where it is missing) after the data and
    metadata are written and before the snapshot is renamed into place and `latest` swapped."""
    root = tmp_path.resolve() / "snapshots"
    (root / "latest.snapshot" / "data").mkdir(parents=True)
    (root / "latest.snapshot" / "data" / "file.txt").write_text("contents")
    store = SnapshotStore(root, clock=lambda: datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC))

    name = store.publish()

    assert name == "2024.05.06-07.08.09"
    assert (root / "latest").readlink() == Path(name)
    assert (root / name / "data" / "file.txt").read_text() == "contents"
    publish = calls.index(("rename", str(root / "latest.snapshot"), str(root / name)))
    swap = next(i for i, c in enumerate(calls) if c[0] == "replace" and c[2] == str(root / "latest"))
    flushes = [
        i for i, c in enumerate(calls) if c in (("sync", "", ""), ("syncfs", str(root), "")) and i < publish
    ]
    assert flushes, f"no flush of {root}'s file system before the snapshot's rename: {calls}"
    assert publish < swap, calls
    # nothing written into the snapshot after the flush: the last write (meta.json) comes before it
    metadata = [i for i, c in enumerate(calls) if c[0] == "replace" and c[2].endswith("meta.json")]
    assert all(i < flushes[-1] for i in metadata), calls


def test_save_state_fsyncs_the_file_before_the_rename(tmp_path: Path, calls: list[Call]) -> None:
    """Recorded order, not a crash (which cannot be simulated here): the temporary file is
    fsync-ed before it is renamed over the state file (else a crash can leave an empty or
    torn file under the final name, and the epoch would be lost), and the directory after."""
    path = tmp_path.resolve() / "state" / "s01.json"
    save_state(path, NodeState(epoch=3, generation=5))
    save_state(path, NodeState(epoch=4, generation=6))

    assert load_state(path) == NodeState(epoch=4, generation=6)
    renames = [i for i, c in enumerate(calls) if c[0] in ("rename", "replace") and c[2] == str(path)]
    assert len(renames) == 2, calls
    start = 0
    for index in renames:
        temporary = calls[index][1]
        assert temporary != str(path) and Path(temporary).parent == path.parent
        fsynced = [c for c in calls[start:index] if c == ("fsync", temporary, "")]
        assert fsynced, f"{temporary} renamed over {path} without an fsync first: {calls}"
        after = calls[index + 1 :]
        assert ("fsync", str(path.parent), "") in after, f"directory not fsync-ed after the rename: {calls}"
        start = index + 1
