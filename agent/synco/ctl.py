"""`synco-ctl`: talk to this machine's agent over its control socket (root only).

synco-ctl --config SCRIPT [--as NAME] status [--json]
synco-ctl --config SCRIPT [--as NAME] promote NODE [--dry-run] [--force] [--json] [--timeout S]
synco-ctl --config SCRIPT [--as NAME] pause | resume          (automatic failover, cluster-wide)
synco-ctl --config SCRIPT [--as NAME] sync-now | pause-pulls | resume-pulls   (this node)
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import grpc
from google.protobuf.json_format import MessageToDict

from synco import __version__
from synco.cli.output import flushed, leave_quietly, reader_gone
from synco.core.errors import EXIT_FAILED, EXIT_OK, ConfigError, SyncoError
from synco.core.model import Script
from synco.node.cluster import control_socket_path, load_cluster
from synco.v1 import control_pb2, control_pb2_grpc, peer_pb2

ROLES = {
    peer_pb2.ROLE_MASTER: "master",
    peer_pb2.ROLE_REPLICA: "replica",
    peer_pb2.ROLE_BACKUP: "backup",
    peer_pb2.ROLE_WITNESS: "witness",
}
HEALTH = {peer_pb2.HEALTH_OK: "ok", peer_pb2.HEALTH_DEGRADED: "degraded", peer_pb2.HEALTH_FAILING: "failing"}


def socket_path(arguments: argparse.Namespace) -> tuple[str, Script | None]:
    """The agent's control socket, and the script when given (promote checks DNS with it)."""
    if arguments.socket:
        script = load_cluster(arguments.config, arguments.as_server)[0] if arguments.config else None
        return str(arguments.socket), script
    if not arguments.config:
        raise ConfigError("give --config SCRIPT (and --as NAME) or --socket PATH")
    script, me = load_cluster(arguments.config, arguments.as_server)
    return str(control_socket_path(script, me)), script


