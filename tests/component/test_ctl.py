"""synco-ctl against real agents: it needs only the local agent's socket, and its JSON is an
interface (packaging/doc/status-json.md) whose field names stay stable."""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agents import Cluster, make_cluster, wait_until
from tests.support.named import free_port

DOC = Path(__file__).resolve().parents[2] / "packaging" / "doc" / "status-json.md"


class SilentNameserver:
    """A "nameserver" on an unused loopback port that never answers and records whether
    anyone asked it anything (over UDP or TCP)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen()

    def asked(self) -> bool:
        readable, _, _ = select.select([self.udp, self.tcp], [], [], 0)
        return bool(readable)

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()


@pytest.fixture
def nameserver() -> Iterator[SilentNameserver]:
    server = SilentNameserver()
    yield server
    server.close()


def dns_master_cluster(directory: Path, nameserver: SilentNameserver) -> Cluster:
    """Two agents whose master is a DNS name that cannot be resolved: its zone's only
    nameserver never answers."""
    servers = "".join(
        f'[servers.{name}]\nroot = "{directory / name}"\nagent = "127.0.0.1:{free_port()}"\n'
        for name in ("s01", "s02")
    )
    config = directory / "cluster.toml"
    config.write_text(
        'master = "primary.example.test"\n'
        f'[dns]\nzone = "example.test"\nservers = ["127.0.0.1:{nameserver.port}"]\ntimeout = 0.5\n'
        f'[agent]\ninsecure = true\nstate_dir = "{directory}/state/{{server}}"\n'
        f'control_socket = "{directory}/run/{{server}}.sock"\nheartbeat_interval = 0.3\n'
        f'{servers}[[directories]]\npath = "srv"\n'
    )
    (directory / "s01" / "srv").mkdir(parents=True)
    (directory / "run").mkdir()
    return Cluster(directory, config, ["s01", "s02"])


def ctl(config: Path, name: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "synco.ctl", "--config", str(config), "--as", name, *arguments],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_ctl_asks_no_dns_to_reach_the_local_agent(tmp_path: Path, nameserver: SilentNameserver) -> None:
    """With --as, synco-ctl gets past the script to the socket without looking anything up."""
    cluster = dns_master_cluster(tmp_path, nameserver)
    result = ctl(cluster.config, "s01", "status")
    assert result.returncode == 1, result.stderr
    assert "cannot resolve" not in result.stderr
    assert f"the agent did not answer on {tmp_path}/run/s01.sock" in result.stderr
    assert not nameserver.asked()


def test_ctl_status_on_a_node_cut_off_from_dns(tmp_path: Path, nameserver: SilentNameserver) -> None:
    """The agent runs without an answer from DNS (it keeps asking); synco-ctl reaches it."""
    cluster = dns_master_cluster(tmp_path, nameserver)
    cluster.start("s01")
    try:
        result = ctl(cluster.config, "s01", "status", "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["local"]["heartbeat"]["node"] == "s01"
        assert ctl(cluster.config, "s01", "status").returncode == 0
        reader, writer = os.pipe()
        os.close(reader)  # `synco-ctl status | head -1`, once head has exited
        argv = [sys.executable, "-m", "synco.ctl", "--config", str(cluster.config), "--as", "s01", "status"]
        closed = subprocess.run(argv, stdout=writer, stderr=subprocess.PIPE, text=True, timeout=30)
        os.close(writer)
        assert (closed.returncode, closed.stderr) == (141, "")
    finally:
        cluster.stop_all()
    assert "cannot tell who is master" in cluster.log("s01")


def test_agent_state_goes_to_state_dir_with_the_server_substituted(tmp_path: Path) -> None:
    """`{server}` in state_dir is the server's name, as in the other paths of [agent]."""
    cluster = make_cluster(tmp_path, ["s01", "s02"])
    text = cluster.config.read_text()
    cluster.config.write_text(
        text.replace(f'state_dir = "{tmp_path}/state"', f'state_dir = "{tmp_path}/state/{{server}}"')
    )
    cluster.start("s01")
    try:
        wait_until(lambda: (tmp_path / "state" / "s01" / "s01.json").exists(), "s01's state file")
        assert (tmp_path / "state" / "s01" / "s01.lock").exists()
        checked = subprocess.run(
            [
                sys.executable,
                "-m",
                "synco.node.main",
                "--config",
                str(cluster.config),
                "--as",
                "s01",
                "--check",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert f"state {tmp_path}/state/s01/s01.json" in checked.stdout, checked.stdout
    finally:
        cluster.stop_all()
    assert not (tmp_path / "state" / "{server}").exists()


# The field names of `synco-ctl status --json` (proto3 JSON mapping of ClusterStatus):
# scripts rely on them. Adding one is fine once it is documented; renaming or removing one
# breaks scripts and needs a note in the release.
TOP_LEVEL = {"local", "peers"}
NODE = {
    "heartbeat",
    "verdict",
    "masterGeneration",
    "lastPullUnixMs",
    "lastPullOk",
    "lastPullMessage",
    "lastPullSeconds",
    "lagSeconds",
    "latestSnapshot",
    "nextSnapshotUnixMs",
    "election",
    "leaseRemaining",
    "failoverOff",
    "dnsLagging",
    "lastElection",
    "candidate",
    "phase",
}
NODE_WHEN_SET = {"promotion"}  # a message: shown once the node took part in a promote
HEARTBEAT = {
    "node",
    "role",
    "epoch",
    "generation",
    "health",
    "protocolVersion",
    "settingsHash",
    "master",
    "sentUnixMs",
    "paused",
    "healthReason",
    "unwatched",
    "dataEpoch",
    "ineligible",
    "leaseSeconds",
    "renewalSent",
    "acting",
    "failoverPaused",
    "pauseVersion",
    "pauseNote",
}
PEER = {"node", "status", "lastHeartbeatUnixMs", "reachable", "error"}


def documented_fields() -> set[str]:
    """The field names the document describes: the `name` in the first column of its tables."""
    return set(re.findall(r"^\| `([A-Za-z]+)` \|", DOC.read_text(), re.MULTILINE))


def test_status_json_field_names_are_stable_and_documented(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path, ["s01", "s02"])
    cluster.start("s01")
    cluster.start("s02")
    try:

        def status() -> dict[str, object]:
            result = cluster.ctl("s02", "status", "--json")
            assert result.returncode == 0, result.stderr
            answer: dict[str, object] = json.loads(result.stdout)
            return answer

        wait_until(
            lambda: all("status" in peer for peer in status()["peers"]),  # type: ignore[attr-defined]
            "s02 hearing from s01",
        )
        answer = status()
    finally:
        cluster.stop_all()
    assert set(answer) == TOP_LEVEL
    local = answer["local"]
    assert isinstance(local, dict) and set(local) == NODE and set(local["heartbeat"]) == HEARTBEAT
    peers = answer["peers"]
    assert isinstance(peers, list) and [p["node"] for p in peers] == ["s01"]
    assert set(peers[0]) == PEER
    assert set(peers[0]["status"]) == NODE and set(peers[0]["status"]["heartbeat"]) == HEARTBEAT
    assert documented_fields() == TOP_LEVEL | NODE | NODE_WHEN_SET | HEARTBEAT | PEER
