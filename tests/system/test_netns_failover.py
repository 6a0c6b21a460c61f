"""Automatic failover with real agents on hosts in network namespaces (each with its sshd, the
agents talking mutual TLS) and BIND's primary and secondary on hosts of their own: a crash,
a pause, partitions, a DNS outage, a flapping link, a witness, and a winner that must catch
up from a priority-0 replica first.

Every scenario ends the same way (`converge`): exactly one node acts as master, both DNS
servers name it with its epoch, every replica's tree equals the master's, and every file
written on any node is on the master or kept aside on the node it was written on."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.support.agents import issue_certificates
from tests.support.failover_hosts import (
    DNS_HOSTS,
    THREE,
    DnsAnswer,
    FailoverHosts,
    Member,
    Timings,
    failover_hosts,
)

pytestmark = pytest.mark.usefixtures("rsync")
Build = Callable[[Sequence[Member]], FailoverHosts]
LEASE = Timings().lease


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One CA and certificate per name, for every test's cluster (issuing them takes seconds)."""
    return issue_certificates(tmp_path_factory.mktemp("certs"), ["s01", "s02", "s03", "w1"])


@pytest.fixture
def build(tmp_path: Path, certs: Path) -> Iterator[Build]:
    with ExitStack() as stack:
        yield lambda members: stack.enter_context(failover_hosts(tmp_path, members, certs=certs))


@pytest.fixture
def hosts(build: Build) -> FailoverHosts:
    return build(THREE)


def converge(hosts: FailoverHosts) -> str:
    """Every link up and every agent running; then the end every scenario must reach. The master."""
    for host in list(hosts.cut_off):
        hosts.heal(host)
    for name in list(hosts.paused):
        hosts.resume(name)
    for name in hosts.names:
        if name not in hosts.agents:
            hosts.start(name)
    master = hosts.wait_for_master()
    hosts.wait_replicated(master)
    assert hosts.lost(master) == []
    assert hosts.acting() == [master]
    return master


def replicated_start(hosts: FailoverHosts) -> tuple[str, int]:
    """The first master and its epoch, once a file written on it reached every replica."""
    first = hosts.wait_for_master()
    hosts.write(first, {f"{first}/before": "replicated before anything happens"})
    hosts.wait_replicated(first)
    return first, hosts.epoch(first)


def epochs(hosts: FailoverHosts) -> dict[str, int]:
    """Each live node's epoch, as its own status says."""
    statuses = hosts.statuses()
    assert all(s is not None for s in statuses.values()), statuses
    return {n: s.local.heartbeat.epoch for n, s in statuses.items() if s is not None}


def test_the_masters_agent_killed_a_replica_is_elected_and_dns_moves(hosts: FailoverHosts) -> None:
    first, epoch = replicated_start(hosts)
    hosts.kill(first)
    hosts.write(first, {f"{first}/late": "written after its agent died"})
    winner = hosts.wait_for_master(timeout=20)
    assert winner != first and hosts.epoch(winner) > epoch
    assert f"{winner}: epoch {hosts.epoch(winner)}, voted for {winner}" in hosts.log(winner)
    hosts.write(winner, {f"{winner}/new": "written on the new master"})
    assert converge(hosts) == winner
    # synco-ctl, run in this machine's own namespace, reaches the agent on its host
    shown = hosts.ctl(first, "status", "--json")
    assert shown.returncode == 0, shown.stderr
    beat = json.loads(shown.stdout)["local"]["heartbeat"]
    assert (beat["acting"], beat["master"]) == (False, winner)


