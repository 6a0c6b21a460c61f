"""A second concurrent run of a script is refused; a killed run leaves no stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.cli import synco, write_tree
from tests.support.scripts import root, toml_script

pytestmark = pytest.mark.usefixtures("rsync")


def blocking_script(tmp_path: Path) -> Path:
    write_tree(tmp_path / "a", {"d/f": "1"})
    hold = [
        "sh",
        "-c",
        f"touch {tmp_path}/started; while [ ! -e {tmp_path}/release ]; do sleep 0.05; done",
    ]
    return toml_script(
        tmp_path / "s.toml",
        master="s01",
        servers={"s01": root(tmp_path / "a"), "s02": root(tmp_path / "b")},
        directories=[{"path": "d"}],
        extra=f"[events]\nprepare = [{hold!r}]\n".replace("'", '"'),
    )


def start(script: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "synco.cli.main", "run", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def test_second_run_is_refused(tmp_path: Path) -> None:
    script = blocking_script(tmp_path)
    first = start(script)
    try:
        wait_for(tmp_path / "started")
        second = synco("run", str(script))
        assert second.returncode == 1
        assert f"another run of {script} is in progress (pid {first.pid}" in second.stderr
        link = tmp_path / "other name.toml"
        link.symlink_to(script)
        for spelling in (os.path.relpath(script), str(link), f"{tmp_path}/./{script.name}"):
            assert synco("run", spelling).returncode == 1, spelling
        assert not (tmp_path / "b").exists()
        assert synco("run", "--dry-run", str(script)).returncode == 0  # a dry run changes nothing
    finally:
        (tmp_path / "release").touch()
        first.communicate(timeout=60)
    assert first.returncode == 0


def test_killed_run_leaves_no_stale_lock(tmp_path: Path) -> None:
    script = blocking_script(tmp_path)
    first = start(script)
    wait_for(tmp_path / "started")
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate(timeout=30)
    (tmp_path / "release").touch()
    result = synco("run", str(script))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "b" / "d" / "f").read_text() == "1"
