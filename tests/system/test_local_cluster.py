"""Three real agents on this machine (different roots and ports): replication as it happens."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from synco.v1 import peer_pb2, peer_pb2_grpc
from tests.support.agents import Cluster, make_cluster, wait_until
from tests.support.cli import read_tree, write_tree

pytestmark = pytest.mark.usefixtures("rsync")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = make_cluster(tmp_path, ["s01", "s02", "s03"])
    try:
        for name in made.names:
            made.start(name)
        yield made
    finally:
        made.stop_all()


def replicas_equal_master(cluster: Cluster) -> bool:
    master = read_tree(cluster.root("s01") / "srv")
    return all(read_tree(cluster.root(n) / "srv") == master for n in ("s02", "s03"))


def test_changes_reach_every_replica(cluster: Cluster) -> None:
    srv = cluster.root("s01") / "srv"
    write_tree(srv, {"index.html": "v1", "deep/er/file.txt": "deep"})
    wait_until(
        lambda: replicas_equal_master(cluster) and (cluster.root("s02") / "srv/index.html").exists(),
        "creates",
    )
    (srv / "index.html").write_text("version 2, longer")
    wait_until(
        lambda: (cluster.root("s03") / "srv/index.html").read_text() == "version 2, longer", "modification"
    )
    (srv / "deep/er/file.txt").rename(srv / "renamed.txt")
    (srv / "index.html").unlink()
    wait_until(lambda: read_tree(cluster.root("s02") / "srv") == {"renamed.txt": "deep"}, "rename and delete")
    wait_until(lambda: replicas_equal_master(cluster), "both replicas")


def test_a_burst_of_ten_thousand_files(cluster: Cluster) -> None:
    srv = cluster.root("s01") / "srv"
    for index in range(10_000):
        path = srv / f"d{index % 100:02d}" / f"f{index:05d}"
        path.parent.mkdir(exist_ok=True)
        path.write_text(str(index))

    def complete() -> bool:
        return all(sum(1 for p in (cluster.root(n) / "srv").rglob("f*")) == 10_000 for n in ("s02", "s03"))

    wait_until(complete, "10k files on both replicas", timeout=120)
    assert replicas_equal_master(cluster)


def test_status_shows_the_cluster(cluster: Cluster) -> None:
    write_tree(cluster.root("s01") / "srv", {"a": "1"})
    wait_until(lambda: replicas_equal_master(cluster) and (cluster.root("s02") / "srv/a").exists(), "copy")

    def peers_seen() -> bool:
        status = json.loads(cluster.ctl("s02", "status", "--json").stdout)
        return all(p.get("reachable") for p in status["peers"])

    wait_until(peers_seen, "heartbeats from both peers")
    table = cluster.ctl("s02", "status")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["node", "role", "master?", "epoch"]
    assert any(line.startswith("s01") and "master" in line and "yes" in line for line in lines)
    assert "s02: in sync with s01" in table.stdout
    # peers report their own last pull and lag, not just their heartbeat
    s03_row = next(line for line in lines if line.startswith("s03"))
    assert "ago" in s03_row and "/ 0.0s" in s03_row, s03_row
    metrics_address = (
        cluster.config.read_text().split("[servers.s02]")[1].split('metrics = "')[1].split('"')[0]
    )

    def metrics() -> str:
        with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=10) as response:
            return str(response.read().decode())

    wait_until(lambda: 'synco_peer_heartbeat_age_seconds{peer="s01"}' in metrics(), "metrics of heartbeats")
    assert "synco_is_master 0.0" in metrics()
    assert "synco_lag_generations 0.0" in metrics()
    assert "synco_pull_duration_seconds_count" in metrics()


def test_restart_resumes_and_a_replica_down_for_a_while_catches_up(cluster: Cluster) -> None:
    srv = cluster.root("s01") / "srv"
    write_tree(srv, {"a": "1"})
    wait_until(
        lambda: replicas_equal_master(cluster) and (cluster.root("s03") / "srv/a").exists(), "first copy"
    )
    assert cluster.stop("s03") == 0
    state = json.loads((cluster.directory / "state/s03.json").read_text())
    assert state["pulled_master"] == "s01"
    write_tree(srv, {"b": "written while s03 was down"})
    (srv / "a").unlink()
    wait_until(lambda: read_tree(cluster.root("s02") / "srv") == read_tree(srv), "s02 follows")
    assert read_tree(cluster.root("s03") / "srv") == {"a": "1"}
    cluster.start("s03")
    wait_until(lambda: read_tree(cluster.root("s03") / "srv") == read_tree(srv), "s03 catches up")
    restarted = cluster.log("s03").split("serving peers")[-1]
    assert "full pull" not in restarted  # it resumed from its recorded state


def test_pause_and_sync_now(cluster: Cluster) -> None:
    srv = cluster.root("s01") / "srv"
    assert cluster.ctl("s02", "pause-pulls").returncode == 0
    write_tree(srv, {"while-paused": "x"})
    wait_until(lambda: (cluster.root("s03") / "srv/while-paused").exists(), "s03 still follows")
    assert not (cluster.root("s02") / "srv/while-paused").exists()
    assert cluster.ctl("s02", "resume-pulls").returncode == 0
    assert cluster.ctl("s02", "sync-now").returncode == 0
    wait_until(lambda: (cluster.root("s02") / "srv/while-paused").exists(), "s02 after resume")


def test_bad_rpcs_are_rejected_and_the_agent_keeps_serving(cluster: Cluster) -> None:
    text = cluster.config.read_text()
    address = text.split("[servers.s01]")[1].split('agent = "')[1].split('"')[0]
    with grpc.insecure_channel(address) as channel:
        unknown = channel.unary_unary("/synco.v1.Peer/NoSuchMethod")
        with pytest.raises(grpc.RpcError) as error:
            unknown(b"", timeout=5)
        assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
        for method in ("SendHeartbeat", "Status"):
            garbage = channel.unary_unary(f"/synco.v1.Peer/{method}")
            with pytest.raises(grpc.RpcError) as corrupt:
                garbage(b"\xff\xff\xff\xff not a protobuf", timeout=5)
            assert corrupt.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        corrupt_stream = channel.unary_stream("/synco.v1.Peer/WatchChanges")
        with pytest.raises(grpc.RpcError) as corrupt:
            next(iter(corrupt_stream(b"\xff\xff\xff\xff", timeout=5)))
        assert corrupt.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        stub = peer_pb2_grpc.PeerStub(channel)
        stranger = stub.SendHeartbeat(peer_pb2.Heartbeat(node="intruder", protocol_version=1), timeout=5)
        assert not stranger.accepted and "not a peer" in stranger.reason
        watcher = stub.WatchChanges(peer_pb2.WatchRequest(node="intruder"), timeout=5)
        with pytest.raises(grpc.RpcError) as denied:
            next(iter(watcher))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
        status = stub.Status(peer_pb2.NodeStatusRequest(), timeout=5)
        assert status.heartbeat.node == "s01"
    write_tree(cluster.root("s01") / "srv", {"after": "bad rpcs"})
    wait_until(lambda: (cluster.root("s02") / "srv/after").exists(), "still replicating")
    log = cluster.log("s01")
    assert "Traceback" not in log  # a corrupt request is one line naming the caller, not gRPC's internals
    lines = [
        line for line in log.splitlines() if "sent a corrupt /synco.v1.Peer/SendHeartbeat request" in line
    ]
    assert len(lines) == 1 and " WARNING s01: refused a caller: ipv4:127.0.0.1:" in lines[0], lines
    shutil.rmtree(cluster.root("s01") / "srv" / "nothing", ignore_errors=True)


def test_a_replaced_directory_is_watched_again(cluster: Cluster) -> None:
    """An atomic deploy (`mv srv srv.old && mkdir srv`) must not blind the master's watcher."""
    srv = cluster.root("s01") / "srv"
    write_tree(srv, {"v1": "old release"})
    wait_until(lambda: (cluster.root("s02") / "srv/v1").exists(), "first release")
    srv.rename(cluster.root("s01") / "srv.old")
    srv.mkdir()
    wait_until(lambda: "watching again" in cluster.log("s01"), "the master watches the new directory")
    write_tree(srv, {"v2": "new release"})
    wait_until(
        lambda: read_tree(cluster.root("s03") / "srv") == {"v2": "new release"}, "new release replicated"
    )
