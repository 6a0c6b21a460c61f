"""Running synco and looking at trees, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def synco(
    *args: str, check: bool = False, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the synco command line as a user would, in a child process."""
    full_env = {**os.environ, **(env or {})}
    result = subprocess.run(
        [sys.executable, "-m", "synco.cli.main", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"synco {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def write_tree(root: Path, files: dict[str, str]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def read_tree(root: Path) -> dict[str, str]:
    """Every regular file under root, by relative path, with its text (a file that goes away
    while it is read, such as rsync's temporary file, is left out)."""
    if not root.exists():
        return {}
    tree = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            try:
                tree[str(path.relative_to(root))] = path.read_bytes().decode("utf-8", "replace")
            except FileNotFoundError:
                continue
    return tree