def test_the_master_paused_past_its_lease_does_not_act_when_resumed(hosts: FailoverHosts) -> None:
    first, epoch = replicated_start(hosts)
    hosts.pause(first)
    hosts.write(first, {f"{first}/paused": "written while its agent was frozen"})
    winner = hosts.wait_for_master(timeout=20)
    assert winner != first
    new_epoch = hosts.epoch(winner)
    hosts.write(winner, {f"{winner}/new": "written on the new master"})
    hosts.resume(first)
    # from its first answer on, it does not act: its lease ran out while it was frozen

    def followed() -> bool:
        status = hosts.status(first)
        assert status is not None, f"{first} does not answer after SIGCONT"
        assert not status.local.heartbeat.acting, f"{first} acts after its lease ran out: {status.local}"
        return status.local.heartbeat.epoch == new_epoch

    hosts.wait(followed, f"{first} in epoch {new_epoch}", timeout=15)
    assert hosts.acting() == [winner]
    log = hosts.log(first)
    assert "could not renew its lease" in log or f"leads epoch {new_epoch}: stepping down" in log, log
    assert converge(hosts) == winner
    assert epoch < new_epoch


def test_a_master_cut_off_stops_acting_and_rejoins_with_its_writes_kept_aside(hosts: FailoverHosts) -> None:
    first, _ = replicated_start(hosts)
    hosts.cut(first)
    cut_at = time.monotonic()
    hosts.write(first, {f"{first}/cut-1": "written on the old master just after the cut"})
    hosts.wait(lambda: hosts.acting([first]) == [], f"{first} stops acting", timeout=10)
    stopped = time.monotonic() - cut_at
    assert stopped < LEASE + 3, f"{first} still acted {stopped:.1f} s after it was cut off"
    assert "could not renew its lease with a majority" in hosts.log(first)
    hosts.write(first, {f"{first}/cut-2": "written on the old master after it stopped acting"})
    winner = hosts.wait_for_master(timeout=20)  # all three asked: the cut one does not act
    assert winner != first
    hosts.write(winner, {f"{winner}/new": "written on the new master", f"{first}/cut-1": "conflict"})
    hosts.hold(lambda: hosts.acting() == [winner], 1.0, "one master while the old one is cut off")
    hosts.heal(first)
    assert converge(hosts) == winner
    kept = hosts.kept_aside(first)
    assert kept[f"{first}/cut-1"] == ["written on the old master just after the cut"]
    assert kept[f"{first}/cut-2"] == ["written on the old master after it stopped acting"]


def test_a_replica_cut_off_changes_nothing(hosts: FailoverHosts) -> None:
    first, epoch = replicated_start(hosts)
    cut = next(n for n in hosts.names if n != first)
    hosts.cut(cut)
    hosts.write(first, {f"{first}/during": "written while a replica is cut off"})
    hosts.wait(
        lambda: hosts.log(cut).count(f"pre-vote for epoch {epoch + 1} failed") >= 2,
        f"{cut} lost its master and asked for pre-votes in vain, twice",
        timeout=15,
    )
    hosts.hold(lambda: hosts.acting() == [first], 1.0, f"{first} still the only master")
    hosts.heal(cut)
    assert converge(hosts) == first
    assert epochs(hosts) == dict.fromkeys(hosts.names, epoch)
    assert "stepping down" not in hosts.log(first)
    assert hosts.dns() == [DnsAnswer(first, epoch)] * 2


def test_no_master_acts_while_dns_cannot_be_written_then_the_failover_completes(
    hosts: FailoverHosts,
) -> None:
    first, epoch = replicated_start(hosts)
    for host in DNS_HOSTS:
        hosts.cut(host)
    hosts.kill(first)

    def elected() -> bool:
        return any(
            s is not None
            and s.local.heartbeat.epoch > epoch
            and s.local.election.startswith("elected in epoch")
            for s in hosts.statuses().values()
        )

    hosts.wait(elected, "a replica elected, unable to publish", timeout=20)

    def nobody_acts() -> bool:
        statuses = hosts.statuses()
        assert all(s is not None for s in statuses.values()), statuses
        return not any(s.local.heartbeat.acting for s in statuses.values() if s is not None)

    hosts.hold(nobody_acts, 3 * LEASE, "no node acts while DNS cannot be written")
    assert hosts.dns() == [DnsAnswer(first, epoch)] * 2
    for host in DNS_HOSTS:
        hosts.heal(host)
    healed = hosts.wait(lambda: len(hosts.acting()) == 1, "a master once DNS is back", timeout=20)
    winner = hosts.wait_for_master()
    new_epoch = hosts.epoch(winner)
    assert winner != first and new_epoch > epoch
    assert f"{winner}: DNS for epoch {new_epoch}: failed" in hosts.log(winner)
    print(f"{winner} acted {healed:.1f} s after DNS came back")
    hosts.write(winner, {f"{winner}/new": "written on the new master"})
    assert converge(hosts) == winner


