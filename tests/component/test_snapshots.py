"""The snapshot method with real rsync and sshd: hard links, atomic publication, resumption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.support.cli import read_tree, synco, write_tree
from tests.support.scripts import root, toml_script
from tests.support.snapshots import SYNCO, inode, latest, snapshot_dirs
from tests.support.sshd import Sshd

pytestmark = pytest.mark.usefixtures("rsync")

TREE = {
    "etc/hosts": "127.0.0.1 localhost",
    "home/u/notes.txt": "notes",
    "home/u/deep/er/file": "deep",
    "srv/www/index.html": "<h1>v1</h1>",
    "srv/with space/it's.txt": "q",
}


def snapshot_script(
    tmp_path: Path,
    directories: list[str],
    direction: str,
    servers: dict[str, str],
    method: str,
    arguments: list[str] | None,
) -> Path:
    path = toml_script(
        tmp_path / "snap.toml",
        master="web",
        direction=direction,
        servers=servers,
        directories=[{"path": d} for d in directories],
        arguments=arguments or ["--archive"],
    )
    text = path.read_text().replace("[method]\n", '[method]\nname = "snapshot"\n' + method)
    path.write_text(text)
    return path


@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("directories", [["."], ["etc", "home/u/deep", "srv"]])
def test_unchanged_files_are_hard_links(tmp_path: Path, direction: str, directories: list[str]) -> None:
    web, backup = tmp_path / "web", tmp_path / "backup"
    write_tree(web, TREE)
    script = snapshot_script(
        tmp_path, directories, direction, {"web": root(web), "backup": root(backup)}, "", None
    )
    assert synco("run", str(script)).returncode == 0
    first = latest(backup)
    (web / "srv/www/index.html").write_text("<h1>version 2, longer</h1>")
    result = synco("run", "--json", str(script))
    assert result.returncode == 0, result.stderr
    second = latest(backup)
    assert second != first and snapshot_dirs(backup) == sorted([first, second])
    assert json.loads(result.stdout)["snapshots"] == {"backup": second.name}
    expected = {
        k: v for k, v in read_tree(web).items() if any(k.startswith(d) or d == "." for d in directories)
    }
    assert {k: v for k, v in read_tree(second).items() if not k.startswith(".synco")} == expected
    unchanged = "home/u/deep/er/file"
    assert inode(first / unchanged) == inode(second / unchanged)
    assert (second / unchanged).stat().st_nlink == 2
    if "srv" in directories or "." in directories:
        assert inode(first / "srv/www/index.html") != inode(second / "srv/www/index.html")
        assert (first / "srv/www/index.html").read_text() == "<h1>v1</h1>"
    assert not (backup / "latest.snapshot").exists()
    meta = json.loads((second / ".synco-snapshot/meta.json").read_text())
    assert meta["source"] == "web" and meta["previous"] == first.name and meta["exit_status"] == 0


def test_snapshot_over_ssh_publishes_on_the_remote_target(tmp_path: Path, sshd: Sshd) -> None:
    """The backup server is remote: rsync runs there (pull), and so does publication."""
    web, backup = tmp_path / "web", tmp_path / "backup root"
    write_tree(web, TREE)
    servers = {
        "web": sshd.server_toml("localhost") + root(web),
        "backup": sshd.server_toml("127.0.0.1") + root(backup) + f'\nsynco_path = "{SYNCO}"\n',
    }
    script = snapshot_script(tmp_path, ["."], "pull", servers, "verify = true\n", None)
    assert synco("run", "--as", "web", str(script)).returncode == 0
    first = latest(backup)
    (web / "etc/hosts").write_text("changed and longer")
    result = synco("run", "--as", "web", "--json", str(script))
    assert result.returncode == 0, result.stderr
    second = latest(backup)
    assert inode(first / "home/u/notes.txt") == inode(second / "home/u/notes.txt")
    assert (second / "etc/hosts").read_text() == "changed and longer"
    assert json.loads(result.stdout)["copies"][0]["runs_on"] == "backup"
    verified = synco("--root", str(backup), "verify", "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["files"] == len(TREE)


def test_failed_target_publishes_nothing(tmp_path: Path) -> None:
    web, backup = tmp_path / "web", tmp_path / "backup"
    write_tree(web, TREE)
    script = snapshot_script(
        tmp_path, ["etc", "missing"], "pull", {"web": root(web), "backup": root(backup)}, "", None
    )
    result = synco("run", str(script))
    assert result.returncode == 1
    assert not (backup / "latest").exists()
    assert snapshot_dirs(backup) == []
    assert (backup / "latest.snapshot/etc/hosts").exists()  # kept for the next run to continue


def test_killed_rsync_leaves_latest_intact_and_next_run_completes(tmp_path: Path) -> None:
    web, backup = tmp_path / "web", tmp_path / "backup"
    write_tree(web, TREE)
    servers = {"web": root(web), "backup": root(backup)}
    script = snapshot_script(tmp_path, ["."], "pull", servers, "", None)
    assert synco("run", str(script)).returncode == 0
    good = latest(backup)
    before = read_tree(good)

    (web / "big").write_bytes(os.urandom(4_000_000))
    write_tree(web, {"doomed.txt": "deleted before the next run"})
    slow = snapshot_script(tmp_path, ["."], "pull", servers, "", ["--archive", "--bwlimit=300"])
    process = subprocess.Popen(
        [sys.executable, "-m", "synco.cli.main", "run", str(slow)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not (backup / "latest.snapshot").exists() or not any((backup / "latest.snapshot").iterdir()):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.02)
    time.sleep(0.3)
    for child in psutil.Process(process.pid).children(recursive=True):
        if child.name() == "rsync":
            child.send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "rsync exit" in stderr
    assert latest(backup) == good and read_tree(good) == before
    assert (backup / "latest.snapshot").is_dir()

    (web / "doomed.txt").unlink()
    script = snapshot_script(tmp_path, ["."], "pull", servers, "", None)
    assert synco("run", str(script)).returncode == 0
    done = latest(backup)
    assert done != good
    published = {k: v for k, v in read_tree(done).items() if not k.startswith(".synco")}
    assert "doomed.txt" not in published
    assert (done / "big").stat().st_size == 4_000_000
    assert set(published) == set(read_tree(web))
    assert [p.name for p in backup.iterdir() if p.name.startswith(".")] == [
        ".synco-lock"
    ]  # no rsync temp files


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    web, backup = tmp_path / "web", tmp_path / "backup"
    write_tree(web, TREE)
    script = snapshot_script(tmp_path, ["."], "pull", {"web": root(web), "backup": root(backup)}, "", None)
    assert synco("run", "--dry-run", str(script)).returncode == 0
    assert not backup.exists() or list(backup.iterdir()) == []


def test_verify_against_the_source(tmp_path: Path) -> None:
    web, backup = tmp_path / "web", tmp_path / "backup"
    write_tree(web, TREE)
    script = snapshot_script(tmp_path, ["."], "pull", {"web": root(web), "backup": root(backup)}, "", None)
    assert synco("run", str(script)).returncode == 0
    assert synco("verify", "--script", str(script)).returncode == 0
    (web / "etc/hosts").write_text("changed after the snapshot")
    result = synco("verify", "--script", str(script), "--json")
    assert result.returncode == 1
    differences = json.loads(result.stdout)["targets"]["backup"]["differences"]
    assert any("etc/hosts" in d for d in differences)


def test_a_directory_dropped_from_the_script_is_not_published(tmp_path: Path) -> None:
    """A failed run left `srv` in latest.snapshot; the script then stops copying srv."""
    web, backup = tmp_path / "web", tmp_path / "backup"
    write_tree(web, TREE)
    servers = {"web": root(web), "backup": root(backup)}
    failing = snapshot_script(tmp_path, ["srv", "etc", "missing"], "pull", servers, "", None)
    assert synco("run", str(failing)).returncode == 1
    assert (backup / "latest.snapshot/srv").is_dir()
    script = snapshot_script(tmp_path, ["etc"], "pull", servers, "", None)
    result = synco("run", str(script))
    assert result.returncode == 0, result.stderr
    assert "removed srv" in result.stderr
    assert sorted(p.name for p in latest(backup).iterdir()) == [".synco-snapshot", "etc"]
