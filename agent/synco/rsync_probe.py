"""What the rsync on this machine can do (adapter)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from functools import cache
from pathlib import Path

from synco.rsync import Features, parse_version


@cache
def local_features(rsync: str = "rsync") -> Features:
    """Features of the rsync here; assumed for the other servers' too (same distribution)."""
    try:
        output = subprocess.run([rsync, "--version"], capture_output=True, text=True, check=False).stdout
        return Features(parse_version(output))
    except (OSError, ValueError):
        return Features((3, 2, 7))


PROBE_TIME_NS = 1_700_000_000_123_456_789


def keeps_nanoseconds(path: str) -> bool:
    """Whether the file system `path` is on (or would be created on) keeps modification times
    to the nanosecond. Where it does, rsync compares them so (--modify-window=-1); where it
    does not (FAT, SMB, ext4 with 128-byte inodes), that comparison would see every file as
    changed and copy everything every time."""
    directory = Path(path)
    while not directory.is_dir() and directory != directory.parent:
        directory = directory.parent
    try:
        return _keeps_nanoseconds(os.stat(directory).st_dev, str(directory))
    except OSError:
        return False


@cache
def _keeps_nanoseconds(device: int, directory: str) -> bool:
    try:
        descriptor, probe = tempfile.mkstemp(prefix=".synco-probe-", dir=directory)
    except OSError:
        return False
    try:
        os.close(descriptor)
        os.utime(probe, ns=(PROBE_TIME_NS, PROBE_TIME_NS))
        return os.stat(probe).st_mtime_ns == PROBE_TIME_NS
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(probe)
