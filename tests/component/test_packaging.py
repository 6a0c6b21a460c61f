"""The systemd unit and the default configuration that packages install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.cli import synco
from tests.support.components import need

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"


def verify(unit: str, directory: Path) -> subprocess.CompletedProcess[str]:
    path = directory / "synco-agent.service"
    agent = Path(sys.executable).parent / "synco-agent"
    path.write_text(unit.replace("/usr/bin/synco-agent", str(agent)).replace("/bin/kill", "/usr/bin/kill"))
    return subprocess.run([need("systemd-analyze"), "verify", str(path)], capture_output=True, text=True)


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = (PACKAGING / "systemd/synco-agent.service").read_text()
    result = verify(unit, tmp_path)
    assert (result.returncode, result.stderr.strip()) == (0, "")
    settings = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#")
    )
    assert settings["Type"] == "notify" and settings["Restart"] == "on-failure" and "WatchdogSec" in settings
    assert "KillMode" not in settings  # the default (control-group) takes rsync down with the agent
    broken = verify(unit.replace("Type=notify", "Type=notifyy"), tmp_path)
    assert "notifyy" in broken.stderr  # the check can fail


def test_default_configuration_is_valid(tmp_path: Path) -> None:
    config = PACKAGING / "synco.toml"
    assert synco("check", str(config)).returncode == 0
    checked = subprocess.run(
        [sys.executable, "-m", "synco.node.main", "--config", str(config), "--as", "web1", "--check"],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stderr
