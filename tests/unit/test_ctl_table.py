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
