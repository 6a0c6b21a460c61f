"""`synco-agent --config SCRIPT [--as NAME]`: run this server's agent until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import os
import signal
import socket
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from synco import __version__
from synco.core.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ConfigError, OperationError, SyncoError
from synco.core.health import Level
from synco.core.model import Script
from synco.loader import load
from synco.node.cluster import control_socket_path, load_cluster
from synco.node.node import ACCEPT_KEEPALIVE, CHANNEL_OPTIONS, Node
from synco.node.rpc_guard import CorruptRequests
from synco.node.services import AuthorizedHealth, ControlService, PeerService
from synco.node.tls import self_test
from synco.v1 import control_pb2_grpc, peer_pb2_grpc

log = logging.getLogger("synco.agent")


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about readiness and liveness; a no-op elsewhere."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(message.encode(), address)
        except OSError as error:
            log.warning("cannot notify systemd: %s", error)


async def serve(script: Script, me: str) -> None:
    assert script.agent is not None
    if not script.agent.insecure:  # peers would refuse it: say so now, not in every handshake
        always, now = self_test(script.agent, me)
        if always is not None:
            raise ConfigError(always)
        if now is not None:
            log.error("%s: peers refuse this certificate until it is fixed: %s", me, now)
    node = Node(script, me)
    server = node.me
    assert script.agent is not None and server.agent is not None
    if node.credentials is None:
        log.warning("%s: insecure = true: agents talk in plaintext on loopback addresses", me)

    hold_instance_lock(Path(script.agent.path(script.agent.state_dir, me)) / f"{me}.lock", me)
    # grpc enables SO_REUSEPORT by default: a second agent could then share the port unnoticed
    peer_server = grpc.aio.server(
        options=[*CHANNEL_OPTIONS, *ACCEPT_KEEPALIVE, ("grpc.so_reuseport", 0)],
        interceptors=[CorruptRequests(node.refuse)],
    )
    peer_pb2_grpc.add_PeerServicer_to_server(PeerService(node), peer_server)
    health_servicer = AuthorizedHealth(node)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, peer_server)
    if node.credentials is None:
        peer_server.add_insecure_port(server.agent)
    else:
        peer_server.add_secure_port(server.agent, node.credentials.server())

    control_path = control_socket_path(script, me)
    private_directory(control_path.parent)
    if control_path.is_symlink() or (control_path.exists() and not control_path.is_socket()):
        raise ConfigError(f"{control_path} exists and is not a socket; refusing to replace it")
    control_path.unlink(missing_ok=True)
    control_server = grpc.aio.server(options=CHANNEL_OPTIONS, interceptors=[CorruptRequests(node.refuse)])
    control_pb2_grpc.add_ControlServicer_to_server(ControlService(node), control_server)
    previous = os.umask(0o077)  # the socket is bound here, private: only its owner (root) connects
    try:
        control_server.add_insecure_port(f"unix:{control_path}")
    finally:
        os.umask(previous)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    config = script.source or ""
    reloads: set[asyncio.Task[None]] = set()  # referenced until done, as asyncio requires

    def on_sighup() -> None:
        task = asyncio.ensure_future(reload(node, config))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)

    await peer_server.start()
    await control_server.start()
    if server.metrics is not None:
        node.metrics.serve(server.metrics)
        log.info("%s: metrics on http://%s/metrics", me, server.metrics)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    log.info("%s: serving peers on %s, control on %s", me, server.agent, control_path)
    sd_notify("READY=1")
    ping, follow_health = watchdog_pinger(time.monotonic), serving_follower(node, health_servicer, stop)

    def on_cycle() -> None:
        ping()
        follow_health()

    node.on_cycle = on_cycle
    not_serving = asyncio.ensure_future(_not_serving_on(stop, health_servicer))
    try:
        await node.run(stop)
    finally:
        not_serving.cancel()
        await health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        sd_notify("STOPPING=1")
        await peer_server.stop(grace=2)
        await control_server.stop(grace=1)
        control_path.unlink(missing_ok=True)
        log.info("%s: stopped", me)


async def _not_serving_on(stop: asyncio.Event, health_servicer: AuthorizedHealth) -> None:
    """Tell health checkers at once when the agent starts stopping."""
    await stop.wait()
    await health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)


def serving_follower(node: Node, health: AuthorizedHealth, stop: asyncio.Event) -> Callable[[], None]:
    """The gRPC health service's answer follows the node's health: NOT_SERVING while it is
    failing (its disk is not mounted, its loop fails), SERVING again once it is not."""
    serving = [True]
    pending: set[asyncio.Future[None]] = set()

    def follow() -> None:
        ok = node.health.level != Level.FAILING
        if ok != serving[0] and not stop.is_set():
            serving[0] = ok
            status = (
                health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            task = asyncio.ensure_future(health.set("", status))
            pending.add(task)
            task.add_done_callback(pending.discard)

    return follow


def private_directory(path: Path) -> None:
    """The control socket's directory: created 0700 if missing; one that exists must belong
    to this user and be writable by nobody else (others could replace the socket), or
    ConfigError. The mode of a directory the agent did not create is never changed."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(path)
    where = f"agent.control_socket: {path}"
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{where} is not a directory")
    if info.st_uid != os.geteuid():
        raise ConfigError(f"{where} belongs to uid {info.st_uid}, not to this agent's user")
    if info.st_mode & 0o022:
        who = "everyone" if info.st_mode & 0o002 else "its group"
        raise ConfigError(
            f"{where} is writable by {who} (mode {stat.S_IMODE(info.st_mode):04o}), who could replace "
            "the agent's socket: use a directory only this user can write to, such as /run/synco"
        )


