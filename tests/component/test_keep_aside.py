"""Keep-aside with real rsync on two local roots: the first pull from a new master moves
every file it would overwrite or delete under keep_aside/<directory>/ (rsync --backup-dir),
so a replica never loses data it cannot get back."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from synco.config import load_script
from synco.core.model import Script
from synco.node.pull import pull
from tests.support.cli import read_tree, write_tree
from tests.support.scripts import root, toml_script


def write_roots(tmp_path: Path, master: dict[str, str], replica: dict[str, str]) -> None:
    """The two trees; a file alike on both has the same mtime too (rsync leaves it alone)."""
    write_tree(tmp_path / "s01", master)
    write_tree(tmp_path / "s02", replica)
    for name, text in replica.items():
        if master.get(name) == text:
            mtime = (tmp_path / "s01" / name).stat().st_mtime_ns
            os.utime(tmp_path / "s02" / name, ns=(mtime, mtime))


def two_roots(tmp_path: Path) -> Script:
    path = toml_script(
        tmp_path / "pair.toml",
        master="s01",
        servers={"s01": root(tmp_path / "s01"), "s02": root(tmp_path / "s02")},
        directories=[{"path": "data"}, {"path": "./web/site/"}],
        direction="pull",
        arguments=["--archive", "--delete"],
    )
    return load_script(path)


MASTER = {
    "data/same.txt": "same",
    "data/changed.txt": "the new master's",
    "data/deep/changed.txt": "the new master's, deeper",
    "data/deep/new.txt": "only on the new master",
    "web/site/index.html": "new index",
}
# Each directory also has a file deleted at its top: see test_keep_aside_when_only_a_subdirectory_loses_files
REPLICA = {
    "data/same.txt": "same",
    "data/changed.txt": "written here, never replicated",
    "data/gone.txt": "deleted by --delete",
    "data/deep/changed.txt": "written here too",
    "data/deep/gone.txt": "deleted by --delete, deeper",
    "data/old/page.html": "a whole directory deleted",
    "web/site/index.html": "old index",
    "web/site/stale.html": "a stale page",
}


def test_first_pull_from_a_new_master_keeps_aside_what_it_overwrites_or_deletes(
    tmp_path: Path, rsync: str
) -> None:
    script = two_roots(tmp_path)
    write_roots(tmp_path, MASTER, REPLICA)
    kept = tmp_path / "state" / "kept-aside" / "s02" / "2024.05.06-07.08.09"

    result = asyncio.run(pull(script, script.server("s01"), script.server("s02"), 3, str(kept)))

    assert result.ok, result.message
    assert read_tree(tmp_path / "s02") == MASTER  # the copy is the new master's
    # and every file it overwrote or deleted is kept, under the directory's own path
    assert read_tree(kept) == {k: v for k, v in REPLICA.items() if MASTER.get(k) != v}
    assert read_tree(tmp_path / "s01") == MASTER  # nothing kept on (or written to) the master


def test_pulls_without_keep_aside_keep_nothing(tmp_path: Path, rsync: str) -> None:
    script = two_roots(tmp_path)
    write_roots(tmp_path, MASTER, REPLICA)

    result = asyncio.run(pull(script, script.server("s01"), script.server("s02"), 3))

    assert result.ok, result.message
    assert read_tree(tmp_path) == {
        **{f"s01/{k}": v for k, v in MASTER.items()},
        **{f"s02/{k}": v for k, v in MASTER.items()},
        "pair.toml": (tmp_path / "pair.toml").read_text(),
    }


def test_keep_aside_when_only_a_subdirectory_loses_files(tmp_path: Path, rsync: str) -> None:
    """A file overwritten at the top of a directory while the only deletion is in a
    subdirectory: the first pull from a new master must succeed every time (40 in a row:
    the race loses between one run in five and one in two here)."""
    master = {"data/changed.txt": "the new master's", "data/deep/kept.txt": "same", "web/site/a": "same"}
    replica = {**master, "data/changed.txt": "written here", "data/deep/gone.txt": "deleted"}
    failures = []
    for attempt in range(40):
        trees = tmp_path / str(attempt)
        trees.mkdir()
        script = two_roots(trees)
        write_roots(trees, master, replica)
        kept = trees / "kept-aside"
        result = asyncio.run(pull(script, script.server("s01"), script.server("s02"), 3, str(kept)))
        if not result.ok:
            failures.append(result.message)
            continue
        assert read_tree(trees / "s02") == master
        assert read_tree(kept) == {"data/changed.txt": "written here", "data/deep/gone.txt": "deleted"}
    assert failures == [], f"{len(failures)} of 40 first pulls failed: {failures[0]}"
