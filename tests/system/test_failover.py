"""Automatic failover with real agents, rsync over sshd and BIND (primary and secondary): the
master's agent is killed, a replica is elected, moves the DNS name compare-and-set and acts;
the old master comes back as a replica and keeps aside what it alone held."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from synco.core.dns_records import absolute
from synco.core.model import DnsSettings
from synco.dns_client import Authority, parse_server
from tests.support.agents import Cluster, wait_until
from tests.support.cli import read_tree, write_tree
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
        for n in NAMES
    )
    config = tmp_path / "cluster.toml"
    # a name of its own: the zone is shared with other tests
    master = f"m{free_port()}.{ZONE}"
    config.write_text(
        f'master = "{master}"\n[method]\narguments = ["--archive", "--delete"]\n'
        f'[agent]\ninsecure = true\nstate_dir = "{tmp_path}/state"\n'
        f'control_socket = "{tmp_path}/run/{{server}}.sock"\n'
        "heartbeat_interval = 0.3\nlease = 1.2\nlease_margin = 0.15\nmaster_poll = 0.5\n"
        "periodic_pull = 60\npull_retry = 1\n"
        f'{servers}[[directories]]\npath = "srv"\n{named.toml()}'
    )
    for name in NAMES:
        (tmp_path / name / "srv").mkdir(parents=True)
    made = Cluster(tmp_path, config, NAMES)
    made.master_name = master  # type: ignore[attr-defined]
    try:
        for name in NAMES:
            made.start(name)
        yield made
    finally:
        made.stop_all()


def acting(cluster: Cluster, names: list[str]) -> list[str]:
    """The nodes whose own agent says it acts as master."""
    found = []
    for name in names:
        result = cluster.ctl(name, "status", "--json")
        if result.returncode == 0 and json.loads(result.stdout)["local"]["heartbeat"].get("acting"):
            found.append(name)
    return found


def dns_names(named: DnsCluster, name: str) -> list[str | None]:
    """What the primary and the secondary name as master (the CNAME's first label)."""
    authority = Authority(DnsSettings(zone=ZONE, servers=tuple(named.servers), timeout=1.0))
    answers: list[str | None] = []
    for server in named.servers:
        state = authority.read(name, parse_server(server))
        answers.append(state.values[0].split(".")[0] if state.kind == "cname" else None)
    return answers


def test_killing_the_masters_agent_elects_a_replica_that_moves_dns(
    cluster: Cluster, named: DnsCluster
) -> None:
    name = absolute(cluster.master_name)  # type: ignore[attr-defined]
    wait_until(lambda: len(acting(cluster, NAMES)) == 1, "a master elected at start")
    (first,) = acting(cluster, NAMES)
    rest = [n for n in NAMES if n != first]
    wait_until(lambda: dns_names(named, name) == [first, first], f"DNS names {first} on both servers")
    write_tree(cluster.root(first) / "srv", {"from": first})
    wait_until(
        lambda: all(read_tree(cluster.root(n) / "srv") == {"from": first} for n in rest),
        f"{first} replicated",
    )
    cluster.stop(first, signal.SIGKILL)
    write_tree(cluster.root(first) / "srv", {"from": first, "late.txt": "written after the last pull"})
    wait_until(lambda: len(acting(cluster, rest)) == 1, "a replica acts as master", timeout=20)
    (winner,) = acting(cluster, rest)
    (other,) = [n for n in rest if n != winner]
    wait_until(lambda: dns_names(named, name) == [winner, winner], f"DNS names {winner} on both servers")
    assert f"{winner}: epoch" in cluster.log(winner)
    # (a pull running when the agent died may have copied late.txt: its host still answers)
    write_tree(cluster.root(winner) / "srv", {"from": f"{winner}, the new master"})
    final = read_tree(cluster.root(winner) / "srv")
    wait_until(lambda: read_tree(cluster.root(other) / "srv") == final, f"{winner} replicated to {other}")
    cluster.start(first)  # back: a higher epoch was elected meanwhile, it is a replica now
    wait_until(lambda: read_tree(cluster.root(first) / "srv") == final, f"{first} follows the new master")
    assert acting(cluster, NAMES) == [winner]
    assert dns_names(named, name) == [winner, winner]
    # nothing the old master held is lost: on the new master, or kept aside on the old one
    kept_aside = cluster.directory / "state/kept-aside" / first
    kept = {p.name: p.read_text() for p in kept_aside.rglob("*") if p.is_file()}
    assert kept["from"] == first
    late = "written after the last pull"
    assert final.get("late.txt") == late or kept.get("late.txt") == late, (final, kept)
