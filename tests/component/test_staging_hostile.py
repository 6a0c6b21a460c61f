"""Staging against what would empty a target or read outside the copy: file systems nested
below a copied path (a snapshot holds one file system), a views directory someone else could
write, things planted at a view's name, a view still read by another run, and a symlink in
the view itself. btrfs on a loop device, and the `command` provider with real commands."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from synco.loader import load
from synco.staging import identity_of
from tests.support.cli import read_tree, synco, write_tree
from tests.support.loopfs import loop_filesystem

pytestmark = pytest.mark.usefixtures("rsync")


@pytest.fixture
def btrfs(tmp_path: Path) -> Iterator[Path]:
    with loop_filesystem(tmp_path, "btrfs") as mountpoint:
        yield mountpoint


def btrfs_command(*argv: str) -> None:
    subprocess.run(["btrfs", *argv], check=True, capture_output=True)


def script(
    tmp_path: Path,
    source: Path,
    target: Path,
    directories: str = '[[directories]]\npath = "."\n',
    *,
    staging: str = "",
) -> Path:
    path = tmp_path / "staged.toml"
    staging = staging or BTRFS
    path.write_text(
        'master = "db"\n[method]\narguments = ["--archive", "--delete"]\n'
        f"[servers.db]\nroot = {json.dumps(str(source))}\n"
        f"{staging}"
        f"[servers.copy]\nroot = {json.dumps(str(target))}\n{directories}"
    )
    return path


BTRFS = '[servers.db.staging]\nprovider = "btrfs"\n'


def views(directory: Path) -> list[str]:
    return (
        sorted(p.name for p in directory.iterdir() if p.name.startswith("synco-stage-"))
        if directory.exists()
        else []
    )


def test_a_subvolume_nested_in_the_copy_refuses_the_run_and_the_target_keeps_its_copy(
    tmp_path: Path, btrfs: Path
) -> None:
    source, target = btrfs / "data", tmp_path / "copy"
    btrfs_command("subvolume", "create", str(source))
    btrfs_command("subvolume", "create", str(source / "db"))
    write_tree(source, {"a": "1", "db/table": "rows"})
    write_tree(target, {"a": "1", "db/table": "rows"})  # an earlier copy, made without staging
    refused = synco("run", str(script(tmp_path, source, target)))
    assert refused.returncode == 1
    assert f"{source}/db (btrfs subvolume) in directory '.'" in refused.stderr, refused.stderr
    assert read_tree(target) == {"a": "1", "db/table": "rows"}  # not emptied by --delete
    assert views(btrfs / ".synco-staging") == []  # refused before any view was made
    # left out of its parent and copied as a directory of its own, from a view of its own
    own = (
        '[[directories]]\npath = "."\narguments = ["--exclude=/db/"]\n'
        '[[directories]]\npath = "db"\nstaging = { provider = "btrfs" }\n'
    )
    write_tree(source, {"db/table": "more rows"})
    result = synco("run", "--json", str(script(tmp_path, source, target, own)))
    assert result.returncode == 0, result.stderr
    assert read_tree(target) == {"a": "1", "db/table": "more rows"}
    assert len(json.loads(result.stdout)["staged"]) == 2


def test_a_mount_below_the_copy_refuses_the_run_until_it_is_left_out(tmp_path: Path, btrfs: Path) -> None:
    source, target = btrfs / "data", tmp_path / "copy"
    btrfs_command("subvolume", "create", str(source))
    write_tree(source, {"a": "1"})
    write_tree(target, {"a": "1", "cache/hot": "kept"})
    (source / "cache").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(source / "cache")], check=True)
    try:
        write_tree(source, {"cache/hot": "x"})
        path = script(tmp_path, source, target)
        refused = synco("run", str(path))
        assert refused.returncode == 1
        assert f"{source}/cache (mount)" in refused.stderr, refused.stderr
        # --one-file-system does not do: in the view the mount point is a plain directory
        one = path.read_text()
        path.write_text(one.replace('"--delete"]', '"--delete", "--one-file-system"]'))
        assert synco("run", str(path)).returncode == 1
        path.write_text(one.replace('"--delete"]', '"--delete", "--exclude=/cache/"]'))
        result = synco("run", str(path))
        assert result.returncode == 0, result.stderr
        assert read_tree(target) == {"a": "1", "cache/hot": "kept"}
    finally:
        subprocess.run(["umount", str(source / "cache")], check=True)


def test_a_directorys_own_origin_reached_through_a_symlink_is_refused(tmp_path: Path, btrfs: Path) -> None:
    source, target, other = btrfs / "root", tmp_path / "copy", btrfs / "other"
    source.mkdir()
    btrfs_command("subvolume", "create", str(other))
    write_tree(other, {"secret": "not this"})
    (source / "www").symlink_to(other)  # a snapshot would follow it
    own = '[[directories]]\npath = "www"\nstaging = { provider = "btrfs" }\n'
    result = synco("run", str(script(tmp_path, source, target, own, staging="\n")))
    assert result.returncode == 1
    assert f"{source}/www is a symlink: refusing to stage through it" in result.stderr, result.stderr
    assert read_tree(target) == {} and views(btrfs / ".synco-staging") == []


@pytest.mark.parametrize("kind", ["symlink", "others-writable", "someone-elses"])
def test_a_views_directory_someone_else_could_write_is_refused(
    tmp_path: Path, btrfs: Path, kind: str
) -> None:
    source, target, snapshots = btrfs / "data", tmp_path / "copy", btrfs / ".synco-staging"
    btrfs_command("subvolume", "create", str(source))
    write_tree(source, {"a": "1"})
    elsewhere = btrfs / "elsewhere"
    elsewhere.mkdir()
    if kind == "symlink":
        snapshots.symlink_to(elsewhere)
        said = "is a symlink: refusing to look for views there"  # the survey, before anything
    elif kind == "others-writable":
        snapshots.mkdir()
        snapshots.chmod(0o777)
        said = "is writable by others (mode 777): refusing to make views there"
    else:
        snapshots.mkdir(mode=0o700)
        os.chown(snapshots, 65534, 65534)
        said = "is owned by uid 65534, not 0: refusing to make views there"
    result = synco("run", str(script(tmp_path, source, target)))
    assert result.returncode == 1
    assert f"{snapshots} {said}" in result.stderr, result.stderr
    assert list(elsewhere.iterdir()) == [] and not target.exists()


def test_what_is_planted_at_a_views_name_is_reported_and_never_removed(tmp_path: Path, btrfs: Path) -> None:
    source, target, snapshots = btrfs / "data", tmp_path / "copy", btrfs / ".synco-staging"
    btrfs_command("subvolume", "create", str(source))
    btrfs_command("subvolume", "create", str(btrfs / "other"))
    write_tree(source, {"a": "1"})
    path = script(tmp_path, source, target)
    prefix = f"synco-stage-{identity_of(load(str(path)), 'db')}-"
    snapshots.mkdir(mode=0o700)
    keep = btrfs / "keep"
    btrfs_command("subvolume", "snapshot", "-r", str(source), str(keep))
    (snapshots / f"{prefix}link").symlink_to(keep)  # a read-only snapshot of the origin, through a link
    btrfs_command("subvolume", "snapshot", "-r", str(btrfs / "other"), str(snapshots / f"{prefix}other"))
    result = synco("run", str(path))
    assert result.returncode == 0, result.stderr
    assert f"{prefix}link is at one of Synco's names but is a symlink: not removing it" in result.stderr
    assert (
        f"{prefix}other is at one of Synco's names but is a read-only btrfs snapshot of another"
        in result.stderr
    )
    assert keep.is_dir() and views(snapshots) == [f"{prefix}link", f"{prefix}other"]


def test_a_view_another_run_still_reads_is_left_and_a_dead_runs_is_removed(
    tmp_path: Path, btrfs: Path
) -> None:
    source, target, snapshots = btrfs / "data", tmp_path / "copy", btrfs / ".synco-staging"
    btrfs_command("subvolume", "create", str(source))
    write_tree(source, {"a": "1"})
    path = script(tmp_path, source, target)
    identity = identity_of(load(str(path)), "db")
    gone = subprocess.Popen(["true"])
    gone.wait()
    running = subprocess.Popen(["sleep", "60"])  # a run of this script holding another lock
    try:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        alive, dead = (f"synco-stage-{identity}-{stamp}-{pid}-1" for pid in (running.pid, gone.pid))
        snapshots.mkdir(mode=0o700)
        for name in (alive, dead):
            btrfs_command("subvolume", "snapshot", "-r", str(source), str(snapshots / name))
        result = synco("run", str(path))
        assert result.returncode == 0, result.stderr
        assert (
            f"leaving {alive}: the run that made it (process {running.pid}) is still going" in result.stderr
        )
        assert f"removed {dead} on db, left by an earlier run" in result.stderr
        assert views(snapshots) == [alive]
    finally:
        running.kill()
        running.wait()


def test_the_source_path_is_checked_in_the_view_not_in_the_live_tree(tmp_path: Path) -> None:
    source, target, views_dir, secret = (
        tmp_path / "db",
        tmp_path / "copy",
        tmp_path / "views",
        tmp_path / "secret",
    )
    write_tree(source, {"www/index": "live"})
    write_tree(secret, {"key": "private"})
    views_dir.mkdir()
    # the view the operator's command makes has a symlink where the live tree has a directory
    view = f'{views_dir}/"$SYNCO_STAGING_NAME"'
    create = ["sh", "-c", f"mkdir -p {view} && ln -s {secret} {view}/www && echo {view}"]
    staging = (
        '[servers.db.staging]\nprovider = "command"\n'
        f"create = {json.dumps(create)}\ndestroy = {json.dumps(['sh', '-c', f'rm -rf {view}'])}\n"
    )
    result = synco(
        "run", str(script(tmp_path, source, target, '[[directories]]\npath = "www"\n', staging=staging))
    )
    assert result.returncode == 1
    assert "symlink" in result.stderr and "refusing" in result.stderr, result.stderr
    assert read_tree(target) == {} and views(views_dir) == []
