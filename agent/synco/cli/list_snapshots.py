"""`synco [--root DIR] list`: the snapshots under a root, their age and what they hold."""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime
from pathlib import Path

from synco.cli.output import emit_json
from synco.cli.rotate import add_store_arguments, store
from synco.core.errors import EXIT_OK
from synco.core.snapshot_names import METADATA_DIR
from synco.manifest import walk_files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_arguments(parser)
    parser.add_argument(
        "--sizes",
        action="store_true",
        help="also measure each snapshot: total bytes and bytes in files no other "
        "snapshot shares (walks every file)",
    )
    parser.add_argument("--json", action="store_true", help="print the list as JSON on stdout")


def age(seconds: float) -> str:
    rest = int(seconds)
    if rest < 0:
        return "in the future"
    days, rest = divmod(rest, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, rest = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m" if minutes else f"{rest}s"


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def measure(path: Path) -> tuple[int, int]:
    """Total bytes, and bytes in files with a single link (what erasing a hard-link snapshot frees)."""
    total = unique = 0
    for _, info in walk_files(path, skip=METADATA_DIR):
        total += info.st_size
        if info.st_nlink == 1:
            unique += info.st_size
    return total, unique


def _staged_at(meta: dict[str, object]) -> str | None:
    """When the oldest frozen view the snapshot was copied from was made (UTC), if staged."""
    staged = meta.get("staged")
    if not isinstance(staged, list):
        return None
    times = [str(view["at"]) for view in staged if isinstance(view, dict) and "at" in view]
    return min(times) if times else None


def command(root: Path, arguments: argparse.Namespace) -> int:
    snapshots = store(root, arguments)
    latest = snapshots.latest_name()
    now = datetime.now(UTC)
    rows = []
    newest_first = list(reversed(snapshots.snapshots()))
    for snapshot in newest_first:
        meta = snapshots.metadata(snapshot.name) or {}
        row: dict[str, object] = {
            "name": snapshot.name,
            "time": snapshot.time.isoformat(),
            "age_seconds": int((now - snapshot.time).total_seconds()),
            "latest": snapshot.name == latest,
            "source": meta.get("source"),
            "staged": _staged_at(meta),
            "exit_status": meta.get("exit_status"),
            "manifest": bool(meta.get("manifest")),
            "symlink": os.path.islink(root / snapshot.name),
        }
        if arguments.sizes and not row["symlink"]:
            row["bytes"], row["unique_bytes"] = measure(root / snapshot.name)
        rows.append(row)
    in_progress = (root / snapshots.in_progress).is_dir()
    if arguments.json:
        emit_json({"root": str(root), "latest": latest, "in_progress": in_progress, "snapshots": rows})
        return EXIT_OK
    if not rows:
        print(f"{root}: no snapshots")
    for snapshot, row in zip(newest_first, rows, strict=True):
        marks = " <- latest" if snapshot.name == latest else ""
        size = ""
        if "bytes" in row:
            size = f"  {human(int(str(row['bytes'])))} ({human(int(str(row['unique_bytes'])))} unique)"
        source = f"  from {row['source']}" if row["source"] else ""
        staged = f" (staged {row['staged']})" if row["staged"] else ""
        when = age((now - snapshot.time).total_seconds())
        print(f"{snapshot.name}  {when:>8}{source}{staged}{size}{marks}")
    if in_progress:
        print(f"{snapshots.in_progress}  (in progress or not yet published)")
    return EXIT_OK
