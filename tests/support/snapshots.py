"""Looking at snapshot roots in tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

SYNCO = str(Path(sys.executable).parent / "synco")  # the synco a remote server runs, through ssh


def snapshot_dirs(root: Path) -> list[Path]:
    """Published snapshots, oldest first."""
    return sorted(p for p in root.iterdir() if p.name[:1].isdigit() and p.is_dir())


def latest(root: Path) -> Path:
    return root / os.readlink(root / "latest")


def inode(path: Path) -> int:
    return path.stat().st_ino
