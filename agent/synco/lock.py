"""One run of a script at a time: an flock the kernel releases if the run dies."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from pathlib import Path
from types import TracebackType

from synco.core.errors import LockedError, OperationError


def lock_directory() -> Path:
    """SYNCO_LOCK_DIR, else /run/lock/synco for root, else the user's state directory.

    The same place whatever the session (cron has no XDG_RUNTIME_DIR), never a shared /tmp.
    """
    configured = os.environ.get("SYNCO_LOCK_DIR")
    if configured:
        return Path(configured)
    if os.geteuid() == 0:
        return Path("/run/lock/synco")
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "synco" / "locks"


def lock_path(identity: str) -> Path:
    """The lock file of a script: keyed by its resolved path, so every spelling shares it."""
    resolved = os.path.realpath(identity) if os.path.exists(identity) else identity
    digest = hashlib.sha256(resolved.encode()).hexdigest()[:16]
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(resolved).name)[:40]
    return lock_directory() / f"{stem}-{digest}.lock"


class ScriptLock:
    """Held for the duration of a run; a second holder gets LockedError at once."""

    def __init__(
        self, identity: str, busy: str | None = None, path: Path | None = None, shared: bool = False
    ) -> None:
        self.identity = identity
        self.path = path or lock_path(identity)
        self.busy = busy or f"another run of {identity} is in progress"
        self.shared = shared  # other users lock the same file (mode 0644; read-only is enough)
        self._fd: int | None = None
        self._writable = True

    def __enter__(self) -> ScriptLock:
        flags = os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | flags, 0o644 if self.shared else 0o600)
        except PermissionError as error:
            if not self.shared:
                raise OperationError(f"cannot create lock file {self.path}: {error.strerror}") from error
            try:  # another user's lock file: flock works on a read-only descriptor too
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except OSError as again:
                raise OperationError(f"cannot open lock file {self.path}: {again.strerror}") from again
            self._writable = False
        except OSError as error:
            raise OperationError(f"cannot create lock file {self.path}: {error.strerror}") from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown process"
            os.close(fd)
            raise LockedError(f"{self.busy} ({holder}); lock {self.path}") from None
        if self._writable:
            os.ftruncate(fd, 0)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            os.pwrite(fd, f"pid {os.getpid()} since {stamp}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            # The file stays: unlinking it would let a third run lock a fresh inode
            # while a second still waits on the old one.
            if self._writable:
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def snapshot_lock(root: str | Path, create: bool = False) -> contextlib.AbstractContextManager[object]:
    """One writer of a snapshot root at a time (the agent of a backup server, `synco run`
    into a local target, `synco rotate`, `synco prune`): one would otherwise publish or
    erase beside the other. The lock file is in the root itself, so that every writer,
    whatever its user, finds the same one (a dot name: never taken for a snapshot). A root
    that does not exist is created only by a writer about to fill it (`create`); for the
    others there is nothing to lock."""
    where = Path(os.path.realpath(root))
    if not where.is_dir():
        if not create:
            return contextlib.nullcontext()
        where.mkdir(parents=True, exist_ok=True)
    return ScriptLock(
        f"snapshots:{where}",
        f"another synco is writing snapshots in {where}",
        where / SNAPSHOT_LOCK,
        shared=True,
    )


SNAPSHOT_LOCK = ".synco-lock"
