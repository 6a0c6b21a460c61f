"""Checksum manifests of snapshots: made at publication, checked by `synco verify`.

A manifest is JSON lines, one per regular file: path, size, sha256, and the inode and
mtime it had, so that the next snapshot can reuse the hash of a file it hard-links.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    path: str
    size: int
    sha256: str
    inode: int = 0
    mtime_ns: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "path": self.path,
                "size": self.size,
                "sha256": self.sha256,
                "inode": self.inode,
                "mtime_ns": self.mtime_ns,
            },
            ensure_ascii=False,
        )


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def walk_files(root: Path, skip: str | None = None) -> Iterator[tuple[str, os.stat_result]]:
    """Every regular file under root (symlinks not followed), as (relative path, lstat)."""
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        relative_dir = os.path.relpath(directory, root)
        if relative_dir == ".":
            if skip in dirnames:
                dirnames.remove(skip)
            relative_dir = ""
        dirnames.sort()
        for name in sorted(filenames):
            relative = os.path.join(relative_dir, name) if relative_dir else name
            info = os.lstat(os.path.join(directory, name))
            if stat.S_ISREG(info.st_mode):
                yield relative, info


def build(root: Path, previous: dict[str, Entry] | None = None, skip: str | None = None) -> list[Entry]:
    """The manifest of the tree at `root`; files hard-linked to one in `previous` reuse its hash."""
    entries = []
    for relative, info in walk_files(root, skip):
        old = (previous or {}).get(relative)
        if old is not None and (old.inode, old.size, old.mtime_ns) == (
            info.st_ino,
            info.st_size,
            info.st_mtime_ns,
        ):
            digest = old.sha256
        else:
            digest = hash_file(root / relative)
        entries.append(Entry(relative, info.st_size, digest, info.st_ino, info.st_mtime_ns))
    return entries


def write(path: Path, entries: list[Entry]) -> None:
    """Write the manifest at `path`, never through a symlink there (O_NOFOLLOW)."""
    write_file(path, "".join(e.to_json() + "\n" for e in entries))


def write_file(path: Path, text: str) -> None:
    """Create or truncate the file `path` with `text`; a symlink at `path` is refused (ELOOP),
    not followed: the snapshot's metadata is written inside the snapshot and nowhere else."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        stream.write(text)


def read(path: Path) -> dict[str, Entry]:
    return parse(path.read_text(encoding="utf-8"))


def parse(text: str) -> dict[str, Entry]:
    """The entries of a manifest's text; ValueError or KeyError if it is not one."""
    entries: dict[str, Entry] = {}
    for line in text.splitlines():
        if line.strip():
            data = json.loads(line)
            entries[data["path"]] = Entry(
                data["path"],
                int(data["size"]),
                data["sha256"],
                int(data.get("inode", 0)),
                int(data.get("mtime_ns", 0)),
            )
    return entries


@dataclass(frozen=True)
class Difference:
    path: str
    problem: str  # missing | changed | size | extra

    def describe(self) -> str:
        return f"{self.problem:8} {self.path}"


def compare(root: Path, expected: dict[str, Entry], skip: str | None = None) -> list[Difference]:
    """Re-hash every file under root and compare with the manifest."""
    differences = []
    seen = set()
    for relative, info in walk_files(root, skip):
        seen.add(relative)
        entry = expected.get(relative)
        if entry is None:
            differences.append(Difference(relative, "extra"))
        elif entry.size != info.st_size:
            differences.append(Difference(relative, "size"))
        elif hash_file(root / relative) != entry.sha256:
            differences.append(Difference(relative, "changed"))
    differences += [Difference(p, "missing") for p in sorted(set(expected) - seen)]
    return differences
