"""Automatic failover with real agents, rsync over sshd and BIND (primary and secondary): the
master's agent is killed, a replica is elected, moves the DNS name compare-and-set and acts;
the old master comes back as a replica and keeps aside what it alone held."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from synco.core.dns_records import absolute
from synco.core.model import DnsSettings
from synco.dns_client import Authority, parse_server
from tests.support.agents import Cluster, acting, make_failover_cluster, wait_until
from tests.support.cli import read_tree, synco, write_tree
from tests.support.named import ZONE, DnsCluster
from tests.support.sshd import Sshd

pytestmark = pytest.mark.usefixtures("rsync")
NAMES = ["s01", "s02", "s03"]


@pytest.fixture
def cluster(tmp_path: Path, named: DnsCluster, sshd: Sshd) -> Iterator[Cluster]:
    made = make_failover_cluster(tmp_path, NAMES, sshd, named)
    try:
        for name in NAMES:
            made.start(name)
        yield made
    finally:
        made.stop_all()


def master_of(cluster: Cluster) -> str:
    first = cluster.config.read_text().splitlines()[0]
    return first.split('"')[1]


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
    name = absolute(master_of(cluster))
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


def test_moving_the_name_by_hand_makes_the_agents_elect_the_server_it_names(
    cluster: Cluster, named: DnsCluster
) -> None:
    name = absolute(master_of(cluster))
    wait_until(lambda: len(acting(cluster, NAMES)) == 1, "a master elected at start")
    (first,) = acting(cluster, NAMES)
    write_tree(cluster.root(first) / "srv", {"a": "1"})
    wait_until(
        lambda: all(read_tree(cluster.root(n) / "srv") == {"a": "1"} for n in NAMES), "in sync everywhere"
    )
    target = next(n for n in NAMES if n != first)
    moved = synco("dns", "set", str(cluster.config), target, "--expect", first)
    assert moved.returncode == 0, moved.stderr
    wait_until(lambda: acting(cluster, NAMES) == [target], f"{target} elected", timeout=20)
    wait_until(lambda: dns_names(named, name) == [target, target], f"DNS names {target} with its epoch")
    # whichever node reads the record first adopts its epoch; the others learn it from it
    assert any("DNS carries epoch" in cluster.log(n) for n in NAMES)
