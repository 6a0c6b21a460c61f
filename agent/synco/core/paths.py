"""Relative paths that can never leave the root they are joined to."""

from __future__ import annotations

import posixpath


def normalize_relative(path: str) -> str:
    """The canonical form of a directory path relative to a server's root.

    Raises ValueError for absolute paths, paths that escape the root with `..`, empty
    paths and paths with NUL or newline characters (which no shell or rsync handles well).
    """
    if not isinstance(path, str):
        raise ValueError(f"must be a string, not {type(path).__name__}")
    if path == "":
        raise ValueError('is empty (use "." for the whole root)')
    if "\0" in path or "\n" in path:
        raise ValueError("contains a NUL or newline character")
    if path.startswith("/"):
        raise ValueError(f"{path!r} is absolute; directories are relative to each server's root")
    depth = 0
    for part in path.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                raise ValueError(f"{path!r} escapes the server's root with '..'")
        elif part not in ("", "."):
            depth += 1
    normalized = posixpath.normpath(path)
    return "." if normalized in ("", ".") else normalized
