"""A vote and a new epoch are on disk, fsync'd, before the agent answers or uses them: the
agent's cycle with its real state file, os.fsync recorded (each of these tests fails if an
fsync of the state file or its directory is removed, or if the answer moves before them)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from synco.config import parse_script
from synco.core.election import PreVote, Renewal, Reply, Request, Vote
from synco.core.model import Script
from synco.core.ranking import Position
from synco.node.node import Node


def cluster(tmp_path: Path) -> Script:
    servers = "".join(
        f'[servers.{n}]\nhost = "{n}.example.test"\nroot = "{tmp_path / n}"\nagent = "127.0.0.1:{7420 + i}"\n'
        for i, n in enumerate(["s01", "s02", "s03"])
    )
    text = f"""\
master = "master.example.test"
[dns]
zone = "example.test"
servers = ["127.0.0.1:1"]
key_file = "{tmp_path}/unused.key"
[agent]
insecure = true
heartbeat_interval = 0.5
state_dir = "{tmp_path}/state"
control_socket = "{tmp_path}/run/{{server}}.sock"
{servers}[[directories]]
path = "srv"
"""
    script, problems = parse_script(text)
    assert script is not None, problems
    return script


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Fsyncs:
    """Every os.fsync, by the path of what it synced."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: list[str] = []
        real = os.fsync

        def fsync(fd: int) -> None:
            self.paths.append(os.readlink(f"/proc/self/fd/{fd}"))
            real(fd)

        monkeypatch.setattr(os, "fsync", fsync)


class Witness:
    """Stands for the future an RPC handler awaits: it records, at the moment the cycle
    answers, what the disk held and what had been fsync'd."""

    def __init__(self, node: Node, fsyncs: Fsyncs) -> None:
        self.node, self.fsyncs = node, fsyncs
        self.reply: Reply | None = None
        self.seen: tuple[dict[str, Any], list[str]] | None = None

    def done(self) -> bool:
        return self.reply is not None

    def set_result(self, reply: Reply) -> None:
        self.reply = reply
        self.seen = (json.loads(self.node.state_path.read_text()), list(self.fsyncs.paths))


def synced(node: Node, paths: list[str]) -> bool:
    """The state file (its temporary, renamed over it) and then its directory were fsync'd."""
    directory = str(node.state_path.parent)
    files = [i for i, p in enumerate(paths) if p.startswith(directory + "/.") and p.endswith(".tmp")]
    return bool(files) and directory in paths[files[-1] :]


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (Vote("s01", 3, Position(0, 0)), {"epoch": 3, "voted_for": "s01"}),
        (Renewal("s03", 5, 2.0, 0.0, True), {"epoch": 5, "voted_for": None}),
    ],
    ids=["vote", "higher epoch from a renewal"],
)
def test_the_answer_waits_for_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request_: Request, expected: dict[str, object]
) -> None:
    clock = Clock()

    async def scenario() -> Witness:
        node = Node(cluster(tmp_path), "s02", clock=clock)
        fsyncs = Fsyncs(monkeypatch)
        clock.now += 2.5  # past the restart guard: it may vote now
        witness = Witness(node, fsyncs)
        node.election_requests.append((request_, witness))  # type: ignore[arg-type]
        node.cycle()
        return witness

    witness = asyncio.run(scenario())
    assert witness.reply is not None and witness.reply.granted, witness.reply
    assert witness.seen is not None
    on_disk, fsynced = witness.seen
    assert {k: on_disk[k] for k in expected} == expected, "answered before the state file said so"
    assert synced(witness.node, fsynced), f"answered before the state file was fsync'd: {fsynced}"


def test_a_new_epoch_is_on_disk_before_the_first_vote_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    sent: list[tuple[str, Request, dict[str, Any], list[str]]] = []

    async def scenario() -> Node:
        node = Node(cluster(tmp_path), "s01", clock=clock)
        fsyncs = Fsyncs(monkeypatch)

        async def nothing() -> None:
            return None

        def send(server: Any, message: Request) -> Any:  # what the cycle hands to the network
            on_disk = json.loads(node.state_path.read_text()) if node.state_path.exists() else {}
            sent.append((server.name, message, on_disk, list(fsyncs.paths)))
            return nothing()

        monkeypatch.setattr(node, "_send", send)
        clock.now += 2.5
        node.cycle()  # it stands: pre-votes first, which spend no epoch
        assert [type(m) for _, m, _, _ in sent] == [PreVote, PreVote]
        node.election_replies.append(Reply("pre-vote", "s02", 0, True, "", 1))
        node.cycle()
        return node

    asyncio.run(scenario())
    votes = [(to, on_disk, fsynced) for to, message, on_disk, fsynced in sent if isinstance(message, Vote)]
    assert votes, sent
    node_dir = tmp_path / "state"
    for _, on_disk, fsynced in votes:
        assert (on_disk["epoch"], on_disk["voted_for"]) == (1, "s01"), "asked before the epoch was on disk"
        assert any(p.startswith(f"{node_dir}/.") for p in fsynced) and str(node_dir) in fsynced


def test_winning_is_logged_with_why_the_others_did_not_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()

    async def scenario() -> Node:
        node = Node(cluster(tmp_path), "s01", clock=clock)

        async def nothing() -> None:
            return None

        monkeypatch.setattr(node, "_send", lambda server, message: nothing())
        clock.now += 2.5
        node.cycle()
        node.election_replies.append(Reply("pre-vote", "s02", 0, True, "", 1))
        node.cycle()
        node.election_replies.append(Reply("vote", "s02", 1, True, "", 1))
        node.cycle()
        return node

    with caplog.at_level("INFO", logger="synco.agent"):
        node = asyncio.run(scenario())
    assert node.last_election.endswith("won epoch 1 (votes from s01, s02)"), node.last_election
    assert "s01: won epoch 1 (votes from s01, s02)" in caplog.text
    assert node.metrics.elections._value.get() == 1  # type: ignore[attr-defined]
