"""rotate and prune on real directories: dry runs, reasons, and deletion edge cases."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import synco, write_tree
from tests.support.components import need

NAMES = [
    "2026.01.01-00.00.00", "2026.01.01-12.00.00", "2026.01.02-00.00.00",
    "2026.01.03-00.00.00", "2026.01.03-06.00.00", "2026.01.04-00.00.00",
]  # fmt: skip
NOW = "2026-01-04T12:00:00+00:00"


def populate(root: Path) -> None:
    for name in NAMES:
        write_tree(root / name, {"data/file": name})
    os.symlink(NAMES[1], root / "latest")  # latest points at an old one: it must survive
    write_tree(root, {"notes.txt": "stray", "latest.snapshot/x": "in progress"})
    (root / "2025.12.31-00.00.00").write_text("a stray file with a snapshot's name")


def test_dry_run_lists_every_decision_and_erases_nothing(tmp_path: Path) -> None:
    populate(tmp_path)
    before = sorted(os.listdir(tmp_path))
    result = synco("--root", str(tmp_path), "prune", "--daily", "2", "--dry", "--json", "--now", NOW)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path)) == before
    report = json.loads(result.stdout)
    decisions = {s["name"]: s["reasons"] for s in report["snapshots"]}
    assert decisions == {
        "2026.01.04-00.00.00": ["daily #1"],
        "2026.01.03-06.00.00": [],
        "2026.01.03-00.00.00": ["daily #2"],
        "2026.01.02-00.00.00": [],
        "2026.01.01-12.00.00": ["latest"],
        "2026.01.01-00.00.00": [],
    }
    text = synco("--root", str(tmp_path), "prune", "--daily", "2", "--dry-run", "--now", NOW)
    assert "keep  2026.01.01-12.00.00  (latest)" in text.stdout
    assert "erase 2026.01.02-00.00.00" in text.stdout


def test_prune_erases_what_the_policy_drops_and_nothing_else(tmp_path: Path) -> None:
    populate(tmp_path)
    result = synco("--root", str(tmp_path), "prune", "--keep-last", "2", "--now", NOW)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["2026.01.04-00.00.00", "2026.01.03-06.00.00", "2026.01.01-12.00.00", "latest", "latest.snapshot",
         "notes.txt", "2025.12.31-00.00.00", ".synco-lock"]
    )  # fmt: skip
    again = synco("--root", str(tmp_path), "prune", "--keep-last", "2", "--now", NOW, "--json")
    assert again.returncode == 0
    assert all(s["keep"] for s in json.loads(again.stdout)["snapshots"])


def test_symlink_out_of_the_root_is_removed_not_followed(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "precious"
    write_tree(outside, {"keep/me": "precious data"})
    write_tree(root / NAMES[-1], {"f": "1"})
    os.symlink(outside, root / NAMES[0])
    result = synco("--root", str(root), "prune", "--keep-last", "1", "--now", NOW)
    assert result.returncode == 0, result.stderr
    assert not os.path.lexists(root / NAMES[0])
    assert (outside / "keep/me").read_text() == "precious data"


def test_undeletable_snapshot_is_reported_and_the_others_are_erased(tmp_path: Path) -> None:
    need("chattr")
    populate(tmp_path)
    stuck = tmp_path / NAMES[0] / "data/file"
    subprocess.run(["chattr", "+i", str(stuck)], check=True)
    try:
        result = synco("--root", str(tmp_path), "prune", "--keep-last", "1", "--now", NOW)
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path / f".synco-deleting.{NAMES[0]}/data/file")], check=False)
        subprocess.run(["chattr", "-i", str(stuck)], check=False)
    assert result.returncode == 1
    assert f"failed to erase {NAMES[0]}" in result.stderr
    assert not (tmp_path / NAMES[2]).exists()
    # the half-erased tree left the snapshot namespace; the next prune finishes it
    assert (tmp_path / f".synco-deleting.{NAMES[0]}").exists()
    result = synco("--root", str(tmp_path), "prune", "--keep-last", "1", "--now", NOW)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / f".synco-deleting.{NAMES[0]}").exists()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's own tmp dirs are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="synco-shared-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    subprocess.run(["chmod", "-R", "u+rwx", str(path)], check=False)
    shutil.rmtree(path, ignore_errors=True)


def test_read_only_directories_are_erased_by_their_owner(shared_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    setpriv = need("setpriv")
    for name in NAMES[:2]:
        write_tree(shared_dir / name, {"ro/deeper/file": "x", "ro/file": "y"})
    subprocess.run(["chown", "-R", "nobody:nogroup", str(shared_dir)], check=True)
    (shared_dir / ".synco-lock").touch(mode=0o644)  # root's lock file: nobody locks it read-only
    for name in NAMES[:2]:
        for directory in ("ro/deeper", "ro", ""):
            (shared_dir / name / directory).chmod(0o555)
    result = subprocess.run(
        [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-m",
         "synco.cli.main", "--root", str(shared_dir), "prune", "--keep-last", "1", "--now", NOW],
        capture_output=True, text=True, env={**os.environ, "HOME": "/nonexistent"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(shared_dir)) == [".synco-lock", NAMES[1]]  # the root's writer lock


def test_rotate_publishes_and_collisions_get_a_suffix(tmp_path: Path) -> None:
    for expected in ("2026", "2026_1"):
        write_tree(tmp_path / "latest.snapshot", {"f": expected})
        result = synco("--root", str(tmp_path), "rotate", "--format", "%Y")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == expected
        assert os.readlink(tmp_path / "latest") == expected
    assert (tmp_path / "2026_1/f").read_text() == "2026_1"
    listing = synco("--root", str(tmp_path), "list", "--format", "%Y", "--json")
    assert [s["name"] for s in json.loads(listing.stdout)["snapshots"]] == ["2026_1", "2026"]


def test_rotate_refuses_what_it_cannot_do_safely(tmp_path: Path) -> None:
    nothing = synco("--root", str(tmp_path), "rotate")
    assert nothing.returncode == 1 and "nothing to rotate" in nothing.stderr
    write_tree(tmp_path, {"latest.snapshot/f": "1", "latest/real-directory": "not a symlink"})
    refused = synco("--root", str(tmp_path), "rotate")
    assert refused.returncode == 1 and "is not a symlink; refusing" in refused.stderr
    assert (tmp_path / "latest.snapshot/f").exists()
    bad = synco("--root", str(tmp_path), "rotate", "--latest", "../elsewhere")
    assert bad.returncode == 2


def test_prune_usage_errors(tmp_path: Path) -> None:
    assert synco("--root", str(tmp_path), "prune", "--daily", "-1").returncode == 2
    assert synco("--root", str(tmp_path), "prune", "--keep-within", "soon").returncode == 2
    assert synco("--root", str(tmp_path), "prune", "--timezone", "Mars/Olympus").returncode == 2
