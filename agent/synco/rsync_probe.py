"""What the rsync on this machine can do (adapter)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from functools import cache
from pathlib import Path

from synco.core.rsync import Features, parse_version


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
    changed and copy everything every time. A probe that could not run (a full or read-only
    file system) says no, and is tried again next time."""
    directory = Path(path)
    while not directory.is_dir() and directory != directory.parent:
        directory = directory.parent
    try:
        device = os.stat(directory).st_dev
    except OSError:
        return False
    if device not in _probed:
        answer = _probe(directory)
        if answer is None:
            return False
        _probed[device] = answer
    return _probed[device]


_probed: dict[int, bool] = {}  # by file system (device)


def _probe(directory: Path) -> bool | None:
    try:
        descriptor, probe = tempfile.mkstemp(prefix=".synco-probe-", dir=directory)
    except OSError:
        return None
    try:
        os.close(descriptor)
        os.utime(probe, ns=(PROBE_TIME_NS, PROBE_TIME_NS))
        return os.stat(probe).st_mtime_ns == PROBE_TIME_NS
    except OSError:
        return None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(probe)


REMOTE_PROBE = (
    'd=$1; while [ ! -d "$d" ]; do d=$(dirname "$d"); done; '
    'f=$(mktemp -p "$d" .synco-probe-XXXXXX) || exit 1; '
    'touch -d @1700000000.123456789 "$f" && stat -c %y "$f"; rm -f "$f"'
)


def remote_keeps_nanoseconds(output: str) -> bool:
    """The answer of REMOTE_PROBE run on another server (`stat -c %y` of the probe file)."""
    return ".123456789" in output
