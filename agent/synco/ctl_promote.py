"""`synco-ctl promote NODE`: ask for the promote, then follow it through every node's status
and DNS, printing each step as it happens, until NODE acts as master and every
authoritative server names it (exit 0), a step fails or the time is up (exit 1)."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from synco.core.errors import EXIT_FAILED, EXIT_OK
from synco.core.model import Script
from synco.v1 import control_pb2, control_pb2_grpc, peer_pb2


@dataclass
class Progress:
    target: str
    json: bool
    started: float = field(default_factory=time.monotonic)
    steps: list[dict[str, object]] = field(default_factory=list)
    seen: set[tuple[str, str]] = field(default_factory=set)

    def step(self, node: str, text: str) -> None:
        if (node, text) in self.seen:
            return
        self.seen.add((node, text))
        at = round(time.monotonic() - self.started, 3)
        self.steps.append({"at_seconds": at, "node": node, "step": text})
        if not self.json:
            print(f"[{at:6.2f} s] {node}: {text}", flush=True)

    def finish(self, ok: bool, summary: str, reply: peer_pb2.PromoteReply | None = None) -> int:
        seconds = round(time.monotonic() - self.started, 3)
        if self.json:
            result: dict[str, object] = {
                "target": self.target,
                "ok": ok,
                "seconds": seconds,
                "summary": summary,
                "steps": self.steps,
            }
            if reply is not None:
                result.update(
                    answered_by=reply.answered_by,
                    plan=list(reply.plan),
                    warning=reply.warning,
                    refusal=reply.refusal,
                )
            print(json.dumps(result, indent=2))
        else:
            print(summary, file=sys.stdout if ok else sys.stderr, flush=True)
        return EXIT_OK if ok else EXIT_FAILED


def promote(
    stub: control_pb2_grpc.ControlStub,
    script: Script | None,
    target: str,
    *,
    dry_run: bool,
    force: bool,
    as_json: bool,
    timeout: float,
    dns_named: Callable[[Script, str, int], dict[str, bool]] | None = None,
) -> int:
    progress = Progress(target, as_json)
    request = peer_pb2.PromoteRequest(
        target=target, dry_run=dry_run, force=force, request=uuid.uuid4().hex[:12]
    )
    reply = stub.Promote(request, timeout=10)
    if not as_json:
        for line in reply.plan:
            print(line)
        if reply.warning:
            print(f"may be lost: {reply.warning}", flush=True)
    if reply.already:
        return progress.finish(True, reply.refusal, reply)
    if not reply.accepted:
        return progress.finish(
            False, f"synco-ctl: promote refused by {reply.answered_by}: {reply.refusal}", reply
        )
    if dry_run:
        return progress.finish(
            True, f"dry run: {reply.answered_by} would promote {target}; nothing changed", reply
        )
    old_master = reply.answered_by if reply.answered_by != target else ""
    progress.step(reply.answered_by, f"accepted the promote of {target} (in epoch {reply.epoch})")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        nodes = _statuses(stub)
        for name, status in nodes.items():
            promotion = status.promotion
            if promotion.request != request.request:
                continue
            for step in promotion.steps:
                progress.step(name, step)
            if promotion.failed:
                last = promotion.steps[-1] if promotion.steps else "no reason given"
                return progress.finish(False, f"synco-ctl: promote of {target} failed: {last}", reply)
        mine = nodes.get(target)
        if mine is not None and mine.heartbeat.acting and mine.heartbeat.epoch > reply.epoch:
            epoch = mine.heartbeat.epoch
            progress.step(target, f"acts as master of epoch {epoch}")
            if _dns_done(progress, script, target, epoch, mine, dns_named) and _old_follows(
                progress, nodes, old_master, target
            ):
                return progress.finish(
                    True, f"promoted {target} in {time.monotonic() - progress.started:.2f} s", reply
                )
        time.sleep(0.1)
    return progress.finish(False, f"synco-ctl: {target} was not promoted within {timeout:g} s", reply)


def _statuses(stub: control_pb2_grpc.ControlStub) -> dict[str, peer_pb2.NodeStatus]:
    try:
        status = stub.Status(control_pb2.ClusterStatusRequest(), timeout=5)
    except Exception:  # an agent restarting mid-promote: ask again
        return {}
    nodes = {status.local.heartbeat.node: status.local}
    for peer in status.peers:
        if peer.status.HasField("heartbeat"):
            nodes[peer.node] = peer.status
    return nodes


def _dns_done(
    progress: Progress,
    script: Script | None,
    target: str,
    epoch: int,
    status: peer_pb2.NodeStatus,
    dns_named: Callable[[Script, str, int], dict[str, bool]] | None,
) -> bool:
    """Every authoritative server names the target with its epoch (asked directly, given the
    script; otherwise as the target's own check says)."""
    if script is None or script.dns is None or dns_named is None:
        if list(status.dns_lagging):
            return False
        progress.step(target, "every authoritative server names it (as it checked)")
        return True
    try:
        named = dns_named(script, target, epoch)
    except Exception:  # a DNS server not answering is "not yet"
        return False
    for server, yes in named.items():
        if yes:
            progress.step("dns", f"{server} names {target} with epoch {epoch}")
    return bool(named) and all(named.values())


def _old_follows(progress: Progress, nodes: dict[str, peer_pb2.NodeStatus], old: str, target: str) -> bool:
    if not old:
        return True
    status = nodes.get(old)
    if status is None:
        return False
    if status.heartbeat.master == target and not status.heartbeat.acting:
        progress.step(old, f"follows {target}")
        return True
    return False
