"""The agent's cycle in-process, with real rsync and real files: failback keeps the node's
own writes, a failing cycle does not end the agent, and a replica says when its master is
silent, failing or unwatched (its health and metrics too)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from synco.config import parse_script
from synco.core.model import Script
from synco.node.node import Node
from synco.node.state import load_state
from synco.v1 import peer_pb2


def cluster(tmp_path: Path, mountpoint: str | None = None, master: str = "s01") -> Script:
    extra = f'mountpoint = "{mountpoint}"\n' if mountpoint else ""
    text = f"""\
master = "{master}"
[agent]
insecure = true
heartbeat_interval = 1
state_dir = "{tmp_path}/state"
control_socket = "{tmp_path}/run/{{server}}.sock"
[method]
arguments = ["--archive", "--delete"]
[servers.s01]
root = "{tmp_path}/s01"
agent = "127.0.0.1:7411"
{extra}[servers.s02]
root = "{tmp_path}/s02"
agent = "127.0.0.1:7412"
[[directories]]
path = "srv"
"""
    script, problems = parse_script(text)
    assert script is not None, problems
    for name in ("s01", "s02"):
        (tmp_path / name / "srv").mkdir(parents=True, exist_ok=True)
    return script


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def master_heartbeat(**fields: object) -> peer_pb2.Heartbeat:
    values: dict[str, object] = {
        "node": "s01",
        "role": peer_pb2.ROLE_MASTER,
        "master": "s01",
        "protocol_version": 1,
        "health": peer_pb2.HEALTH_OK,
    }
    values.update(fields)
    return peer_pb2.Heartbeat(**values)  # type: ignore[arg-type]


def heard(node: Node, **fields: object) -> None:
    node.record_peer(master_heartbeat(settings_hash=node.hash, **fields))


async def settle(node: Node, until: Callable[[], bool], what: str) -> None:
    """Run cycles (as the loop would) until `until()`; pulls run for real meanwhile."""
    for _ in range(600):
        node.cycle()
        if until():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within 30 s: {what} (verdict: {node.verdict})")


def test_failback_keeps_aside_what_the_node_wrote_as_master(tmp_path: Path) -> None:
    """s02 pulled from s01, then acted as master (DNS moved to it) and took writes, then
    follows s01 again, after a restart: its first pull keeps those writes aside instead of
    deleting them, although "last pulled from s01" is still true."""
    script = cluster(tmp_path)
    (tmp_path / "s01" / "srv" / "shared.txt").write_text("from s01")

    async def first_life() -> None:
        node = Node(script, "s02")
        await settle(node, lambda: node.state.pulled_master == "s01", "first pull from s01")
        node.reload(cluster(tmp_path, master="s02"))  # the operator moved the master to s02
        node.cycle()
        assert node.is_master and node.state.acted_as_master

    asyncio.run(first_life())
    assert load_state(tmp_path / "state" / "s02.json").acted_as_master, "not persisted before acting"
    (tmp_path / "s02" / "srv" / "written-as-master.txt").write_text("only on s02")
    (tmp_path / "s02" / "srv" / "shared.txt").write_text("changed on s02 as master")

    async def second_life() -> Node:
        node = Node(script, "s02")  # restarted: the master is s01 again
        await settle(node, lambda: node.last_pull is not None and node.last_pull.ok, "pull from s01")
        return node

    node = asyncio.run(second_life())
    assert not node.state.acted_as_master and node.state.pulled_master == "s01"
    assert not (tmp_path / "s02" / "srv" / "written-as-master.txt").exists()
    assert (tmp_path / "s02" / "srv" / "shared.txt").read_text() == "from s01"
    kept = list((tmp_path / "state" / "kept-aside" / "s02").glob("*/srv"))
    assert len(kept) == 1, kept
    assert (kept[0] / "written-as-master.txt").read_text() == "only on s02"
    assert (kept[0] / "shared.txt").read_text() == "changed on s02 as master"


def test_an_error_in_a_cycle_is_a_verdict_not_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from synco.core import replication

    calls = []
    real = replication.decide

    def broken(*arguments: object) -> replication.Decision:
        calls.append(1)
        if len(calls) <= 2:
            raise KeyError("injected")
        return real(*arguments)  # type: ignore[arg-type]

    monkeypatch.setattr(replication, "decide", broken)

    async def scenario() -> tuple[list[float | None], Node]:
        node = Node(cluster(tmp_path), "s02")
        node.paused = True  # no pull: only the decision matters here
        backoffs = [node.guarded_cycle()]
        assert node.health.level.name == "FAILING" and "cycle failed: KeyError" in node.verdict
        assert node.heartbeat().health == peer_pb2.HEALTH_FAILING
        backoffs.append(node.guarded_cycle())
        backoffs.append(node.guarded_cycle())
        return backoffs, node

    backoffs, node = asyncio.run(scenario())
    assert backoffs == [1.0, 2.0, None]
    assert node.verdict == "paused by the operator" and node.health.level.name == "OK"
    assert "synco_cycle_errors_total 2.0" in metrics_text(node)


def metrics_text(node: Node) -> str:
    from prometheus_client import generate_latest

    return generate_latest(node.metrics.registry).decode()


def test_a_silent_master_shows_in_verdict_health_and_metrics(tmp_path: Path) -> None:
    clock = Clock()

    async def scenario() -> Node:
        node = Node(cluster(tmp_path), "s02", clock=clock)
        node.paused = True
        heard(node)
        node.cycle()
        assert node.health.level.name == "OK" and "no heartbeat" not in node.verdict
        assert "synco_master_reachable 1.0" in metrics_text(node)
        clock.now += 3.5  # past the timeout: three heartbeat intervals
        node.cycle()
        return node

    node = asyncio.run(scenario())
    assert node.verdict == "no heartbeat from master s01 for over 3 s; paused by the operator"
    assert node.health.level.name == "DEGRADED"
    assert node.heartbeat().health_reason == "no heartbeat from master s01 for over 3 s"
    assert "synco_master_reachable 0.0" in metrics_text(node)
    assert 'synco_health{synco_health="degraded"} 1.0' in metrics_text(node)


def test_the_masters_heartbeat_carries_its_generation(tmp_path: Path) -> None:
    """A replica whose change stream broke (a cut link) still learns of new generations
    from the master's heartbeats, and pulls."""
    clock = Clock()

    async def scenario() -> Node:
        node = Node(cluster(tmp_path), "s02", clock=clock)
        heard(node, generation=7)
        return node

    node = asyncio.run(scenario())
    assert node.master_generation == 7 and node.last_change_at == clock.now
    heard(node, generation=5)  # older news changes nothing
    assert node.master_generation == 7
    node.record_peer(master_heartbeat(node="s01", role=peer_pb2.ROLE_REPLICA, master="s03", generation=9))
    assert node.master_generation == 7, "a node that does not say it is master announces nothing"


