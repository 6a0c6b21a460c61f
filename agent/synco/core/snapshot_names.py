"""Snapshot names: the timestamp format, collision suffixes and the reserved entries (pure)."""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import UTC, datetime

DEFAULT_FORMAT = "%Y.%m.%d-%H.%M.%S"
IN_PROGRESS = "latest.snapshot"
LATEST = "latest"
METADATA_DIR = ".synco-snapshot"  # inside each snapshot: meta.json and the optional manifest
DELETING_PREFIX = ".synco-deleting."

_SUFFIX = re.compile(r"^(?P<stem>.+)_(?P<n>[1-9][0-9]{0,5})$")


def parse_name(name: str, fmt: str = DEFAULT_FORMAT) -> tuple[datetime, int] | None:
    """The UTC time and collision number a snapshot name encodes, or None if it is not one."""
    if "/" in name or name in (IN_PROGRESS, LATEST) or name.startswith("."):
        return None
    for stem, number in _candidates(name):
        try:
            moment = datetime.strptime(stem, fmt)
        except ValueError:
            continue
        if moment.strftime(fmt) != stem:  # strptime is lenient about padding; names are not
            continue
        return moment.replace(tzinfo=UTC), number
    return None


def _candidates(name: str) -> list[tuple[str, int]]:
    match = _SUFFIX.match(name)
    candidates = [(name, 0)]
    if match:
        candidates.append((match.group("stem"), int(match.group("n"))))
    return candidates


def snapshot_name(moment: datetime, existing: Collection[str], fmt: str = DEFAULT_FORMAT) -> str:
    """The name for a snapshot published at `moment` (UTC); `_1`, `_2`... if already taken."""
    stem = moment.astimezone(UTC).strftime(fmt)
    if "/" in stem or not stem or parse_name(stem, fmt) is None:
        raise ValueError(f"format {fmt!r} does not make a valid, parseable snapshot name")
    if stem not in existing:
        return stem
    number = 1
    while f"{stem}_{number}" in existing:
        number += 1
    return f"{stem}_{number}"
