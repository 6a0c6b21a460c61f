"""One run of a script at a time: an flock the kernel releases if the run dies."""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import time
from pathlib import Path
from types import TracebackType

from synco.errors import LockedError, OperationError


def lock_directory() -> Path:
    """SYNCO_LOCK_DIR, else /run/lock/synco for root, else the user's runtime directory."""
    configured = os.environ.get("SYNCO_LOCK_DIR")
    if configured:
        return Path(configured)
    if os.geteuid() == 0 and Path("/run/lock").is_dir():
        return Path("/run/lock/synco")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "synco"
    return Path(tempfile.gettempdir()) / f"synco-{os.geteuid()}"


def lock_path(identity: str) -> Path:
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(identity).name)[:40]
    return lock_directory() / f"{stem}-{digest}.lock"


class ScriptLock:
    """Held for the duration of a run; a second holder gets LockedError at once."""

    def __init__(self, identity: str) -> None:
        self.identity = identity
        self.path = lock_path(identity)
        self._fd: int | None = None

    def __enter__(self) -> ScriptLock:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as error:
            raise OperationError(f"cannot create lock file {self.path}: {error.strerror}") from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown process"
            os.close(fd)
            raise LockedError(
                f"another run of {self.identity} is in progress ({holder}); lock {self.path}"
            ) from None
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
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None
