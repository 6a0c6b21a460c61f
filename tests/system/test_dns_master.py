"""Agents whose master is a DNS name (real BIND) without automatic failover (two voters:
s03 does not vote): moving the record by hand moves replication."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agents import Cluster, wait_until
from tests.support.cli import read_tree, synco, write_tree
from tests.support.named import ZONE, DnsCluster, free_port
from tests.support.sshd import Sshd

pytestmark = pytest.mark.usefixtures("rsync")
NAMES = ["s01", "s02", "s03"]


@pytest.fixture
def cluster(tmp_path: Path, named: DnsCluster, sshd: Sshd) -> Iterator[Cluster]:
    servers = "".join(
        f"[servers.{n}]\n"
        + sshd.server_toml(f"{n}.{ZONE}", connect_to="127.0.0.1")
        + f'root = "{tmp_path / n}"\nagent = "127.0.0.1:{free_port()}"\n'
        + ("voter = false\n" if n == "s03" else "")
        for n in NAMES
    )
    config = tmp_path / "cluster.toml"
    config.write_text(
        f'master = "primary.{ZONE}"\n[method]\narguments = ["--archive", "--delete"]\n'
        f'[agent]\ninsecure = true\nstate_dir = "{tmp_path}/state"\n'
        f'control_socket = "{tmp_path}/run/{{server}}.sock"\n'
        "heartbeat_interval = 0.3\nmaster_poll = 0.5\nperiodic_pull = 60\npull_retry = 1\n"
        f'{servers}[[directories]]\npath = "srv"\n{named.toml()}'
    )
    (tmp_path / "s01" / "srv").mkdir(parents=True)
    made = Cluster(tmp_path, config, NAMES)
    try:
        for name in NAMES:
            made.start(name)
        yield made
    finally:
        made.stop_all()


def test_moving_the_record_moves_replication(cluster: Cluster) -> None:
    write_tree(cluster.root("s01") / "srv", {"from": "s01"})
    wait_until(lambda: all((cluster.root(n) / "srv/from").exists() for n in ("s02", "s03")), "s01 replicated")
    # s01 goes down with writes its replicas never saw; the name then moves to s02
    assert cluster.stop("s01") == 0
    write_tree(cluster.root("s01") / "srv", {"from": "s01, changed late", "late.txt": "never replicated"})
    moved = synco("dns", "set", str(cluster.config), "s02", "--expect", "s01")
    assert moved.returncode == 0, moved.stderr
    wait_until(
        lambda: all("master is now s02" in cluster.log(n) for n in ("s02", "s03")), "s02 and s03 follow"
    )
    wait_until(
        lambda: "s02: master at generation 1" in cluster.log("s02"), "s02 watches (generation 1 announced)"
    )
    write_tree(cluster.root("s02") / "srv", {"from": "s02, the new master"})
    cluster.start("s01")  # back as a replica of s02
    wait_until(
        lambda: all(
            read_tree(cluster.root(n) / "srv") == {"from": "s02, the new master"} for n in ("s01", "s03")
        ),
        "s02 replicated to s01 and s03",
    )
    assert "master at generation" in cluster.log("s02")
    # nothing s01 held is lost: what the new master's copy replaced or deleted was kept aside
    kept = {
        p.name: p.read_text() for p in (cluster.directory / "state/kept-aside/s01").rglob("*") if p.is_file()
    }
    assert kept == {"from": "s01, changed late", "late.txt": "never replicated"}
