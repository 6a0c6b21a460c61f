"""Copies read from a frozen view of the master: btrfs on a real file system (an image on a
loop device), the `command` provider with real commands, and the agent's backup snapshots."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from synco.loader import load
from synco.node.backup import take_snapshot
from synco.staging import identity_of
from tests.support.cli import read_tree, synco, write_tree
from tests.support.loopfs import loop_filesystem
from tests.support.scripts import root, toml_script
from tests.support.snapshots import latest
from tests.support.sshd import Sshd

pytestmark = pytest.mark.usefixtures("rsync")

SLOW = ["--archive", "--delete", "--bwlimit=300"]  # about a second for the writer's tree


@pytest.fixture
def btrfs(tmp_path: Path) -> Iterator[Path]:
    with loop_filesystem(tmp_path, "btrfs") as mountpoint:
        yield mountpoint


def subvolume(path: Path) -> Path:
    subprocess.run(["btrfs", "subvolume", "create", str(path)], check=True, capture_output=True)
    return path


def staged_script(
    tmp_path: Path,
    source: Path,
    target: Path,
    staging: str,
    *,
    arguments: list[str] | None = None,
    method: str = "",
    events: str = "",
) -> Path:
    path = toml_script(
        tmp_path / "staged.toml",
        master="db",
        servers={"db": root(source), "copy": root(target)},
        directories=[{"path": "."}],
        arguments=arguments or ["--archive", "--delete"],
    )
    text = path.read_text().replace("[servers.copy]", f"{staging}\n{events}\n[servers.copy]")
    if method:
        text = text.replace("[method]\n", f"[method]\n{method}")
    path.write_text(text)
    return path


def views(directory: Path) -> list[str]:
    if not directory.exists():
        return []
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("synco-stage-"))


def rsyncs_under(path: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "rsync" and any(str(path) in a for a in process.info["cmdline"] or []):
            found.append(process)
    return found


class Writer:
    """Keeps rewriting every file of a tree with a new generation number, and renaming one."""

    def __init__(self, tree: Path, files: int = 30) -> None:
        self.tree = tree
        self.files = files
        self.generation = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def write_all(self) -> None:
        for i in range(self.files):
            (self.tree / f"f{i:02d}").write_text(f"{self.generation}\n" * 2000)
        old, new = self.tree / f"moved-{self.generation - 1}", self.tree / f"moved-{self.generation}"
        if old.exists():
            old.rename(new)
        else:
            new.write_text("renamed each generation")

    def run(self) -> None:
        while not self.stop.is_set():
            self.generation += 1
            self.write_all()
            time.sleep(0.01)

    def __enter__(self) -> Writer:
        self.write_all()
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


BTRFS = '[servers.db.staging]\nprovider = "btrfs"\n'


def test_a_btrfs_staged_copy_equals_the_snapshot_while_a_writer_changes_the_source(
    tmp_path: Path, btrfs: Path
) -> None:
    source = subvolume(btrfs / "data")
    frozen = tmp_path / "frozen"
    # Runs between the copy and the view's removal: keeps a copy of the view to compare with.
    keep = ["sh", "-c", f'cp -a "$(ls -d {btrfs}/.synco-staging/synco-stage-*)"/. {frozen}/']
    events = f"[servers.copy.events]\nsuccess = [{json.dumps(keep)}]\n"
    script = staged_script(tmp_path, source, tmp_path / "copy", BTRFS, arguments=SLOW, events=events)
    frozen.mkdir()
    with Writer(source) as writer:
        result = synco("run", "--json", str(script))
        generations_during = writer.generation
    assert result.returncode == 0, result.stderr
    copy = read_tree(tmp_path / "copy")
    assert copy == read_tree(frozen)  # the copy is the snapshot, not a mix of before and after
    assert len({copy[f"f{i:02d}"] for i in range(30)}) <= 2  # one instant of a sequential writer
    assert generations_during > 2 and copy != read_tree(source)  # the source kept changing
    assert views(btrfs / ".synco-staging") == []  # removed afterwards
    report = json.loads(result.stdout)
    (staged,) = report["staged"]
    assert staged["provider"] == "btrfs" and staged["origin"] == str(source)
    assert "staged " in result.stderr and f"removed {staged['name']}" in result.stderr


def test_a_dry_run_stages_nothing(tmp_path: Path, btrfs: Path) -> None:
    source = subvolume(btrfs / "data")
    write_tree(source, {"a": "1"})
    script = staged_script(tmp_path, source, tmp_path / "copy", BTRFS)
    result = synco("run", "--dry-run", str(script))
    assert result.returncode == 0, result.stderr
    assert "would stage" in result.stderr
    assert not (btrfs / ".synco-staging").exists() and not (tmp_path / "copy").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_copy_removes_the_snapshot_and_stops_rsync(
    tmp_path: Path, btrfs: Path, signum: signal.Signals
) -> None:
    source = subvolume(btrfs / "data")
    write_tree(source, {f"f{i}": "x" * 200_000 for i in range(20)})  # 4 MB at 300 KB/s
    script = staged_script(tmp_path, source, tmp_path / "copy", BTRFS, arguments=SLOW)
    run = subprocess.Popen(
        [sys.executable, "-m", "synco.cli.main", "run", str(script)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not rsyncs_under(tmp_path / "copy") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert views(btrfs / ".synco-staging"), "the snapshot exists while rsync copies"
        run.send_signal(signum)
        _, stderr = run.communicate(timeout=30)
    finally:
        run.kill()
    assert run.returncode == (143 if signum == signal.SIGTERM else 130), stderr
    assert views(btrfs / ".synco-staging") == [], stderr
    assert rsyncs_under(tmp_path / "copy") == []


def test_a_snapshot_left_by_a_killed_run_is_removed_by_the_next(tmp_path: Path, btrfs: Path) -> None:
    source = subvolume(btrfs / "data")
    write_tree(source, {f"f{i}": "x" * 200_000 for i in range(20)})
    script = staged_script(tmp_path, source, tmp_path / "copy", BTRFS, arguments=SLOW)
    run = subprocess.Popen(
        [sys.executable, "-m", "synco.cli.main", "run", str(script)], stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while not rsyncs_under(tmp_path / "copy") and time.monotonic() < deadline:
        time.sleep(0.05)
    run.kill()
    run.wait()
    for process in rsyncs_under(tmp_path / "copy"):  # (it dies with its parent, but not at once)
        process.wait(10)
    (left,) = views(btrfs / ".synco-staging")
    # not Synco's: a plain directory at one of this script's names is reported and left alone
    identity = identity_of(load(str(script)), "db")
    foreign = btrfs / ".synco-staging" / f"synco-stage-{identity}-not-a-snapshot"
    foreign.mkdir()
    script.write_text(script.read_text().replace('"--bwlimit=300"', '"--stats"'))
    result = synco("run", str(script))
    assert result.returncode == 0, result.stderr
    assert f"removed {left} on db, left by an earlier run" in result.stderr
    assert f"{foreign.name} is at one of Synco's names but is not a read-only btrfs snapshot" in result.stderr
    assert views(btrfs / ".synco-staging") == [foreign.name]
    assert read_tree(tmp_path / "copy") == read_tree(source)


def test_a_failed_snapshot_fails_the_run_and_copies_nothing(tmp_path: Path, btrfs: Path) -> None:
    source = btrfs / "plain"  # a directory, not a subvolume: btrfs cannot snapshot it
    write_tree(source, {"a": "1"})
    script = staged_script(tmp_path, source, tmp_path / "copy", BTRFS)
    result = synco("run", "--json", str(script))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert any("btrfs subvolume snapshot -r" in f for f in report["failures"]), report["failures"]
    assert [c["status"] for c in report["copies"]] == ["skipped"]
    assert not (tmp_path / "copy").exists()


def test_snapshot_backups_record_the_staged_time_and_list_shows_it(tmp_path: Path, btrfs: Path) -> None:
    source = subvolume(btrfs / "data")
    write_tree(source, {"a": "1"})
    backups = tmp_path / "backups"
    script = staged_script(tmp_path, source, backups, BTRFS, method='name = "snapshot"\n')
    result = synco("run", "--json", str(script))
    assert result.returncode == 0, result.stderr
    (staged,) = json.loads(result.stdout)["staged"]
    metadata = json.loads((latest(backups) / ".synco-snapshot/meta.json").read_text())
    assert metadata["staged"] == [staged]
    listed = synco("--root", str(backups), "list", "--json")
    assert json.loads(listed.stdout)["snapshots"][0]["staged"] == staged["at"]
    assert f"staged {staged['at']}" in synco("--root", str(backups), "list").stdout


# -- the command provider, with real commands ------------------------------------------------


def command_staging(views_dir: Path, *, create_prints: str = "$view", list_views: bool = True) -> str:
    view = f'{views_dir}/"$SYNCO_STAGING_NAME"'
    copy = 'mkdir -p "$view" && cp -a "$SYNCO_STAGING_ORIGIN"/. "$view"'
    create = ["sh", "-c", f"view={view}; {copy} && echo {create_prints}"]
    destroy = ["sh", "-c", f"rm -rf {view}"]
    lines = [
        "[servers.db.staging]",
        'provider = "command"',
        f"create = {json.dumps(create)}",
        f"destroy = {json.dumps(destroy)}",
    ]
    if list_views:
        lines.append(f"list = {json.dumps(['ls', '-1', str(views_dir)])}")
    return "\n".join(lines) + "\n"


def test_the_command_provider_copies_from_its_view_and_destroys_it(tmp_path: Path) -> None:
    source, views_dir = tmp_path / "db", tmp_path / "views"
    write_tree(source, {"a": "1", "sub/b": "2"})
    views_dir.mkdir()
    # the view is what the copy reads: a file added to the live tree after staging is not copied
    late = ["sh", "-c", f"echo late > {source}/late"]
    (tmp_path / "copy").mkdir()
    events = f"[servers.copy.events]\nprepare = [{json.dumps(late)}]\n"
    script = staged_script(tmp_path, source, tmp_path / "copy", command_staging(views_dir), events=events)
    result = synco("run", "--json", str(script))
    assert result.returncode == 0, result.stderr
    assert read_tree(tmp_path / "copy") == {"a": "1", "sub/b": "2"}
    assert (source / "late").exists()
    assert views(views_dir) == []
    (staged,) = json.loads(result.stdout)["staged"]
    assert staged["provider"] == "command"


def test_the_command_provider_removes_what_its_list_names_from_an_earlier_run(tmp_path: Path) -> None:
    source, views_dir = tmp_path / "db", tmp_path / "views"
    write_tree(source, {"a": "1"})
    views_dir.mkdir()
    script = staged_script(tmp_path, source, tmp_path / "copy", command_staging(views_dir))
    identity = identity_of(load(str(script)), "db")
    (views_dir / f"synco-stage-{identity}-20260101T000000Z-1").mkdir()
    (views_dir / "synco-stage-0000abcd-20260101T000000Z-1").mkdir()  # another script's: left alone
    result = synco("run", str(script))
    assert result.returncode == 0, result.stderr
    assert "left by an earlier run" in result.stderr
    assert views(views_dir) == ["synco-stage-0000abcd-20260101T000000Z-1"]


def test_a_command_view_that_is_not_an_absolute_path_is_destroyed_and_fails_the_run(tmp_path: Path) -> None:
    source, views_dir = tmp_path / "db", tmp_path / "views"
    write_tree(source, {"a": "1"})
    views_dir.mkdir()
    staging = command_staging(views_dir, create_prints="relative/path")
    script = staged_script(tmp_path, source, tmp_path / "copy", staging)
    result = synco("run", str(script))
    assert result.returncode == 1
    assert "printed 'relative/path', not the view's absolute path" in result.stderr
    assert views(views_dir) == []  # destroyed
    assert not (tmp_path / "copy").exists()


def test_the_agents_backup_snapshot_reads_the_staged_view(tmp_path: Path) -> None:
    source, views_dir = tmp_path / "db", tmp_path / "views"
    write_tree(source, {"a": "1"})
    views_dir.mkdir()
    script_path = staged_script(tmp_path, source, tmp_path / "backups", command_staging(views_dir))
    script = load(str(script_path))
    result = asyncio.run(take_snapshot(script, script.server("db"), script.server("copy"), 7))
    assert result.ok, result.message
    snapshot = latest(tmp_path / "backups")
    metadata = json.loads((snapshot / ".synco-snapshot/meta.json").read_text())
    (staged,) = metadata["staged"]
    assert staged["provider"] == "command" and staged["origin"] == str(source)
    assert (snapshot / "a").read_text() == "1"
    assert views(views_dir) == []
    assert os.listdir(views_dir) == []


@pytest.mark.parametrize(
    ("direction", "master_remote"),
    [("pull", True), ("push", True), ("push", False)],
    ids=["pull-from-a-remote-master", "push-from-a-remote-master", "push-from-here"],
)
def test_staging_over_ssh(
    tmp_path: Path, btrfs: Path, sshd: Sshd, direction: str, master_remote: bool
) -> None:
    """The snapshot is made and removed on the master, through ssh when it is elsewhere;
    rsync reads it there (pull: through ssh from here; push: rsync runs on the master)."""
    source = subvolume(btrfs / "data")
    write_tree(source, {"a": "1", "with space/b": "2"})
    target = tmp_path / "copy"
    master_toml = (sshd.server_toml("127.0.0.1") if master_remote else "") + root(source)
    target_toml = (sshd.server_toml("localhost") if direction == "push" else "") + root(target)
    script = toml_script(
        tmp_path / "s.toml",
        master="db",
        direction=direction,
        servers={"db": master_toml, "copy": target_toml},
        directories=[{"path": "."}],
        arguments=["--archive", "--delete"],
    )
    script.write_text(script.read_text().replace("[servers.copy]", f"{BTRFS}[servers.copy]"))
    result = synco("run", "--as", "copy" if master_remote else "db", "--json", str(script))
    assert result.returncode == 0, result.stderr
    assert read_tree(target) == {"a": "1", "with space/b": "2"}
    (staged,) = json.loads(result.stdout)["staged"]
    (copy,) = json.loads(result.stdout)["copies"]
    assert any(staged["name"] in argument for argument in copy["command"])  # rsync read the view
    assert views(btrfs / ".synco-staging") == []


def test_an_agents_backup_snapshot_cancelled_mid_copy_removes_its_view(tmp_path: Path) -> None:
    """The agent stopping (its task cancelled) while rsync reads the view: the view goes too."""
    source, views_dir = tmp_path / "db", tmp_path / "views"
    write_tree(source, {f"f{i}": "x" * 200_000 for i in range(20)})
    views_dir.mkdir()
    script_path = staged_script(
        tmp_path, source, tmp_path / "backups", command_staging(views_dir), arguments=SLOW
    )
    script = load(str(script_path))

    async def cancelled() -> None:
        task = asyncio.create_task(take_snapshot(script, script.server("db"), script.server("copy"), 1))
        deadline = time.monotonic() + 30
        while not rsyncs_under(tmp_path / "backups") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert views(views_dir), "the view exists while rsync copies"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancelled())
    assert views(views_dir) == []
    assert rsyncs_under(tmp_path / "backups") == []
