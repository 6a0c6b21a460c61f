"""What the rsync on this machine can do (adapter)."""

from __future__ import annotations

import subprocess
from functools import cache

from synco.rsync import Features, parse_version


@cache
def local_features(rsync: str = "rsync") -> Features:
    """Features of the rsync here; assumed for the other servers' too (same distribution)."""
    try:
        output = subprocess.run([rsync, "--version"], capture_output=True, text=True, check=False).stdout
        return Features(parse_version(output))
    except (OSError, ValueError):
        return Features((3, 2, 7))
