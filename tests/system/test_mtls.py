"""Agents talking mutual TLS: replication works; callers without a cluster certificate naming a
peer are refused (at the handshake, or by name) and the refusal is logged."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from synco.v1 import peer_pb2, peer_pb2_grpc
from tests.support.agents import CERTS, Cluster, issue_certificates, make_cluster, wait_until
from tests.support.cli import read_tree, write_tree

pytestmark = pytest.mark.usefixtures("rsync")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = make_cluster(tmp_path, ["s01", "s02", "s03"], tls=True)
    try:
        for name in made.names:
            made.start(name)
        yield made
    finally:
        made.stop_all()


def address(cluster: Cluster, name: str) -> str:
    return cluster.config.read_text().split(f"[servers.{name}]")[1].split('agent = "')[1].split('"')[0]


def channel(cluster: Cluster, certs: Path | None, name: str | None, target: str = "s01") -> grpc.Channel:
    ca = (cluster.directory / "certs/ca.pem").read_bytes()
    key = (certs / f"{name}.key").read_bytes() if certs and name else None
    chain = (certs / f"{name}.pem").read_bytes() if certs and name else None
    credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=chain)
    return grpc.secure_channel(
        address(cluster, target), credentials, options=[("grpc.ssl_target_name_override", target)]
    )


def heartbeat(node: str) -> peer_pb2.Heartbeat:
    return peer_pb2.Heartbeat(node=node, protocol_version=1)


def test_replication_over_mutual_tls(cluster: Cluster) -> None:
    write_tree(cluster.root("s01") / "srv", {"secret.txt": "over TLS"})
    wait_until(
        lambda: all(read_tree(cluster.root(n) / "srv") == {"secret.txt": "over TLS"} for n in ("s02", "s03")),
        "replicas over mTLS",
    )
    assert "insecure" not in cluster.log("s01")


def test_callers_without_a_cluster_certificate_are_refused(cluster: Cluster, tmp_path: Path) -> None:
    other_ca = issue_certificates(tmp_path / "other-ca", ["s02"])  # a valid-looking s02 from another CA
    for certs, name in ((other_ca, "s02"), (None, None)):
        with channel(cluster, certs, name) as rogue:
            with pytest.raises(grpc.RpcError) as error:
                peer_pb2_grpc.PeerStub(rogue).SendHeartbeat(heartbeat("s02"), timeout=5)
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]

    subprocess.run(
        [str(CERTS), "issue", str(cluster.directory / "certs"), "intruder"], check=True, capture_output=True
    )
    with channel(cluster, cluster.directory / "certs", "intruder") as intruder:
        with pytest.raises(grpc.RpcError) as error:
            peer_pb2_grpc.PeerStub(intruder).SendHeartbeat(heartbeat("intruder"), timeout=5)
        assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    with channel(cluster, cluster.directory / "certs", "s02") as impostor:
        with pytest.raises(grpc.RpcError) as error:
            peer_pb2_grpc.PeerStub(impostor).SendHeartbeat(heartbeat("s03"), timeout=5)
        assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
        accepted = peer_pb2_grpc.PeerStub(impostor).SendHeartbeat(heartbeat("s02"), timeout=5)
        assert not accepted.accepted  # right identity, but no settings hash: refused politely
    with channel(cluster, cluster.directory / "certs", "intruder") as intruder:
        with pytest.raises(grpc.RpcError) as error:
            health_pb2_grpc.HealthStub(intruder).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    with channel(cluster, cluster.directory / "certs", "s02") as peer:
        answer = health_pb2_grpc.HealthStub(peer).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    log = cluster.log("s01")
    assert "CERTIFICATE_VERIFY_FAILED" in log  # the other CA's certificate, logged by gRPC's TLS layer
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in log  # no certificate at all
    assert "refused a caller: certificate for 'intruder', which is not a peer of s01" in log
    assert "certificate for 's02' but the call claims to be 's03'" in log
    write_tree(cluster.root("s01") / "srv", {"still": "serving"})
    wait_until(lambda: (cluster.root("s02") / "srv/still").exists(), "still replicating")
