"""`synco-agent --check` opens what the agent needs (certificates, state, root, rsync) and
names each problem, without starting the agent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.agents import issue_certificates

SCRIPT = """\
master = "s01"
[agent]
state_dir = "{d}/state"
control_socket = "{d}/run/{{server}}.sock"
ca_file = "{certs}/ca.pem"
cert_file = "{certs}/{{server}}.pem"
key_file = "{certs}/{{server}}.key"
[servers.s01]
root = "{d}/s01"
agent = "127.0.0.1:7301"
[servers.s02]
root = "{d}/s02"
agent = "127.0.0.1:7302"
[[directories]]
path = "srv"
"""


def check(directory: Path, certs: Path, name: str = "s01") -> subprocess.CompletedProcess[str]:
    config = directory / "cluster.toml"
    config.write_text(SCRIPT.format(d=directory, certs=certs))
    return subprocess.run(
        [sys.executable, "-m", "synco.node.main", "--config", str(config), "--as", name, "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def failures(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("FAIL")]


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    return issue_certificates(tmp_path / "certs", ["s01", "s02"])


def test_a_ready_server_passes(tmp_path: Path, certs: Path) -> None:
    result = check(tmp_path, certs)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok    certificate" in result.stdout and "for s01, issued by the cluster CA" in result.stdout
    assert "matches the certificate" in result.stdout
    assert "none yet (a first start)" in result.stdout
    assert not (tmp_path / "state").exists()  # a check creates nothing


def test_missing_certificates_are_named(tmp_path: Path) -> None:
    result = check(tmp_path, tmp_path / "nowhere")
    assert result.returncode == 2
    assert len(failures(result)) == 3 and all("cannot read" in line for line in failures(result))


def test_certificate_from_another_ca(tmp_path: Path, certs: Path) -> None:
    other = issue_certificates(tmp_path / "other", ["s01"])
    for suffix in ("pem", "key"):
        (certs / f"s01.{suffix}").write_bytes((other / f"s01.{suffix}").read_bytes())
    result = check(tmp_path, certs)
    assert result.returncode == 2
    assert "not issued by the cluster CA" in "".join(failures(result))


def test_certificate_of_another_server(tmp_path: Path, certs: Path) -> None:
    result = check(tmp_path, certs, name="s02")
    assert result.returncode == 0
    for suffix in ("pem", "key"):
        (certs / f"s02.{suffix}").write_bytes((certs / f"s01.{suffix}").read_bytes())
    result = check(tmp_path, certs, name="s02")
    assert result.returncode == 2
    assert "names s01 (CN), not s02: peers would refuse it" in "".join(failures(result))


def test_key_of_another_certificate_or_readable_by_others(tmp_path: Path, certs: Path) -> None:
    os.chmod(certs / "s01.key", 0o644)
    result = check(tmp_path, certs)
    assert result.returncode == 2 and "readable by others" in "".join(failures(result))
    (certs / "s01.key").write_bytes((certs / "s02.key").read_bytes())
    os.chmod(certs / "s01.key", 0o600)
    result = check(tmp_path, certs)
    assert result.returncode == 2 and "does not match the certificate" in "".join(failures(result))


def test_unreadable_state_fails(tmp_path: Path, certs: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state/s01.json").write_text("{torn")
    result = check(tmp_path, certs)
    assert result.returncode == 2 and "s01.json is unreadable" in "".join(failures(result))


def test_agent_refuses_to_start_with_a_certificate_for_another_server(tmp_path: Path, certs: Path) -> None:
    for suffix in ("pem", "key"):
        (certs / f"s02.{suffix}").write_bytes((certs / f"s01.{suffix}").read_bytes())
    config = tmp_path / "cluster.toml"
    config.write_text(SCRIPT.format(d=tmp_path, certs=certs))
    result = subprocess.run(
        [sys.executable, "-m", "synco.node.main", "--config", str(config), "--as", "s02"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "names s01 (CN), not s02" in result.stderr
