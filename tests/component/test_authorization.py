"""Peer authorization with real mutual TLS, in-process: a Node with certificates from
scripts/certs serves its Peer service on 127.0.0.1 with the credentials the agent uses, and
real gRPC clients call it. Only a cluster certificate naming a peer gets an answer; a
caller without a certificate is refused at the handshake, one naming no peer (or claiming
to be another node) by name."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from synco.config import load_script
from synco.node.node import Node
from synco.node.services import PeerService
from synco.v1 import peer_pb2, peer_pb2_grpc
from tests.support.agents import CERTS, make_cluster

Call = Callable[[peer_pb2_grpc.PeerStub], Awaitable[object]]


def status(stub: peer_pb2_grpc.PeerStub) -> Awaitable[object]:
    return stub.Status(peer_pb2.NodeStatusRequest(), timeout=5)


def heartbeat_as(node: str) -> Call:
    def call(stub: peer_pb2_grpc.PeerStub) -> Awaitable[object]:
        return stub.SendHeartbeat(peer_pb2.Heartbeat(node=node, protocol_version=1), timeout=5)

    return call


def outcome(tmp_path: Path, client: str | None, call: Call) -> grpc.StatusCode:
    """The status of `call` made to s01's Peer service by a client holding `client`'s
    certificate (None: no client certificate, only the cluster CA to check s01 with)."""
    cluster = make_cluster(tmp_path, ["s01", "s02", "s03"], tls=True)
    certs = tmp_path / "certs"
    subprocess.run([str(CERTS), "issue", str(certs), "intruder"], check=True, capture_output=True)
    script = load_script(cluster.config)

    async def scenario() -> grpc.StatusCode:
        node = Node(script, "s01")
        assert node.credentials is not None
        server = grpc.aio.server()
        peer_pb2_grpc.add_PeerServicer_to_server(PeerService(node), server)
        port = server.add_secure_port("127.0.0.1:0", node.credentials.server())
        await server.start()
        try:
            ca = (certs / "ca.pem").read_bytes()
            key = (certs / f"{client}.key").read_bytes() if client else None
            chain = (certs / f"{client}.pem").read_bytes() if client else None
            credentials = grpc.ssl_channel_credentials(
                root_certificates=ca, private_key=key, certificate_chain=chain
            )
            options = [("grpc.ssl_target_name_override", "s01")]
            async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
                try:
                    await call(peer_pb2_grpc.PeerStub(channel))
                except grpc.aio.AioRpcError as error:
                    return error.code()
                return grpc.StatusCode.OK
        finally:
            await server.stop(None)

    return asyncio.run(scenario())


@pytest.mark.parametrize(
    ("client", "call", "expected"),
    [
        pytest.param("s02", status, grpc.StatusCode.OK, id="a peer's certificate"),
        pytest.param("s02", heartbeat_as("s02"), grpc.StatusCode.OK, id="a peer's heartbeat"),
        pytest.param("intruder", status, grpc.StatusCode.PERMISSION_DENIED, id="the CA's, naming no peer"),
        pytest.param(
            "intruder", heartbeat_as("intruder"), grpc.StatusCode.PERMISSION_DENIED, id="no peer's heartbeat"
        ),
        pytest.param("s02", heartbeat_as("s03"), grpc.StatusCode.PERMISSION_DENIED, id="s02 claiming s03"),
        # refused by TLS itself (the server requires a client certificate), before any handler
        pytest.param(None, status, grpc.StatusCode.UNAVAILABLE, id="no client certificate"),
        pytest.param(None, heartbeat_as("s02"), grpc.StatusCode.UNAVAILABLE, id="no certificate, claims s02"),
    ],
)
def test_only_a_cluster_certificate_naming_a_peer_is_answered(
    tmp_path: Path, client: str | None, call: Call, expected: grpc.StatusCode
) -> None:
    assert outcome(tmp_path, client, call) == expected