def table(status: control_pb2.ClusterStatus) -> str:
    local = status.local
    master_generation = local.master_generation
    rows = [("node", "role", "master?", "epoch", "generation", "lag", "last pull", "health", "heartbeat")]
    reasons = []  # why a node is not ok, a line each under the table

    def row(node: peer_pb2.NodeStatus, age: str) -> None:
        beat = node.heartbeat
        if beat.health_reason:
            reasons.append(f"{beat.node} is {HEALTH.get(beat.health, '?')}: {beat.health_reason}")
        lag = ""
        if beat.role == peer_pb2.ROLE_REPLICA:  # a backup server is behind by design between snapshots
            lag = f"{max(0, master_generation - beat.generation)} / {node.lag_seconds:.1f}s"
        pull = ""
        if node.last_pull_unix_ms:
            ago = time.time() - node.last_pull_unix_ms / 1000
            pull = f"{'ok' if node.last_pull_ok else 'FAILED'} {ago:.0f}s ago"
        if node.latest_snapshot:  # a backup server: its newest snapshot
            pull = f"{pull}, snapshot {node.latest_snapshot}".lstrip(", ")
        rows.append(
            (
                beat.node,
                ROLES.get(beat.role, "?"),
                "yes" if beat.role == peer_pb2.ROLE_MASTER and age != "LOST" else "",
                str(beat.epoch),
                str(beat.generation),
                lag,
                pull,
                HEALTH.get(beat.health, "?"),
                age,
            )
        )

    row(local, "self")
    for peer in status.peers:
        if peer.status.HasField("heartbeat"):
            age = (
                f"{(time.time() * 1000 - peer.last_heartbeat_unix_ms) / 1000:.1f}s"
                if peer.reachable
                else "LOST"
            )
            row(peer.status, age)
        else:
            rows.append((peer.node, "?", "", "", "", "", "", "unreachable", peer.error or "never"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    election = []
    if local.failover_off:
        election.append(f"automatic failover: off ({local.failover_off})")
    elif local.election:
        lease = f" (lease {local.lease_remaining:.1f} s left)" if local.lease_remaining else ""
        election.append(f"election: {local.election}{lease}")
        if local.last_election:
            election.append(f"last election: {local.last_election}")
    if local.dns_lagging:
        election.append(f"DNS not serving this master yet: {', '.join(local.dns_lagging)}")
    if local.election and not local.heartbeat.failover_paused:
        election.append("automatic failover: on (synco-ctl pause stops it cluster-wide)")
    if local.heartbeat.failover_paused:
        election.append(
            f"automatic failover: PAUSED cluster-wide ({local.heartbeat.pause_note}): synco-ctl resume"
        )
    if local.election:
        election += candidates(
            [local] + [p.status for p in status.peers if p.status.HasField("heartbeat") and p.reachable]
        )
    return (
        "\n".join([*lines, *reasons])
        + f"\n\n{local.heartbeat.node}: {local.verdict}"
        + "".join(f"\n{line}" for line in election)
    )


def candidates(nodes: list[peer_pb2.NodeStatus]) -> list[str]:
    """Which nodes may become master, and why each other one may not (as each says itself)."""
    may, may_not = [], []
    for node in nodes:
        beat = node.heartbeat
        why = node.candidate or beat.ineligible
        if beat.role == peer_pb2.ROLE_WITNESS:
            why = "a witness holds no data"
        if why:
            may_not.append(f"{beat.node} ({why})")
        else:
            may.append(beat.node + (" (master)" if beat.role == peer_pb2.ROLE_MASTER else ""))
    lines = [f"candidates: {', '.join(may) or 'none'}"]
    if may_not:
        lines.append(f"not candidates: {'; '.join(may_not)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="synco-ctl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", metavar="SCRIPT", help="the cluster's backup script")
    parser.add_argument("--as", dest="as_server", metavar="NAME", help="this server's name in the script")
    parser.add_argument("--socket", help="the agent's control socket (instead of --config)")
    parser.add_argument("--version", action="version", version=f"synco-ctl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status = commands.add_parser("status", help="the cluster as this agent sees it")
    status.add_argument("--json", action="store_true")
    promote = commands.add_parser(
        "promote",
        help="make NODE the master: a switchover from the live master, or an election directed at NODE",
    )
    promote.add_argument("node", metavar="NODE")
    promote.add_argument(
        "--dry-run", action="store_true", help="say who would become master and why, change nothing"
    )
    promote.add_argument(
        "--force",
        action="store_true",
        help="without a majority (the master is gone): NODE acts anyway; what may be lost is shown",
    )
    promote.add_argument("--json", action="store_true")
    promote.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for it (default 300)")
    for name, text in (
        ("pause", "pause automatic failover cluster-wide (maintenance); replication goes on"),
        ("resume", "resume automatic failover cluster-wide"),
        ("sync-now", "pull from the master now (a backup server: take a snapshot now)"),
        ("pause-pulls", "stop this node's pulls (and snapshots)"),
        ("resume-pulls", "let this node pull again"),
    ):
        commands.add_parser(name, help=text)
    arguments = parser.parse_args(argv)
    path = None
    try:
        path, script = socket_path(arguments)
        if arguments.command == "promote":
            return flushed(ask_promote(path, script, arguments))
        return flushed(ask(path, arguments))
    except SyncoError as error:
        print(f"synco-ctl: error: {error}", file=sys.stderr)
        return error.exit_code
    except grpc.RpcError as error:
        print(f"synco-ctl: error: the agent did not answer on {path}: {error.code().name}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # `synco-ctl status | head -1`: the reader went away
        if not reader_gone():
            raise
        return leave_quietly()


def ask(path: str, arguments: argparse.Namespace) -> int:
    """Send the command to the agent listening on `path` and print its answer."""
    with grpc.insecure_channel(f"unix:{path}") as channel:
        stub = control_pb2_grpc.ControlStub(channel)
        if arguments.command == "status":
            result = stub.Status(control_pb2.ClusterStatusRequest(), timeout=5)
            if arguments.json:  # documented in packaging/doc/status-json.md: keep the names stable
                print(json.dumps(MessageToDict(result, always_print_fields_with_no_presence=True), indent=2))
            else:
                print(table(result))
        elif arguments.command == "sync-now":
            print(stub.SyncNow(control_pb2.SyncNowRequest(), timeout=5).verdict)
        elif arguments.command in ("pause", "resume"):
            return pause_failover(stub, arguments.command == "pause")
        elif arguments.command == "pause-pulls":
            stub.Pause(control_pb2.PauseRequest(), timeout=5)
            print("this node's pulls paused (synco-ctl resume-pulls lets it pull again)")
        else:
            stub.Resume(control_pb2.ResumeRequest(), timeout=5)
            print("this node pulls again")
    return EXIT_OK


def pause_failover(stub: control_pb2_grpc.ControlStub, paused: bool) -> int:
    """Pause or resume automatic failover, then say which nodes have it: exit 1 if a node
    that answers reports another (newer) pause or resume; a node that does not answer learns
    it from the others' heartbeats when it is back."""
    try:
        reply = stub.PauseFailover(control_pb2.FailoverPauseRequest(paused=paused), timeout=6)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
            print(f"synco-ctl: error: {error.details()}", file=sys.stderr)
            return EXIT_FAILED
        raise
    what = "paused" if paused else "resumed"
    if reply.paused != paused:
        print(f"synco-ctl: error: a newer pause or resume was made meanwhile: {reply.note}", file=sys.stderr)
        return EXIT_FAILED
    print(f"automatic failover {what} cluster-wide ({reply.note})")
    deadline = time.monotonic() + 5.0
    while True:
        status = stub.Status(control_pb2.ClusterStatusRequest(), timeout=5)
        answered = {status.local.heartbeat.node: status.local.heartbeat}
        for peer in status.peers:
            if peer.reachable and peer.status.HasField("heartbeat"):
                answered[peer.node] = peer.status.heartbeat
        have = sorted(name for name, beat in answered.items() if beat.pause_note == reply.note)
        differ = sorted(set(answered) - set(have))
        away = sorted({p.node for p in status.peers} - set(answered))
        if not differ or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    print(
        f"heard by {', '.join(have)}"
        + (f"; not by {', '.join(away)} (it learns it when it is back)" if away else "")
    )
    if differ:
        notes = "; ".join(f"{name}: {answered[name].pause_note or 'never paused'}" for name in differ)
        print(
            f"synco-ctl: error: {', '.join(differ)} report another pause or resume ({notes})", file=sys.stderr
        )
        return EXIT_FAILED
    return EXIT_OK


def ask_promote(path: str, script: Script | None, arguments: argparse.Namespace) -> int:
    from synco.ctl_promote import promote

    dns_named = None
    if script is not None and script.dns is not None:
        from synco.master_record import named_by_each

        dns_named = named_by_each
    with grpc.insecure_channel(f"unix:{path}") as channel:
        stub = control_pb2_grpc.ControlStub(channel)
        return promote(
            stub,
            script,
            arguments.node,
            dry_run=arguments.dry_run,
            force=arguments.force,
            as_json=arguments.json,
            timeout=arguments.timeout,
            dns_named=dns_named,
        )


if __name__ == "__main__":
    sys.exit(main())
