"""The systemd unit and the default configuration that packages install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.agents import issue_certificates
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
    # as installed: with the certificates its comments say how to make, in place of /etc/synco
    certs = issue_certificates(tmp_path / "etc", ["web1"])
    installed = tmp_path / "synco.toml"
    text = config.read_text().replace("/etc/synco", str(certs)).replace("/var/lib/synco", str(tmp_path))
    installed.write_text(text)
    checked = subprocess.run(
        [sys.executable, "-m", "synco.node.main", "--config", str(installed), "--as", "web1", "--check"],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
