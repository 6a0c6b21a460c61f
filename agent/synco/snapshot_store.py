"""A snapshot root on this machine: list, begin, publish and delete snapshots (adapter).

Layout: `latest.snapshot/` is the snapshot being written, timestamped directories
(`%Y.%m.%d-%H.%M.%S`, UTC) are complete snapshots, and `latest` is a symlink to the
newest complete one. Publication is a rename (or, with btrfs, a read-only snapshot of
the mirror) followed by an atomic swap of the `latest` symlink, after the data has been
flushed: a snapshot is never visible half-written.
"""

from __future__ import annotations

import ctypes
import json
import os
import posixpath
import shutil
import stat
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from synco import __version__, btrfs, manifest
from synco.errors import ConfigError, OperationError
from synco.retention import Snapshot
from synco.snapshot_names import (
    DEFAULT_FORMAT,
    DELETING_PREFIX,
    IN_PROGRESS,
    LATEST,
    METADATA_DIR,
    parse_name,
    snapshot_name,
)

BACKENDS = ("hardlink", "btrfs")
METADATA_FILE = "meta.json"
MANIFEST_FILE = "manifest.jsonl"


class NothingToPublish(OperationError):
    """There is no snapshot in progress."""


@dataclass
class SnapshotStore:
    root: Path
    fmt: str = DEFAULT_FORMAT
    in_progress: str = IN_PROGRESS
    latest: str = LATEST
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        for label, name in (("--snapshot", self.in_progress), ("--latest", self.latest)):
            if not name or "/" in name or name in (".", ".."):
                raise ConfigError(f"{label} must be a plain name inside the root, not {name!r}")

    # -- reading -------------------------------------------------------------------------

    def snapshots(self) -> list[Snapshot]:
        """Directories (and symlinks) whose names parse as snapshot names; nothing else is ever touched."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        except OSError as error:
            raise OperationError(f"cannot list {self.root}: {error.strerror}") from error
        found = []
        for name in names:
            parsed = parse_name(name, self.fmt)
            if parsed is None or name in (self.in_progress, self.latest):
                continue
            try:
                mode = os.lstat(self.root / name).st_mode
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(mode) or stat.S_ISLNK(mode):  # a stray file is never a snapshot
                found.append(Snapshot(name, parsed[0], parsed[1]))
        return sorted(found, key=lambda s: s.order)

    def latest_name(self) -> str | None:
        """The snapshot `latest` points at, if it is a symlink to an entry of this root."""
        link = self.root / self.latest
        try:
            target = os.readlink(link)
        except (FileNotFoundError, OSError):
            return None
        name = target.rstrip("/")
        if name.startswith("./"):
            name = name[2:]
        if "/" in name:
            resolved = (self.root / target).resolve()
            if resolved.parent != self.root.resolve():
                return None
            name = resolved.name
        return name

    def metadata(self, name: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads((self.root / name / METADATA_DIR / METADATA_FILE).read_text())
            return data
        except (OSError, ValueError):
            return None

    def manifest_of(self, name: str) -> dict[str, manifest.Entry] | None:
        path = self.root / name / METADATA_DIR / MANIFEST_FILE
        try:
            return manifest.read(path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError) as error:
            raise OperationError(f"manifest {path} is unreadable: {error}") from error

    # -- writing ------------------------------------------------------------------------

    def begin(self, backend: str = "hardlink", directories: Sequence[str] | None = None) -> list[str]:
        """Make the in-progress snapshot ready (btrfs: a writable subvolume) and remove from it
        what the script no longer copies, so that it never reaches a published snapshot.
        Returns the paths removed."""
        _check_backend(backend)
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / self.in_progress
        if backend == "btrfs":
            if not btrfs.on_btrfs(self.root):
                raise OperationError(f'{self.root} is not on btrfs; use snapshot_backend = "hardlink"')
            if path.exists() and not btrfs.is_subvolume(path):
                raise OperationError(
                    f"{path} exists but is not a btrfs subvolume; move it away to switch to the btrfs backend"
                )
            if not path.exists():
                btrfs.create_subvolume(path)
        if directories is None or not path.is_dir():
            return []
        removed = []
        for relative in uncovered(path, directories):
            target = path / relative
            if target.is_dir() and not target.is_symlink():
                remove_tree(target)
            else:
                target.unlink()
            removed.append(relative)
        return removed

    def publish(
        self,
        metadata: dict[str, Any] | None = None,
        *,
        with_manifest: bool = False,
        backend: str = "hardlink",
    ) -> str:
        """Publish the in-progress snapshot under its timestamp and point `latest` at it."""
        _check_backend(backend)
        source = self.root / self.in_progress
        try:
            info = os.lstat(source)
        except FileNotFoundError:
            raise NothingToPublish(f"nothing to rotate: no {self.in_progress} in {self.root}") from None
        if not stat.S_ISDIR(info.st_mode):
            raise OperationError(f"{source} is not a directory; refusing to publish it")
        link = self.root / self.latest
        if os.path.lexists(link) and not os.path.islink(link):
            raise OperationError(f"{link} exists and is not a symlink; refusing to replace it")
        if backend == "btrfs" and not btrfs.is_subvolume(source):
            raise OperationError(f"{source} is not a btrfs subvolume")

        now = self.clock()
        existing = set(os.listdir(self.root))
        name = snapshot_name(now, existing, self.fmt)
        previous = self.latest_name()
        self._write_metadata(source, name, now, previous, metadata, with_manifest, backend)
        _syncfs(self.root)
        # The new `latest` is made first: a root that cannot hold it fails before anything is
        # published (a snapshot published without `latest` would be taken again and again).
        pointer = self._new_latest(name)
        try:
            if backend == "btrfs":
                btrfs.snapshot_readonly(source, self.root / name)
            else:
                os.rename(source, self.root / name)
        except BaseException:
            os.unlink(pointer)
            raise
        os.replace(pointer, self.root / self.latest)
        _fsync_directory(self.root)
        return name

    def _write_metadata(
        self,
        source: Path,
        name: str,
        now: datetime,
        previous: str | None,
        metadata: dict[str, Any] | None,
        with_manifest: bool,
        backend: str,
    ) -> None:
        directory = source / METADATA_DIR
        directory.mkdir(exist_ok=True)
        record = {
            "snapshot": name,
            "published": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "previous": previous,
            "backend": backend,
            "synco_version": __version__,
            "manifest": with_manifest,
            **(metadata or {}),
        }
        if with_manifest:
            old = None
            if previous is not None and backend == "hardlink":
                try:
                    old = self.manifest_of(previous)
                except OperationError:
                    old = None
            entries = manifest.build(source, old, skip=METADATA_DIR)
            manifest.write(directory / MANIFEST_FILE, entries)
            record["files"] = len(entries)
        elif (directory / MANIFEST_FILE).exists():
            (directory / MANIFEST_FILE).unlink()
        temporary = directory / f".{METADATA_FILE}.tmp"
        temporary.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        os.replace(temporary, directory / METADATA_FILE)

    def _new_latest(self, name: str) -> Path:
        """A symlink to `name` beside `latest`, to be renamed over it."""
        temporary = self.root / f".{self.latest}.synco-{os.getpid()}"
        if os.path.lexists(temporary):
            os.unlink(temporary)
        os.symlink(name, temporary)
        return temporary

    def delete(self, name: str) -> None:
        """Delete one snapshot: a symlink is removed, never followed; a tree is first renamed
        out of the snapshot namespace, then removed, read-only directories included."""
        if parse_name(name, self.fmt) is None:
            raise OperationError(f"{name!r} is not a snapshot name; refusing to delete it")
        path = self.root / name
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode):
            os.unlink(path)
            return
        staging = self.root / f"{DELETING_PREFIX}{name}"
        os.rename(path, staging)
        remove_tree(staging)

    def leftovers(self) -> list[str]:
        """Trees an interrupted deletion left behind (renamed out of the snapshot namespace)."""
        try:
            return sorted(n for n in os.listdir(self.root) if n.startswith(DELETING_PREFIX))
        except OSError:
            return []


def uncovered(tree: Path, directories: Sequence[str]) -> list[str]:
    """Entries of `tree` that are neither one of `directories`, inside one, nor on the way to one."""
    wanted = [posixpath.normpath(d) for d in directories]
    if "." in wanted:
        return []
    found = []

    def visit(relative: str) -> None:
        for entry in sorted(os.listdir(tree / relative) if relative else os.listdir(tree)):
            path = posixpath.join(relative, entry) if relative else entry
            if not relative and entry == METADATA_DIR:
                continue
            if any(path == w or path.startswith(w + "/") for w in wanted):
                continue  # copied: rsync --delete keeps it exact
            if (
                any(w.startswith(path + "/") for w in wanted)
                and (tree / path).is_dir()
                and not (tree / path).is_symlink()
            ):
                visit(path)  # on the way to a copied directory
            else:
                found.append(path)

    visit("")
    return found


def remove_tree(path: Path) -> None:
    """Remove a tree without following symlinks, coping with read-only directories and
    btrfs subvolumes; OperationError names what could not be removed."""
    if btrfs.is_subvolume(path):
        btrfs.delete_subvolume(path)
        return
    failures: list[str] = []

    def on_error(function: Callable[..., Any], failed: str, exc_info: Any) -> None:
        error = exc_info[1]
        parent = os.path.dirname(failed)
        if isinstance(error, PermissionError):
            try:
                os.chmod(parent, 0o700)
                if os.path.isdir(failed) and not os.path.islink(failed):
                    os.chmod(failed, 0o700)
                    remove_tree(Path(failed))
                else:
                    function(failed)
                return
            except OSError as retry_error:
                error = retry_error
        failures.append(f"{failed}: {getattr(error, 'strerror', None) or error}")

    if sys.version_info >= (3, 12):
        shutil.rmtree(
            path, onexc=lambda function, failed, error: on_error(function, failed, (None, error, None))
        )
    else:
        shutil.rmtree(path, onerror=on_error)
    if failures:
        more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
        raise OperationError("could not remove " + "; ".join(failures[:3]) + more)


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ConfigError(f"unknown snapshot backend {backend!r}; choose {' or '.join(BACKENDS)}")


def _syncfs(path: Path) -> None:
    """Flush the file system holding `path`, so a published snapshot is on disk entire."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            os.sync()
    except (OSError, AttributeError):
        os.sync()
    finally:
        os.close(fd)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