def test_a_flapping_link_on_the_master_shorter_than_the_lease_causes_no_failover(
    hosts: FailoverHosts,
) -> None:
    """The link goes down for 0.2 s and up for 0.4 s, again and again for 5 s: every outage
    far shorter than the lease, at the IP level too (see pin_neighbours).

    Not down 0.3 s and up 0.3 s: with that period (0.6 s), TCP's retransmissions (after
    0.2, 0.6, 1.4, 3.0 s: the timeout doubles from 200 ms) can all fall into outages, and a
    bare gRPC echo (no agent) then went without an answer for 1.5 to 6 s in half of our 30 s
    runs, longer than any lease: a failover is then right. Outages of 0.2 s are over before
    the first retransmission."""
    hosts.pin_neighbours()
    first, epoch = replicated_start(hosts)
    done = threading.Event()

    def flap() -> None:
        try:
            while not done.is_set():
                hosts.network.cut(first)
                time.sleep(0.2)
                hosts.network.heal(first)
                time.sleep(0.4)
        finally:
            hosts.network.heal(first)

    flapping = threading.Thread(target=flap)
    flapping.start()
    try:
        for index in range(10):
            hosts.write(first, {f"{first}/flap-{index}": "written while its link flaps"})
            time.sleep(0.5)
    finally:
        done.set()
        flapping.join()
    assert converge(hosts) == first
    assert epochs(hosts) == dict.fromkeys(hosts.names, epoch)
    assert hosts.dns() == [DnsAnswer(first, epoch)] * 2


def test_two_servers_and_a_witness_fail_over(build: Build) -> None:
    hosts = build((Member("s01"), Member("s02"), Member("w1", role="witness")))
    first, epoch = replicated_start(hosts)
    assert first in ("s01", "s02")
    other = "s02" if first == "s01" else "s01"
    hosts.kill(first)
    assert hosts.wait_for_master(timeout=20) == other
    assert hosts.epoch(other) > epoch
    hosts.write(other, {f"{other}/new": "written on the new master"})
    assert converge(hosts) == other
    assert not hosts.root("w1").exists()


def test_the_winner_catches_up_from_a_priority_0_replica_that_is_ahead(build: Build) -> None:
    hosts = build((Member("s01"), Member("s02"), Member("s03", priority=0)))
    first, _ = replicated_start(hosts)
    assert first != "s03"
    eligible = "s02" if first == "s01" else "s01"
    hosts.pause(eligible)
    newest = {f"{first}/newest-{i}": "only s03 pulled it" for i in range(3)}
    hosts.write(first, newest)
    hosts.wait(lambda: newest.items() <= hosts.tree("s03").items(), "s03 pulled the newest files")

    def recorded() -> bool:  # (the files land before the pull ends and s03 records it)
        master, s03 = hosts.status(first), hosts.status("s03")
        if master is None or s03 is None:
            return False
        return s03.local.heartbeat.generation >= master.local.heartbeat.generation

    hosts.wait(recorded, "s03 recorded the master's newest generation")
    # the master's host is lost, not only its agent: its sshd would serve the newest files
    hosts.cut(first)
    hosts.kill(first)
    hosts.resume(eligible)
    assert hosts.wait_for_master(timeout=25) == eligible
    assert f"{eligible}: catching up from s03" in hosts.log(eligible)
    assert newest.items() <= hosts.tree(eligible).items()
    assert converge(hosts) == eligible
