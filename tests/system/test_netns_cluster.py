"""Three agents on three hosts (network namespaces joined by a bridge), each with its own sshd:
replicas pull from the master over the network, through ssh, talking mutual TLS."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.agents import issue_certificates, wait_until
from tests.support.cli import read_tree, write_tree
from tests.support.components import need
from tests.support.netns import Network, make_network
from tests.support.sshd import prepare_sshd

pytestmark = pytest.mark.usefixtures("rsync")
NAMES = ["s01", "s02", "s03"]


@dataclass
class Hosts:
    network: Network
    directory: Path
    config: Path

    def root(self, name: str) -> Path:
        return self.directory / name

    def log(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text(errors="replace")


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Hosts]:
    sshd = need("sshd")
    network = make_network(NAMES)
    try:
        addresses = [network.address(n) for n in NAMES]
        files = prepare_sshd(tmp_path / "ssh", ["0.0.0.0"], 22, addresses)
        for name in NAMES:
            config = tmp_path / "ssh" / f"sshd_config.{name}"
            config.write_text(files.config.read_text().replace("sshd.pid", f"sshd.{name}.pid"))
            network.spawn(name, [sshd, "-D", "-e", "-f", str(config)], str(tmp_path / f"sshd.{name}.log"))
        for name in NAMES:
            wait_until(
                lambda n=name: (
                    "Server listening on 0.0.0.0 port 22"  # type: ignore[misc]
                    in (tmp_path / f"sshd.{n}.log").read_text(errors="replace")
                ),
                f"sshd in {name}",
            )
        certs = issue_certificates(tmp_path / "certs", NAMES)
        options = ", ".join(
            f'"{o}"'
            for o in [
                "-o",
                f"UserKnownHostsFile={files.known_hosts}",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "IdentitiesOnly=yes",
            ]
        )
        servers = "".join(
            f'[servers.{n}]\nhost = "{network.address(n)}"\nuser = "root"\nport = 22\n'
            f'identity_file = "{files.user_key}"\nssh_options = [{options}]\nroot = "{tmp_path / n}"\n'
            f'agent = "{network.address(n)}:7300"\n'
            for n in NAMES
        )
        config = tmp_path / "cluster.toml"
        config.write_text(
            'master = "s01"\n[method]\narguments = ["--archive", "--delete"]\n'
            f'[agent]\nstate_dir = "{tmp_path}/state"\ncontrol_socket = "{tmp_path}/run/{{server}}.sock"\n'
            f'ca_file = "{certs}/ca.pem"\ncert_file = "{certs}/{{server}}.pem"\n'
            f'key_file = "{certs}/{{server}}.key"\n'
            f'heartbeat_interval = 0.3\n{servers}[[directories]]\npath = "srv"\n'
        )
        (tmp_path / "s01" / "srv").mkdir(parents=True)
        for name in NAMES:
            network.spawn(
                name,
                [sys.executable, "-m", "synco.node.main", "--config", str(config), "--as", name, "-v"],
                str(tmp_path / f"{name}.log"),
            )
        for name in NAMES:
            wait_until(lambda n=name: (tmp_path / "run" / f"{n}.sock").exists(), f"agent {name}")  # type: ignore[misc]
        yield Hosts(network, tmp_path, config)
    finally:
        network.destroy()


def test_replicas_follow_the_master_across_hosts(hosts: Hosts) -> None:
    srv = hosts.root("s01") / "srv"
    write_tree(srv, {"index.html": "v1", "deep/file": "deep"})

    def replicas_equal() -> bool:
        master = read_tree(srv)
        return all(read_tree(hosts.root(n) / "srv") == master for n in ("s02", "s03"))

    wait_until(lambda: replicas_equal() and (hosts.root("s03") / "srv/index.html").exists(), "creates")
    (srv / "index.html").write_text("version 2, longer")
    (srv / "deep/file").rename(srv / "moved")
    time.sleep(0.1)
    (srv / "moved").unlink()
    wait_until(
        lambda: (
            replicas_equal() and read_tree(hosts.root("s02") / "srv") == {"index.html": "version 2, longer"}
        ),
        "modify, rename, delete",
    )
    sshd_log = (hosts.directory / "sshd.s01.log").read_text(errors="replace")
    assert "Accepted publickey for root from 10.213.7.2" in sshd_log  # s02 pulled over the network
    assert "Accepted publickey for root from 10.213.7.3" in sshd_log
    wait_until(lambda: "in sync with s01" in hosts.log("s02"), "s02 in sync")


def test_a_burst_of_ten_thousand_files_across_hosts(hosts: Hosts) -> None:
    srv = hosts.root("s01") / "srv"
    for index in range(10_000):
        path = srv / f"d{index % 100:02d}" / f"f{index:05d}"
        path.parent.mkdir(exist_ok=True)
        path.write_text(str(index))

    def complete() -> bool:
        return all(sum(1 for _ in (hosts.root(n) / "srv").rglob("f*")) == 10_000 for n in ("s02", "s03"))

    wait_until(complete, "10k files on both replicas over ssh", timeout=180)
    assert read_tree(hosts.root("s02") / "srv") == read_tree(srv)


def test_a_replica_cut_off_catches_up_within_seconds_of_the_heal(hosts: Hosts) -> None:
    """A 15 s cut between s02 and everyone: changes written meanwhile reach s02 within a few
    seconds of the heal (it learns the generation from the master's heartbeats, its broken
    change stream is replaced), and while cut off it says that its master is silent."""
    srv = hosts.root("s01") / "srv"
    write_tree(srv, {"before": "the cut"})
    wait_until(lambda: (hosts.root("s02") / "srv/before").exists(), "s02 before the cut")
    hosts.network.cut("s02")
    cut_at = time.monotonic()
    try:
        time.sleep(1)
        write_tree(srv, {"during": "the cut"})
        wait_until(lambda: (hosts.root("s03") / "srv/during").exists(), "s03 during the cut")
        wait_until(lambda: "no heartbeat from master s01" in hosts.log("s02"), "s02 says s01 is silent")
        time.sleep(max(0.0, cut_at + 15 - time.monotonic()))
    finally:
        hosts.network.heal("s02")
    healed = time.monotonic()
    wait_until(lambda: (hosts.root("s02") / "srv/during").exists(), "s02 after the heal", timeout=10)
    print(f"caught up {time.monotonic() - healed:.1f} s after the heal")
    assert read_tree(hosts.root("s02") / "srv") == read_tree(srv)
