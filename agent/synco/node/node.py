"""One server's agent: observes (peers, the master's changes, its pulls), decides with the
pure replication rules, acts, and logs one verdict per cycle."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import grpc

from synco.core import backup_schedule, replication
from synco.core.errors import ConfigError, SyncoError
from synco.core.health import Health, Level, Problem, assess
from synco.core.model import AgentSettings, Role, Script, Server
from synco.core.paths import normalize_relative
from synco.node.backup import store_of, take_snapshot
from synco.node.metrics import Metrics
from synco.node.pull import PullResult, pull
from synco.node.state import load_state, save_state
from synco.node.tls import load_credentials
from synco.node.watch import WatchError, generations
from synco.resolver import resolve
from synco.v1 import peer_pb2, peer_pb2_grpc

PROTOCOL_VERSION = 1
MAX_MESSAGE = 4 << 20
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
]
# A change stream across a cut link would otherwise wait for TCP to give up (many minutes):
# pings on open calls find a dead peer within about 15 s, and peers accept pings that often;
# a lost connection is tried again every 2 s at most, not gRPC's default of up to 2 minutes.
KEEPALIVE = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]
ACCEPT_KEEPALIVE = [
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
]

log = logging.getLogger("synco.agent")

HEALTH = {
    Level.OK: peer_pb2.HEALTH_OK,
    Level.DEGRADED: peer_pb2.HEALTH_DEGRADED,
    Level.FAILING: peer_pb2.HEALTH_FAILING,
}
MAX_CYCLE_BACKOFF = 10.0  # below half of the unit's WatchdogSec: a failing loop still pings


def settings_hash(settings: AgentSettings) -> str:
    """Peers must agree on the timings that make the cluster behave: a hash of them."""
    timing = (
        f"{settings.heartbeat_interval}/{settings.debounce}/{settings.periodic_pull}/{settings.pull_retry}"
    )
    return hashlib.sha256(timing.encode()).hexdigest()[:16]


@dataclass
class PeerView:
    heartbeat: peer_pb2.Heartbeat | None = None
    received_at: float | None = None  # monotonic
    error: str = ""


class Node:
    def __init__(
        self,
        script: Script,
        me: str,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        assert script.agent is not None
        self.script = script
        self.settings = script.agent
        self.me = script.server(me)
        self.clock = clock
        self.wall = wall  # a backup server's schedule follows the snapshots' (UTC) names
        self.state_path = Path(self.settings.path(self.settings.state_dir, me)) / f"{me}.json"
        self.state = load_state(self.state_path)
        self.hash = settings_hash(self.settings)
        self.timing = replication.Timing(
            self.settings.debounce, self.settings.periodic_pull, self.settings.pull_retry
        )
        self.backup_timing = backup_schedule.BackupTiming(script.backup.interval, self.settings.pull_retry)
        self.latest_snapshot: tuple[str, float] | None = self._newest_snapshot()
        self.failures = 0  # pulls (or snapshots) that failed in a row
        self.master: str | None = script.master if script.master in script.server_names else None
        self.changed = asyncio.Condition()
        self.master_generation = 0
        self.last_change_at: float | None = None
        self.pull_task: asyncio.Task[PullResult] | None = None
        self.pulling_from: str | None = None
        self.last_pull: PullResult | None = None
        self.last_pull_at: float | None = None
        self.last_pull_unix = 0.0
        self.paused = False
        self.sync_requested = False
        self.peers: dict[str, PeerView] = {s.name: PeerView() for s in script.servers if s.name != me}
        self.verdict = "starting"
        self.wake = asyncio.Event()
        self.master_changed = asyncio.Event()
        self.rewatch = asyncio.Event()  # a watched directory appeared: start the watch again
        self.on_cycle: Callable[[], None] = lambda: None  # e.g. the systemd watchdog ping
        self.work_problem: str | None = None  # the role's work (watch, follow) failed; cleared once it runs
        self.health = Health()
        self.cycle_failures = 0  # cycles that raised in a row
        self.started_at = clock()
        self.silent_since_pull = False  # the master went silent since the last pull (or snapshot) began
        self.cancelling = False  # a cancel was sent to the pull in progress
        self.background: set[asyncio.Future[None]] = set()
        self.channels: dict[str, grpc.aio.Channel] = {}
        self.credentials = None if self.settings.insecure else load_credentials(self.settings, me)
        self._refusals: dict[str, float] = {}
        self.metrics = Metrics()
        self.behind_since: float | None = None  # when the replica first fell behind the master

    def reload(self, script: Script) -> list[str]:
        """Apply a re-read script: directories, method arguments, master and timings can
        change; servers, addresses and certificates need a restart (ConfigError)."""
        agent = script.agent
        if agent is None:
            raise ConfigError("the script no longer has an [agent] section")
        fixed = [(s.name, s.agent, s.root, s.host, s.role) for s in self.script.servers]
        if [(s.name, s.agent, s.root, s.host, s.role) for s in script.servers] != fixed:
            raise ConfigError(
                "servers, their hosts, roots, roles or agent addresses changed: restart the agents"
            )
        assert self.settings is not None
        for name in ("state_dir", "control_socket", "insecure", "ca_file", "cert_file", "key_file"):
            if getattr(agent, name) != getattr(self.settings, name):
                raise ConfigError(f"agent.{name} changed: restart the agent")
        changes = []
        if script.directories != self.script.directories:
            changes.append("directories")
        if script.method != self.script.method:
            changes.append("method")
        if agent != self.settings:
            changes.append("timings (every agent must be reloaded alike)")
        if script.master != self.script.master:
            changes.append("master")
        if script.backup != self.script.backup:
            changes.append("backup schedule and policy")
        self.script, self.settings = script, agent
        self.backup_timing = backup_schedule.BackupTiming(script.backup.interval, agent.pull_retry)
        self.me = script.server(self.me.name)
        self.hash = settings_hash(agent)
        self.timing = replication.Timing(agent.debounce, agent.periodic_pull, agent.pull_retry)
        if script.master in script.server_names:
            self.set_master(script.master, "named in the reloaded script")
        if "directories" in changes:
            self.master_changed.set()  # restart the watch (or the follow) with the new directories
        self.wake.set()
        return changes

    # -- what this node says ---------------------------------------------------------------

    @property
    def is_master(self) -> bool:
        """This node acts as master: it is named master and is no backup server."""
        return self.master == self.me.name and not self.is_backup

    @property
    def is_backup(self) -> bool:
        return self.me.role == Role.BACKUP

    def _newest_snapshot(self) -> tuple[str, float] | None:
        """The snapshot a backup server's schedule continues from, and its time, read from its
        root: whatever became of the attempts that made it."""
        if not self.is_backup:
            return None
        try:
            snapshots = store_of(self.me).snapshots()
        except (OSError, SyncoError) as error:
            log.warning("%s: %s", self.me.name, error)
            return None
        newest = backup_schedule.schedule_basis(snapshots, self.wall())
        return None if newest is None else (newest.name, newest.time.timestamp())

    def role(self) -> peer_pb2.Role.ValueType:
        if self.is_master:
            return peer_pb2.ROLE_MASTER
        return peer_pb2.ROLE_BACKUP if self.me.role == Role.BACKUP else peer_pb2.ROLE_REPLICA

    def heartbeat(self) -> peer_pb2.Heartbeat:
        return peer_pb2.Heartbeat(
            node=self.me.name,
            role=self.role(),
            epoch=self.state.epoch,
            generation=self.state.generation if self.is_master else self.state.pulled_generation,
            health=HEALTH[self.health.level],
            health_reason=self.health.reason,
            protocol_version=PROTOCOL_VERSION,
            settings_hash=self.hash,
            master=self.master or "",
            sent_unix_ms=int(time.time() * 1000),
            paused=self.paused,
            unwatched=self.is_master and self.work_problem is not None,
        )

    def status(self) -> peer_pb2.NodeStatus:
        result = self.last_pull
        return peer_pb2.NodeStatus(
            heartbeat=self.heartbeat(),
            verdict=self.verdict,
            master_generation=self.state.generation if self.is_master else self.master_generation,
            last_pull_unix_ms=int(self.last_pull_unix * 1000),
            last_pull_ok=result.ok if result else False,
            last_pull_message=result.message if result else "",
            last_pull_seconds=result.seconds if result else 0.0,
            lag_seconds=self.lag_seconds(),
            latest_snapshot=self.latest_snapshot[0] if self.latest_snapshot else "",
            next_snapshot_unix_ms=int((self._backup_wake_at() or 0) * 1000),
        )

    def lag_seconds(self) -> float:
        if self.is_master or self.behind_since is None:
            return 0.0
        return round(self.clock() - self.behind_since, 3)

    def accept(self, heartbeat: peer_pb2.Heartbeat) -> str | None:
        """Why a peer's heartbeat is refused, or None to accept it."""
        if heartbeat.node not in self.peers:
            return f"{heartbeat.node!r} is not a peer of {self.me.name}"
        if heartbeat.protocol_version != PROTOCOL_VERSION:
            return f"protocol version {heartbeat.protocol_version}, expected {PROTOCOL_VERSION}"
        if heartbeat.settings_hash != self.hash:
            return "different cluster timing settings: every agent must run the same [agent] settings"
        return None

    def record_peer(self, heartbeat: peer_pb2.Heartbeat) -> None:
        self.peers[heartbeat.node] = PeerView(heartbeat, self.clock())
        if heartbeat.role == peer_pb2.ROLE_MASTER and heartbeat.master == heartbeat.node:
            self.heard_generation(heartbeat.node, heartbeat.generation)

    def heard_generation(self, source: str, generation: int) -> None:
        """The master `source` reached `generation` (said by its change stream, heartbeat or
        status): every source counts, so a replica whose stream broke still learns of changes."""
        if source != self.master or source == self.me.name or generation <= self.master_generation:
            return
        self.master_generation = generation
        self.last_change_at = self.clock()
        self.wake.set()

    @property
    def heartbeat_timeout(self) -> float:
        return 3 * self.settings.heartbeat_interval

    def master_silent(self) -> bool:
        """A follower has not heard from its master within the heartbeat timeout (counted from
        the agent's start until a first heartbeat arrives)."""
        if self.master is None or self.master == self.me.name:
            return False
        view = self.peers.get(self.master)
        heard = self.started_at if view is None or view.received_at is None else view.received_at
        return self.clock() - heard > self.heartbeat_timeout

    # -- the loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [
            asyncio.create_task(self._heartbeats(stop)),
            asyncio.create_task(self._roles(stop)),
            asyncio.create_task(self._track_master(stop)),
        ]
        try:
            while not stop.is_set():
                backoff = self.guarded_cycle()
                with contextlib.suppress(TimeoutError):
                    if backoff is None:
                        await asyncio.wait_for(self.wake.wait(), timeout=self._next_check())
                    else:  # events must not turn a failing cycle into a busy loop
                        await asyncio.wait_for(stop.wait(), timeout=backoff)
                self.wake.clear()
        finally:
            for task in tasks:
                task.cancel()
            if self.pull_task is not None:
                self.pull_task.cancel()
            await asyncio.gather(*tasks, *(t for t in [self.pull_task] if t), return_exceptions=True)
            save_state(self.state_path, self.state)
            for channel in self.channels.values():
                await channel.close(None)

    def guarded_cycle(self) -> float | None:
        """One cycle; an unexpected error in it becomes the verdict and health FAILING, and
        the loop goes on after a backoff (returned, in seconds) instead of ending the agent."""
        try:
            self.cycle()
        except Exception as error:
            self.cycle_failures += 1
            backoff = min(MAX_CYCLE_BACKOFF, 2.0 ** (self.cycle_failures - 1))
            reason = f"cycle failed: {type(error).__name__}: {error}"
            self.health = Health(Level.FAILING, reason)
            self.verdict = f"{reason}; trying again in {backoff:g} s"
            log.error("%s: %s", self.me.name, self.verdict)
            log.debug("%s: the failed cycle's traceback", self.me.name, exc_info=True)
            self.metrics.cycle_errors.inc()
            self._update_metrics()
            return backoff
        self.cycle_failures = 0
        return None

    def cycle(self) -> None:
        """Observe, decide, act; log the verdict (INFO when it changes, DEBUG when it repeats)."""
        self.on_cycle()
        if self.pull_task is not None and self.pull_task.done():
            self._finish_pull(self.pull_task)
        if self.is_master and not self.state.acted_as_master:
            # persisted before acting: after a restart too, the next pull from any master keeps
            # aside what it would overwrite or delete (the writes this node took as master)
            self.state = replace(self.state, acted_as_master=True)
            save_state(self.state_path, self.state)
        if self.master == self.me.name and self.is_backup:
            verdict = (
                "named master, but a backup server keeps snapshots, not a live copy: not acting as master"
            )
            self._cancel_pull()
        elif self.is_master:
            verdict = f"master at generation {self.state.generation}"
            if self.pull_task is not None:
                verdict = f"now master: cancelling the pull from {self.pulling_from}"
                self._cancel_pull()
        else:
            silent = self.master_silent()
            self.silent_since_pull = self.silent_since_pull or silent
            if self.is_backup:
                decision = backup_schedule.decide(self._backup_view(), self.backup_timing)
            else:
                decision = replication.decide(self._view(), self.timing)
            if self.master is not None and silent:
                decision = replication.master_silent(decision, self.master, self.heartbeat_timeout)
            verdict = decision.verdict
            if decision.action in (replication.Action.PULL, replication.Action.SNAPSHOT):
                self.sync_requested = False
                self._start_pull()
            elif decision.action == replication.Action.CANCEL and self.pull_task is not None:
                self._cancel_pull()
        self.health = assess(self._problems())
        if self.health.level != Level.OK and self.health.reason not in verdict:
            verdict = f"{verdict} ({self.health.line()})"
        self._update_metrics()
        if verdict != self.verdict:
            log.info("%s: %s", self.me.name, verdict)
        else:
            log.debug("%s: %s", self.me.name, verdict)
        self.verdict = verdict

    def _problems(self) -> list[Problem | None]:
        """What is wrong with this node as it is observed now (see synco.core.health)."""
        mountpoint = self.me.mountpoint
        return [
            Problem(Level.FAILING, f"{mountpoint} is not mounted")
            if mountpoint is not None and not os.path.ismount(mountpoint)
            else None,
            Problem(Level.DEGRADED, self.work_problem) if self.work_problem else None,
            Problem(Level.DEGRADED, f"last {'snapshot' if self.is_backup else 'pull'} failed")
            if self.last_pull is not None and not self.last_pull.ok
            else None,
            Problem(
                Level.DEGRADED,
                f"no heartbeat from master {self.master} for over {self.heartbeat_timeout:g} s",
            )
            if self.master_silent()
            else None,
        ]

    def _next_check(self) -> float:
        """Seconds until a decision could change with no event: a debounce or retry expiring.
        Events (a change, a finished pull, an operator intent) wake the loop earlier."""
        now = self.clock()
        due = [1.0]
        if self.last_change_at is not None and self.master_generation > self.state.pulled_generation:
            due.append(self.timing.debounce - (now - self.last_change_at))
        if self.last_pull is not None and not self.last_pull.ok and self.last_pull_at is not None:
            due.append(self.timing.retry - (now - self.last_pull_at))
        backup_due = self._backup_wake_at()
        if backup_due is not None:
            due.append(backup_due - self.wall())
        return max(0.01, min(d for d in due if d > 0))

    def _backup_wake_at(self) -> float | None:
        if not self.is_backup or self.master in (None, self.me.name):
            return None
        return backup_schedule.wake_at(self._backup_view(), self.backup_timing)

    def _update_metrics(self) -> None:
        # A backup server is behind by design between snapshots: its freshness is the time of
        # its newest snapshot, not a lag that alerts would fire on.
        behind = (
            not self.is_master
            and not self.is_backup
            and self.master_generation > self.state.pulled_generation
        )
        if behind and self.behind_since is None:
            self.behind_since = self.last_change_at or self.clock()
        elif not behind:
            self.behind_since = None
        metrics = self.metrics
        metrics.health.state(self.health.level.name.lower())
        follower = self.master is not None and self.master != self.me.name
        metrics.master_reachable.set(1 if follower and not self.master_silent() else 0)
        metrics.is_master.set(1 if self.is_master else 0)
        metrics.role.state(peer_pb2.Role.Name(self.role()).removeprefix("ROLE_").lower())
        if self.latest_snapshot is not None:
            metrics.latest_snapshot.set(self.latest_snapshot[1])
        metrics.epoch.set(self.state.epoch)
        metrics.generation.set(self.state.generation if self.is_master else self.state.pulled_generation)
        metrics.master_generation.set(self.state.generation if self.is_master else self.master_generation)
        metrics.lag.set(
            0
            if self.is_master or self.is_backup
            else max(0, self.master_generation - self.state.pulled_generation)
        )
        metrics.lag_seconds.set(self.lag_seconds())
        now = self.clock()
        for name, view in self.peers.items():
            if view.received_at is not None:
                metrics.heartbeat_age.labels(peer=name).set(round(now - view.received_at, 3))

    def _view(self) -> replication.ReplicaView:
        heartbeat = self._master_heartbeat()
        return replication.ReplicaView(
            now=self.clock(),
            master=self.master,
            master_generation=self.master_generation,
            last_change_at=self.last_change_at,
            pulled_generation=self.state.pulled_generation,
            pulled_master=self.state.pulled_master,
            pulling_from=self.pulling_from,
            last_pull_at=self.last_pull_at,
            last_pull_ok=self.last_pull.ok if self.last_pull else True,
            paused=self.paused,
            sync_requested=self.sync_requested,
            master_view=self._master_view(),
            master_failing=self._master_failing(),
            master_unwatched=heartbeat is not None and heartbeat.unwatched,
            diverged=self.state.acted_as_master,
            outlived_silence=self._outlived_silence(),
        )

    def _outlived_silence(self) -> bool:
        """The master went silent since the last pull began (it runs still, or it failed), and
        is heard again."""
        return self.silent_since_pull and not self.master_silent()

    def _master_heartbeat(self) -> peer_pb2.Heartbeat | None:
        """The master's own heartbeat, if it is recent (within the heartbeat timeout)."""
        view = self.peers.get(self.master or "")
        if view is None or view.heartbeat is None or view.received_at is None:
            return None
        if self.clock() - view.received_at > self.heartbeat_timeout:
            return None
        return view.heartbeat

    def _master_failing(self) -> str | None:
        """Why the master's recent heartbeat says it is failing (its disk is not mounted), or None."""
        heartbeat = self._master_heartbeat()
        if heartbeat is None or heartbeat.health != peer_pb2.HEALTH_FAILING:
            return None
        return heartbeat.health_reason or "no reason given"

    def _master_view(self) -> str | None:
        """Who the master's own recent heartbeat names as master; None without one (no
        heartbeat yet, or none for three intervals: a pull then finds out for itself)."""
        heartbeat = self._master_heartbeat()
        return None if heartbeat is None else heartbeat.master

    def _backup_view(self) -> backup_schedule.BackupView:
        latest = self.latest_snapshot
        return backup_schedule.BackupView(
            now=self.wall(),
            master=self.master,
            latest_at=latest[1] if latest else None,
            latest=latest[0] if latest else None,
            running_from=self.pulling_from,
            since_attempt=None if self.last_pull_at is None else self.clock() - self.last_pull_at,
            failures=self.failures,
            paused=self.paused,
            requested=self.sync_requested,
            master_view=self._master_view(),
            master_failing=self._master_failing(),
            outlived_silence=self._outlived_silence(),
        )

    def _cancel_pull(self) -> None:
        """Cancel the pull in progress once; its clean-up (SIGTERM, then SIGKILL) must run undisturbed."""
        if self.pull_task is not None and not self.cancelling:
            self.cancelling = True
            self.pull_task.cancel()

    def _start_pull(self) -> None:
        assert self.master is not None
        master = self.script.server(self.master)
        self.pulling_from, self.silent_since_pull = master.name, False
        if self.is_backup:  # snapshots keep everything: nothing to keep aside
            self.pull_task = asyncio.create_task(
                take_snapshot(self.script, master, self.me, self.master_generation)
            )
            self.pull_task.add_done_callback(lambda _: self.wake.set())
            return
        keep_aside = None
        if self.state.pulled_master != master.name or self.state.acted_as_master:
            # a new master, or this node acted as master since its last pull (its own writes)
            stamp = time.strftime("%Y.%m.%d-%H.%M.%S", time.gmtime())
            keep_aside = str(self.state_path.parent / "kept-aside" / self.me.name / stamp)
            log.warning(
                "%s: first pull from new master %s: files it would overwrite or delete go to %s",
                self.me.name,
                master.name,
                keep_aside,
            )
        self.pull_task = asyncio.create_task(
            pull(self.script, master, self.me, self.master_generation, keep_aside)
        )
        self.pull_task.add_done_callback(lambda _: self.wake.set())

    def _finish_pull(self, task: asyncio.Task[PullResult]) -> None:
        source, self.pulling_from, self.pull_task, self.cancelling = self.pulling_from, None, None, False
        self.last_pull_at, self.last_pull_unix = self.clock(), time.time()
        if self.is_backup:  # a cancelled snapshot may still have been published meanwhile
            self.latest_snapshot = self._newest_snapshot()
        if task.cancelled():
            log.info(
                "%s: %s from %s cancelled", self.me.name, "snapshot" if self.is_backup else "pull", source
            )
            return  # neither a success nor a failure: no retry delay, health unchanged
        error = task.exception()
        if error is not None:  # a bug or a missing program must not take the agent down
            result = PullResult(False, f"{type(error).__name__}: {error}", 0.0, 0)
        else:
            result = task.result()
        self.last_pull = result
        self.failures = 0 if result.ok else self.failures + 1
        self.metrics.pull_seconds.observe(result.seconds)
        if not result.ok:
            self.metrics.pull_failures.inc()
        if result.ok:
            self.state = replace(
                self.state, pulled_generation=result.generation, pulled_master=source, acted_as_master=False
            )
            save_state(self.state_path, self.state)
            if result.snapshot is not None:
                self.metrics.snapshots.inc()
            log.info(
                "%s: %s generation %d from %s in %.2f s%s",
                self.me.name,
                "snapshot of" if result.snapshot else "pulled",
                result.generation,
                source,
                result.seconds,
                f": {result.message}" if result.snapshot else "",
            )
        else:
            what = "snapshot" if self.is_backup else "pull"
            log.warning("%s: %s from %s failed: %s", self.me.name, what, source, result.message)

    # -- talking to peers ------------------------------------------------------------------------

    def channel(self, server: Server) -> grpc.aio.Channel:
        if server.name not in self.channels:
            assert server.agent is not None
            if self.credentials is None:
                channel = grpc.aio.insecure_channel(server.agent, options=[*CHANNEL_OPTIONS, *KEEPALIVE])
            else:  # the peer's certificate must name the server we mean to reach
                options = [*CHANNEL_OPTIONS, *KEEPALIVE, ("grpc.ssl_target_name_override", server.name)]
                channel = grpc.aio.secure_channel(server.agent, self.credentials.channel(), options=options)
            self.channels[server.name] = channel
        return self.channels[server.name]

    def refuse(self, reason: str) -> str:
        """Log a refused caller (at most once a minute per reason) and return the reason."""
        now = self.clock()
        if now - self._refusals.get(reason, -1e9) >= 60:
            self._refusals[reason] = now
            log.warning("%s: refused a caller: %s", self.me.name, reason)
        return reason

    def authorize(self, identity: str | None, claimed: str | None) -> str | None:
        """Why a caller is refused (its certificate names no peer, or another node), or None."""
        if self.credentials is None:
            return None
        if identity not in self.peers:
            return self.refuse(f"certificate for {identity!r}, which is not a peer of {self.me.name}")
        if claimed is not None and claimed != identity:
            return self.refuse(f"certificate for {identity!r} but the call claims to be {claimed!r}")
        return None

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        """Every interval, a heartbeat to each peer, independently: a peer that does not answer
        delays nobody else's (its call is left to its own deadline, and not repeated meanwhile)."""
        pending: dict[str, asyncio.Task[None]] = {}
        try:
            while not stop.is_set():
                # One call per pair of nodes and interval: the reply carries the other side's
                # heartbeat, so the node whose name sorts first calls and both learn.
                for name in self.peers:
                    if name > self.me.name and (name not in pending or pending[name].done()):
                        pending[name] = asyncio.create_task(self._beat(self.script.server(name)))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.settings.heartbeat_interval)
        finally:
            for task in pending.values():
                task.cancel()
            await asyncio.gather(*pending.values(), return_exceptions=True)

    async def _beat(self, server: Server) -> None:
        stub = peer_pb2_grpc.PeerStub(self.channel(server))
        try:
            reply = await stub.SendHeartbeat(self.heartbeat(), timeout=self.settings.heartbeat_interval * 2)
        except grpc.aio.AioRpcError as error:
            self.peers[server.name].error = f"{error.code().name}: {error.details()}"
            return
        except Exception as error:  # never let one bad exchange stop the heartbeats
            self.peers[server.name].error = f"{type(error).__name__}: {error}"
            log.error(
                "%s: heartbeat to %s failed: %s", self.me.name, server.name, self.peers[server.name].error
            )
            return
        if not reply.accepted:
            self.peers[server.name].error = f"refused our heartbeat: {reply.reason}"
            log.warning("%s: %s refused our heartbeat: %s", self.me.name, server.name, reply.reason)
            return
        problem = (
            self.accept(reply.self)
            if reply.self.node == server.name
            else f"it answered as {reply.self.node!r}"
        )
        if problem is not None:
            self.peers[server.name].error = f"bad heartbeat reply: {problem}"
            log.warning("%s: bad heartbeat reply from %s: %s", self.me.name, server.name, problem)
            return
        self.record_peer(reply.self)

    async def _track_master(self, stop: asyncio.Event) -> None:
        """A master given as a DNS name is looked up again every `master_poll` seconds."""
        if self.script.master in self.script.server_names:
            return
        while not stop.is_set():
            try:
                decision, _ = await asyncio.to_thread(resolve, self.script, self.me.name)
                self.set_master(decision.server, decision.reason)
            except Exception as error:  # DNS and resolver errors of every kind: keep the last master
                log.warning("%s: cannot tell who is master: %s", self.me.name, error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.settings.master_poll)

    def set_master(self, master: str, reason: str) -> None:
        if master == self.master:
            return
        log.warning(
            "%s: master is now %s (was %s): %s", self.me.name, master, self.master or "unknown", reason
        )
        self.master = master
        self.master_generation = 0
        self.last_change_at = None
        self.master_changed.set()
        self.wake.set()
        notify = asyncio.ensure_future(self._notify_changed())
        self.background.add(notify)
        notify.add_done_callback(self.background.discard)

    async def _notify_changed(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def _roles(self, stop: asyncio.Event) -> None:
        """Do the current role's work (watch as master, follow as replica) until the master
        changes; work that fails is started again after a backoff (1 s, doubling up to 30 s),
        and says so in the verdict and health until it runs again."""
        failures = 0
        while not stop.is_set():
            if self.master_changed.is_set():
                self.work_problem = None  # the former role's work is over, failed or not
            self.master_changed.clear()
            if self.master is None:
                work = asyncio.create_task(self._idle())  # nothing to do until a master is known
            elif self.master == self.me.name and self.is_backup:
                work = asyncio.create_task(self._idle())  # a backup server never acts as master
            elif self.is_master:
                log.debug("%s: watching for changes", self.me.name)
                work = asyncio.create_task(self._watch())
            else:
                log.debug("%s: following %s", self.me.name, self.master)
                work = asyncio.create_task(self._follow(stop))
            self.rewatch.clear()
            waits = [
                asyncio.create_task(stop.wait()),
                asyncio.create_task(self.master_changed.wait()),
                asyncio.create_task(self.rewatch.wait()),
            ]
            try:
                await asyncio.wait([work, *waits], return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in [work, *waits]:
                    task.cancel()
                await asyncio.gather(work, *waits, return_exceptions=True)
            if (
                work.done()
                and not work.cancelled()
                and not stop.is_set()
                and not self.master_changed.is_set()
            ):
                error = work.exception()
                if error is None and self.is_master:
                    failures = 0
                    continue  # the watch ended on purpose (a directory appeared or was replaced)
                failures += 1
                what = "watcher" if self.is_master else "change stream"
                why = (
                    (str(error) if isinstance(error, WatchError) else f"{type(error).__name__}: {error}")
                    if error
                    else "ended"
                )
                self.work_problem = f"{what} failed: {why}; starting it again"
                log.error("%s: %s", self.me.name, self.work_problem)
                self.wake.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=min(30.0, 2.0 ** (failures - 1)))
            else:
                failures = 0

    async def _idle(self) -> None:
        await asyncio.Event().wait()

    async def _watch(self) -> None:
        """As master: turn file changes under the directories into generations.

        Returns (and is started again) when a watched directory appears or is replaced, as in
        `mv srv srv.old && mkdir srv`: inotify would otherwise keep watching the old one.
        """
        paths = [Path(self.me.root) / normalize_relative(d.path) for d in self.script.directories]
        missing = [p for p in paths if not p.is_dir()]
        never = asyncio.Event()
        appearing = asyncio.ensure_future(self._appearing(missing)) if missing else None
        try:
            async for batch in generations(paths, self.state.generation, never, announce_ready=True):
                if self.work_problem is not None:
                    log.info("%s: watching for changes again", self.me.name)
                    self.work_problem = None  # the watch is in place
                self.state = replace(self.state, generation=batch.generation)
                save_state(self.state_path, self.state)
                async with self.changed:
                    self.changed.notify_all()
                if batch.lost_root:
                    log.info("%s: a watched directory was replaced: watching again", self.me.name)
                    return
            if appearing is not None:
                await appearing  # nothing to watch yet: wait for a directory to appear
        finally:
            if appearing is not None:
                appearing.cancel()

    async def _appearing(self, paths: list[Path]) -> None:
        while not any(p.is_dir() for p in paths):
            await asyncio.sleep(2.0)
        log.info("%s: a watched directory appeared: watching again", self.me.name)
        self.rewatch.set()

    async def _follow(self, stop: asyncio.Event) -> None:
        """As replica: follow the master's stream of generations (reconnecting as needed)."""
        while not stop.is_set() and self.master is not None:
            stub = peer_pb2_grpc.PeerStub(self.channel(self.script.server(self.master)))
            # Generations count per master: only a pull from this master says where we are.
            since = self.state.pulled_generation if self.state.pulled_master == self.master else 0
            request = peer_pb2.WatchRequest(node=self.me.name, since_generation=since)
            streamed, opened = False, self.clock()
            try:
                async for change in stub.WatchChanges(request, timeout=3600):
                    if change.master != self.master:
                        break  # the master changed meanwhile: _roles restarts us
                    streamed = True
                    self.work_problem = None
                    self.heard_generation(change.master, change.generation)
            except grpc.aio.AioRpcError as error:
                level = logging.DEBUG if error.code() == grpc.StatusCode.UNAVAILABLE else logging.WARNING
                log.log(
                    level,
                    "%s: change stream from %s: %s %s",
                    self.me.name,
                    self.master,
                    error.code().name,
                    error.details(),
                )
            if streamed and self.clock() - opened >= 1.0:
                continue  # a stream that worked for a while and broke: reconnect at once
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
