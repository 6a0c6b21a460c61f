"""The agent's control socket: private, and never in a directory others can write to."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.agents import make_cluster


def test_the_socket_is_private(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path, ["s01", "s02"])
    try:
        cluster.start("s01")
        mode = stat.S_IMODE(os.stat(tmp_path / "run" / "s01.sock").st_mode)
        assert mode & 0o077 == 0, f"socket mode {mode:04o}"
    finally:
        cluster.stop_all()


@pytest.mark.parametrize("mode", [0o1777, 0o777, 0o775])
def test_a_directory_others_can_write_to_is_refused_and_left_alone(tmp_path: Path, mode: int) -> None:
    cluster = make_cluster(tmp_path, ["s01", "s02"])
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, mode)
    cluster.config.write_text(
        cluster.config.read_text().replace(f"{tmp_path}/run/{{server}}.sock", f"{shared}/{{server}}.sock")
    )
    result = subprocess.run(
        [sys.executable, "-m", "synco.node.main", "--config", str(cluster.config), "--as", "s01"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert f"agent.control_socket: {shared} is writable by" in result.stderr
    assert stat.S_IMODE(os.stat(shared).st_mode) == mode, "the agent changed the directory's mode"
    assert not (shared / "s01.sock").exists()
