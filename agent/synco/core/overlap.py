"""Whether two copies of a directory on one host would overlap (pure)."""

from __future__ import annotations

import posixpath
from collections.abc import Callable

from synco.core.model import Server
from synco.core.snapshot_names import IN_PROGRESS


def colocated(a: Server, b: Server, is_local: Callable[[Server], bool]) -> bool:
    """Whether `a` and `b` share a file system: both on this machine (as `is_local` says),
    or reached through the same login. A copy between them is then local, and its paths
    must not overlap (`overlapping`): `synco run` refuses it, and `synco check` reports it."""
    return (is_local(a) and is_local(b)) or (a.connection is not None and a.connection == b.connection)


def contains(outer: str, inner: str) -> bool:
    """Whether path `inner` is `outer` or lies inside it (component-wise)."""
    outer, inner = posixpath.normpath(outer), posixpath.normpath(inner)
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


def overlapping(source: Server, target: Server, directory: str, snapshots: bool) -> tuple[str, str] | None:
    """The two paths, if copying `directory` from `source` to `target` on one host would
    read and write the same tree (a copy into itself, or --delete removing its own source)."""
    into = [target.root, IN_PROGRESS] if snapshots else [target.root]
    src = posixpath.join(source.root, directory)
    dst = posixpath.join(*into, directory)
    if contains(src, dst) or contains(dst, src):
        return src, dst
    return None