_instance_locks: list[int] = []  # held for the life of the process


def hold_instance_lock(path: Path, me: str) -> None:
    """One agent per server: a second one would share the port, state and files."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OperationError(f"another agent for {me} is running (lock {path})") from None
    _instance_locks.append(fd)


async def reload(node: Node, config: str) -> None:
    """SIGHUP: read the script again and apply what can change without a restart."""
    try:
        script = await asyncio.to_thread(load, config)
        changes = node.reload(script)
    except SyncoError as error:
        log.error("%s: reload refused, nothing changed: %s", node.me.name, error)
        return
    log.warning("%s: reloaded %s: %s", node.me.name, config, ", ".join(changes) or "nothing changed")


def watchdog_pinger(clock: Callable[[], float]) -> Callable[[], None]:
    """A ping for systemd's watchdog, sent from the agent's loop (so a hung loop stops the
    pings and systemd restarts the agent), at most twice per WatchdogSec."""
    interval = int(os.environ.get("WATCHDOG_USEC", "0")) / 2e6
    last = [float("-inf")]

    def ping() -> None:
        if interval > 0 and clock() - last[0] >= interval:
            last[0] = clock()
            sd_notify("WATCHDOG=1")

    return ping


def check(script: Script, me: str, config: str) -> int:
    """--check: the configuration, then everything the agent would open; exit 2 if any fails."""
    from synco.node.preflight import preflight  # cryptography: only here, not in the running agent

    role = "master" if script.master == me else f"{script.server(me).role.value}; master {script.master}"
    print(f"ok    configuration {config}: valid, for {me} ({role})")
    checks = preflight(script, me)
    for item in checks:
        print(item.line())
    failed = [c for c in checks if not c.ok]
    if failed:
        print(f"synco-agent: {len(failed)} check(s) failed for {me}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="synco-agent", description="Run this server's Synco agent.")
    parser.add_argument("--config", required=True, metavar="SCRIPT", help="the cluster's backup script")
    parser.add_argument("--as", dest="as_server", metavar="NAME", help="this server's name in the script")
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit")
    parser.add_argument("--verbose", "-v", action="store_true", help="also log repeated verdicts")
    parser.add_argument("--version", action="version", version=f"synco-agent {__version__}")
    arguments = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if arguments.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("grpc").setLevel(logging.WARNING)
    try:
        script, me = load_cluster(arguments.config, arguments.as_server)
        if arguments.check:
            return check(script, me, arguments.config)
        asyncio.run(serve(script, me))
    except SyncoError as error:
        log.error("%s", error)
        return error.exit_code
    except KeyboardInterrupt:
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
