"""synco-ctl status as a table: a node that is not ok says why, under the table."""

from __future__ import annotations

from synco.ctl import table
from synco.v1 import control_pb2, peer_pb2


def test_a_node_that_is_not_ok_says_why() -> None:
    local = peer_pb2.NodeStatus(
        heartbeat=peer_pb2.Heartbeat(
            node="s02",
            role=peer_pb2.ROLE_REPLICA,
            health=peer_pb2.HEALTH_DEGRADED,
            health_reason="no heartbeat from master s01 for over 3 s",
        ),
        verdict="no heartbeat from master s01 for over 3 s; in sync with s01 at generation 4",
    )
    master = peer_pb2.NodeStatus(
        heartbeat=peer_pb2.Heartbeat(
            node="s01",
            role=peer_pb2.ROLE_MASTER,
            health=peer_pb2.HEALTH_FAILING,
            health_reason="/srv is not mounted",
        )
    )
    text = table(
        control_pb2.ClusterStatus(local=local, peers=[control_pb2.PeerView(node="s01", status=master)])
    )
    lines = text.splitlines()
    assert "s02 is degraded: no heartbeat from master s01 for over 3 s" in lines
    assert "s01 is failing: /srv is not mounted" in lines
    assert lines[-1] == "s02: no heartbeat from master s01 for over 3 s; in sync with s01 at generation 4"


LAST = (
    "2026-12-02T03:00:00Z: won epoch 4; s03: older data (epoch 3 generation 6 < s02's epoch 3 generation 7)"
)


def test_the_election_shows_under_the_verdict() -> None:
    local = peer_pb2.NodeStatus(
        heartbeat=peer_pb2.Heartbeat(node="s02", role=peer_pb2.ROLE_MASTER, epoch=4, acting=True),
        verdict="master of epoch 4, generation 7",
        election="master of epoch 4",
        lease_remaining=1.62,
        last_election=LAST,
        dns_lagging=["192.0.2.53"],
    )
    witness = peer_pb2.NodeStatus(
        heartbeat=peer_pb2.Heartbeat(node="w1", role=peer_pb2.ROLE_WITNESS, epoch=4)
    )
    text = table(
        control_pb2.ClusterStatus(
            local=local, peers=[control_pb2.PeerView(node="w1", status=witness, reachable=True)]
        )
    )
    lines = text.splitlines()
    assert lines[-7:] == [
        "s02: master of epoch 4, generation 7",
        "election: master of epoch 4 (lease 1.6 s left)",
        f"last election: {LAST}",
        "DNS not serving this master yet: 192.0.2.53",
        "automatic failover: on (synco-ctl pause stops it cluster-wide)",
        "candidates: s02 (master)",
        "not candidates: w1 (a witness holds no data)",
    ]
    assert any(line.startswith("w1") and "witness" in line for line in lines)


def test_a_paused_cluster_and_each_nodes_candidacy() -> None:
    paused = {
        "failover_paused": True,
        "pause_version": 3,
        "pause_note": "2026-12-02T05:00:00Z: paused on s01",
    }
    local = peer_pb2.NodeStatus(
        heartbeat=peer_pb2.Heartbeat(node="s01", role=peer_pb2.ROLE_MASTER, epoch=4, acting=True, **paused),
        verdict="master of epoch 4, generation 7",
        election="master of epoch 4",
    )
    zero = peer_pb2.NodeStatus(
        heartbeat=peer_pb2.Heartbeat(node="s03", role=peer_pb2.ROLE_REPLICA, epoch=4, **paused),
        candidate="priority 0",
    )
    heard = peer_pb2.NodeStatus(  # its status did not answer: what its heartbeat said
        heartbeat=peer_pb2.Heartbeat(
            node="s02", role=peer_pb2.ROLE_REPLICA, epoch=4, ineligible="failing: /srv is not mounted"
        )
    )
    peers = [control_pb2.PeerView(node=n.heartbeat.node, status=n, reachable=True) for n in (zero, heard)]
    lines = table(control_pb2.ClusterStatus(local=local, peers=peers)).splitlines()
    assert lines[-3:] == [
        "automatic failover: PAUSED cluster-wide (2026-12-02T05:00:00Z: paused on s01): synco-ctl resume",
        "candidates: s01 (master)",
        "not candidates: s03 (priority 0); s02 (failing: /srv is not mounted)",
    ]


def test_a_cluster_without_failover_says_why() -> None:
    local = peer_pb2.NodeStatus(
        heartbeat=peer_pb2.Heartbeat(node="s02", role=peer_pb2.ROLE_REPLICA),
        verdict="in sync with s01 at generation 4",
        failover_off="the master is named in the script (s01)",
    )
    lines = table(control_pb2.ClusterStatus(local=local)).splitlines()
    assert lines[-1] == "automatic failover: off (the master is named in the script (s01))"
