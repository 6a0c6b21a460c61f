"""The agent node's building blocks against the real file system: state files and inotify."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from synco.core.errors import ConfigError, OperationError
from synco.core.model import Script
from synco.node.state import NodeState, load_state, save_state
from synco.node.watch import Batch, generations


def test_state_round_trip_and_no_leftovers(tmp_path: Path) -> None:
    path = tmp_path / "state" / "s01.json"
    assert load_state(path) == NodeState()
    state = NodeState(epoch=3, generation=41, pulled_generation=40, pulled_master="s02")
    save_state(path, state)
    assert load_state(path) == state
    save_state(path, NodeState(epoch=4))
    assert load_state(path).epoch == 4
    assert os.listdir(path.parent) == ["s01.json"]


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"epoch": 1, "generation": 2, "extra": 3}'])
def test_unreadable_state_is_an_error_not_a_reset(tmp_path: Path, content: str) -> None:
    path = tmp_path / "s01.json"
    path.write_text(content)
    if content.startswith('{"epoch"'):
        assert load_state(path) == NodeState(epoch=1, generation=2)  # unknown keys from a newer version
        return
    with pytest.raises(OperationError, match=r"s01\.json"):
        load_state(path)


def test_changes_become_generations(tmp_path: Path) -> None:
    """Creates, modifications, renames and deletions each reach the watcher as a new generation."""
    watched = tmp_path / "srv"
    (watched / "deep").mkdir(parents=True)

    async def scenario() -> list[Batch]:
        stop = asyncio.Event()
        batches: list[Batch] = []
        actions = [
            lambda: (watched / "new.txt").write_text("1"),
            lambda: (watched / "new.txt").write_text("changed"),
            lambda: (watched / "new.txt").rename(watched / "deep" / "moved.txt"),
            lambda: (watched / "deep" / "moved.txt").unlink(),
        ]

        async def act() -> None:
            await asyncio.sleep(0.3)  # let the watch start
            for action in actions:
                action()
                deadline = asyncio.get_running_loop().time() + 10
                while len(batches) < actions.index(action) + 1:
                    assert asyncio.get_running_loop().time() < deadline, "change not seen within 10 s"
                    await asyncio.sleep(0.02)
            stop.set()

        actor = asyncio.create_task(act())
        async for batch in generations([watched], start=10, stop=stop, debounce_ms=30):
            batches.append(batch)
        await actor
        return batches

    batches = asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    assert [b.generation for b in batches] == [11, 12, 13, 14]
    assert all(b.changes >= 1 for b in batches)


def backup_cluster(tmp_path: Path, interval: str = "1h", master: str = "s01") -> Script:
    from synco.config import parse_script

    text = f"""\
master = "{master}"
[agent]
insecure = true
state_dir = "{tmp_path}/state"
control_socket = "{tmp_path}/{{server}}.sock"
[servers.s01]
root = "{tmp_path}/s01"
agent = "127.0.0.1:7401"
[servers.b01]
root = "{tmp_path}/b01"
agent = "127.0.0.1:7402"
role = "backup"
[backup]
interval = "{interval}"
[[directories]]
path = "srv"
"""
    script, problems = parse_script(text)
    assert script is not None, problems
    return script


def test_a_backup_server_named_master_by_dns_does_nothing(tmp_path: Path) -> None:
    """DNS may name any host; a backup server holds snapshots, not a live copy: it neither
    watches nor snapshots itself, and says why."""
    from synco.node.node import Node
    from synco.v1 import peer_pb2

    async def scenario() -> Node:
        node = Node(backup_cluster(tmp_path, master="master.example.org."), "b01")
        node.dns_named = ("b01", None, "the DNS name points at b01")  # what the DNS poll records
        node.cycle()
        return node

    node = asyncio.run(scenario())
    assert node.verdict.startswith("named master, but a backup server keeps snapshots")
    assert node.pull_task is None and not node.is_master
    assert node.heartbeat().role == peer_pb2.ROLE_BACKUP


def test_reloading_the_backup_schedule(tmp_path: Path) -> None:
    from dataclasses import replace

    from synco.node.node import Node

    node = Node(backup_cluster(tmp_path), "b01")
    changes = node.reload(backup_cluster(tmp_path, interval="15m"))
    assert changes == ["backup schedule and policy"]
    assert node.backup_timing.interval == 900
    script = backup_cluster(tmp_path)
    as_replica = replace(
        script, servers=(script.server("s01"), replace(script.server("b01"), role="replica"))
    )
    with pytest.raises(ConfigError, match="roles"):
        node.reload(as_replica)


def test_a_snapshot_named_in_the_future_does_not_drive_the_schedule(tmp_path: Path) -> None:
    """After the clock moved back, the snapshot taken while it was ahead is not the newest:
    scheduling from it would take one snapshot after another."""
    from datetime import UTC, datetime

    from synco.core.snapshot_names import snapshot_name
    from synco.node.node import Node

    now = datetime(2026, 11, 26, 12, 30, tzinfo=UTC).timestamp()  # mid-hour: nothing due
    root = tmp_path / "b01"
    root.mkdir()
    ahead = snapshot_name(datetime.fromtimestamp(now + 86400, UTC), set())
    current = snapshot_name(datetime.fromtimestamp(now - 60, UTC), set())
    (root / ahead).mkdir()
    (root / current).mkdir()

    async def scenario() -> Node:
        node = Node(backup_cluster(tmp_path), "b01", wall=lambda: now)
        node.cycle()
        return node

    node = asyncio.run(scenario())
    assert node.latest_snapshot is not None and node.latest_snapshot[0] == current
    assert node.verdict.startswith(f"newest snapshot {current}; next from s01 at ")
    assert node.pull_task is None


def test_no_snapshot_from_a_master_whose_heartbeat_disowns_the_role(tmp_path: Path) -> None:
    """The script (or DNS) names s01, but s01's own heartbeat names no master: its data may
    be stale, so nothing is copied from it until it acts as master."""
    from synco.node.node import Node
    from synco.v1 import peer_pb2

    async def scenario(master: str) -> Node:
        node = Node(backup_cluster(tmp_path), "b01")
        node.record_peer(peer_pb2.Heartbeat(node="s01", master=master, protocol_version=1))
        node.cycle()
        if node.pull_task is not None:
            node.pull_task.cancel()
        return node

    disowned = asyncio.run(scenario(""))
    assert disowned.verdict == "s01 does not act as master (its heartbeat names no master): no snapshot"
    assert disowned.pull_task is None
    owned = asyncio.run(scenario("s01"))
    assert owned.verdict == "no snapshot yet: taking one from s01"


def test_the_replication_timings_are_the_scripts(tmp_path: Path) -> None:
    """Each [agent] timing reaches the decision it is for (once, periodic_pull went to another)."""
    from dataclasses import replace

    from synco.node.node import Node

    script = backup_cluster(tmp_path)
    assert script.agent is not None
    agent = replace(script.agent, debounce=0.3, periodic_pull=77.0, pull_retry=4.0)
    for node in (Node(replace(script, agent=agent), "s01"), Node(script, "s01")):
        node.reload(replace(script, agent=agent))
        assert (node.timing.debounce, node.timing.periodic, node.timing.retry) == (0.3, 77.0, 4.0)