def test_no_pull_from_a_failing_master(tmp_path: Path) -> None:
    async def scenario() -> Node:
        node = Node(cluster(tmp_path), "s02")
        heard(node, generation=3, health=peer_pb2.HEALTH_FAILING, health_reason="/mnt/data is not mounted")
        node.cycle()
        return node

    node = asyncio.run(scenario())
    assert node.pull_task is None
    assert node.verdict == "s01 is failing (/mnt/data is not mounted): no pull"


def test_an_unmounted_disk_makes_the_master_failing(tmp_path: Path) -> None:
    disk = tmp_path / "s01"  # the root is meant to be a mounted disk: here it is a plain directory

    async def scenario() -> Node:
        node = Node(cluster(tmp_path, mountpoint=str(disk)), "s01")
        node.cycle()
        return node

    node = asyncio.run(scenario())
    beat = node.heartbeat()
    assert beat.health == peer_pb2.HEALTH_FAILING
    assert beat.health_reason == f"{disk} is not mounted"
    assert node.verdict == f"master at generation 0 (failing: {disk} is not mounted)"


def test_a_failed_watcher_degrades_the_master_until_it_watches_again(tmp_path: Path) -> None:
    """The watcher cannot watch a directory that is a symlink: the master says so (verdict,
    health, `unwatched` in its heartbeat, so that replicas poll), tries again with a
    backoff, and the note leaves the verdict once the watch is in place."""
    script = cluster(tmp_path)
    srv = tmp_path / "s01" / "srv"
    srv.rmdir()
    (tmp_path / "elsewhere").mkdir()
    srv.symlink_to(tmp_path / "elsewhere")

    async def scenario() -> list[tuple[str, bool, int]]:
        node = Node(script, "s01")
        stop = asyncio.Event()
        running = asyncio.create_task(node.run(stop))
        seen = []
        try:
            await until(lambda: node.work_problem is not None, "the watcher's failure")
            node.cycle()
            beat = node.heartbeat()
            seen.append((node.verdict, beat.unwatched, beat.health))
            srv.unlink()
            srv.mkdir()
            await until(lambda: node.work_problem is None, "watching again")
            node.cycle()
            beat = node.heartbeat()
            seen.append((node.verdict, beat.unwatched, beat.health))
        finally:
            stop.set()
            await running
        return seen

    failed, recovered = asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    assert failed[0].startswith("master at generation 0 (degraded: watcher failed: ")
    assert "srv is a symlink" in failed[0]
    assert failed[1:] == (True, peer_pb2.HEALTH_DEGRADED)
    assert recovered[0].startswith("master at generation ") and "watcher" not in recovered[0]
    assert recovered[1:] == (False, peer_pb2.HEALTH_OK)


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(600):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within 30 s: {what}")


def test_the_masters_status_carries_its_generation(tmp_path: Path) -> None:
    """synco-ctl status asks each peer for its status: a master's answer counts as news of
    its generation too (every source of it does)."""
    from dataclasses import replace

    import grpc

    from synco.node.services import ControlService, PeerService
    from synco.v1 import peer_pb2_grpc
    from tests.support.named import free_port

    port = free_port()
    script = cluster(tmp_path)
    script = replace(
        script,
        servers=tuple(
            replace(s, agent=f"127.0.0.1:{port}") if s.name == "s01" else s for s in script.servers
        ),
    )

    async def scenario() -> int:
        master, replica = Node(script, "s01"), Node(script, "s02")
        master.state = replace(master.state, generation=9)
        server = grpc.aio.server()
        peer_pb2_grpc.add_PeerServicer_to_server(PeerService(master), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        try:
            await ControlService(replica)._peer_status("s01")
        finally:
            await server.stop(None)
            for channel in replica.channels.values():
                await channel.close(None)
        return replica.master_generation

    assert asyncio.run(scenario()) == 9
