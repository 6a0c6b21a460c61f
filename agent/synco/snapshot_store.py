"""A snapshot root on this machine: list, begin, publish and delete snapshots (adapter).

Layout: `latest.snapshot/` is the snapshot being written, timestamped directories
(`%Y.%m.%d-%H.%M.%S`, UTC) are complete snapshots, and `latest` is a symlink to the
newest complete one. Publication is a rename (or, with btrfs, a read-only snapshot of
the mirror) followed by an atomic swap of the `latest` symlink, after the data has been
flushed: a snapshot is never visible half-written.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import posixpath
import shutil
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from synco import __version__, btrfs, manifest
from synco.core.errors import ConfigError, OperationError
from synco.core.retention import Snapshot
from synco.core.snapshot_names import (
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
            text = self._own_file(name, METADATA_FILE)
            data: dict[str, Any] | None = None if text is None else json.loads(text)
            return data if isinstance(data, dict) else None
        except (OSError, ValueError, OperationError):
            return None

    def manifest_of(self, name: str) -> dict[str, manifest.Entry] | None:
        path = self.root / name / METADATA_DIR / MANIFEST_FILE
        try:
            text = self._own_file(name, MANIFEST_FILE)
            return None if text is None else manifest.parse(text)
        except (OSError, ValueError, KeyError) as error:
            raise OperationError(f"manifest {path} is unreadable: {error}") from error

    def _own_file(self, name: str, file: str) -> str | None:
        """The text of `file` in snapshot `name`'s own metadata directory, or None if there is
        none. Only a real directory and a regular file are read, never a symlink: a source can
        hold a `.synco-snapshot` symlink pointing anywhere (an old synco copied it as is)."""
        directory = self.root / name / METADATA_DIR
        try:
            directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR):
                raise OperationError(
                    f"{directory} is not a directory (a symlink or a file), so not the snapshot's own "
                    "metadata; refusing to read it"
                ) from error
            raise
        try:
            descriptor = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory_fd)
        except FileNotFoundError:
            return None
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise OperationError(f"{directory / file} is a symlink; refusing to read it") from error
            raise
        finally:
            os.close(directory_fd)
        with os.fdopen(descriptor, encoding="utf-8") as stream:
            return stream.read()

    # -- writing ------------------------------------------------------------------------

    def begin(self, backend: str = "hardlink", directories: Sequence[str] | None = None) -> list[str]:
        """Make the in-progress snapshot ready (btrfs: a writable subvolume) and remove from it
        what the script no longer copies, so that it never reaches a published snapshot.
        Returns the paths removed."""
        _check_backend(backend)
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / self.in_progress
        if path.is_symlink():  # what it points at would be pruned below, then copied into
            raise OperationError(
                f"{path} is a symlink (-> {os.readlink(path)}); refusing to write a snapshot through it"
            )
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
        with _step(name, f"flushing the file system of {self.root}"):
            _syncfs(self.root)
        # The new `latest` is made first: a root that cannot hold it fails before anything is
        # published (a snapshot published without `latest` would be taken again and again).
        pointer = self._new_latest(name)
        try:
            with _step(name, f"renaming {source} to {self.root / name}"):
                if backend == "btrfs":
                    btrfs.snapshot_readonly(source, self.root / name)
                else:
                    os.rename(source, self.root / name)
        except BaseException:
            os.unlink(pointer)
            raise
        with _step(name, f"pointing {link} at it"):
            os.replace(pointer, link)
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
        directory = _fresh_metadata_directory(source, name)
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
            with _step(name, f"reading the files of {source} for the manifest"):
                entries = manifest.build(source, old, skip=METADATA_DIR)
            with _step(name, f"writing {directory / MANIFEST_FILE}"):
                manifest.write(directory / MANIFEST_FILE, entries)
            record["files"] = len(entries)
        text = json.dumps(record, indent=2, sort_keys=True) + "\n"
        with _step(name, f"writing {directory / METADATA_FILE}"):
            manifest.write_file(directory / METADATA_FILE, text)  # a fresh directory: no rename needed

    def _new_latest(self, name: str) -> Path:
        """A symlink to `name` beside `latest`, to be renamed over it."""
        temporary = self.root / f".{self.latest}.synco-{os.getpid()}"
        with _step(name, f"creating {temporary}"):
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


def _fresh_metadata_directory(snapshot: Path, name: str) -> Path:
    """The snapshot's own `.synco-snapshot/`, made anew: whatever the copy put at that name
    (the source's own: a symlink pointing anywhere, a file, a directory with symlinks in it)
    is removed first, never followed, so that metadata is written inside the snapshot only."""
    directory = snapshot / METADATA_DIR
    with _step(name, f"replacing {directory}"):
        try:
            mode = os.lstat(directory).st_mode
        except FileNotFoundError:
            pass
        else:
            if stat.S_ISDIR(mode):
                remove_tree(directory)
            else:
                os.unlink(directory)
    with _step(name, f"creating {directory}"):
        os.mkdir(directory, 0o755)  # fails on anything (a symlink included) put there meanwhile
    return directory


@contextlib.contextmanager
def _step(snapshot: str, step: str) -> Iterator[None]:
    """Name the snapshot, the step and its path in a failure of publication: "No space left
    on device" alone says neither what was being written nor where."""
    try:
        yield
    except OSError as error:
        path = str(error.filename) if error.filename is not None else ""
        where = f" ({path})" if path and path not in step else ""
        reason = error.strerror or str(error)
        raise OperationError(f"publishing snapshot {snapshot}: {step}{where}: {reason}") from error
    except OperationError as error:
        raise OperationError(f"publishing snapshot {snapshot}: {step}: {error}") from error


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
