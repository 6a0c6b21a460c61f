"""One server's agent: observes (peers, the master's changes, its pulls), decides with the
pure replication rules, acts, and logs one verdict per cycle."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import grpc

from synco.core import backup_schedule, replication
from synco.core.election import (
    Ballot,
    CatchUp,
    Check,
    Effect,
    ElectionTiming,
    Elector,
    Persist,
    Phase,
    PreVote,
    Publish,
    PublishOutcome,
    Renewal,
    Reply,
    Request,
    Send,
)
from synco.core.errors import ConfigError, SyncoError
from synco.core.failover import election_timing, failover_off
from synco.core.health import Health, Level, Problem, assess
from synco.core.model import AgentSettings, Event, Role, Script, Server
from synco.core.paths import normalize_relative
from synco.core.ranking import NO_DATA, Position, Standing
from synco.core.switchover import Handover, position_loss
from synco.node.backup import store_of, take_snapshot
from synco.node.election_link import (
    from_vote_reply,
    handover_message,
    promotion_status,
    renewal_reply,
    standing_of,
    vote_request,
)
from synco.node.hooks import RoleChange, role_handlers, run_role_hooks
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
CATCH_UP_TIMEOUT = ElectionTiming().catch_up_timeout
MAX_PAUSE_VERSION = 1 << 48  # one per operator's pause or resume: never reached, but bounded
MAX_CYCLE_BACKOFF = 10.0  # below half of the unit's WatchdogSec: a failing loop still pings


def settings_hash(settings: AgentSettings) -> str:
    """Peers must agree on the timings that make the cluster behave: a hash of them."""
    timing = (
        f"{settings.heartbeat_interval}/{settings.debounce}/{settings.periodic_pull}/{settings.pull_retry}"
        f"/{settings.lease}/{settings.lease_margin}/{settings.min_failover_interval}/{settings.max_failover_lag}"
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
            debounce=self.settings.debounce,
            periodic=self.settings.periodic_pull,
            retry=self.settings.pull_retry,
        )
        self.backup_timing = backup_schedule.BackupTiming(script.backup.interval, self.settings.pull_retry)
        self.latest_snapshot: tuple[str, float] | None = self._newest_snapshot()
        self.failures = 0  # pulls (or snapshots) that failed in a row
        self.failover_off = failover_off(script)  # None: the agents elect the master
        self.master: str | None = (
            script.master if script.master in script.server_names and self.failover_off else None
        )
        self.dns_named: tuple[str | None, int | None, str] | None = None  # the DNS poll's last answer
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
        self.pull_epoch = 0  # the epoch of the master the pull in progress copies
        self.silent_since_pull = False  # the master went silent since the last pull (or snapshot) began
        self.cancelling = False  # a cancel was sent to the pull in progress
        self.background: set[asyncio.Future[None]] = set()
        self.channels: dict[str, grpc.aio.Channel] = {}
        self.credentials = None if self.settings.insecure else load_credentials(self.settings, me)
        self._refusals: dict[str, float] = {}
        self.metrics = Metrics()
        self.behind_since: float | None = None  # when the replica first fell behind the master
        # the election: requests and replies wait here for the cycle, which alone decides
        self.election_requests: list[tuple[Request, asyncio.Future[Reply]]] = []
        self.election_replies: list[Reply] = []
        self.election_outcomes: list[Callable[[Elector, float], list[Effect]]] = []
        self.catching_up: tuple[str, Position] | None = None  # the winner's catch-up, due or running
        self.pull_is_catch_up = False  # the pull in progress is that catch-up
        self.dns_lagging: list[str] = []  # as master: authoritative servers not serving it yet
        self.last_election = ""  # the last election this node won: when, and why the others did not
        # operators' intents, carried out by the cycle: promotes, and pausing failover cluster-wide
        self.promote_requests: list[
            tuple[peer_pb2.PromoteRequest, asyncio.Future[peer_pb2.PromoteReply]]
        ] = []
        self.pause_requests: list[tuple[bool, asyncio.Future[str]]] = []
        self.frozen_changes = False  # changes seen while handing over (not announced as generations)
        # role-change hooks: run one after another, in the order the changes happened
        self.was_acting = False
        self.former_master: str | None = None  # the master before the current one
        self.hooks: asyncio.Queue[RoleChange] | None = None
        # when it last stopped acting as master (monotonic; a node that crashed while acting:
        # its start): its pulls keep aside for a while after, see _keep_aside_window
        self.stopped_acting_at: float | None = self.started_at if self.state.acted_as_master else None
        self.elector: Elector | None = None
        if self.failover_off is None:
            peers = tuple(self.peers)
            self.elector = Elector(
                self._standing(),
                script.voters,
                peers,
                election_timing(self.settings),
                Ballot(self.state.epoch, self.state.voted_for),
                clock(),
                random.Random(),
            )
            self.elector.paused = self.state.failover_paused
            self.elector.check_hooks = bool(role_handlers(script, me, Event.PRE_PROMOTE))

    def reload(self, script: Script) -> list[str]:
        """Apply a re-read script: directories, method arguments, master and timings can
        change; servers, addresses and certificates need a restart (ConfigError)."""
        agent = script.agent
        if agent is None:
            raise ConfigError("the script no longer has an [agent] section")
        fixed = [(s.name, s.agent, s.root, s.host, s.role, s.voter) for s in self.script.servers]
        if [(s.name, s.agent, s.root, s.host, s.role, s.voter) for s in script.servers] != fixed:
            raise ConfigError(
                "servers, their hosts, roots, roles, votes or agent addresses changed: restart the agents"
            )
        if (failover_off(script) is None) != (self.failover_off is None) or script.dns != self.script.dns:
            raise ConfigError("automatic failover or the [dns] section changed: restart the agents")
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
        self.timing = replication.Timing(
            debounce=agent.debounce, periodic=agent.periodic_pull, retry=agent.pull_retry
        )
        if self.elector is not None:
            self.elector.timing = election_timing(agent)
            self.elector.check_hooks = bool(role_handlers(script, self.me.name, Event.PRE_PROMOTE))
        if "directories" in changes:
            self.master_changed.set()  # restart the watch (or the follow) with the new directories
        self.wake.set()
        return changes

    # -- what this node says ---------------------------------------------------------------

    @property
    def is_master(self) -> bool:
        """This node acts as master: elected, named by DNS and leased (automatic failover),
        or named master (otherwise); never a backup server or a witness. Read live: a lease
        that ran out ends the master's acts at once, not at the next cycle."""
        if self.is_backup or self.is_witness:
            return False
        if self.elector is not None:
            return self.elector.acting(self.clock())
        return self.master == self.me.name

    @property
    def handing_over(self) -> bool:
        """This master hands over to another node (it announces no more generations)."""
        return self.elector is not None and self.elector.handing is not None

    @property
    def is_backup(self) -> bool:
        return self.me.role == Role.BACKUP

    @property
    def is_witness(self) -> bool:
        return self.me.role == Role.WITNESS

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
        if self.is_witness:
            return peer_pb2.ROLE_WITNESS
        return peer_pb2.ROLE_BACKUP if self.me.role == Role.BACKUP else peer_pb2.ROLE_REPLICA

    def position(self) -> Position:
        """How current this node's data is (the master's: its epoch and generation)."""
        if self.is_master:
            return Position(self.state.epoch, self.state.generation)
        return Position(self.state.data_epoch, self.state.data_generation)

    def _ineligible(self) -> str:
        """Why this node may not become master now ("" if it may)."""
        if self.is_witness:
            return "a witness holds no data"
        if self.is_backup:
            return "a backup server"
        if self.me.priority <= 0:
            return "priority 0"
        veto = self.elector.veto(self.clock()) if self.elector is not None else ""
        if veto:
            return veto
        if self.health.level == Level.FAILING:
            return f"failing: {self.health.reason}"
        lag = self.lag_seconds()
        if lag > self.settings.max_failover_lag:
            return f"{lag:.0f} s behind its master (max_failover_lag = {self.settings.max_failover_lag:g})"
        return ""

    def _standing(self) -> Standing:
        incumbent = self.dns_named is not None and self.dns_named[0] == self.me.name
        if self.is_witness:
            return Standing(self.me.name, NO_DATA, 0, "a witness holds no data")
        return Standing(self.me.name, self.position(), self.me.priority, self._ineligible(), incumbent)

    def heartbeat(self) -> peer_pb2.Heartbeat:
        acting = self.is_master
        position = self.position()
        return peer_pb2.Heartbeat(
            node=self.me.name,
            role=self.role(),
            epoch=self.state.epoch,
            generation=self.state.generation
            if acting
            else (self.state.data_generation if self.elector else self.state.pulled_generation),
            health=HEALTH[self.health.level],
            health_reason=self.health.reason,
            protocol_version=PROTOCOL_VERSION,
            settings_hash=self.hash,
            master=self.master or "",
            sent_unix_ms=int(self.wall() * 1000),
            paused=self.paused,
            unwatched=acting and self.work_problem is not None,
            data_epoch=position.epoch,
            ineligible=self._ineligible(),
            acting=acting,
            failover_paused=self.state.failover_paused,
            pause_version=self.state.pause_version,
            pause_note=self.state.pause_note,
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
            election=self.elector.verdict if self.elector else "",
            lease_remaining=self.elector.lease_remaining(self.clock()) if self.elector else 0.0,
            failover_off=self.failover_off or "",
            dns_lagging=self.dns_lagging,
            last_election=self.last_election,
            promotion=promotion_status(self.elector.promotion if self.elector else None),
            candidate=self._standing().ineligible,
            phase=self.elector.phase.value if self.elector else "",
        )

    def lag_seconds(self) -> float:
        if self.is_master or self.behind_since is None or self.is_witness:
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
        if heartbeat.pause_version > MAX_PAUSE_VERSION or len(heartbeat.pause_note) > 1000:
            return "a pause version or note out of range"
        return None

    def record_peer(self, heartbeat: peer_pb2.Heartbeat) -> None:
        self.peers[heartbeat.node] = PeerView(heartbeat, self.clock())
        if self.elector is not None and heartbeat.acting and heartbeat.epoch < self.elector.epoch:
            self.once_a_minute(
                f"{heartbeat.node} says it acts as master in epoch {heartbeat.epoch}, but this node has "
                f"seen epoch {self.elector.epoch}: ignored"
            )
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
        self.hooks = asyncio.Queue()
        tasks = [
            asyncio.create_task(self._heartbeats(stop)),
            asyncio.create_task(self._roles(stop)),
            asyncio.create_task(self._track_master(stop)),
            asyncio.create_task(self._run_hooks()),
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
            if self.was_acting:  # a master that stops acts no more: its demote hooks say so
                self.was_acting = False
                if role_handlers(self.script, self.me.name, Event.DEMOTE):
                    own = "backup" if self.is_backup else "replica"
                    reason = "the agent stopped"
                    change = RoleChange(
                        Event.DEMOTE, self.me.name, self.state.epoch, self.me.name, "", reason, "master", own
                    )
                    await self._hook(change)
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
        if self.elector is not None:
            self._maintenance()
            self._elect()
        self._choose_master()
        if self.is_master != self.was_acting:
            self._role_changed()
        if self.frozen_changes and not self.handing_over:
            self._announce_frozen_changes()
        if self.is_master and not self.state.acted_as_master:
            # persisted before acting: after a restart too, the next pull from any master keeps
            # aside what it would overwrite or delete (the writes this node took as master)
            self.state = replace(
                self.state,
                acted_as_master=True,
                data_epoch=self.state.epoch,
                data_generation=self.state.generation,
            )
            save_state(self.state_path, self.state)
        if self.is_witness:
            assert self.elector is not None or self.failover_off is not None
            verdict = self.elector.verdict if self.elector else f"witness: {self.failover_off}"
        elif self.catching_up is not None:
            assert self.elector is not None
            verdict = self.elector.verdict
        elif self.elector is not None and self.elector.phase == Phase.LEADER and not self.is_master:
            verdict = self.elector.verdict  # elected: publishing to DNS, or waiting for the lease
            self._cancel_pull()
        elif self.master == self.me.name and self.is_backup:
            verdict = (
                "named master, but a backup server keeps snapshots, not a live copy: not acting as master"
            )
            self._cancel_pull()
        elif self.is_master:
            verdict = f"master at generation {self.state.generation}"
            if self.elector is not None:
                verdict = f"{self.elector.verdict}, generation {self.state.generation}"
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
            if self.master is None and self.elector is not None:
                verdict = self.elector.verdict  # why no master is known: the election says
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

    # -- role-change hooks --------------------------------------------------------------------------

    def _role_changed(self) -> None:
        """This node started or stopped acting as master: its promote (or demote) hooks, then
        its role-change hooks, queued to run in order."""
        acting, self.was_acting = self.is_master, self.is_master
        me = self.me.name
        if not acting:
            self.stopped_acting_at = self.clock()
        own = "witness" if self.is_witness else "backup" if self.is_backup else "replica"
        elector = self.elector
        if acting:
            old, new = self.former_master or "", me
            reason = elector.last_election if elector else "named master"
        else:
            old = me
            new = self.master if self.master not in (None, me) else ""
            if not new and elector is not None and elector.designated is not None:
                new = elector.designated[0]
            reason = elector.verdict if elector else f"{self.master or 'no server'} is master now"
        log.warning(
            "%s: %s (%s)", me, "now acting as master" if acting else "no longer acting as master", reason
        )
        for event in (Event.PROMOTE if acting else Event.DEMOTE, Event.ROLE_CHANGE):
            change = RoleChange(
                event,
                me,
                self.state.epoch,
                old,
                new,
                reason,
                own if acting else "master",
                "master" if acting else own,
            )
            if self.hooks is not None and role_handlers(self.script, me, event):
                self.hooks.put_nowait(change)

    async def _run_hooks(self) -> None:
        assert self.hooks is not None
        while True:
            change = await self.hooks.get()
            await self._hook(change)

    async def _hook(self, change: RoleChange) -> str | None:
        def line(text: str) -> None:
            log.info("%s: %s", self.me.name, text)

        failure = await run_role_hooks(self.script, self.me.name, change, self.settings.hook_timeout, line)
        if failure is not None:
            log.error("%s: %s hook failed: %s", self.me.name, change.event.value, failure)
        else:
            log.info("%s: %s hooks ran", self.me.name, change.event.value)
        return failure

    async def _pre_promote(self, check: Check) -> None:
        """The pre-promote hooks decide whether this node may stand (their failure vetoes it)."""
        change = RoleChange(
            Event.PRE_PROMOTE,
            self.me.name,
            check.epoch,
            self.master or self.former_master or "",
            self.me.name,
            check.reason,
            "witness" if self.is_witness else "replica",
            "master",
        )
        failure = await self._hook(change)

        def outcome(elector: Elector, now: float) -> list[Effect]:
            return elector.checked(now, failure is None, failure or "")

        self.election_outcomes.append(outcome)
        self.wake.set()

    # -- maintenance: failover paused cluster-wide ----------------------------------------------

    def _maintenance(self) -> None:
        """Take the newest pause or resume heard of (an operator's here, or a peer's heartbeat),
        persisted: every node ends up with the operator's last word, also one that was down."""
        state = self.state
        version, paused, note = state.pause_version, state.failover_paused, state.pause_note
        requests, self.pause_requests = self.pause_requests, []
        for wanted, _ in requests:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.wall()))
            version, paused = max([version, *self._pause_versions()]) + 1, wanted
            note = f"{stamp}: {'paused' if wanted else 'resumed'} on {self.me.name}"
        for view in self.peers.values():
            beat = view.heartbeat
            # the newest wins: the higher version, then (two operators at once) the later note
            if beat is not None and (beat.pause_version, beat.pause_note) > (version, note):
                version, paused, note = beat.pause_version, beat.failover_paused, beat.pause_note
        if (version, paused, note) != (state.pause_version, state.failover_paused, state.pause_note):
            self.state = replace(state, pause_version=version, failover_paused=paused, pause_note=note)
            save_state(self.state_path, self.state)
            log.warning(
                "%s: automatic failover %s cluster-wide (%s)",
                self.me.name,
                "PAUSED" if paused else "resumed",
                note,
            )
        assert self.elector is not None
        self.elector.paused = self.state.failover_paused
        for _, answer in requests:
            if not answer.done():
                answer.set_result(self.state.pause_note)

    def _pause_versions(self) -> list[int]:
        return [v.heartbeat.pause_version for v in self.peers.values() if v.heartbeat is not None]

    async def pause_failover(self, paused: bool) -> str:
        """An operator pauses (or resumes) automatic failover: carried out by the cycle."""
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.pause_requests.append((paused, answer))
        self.wake.set()
        return await asyncio.wait_for(answer, timeout=5.0)

    # -- an operator's promote -----------------------------------------------------------------------

    def promote_route(self, target: str, force: bool) -> str:
        """The node that decides a promote: the live master (it hands over), else the target."""
        assert self.elector is not None
        master = self.elector.master(self.clock())
        return master if master is not None and not force else target

    async def promote_request(self, request: peer_pb2.PromoteRequest) -> peer_pb2.PromoteReply:
        """A promote for this node to decide: queued for the cycle, answered once decided."""
        answer: asyncio.Future[peer_pb2.PromoteReply] = asyncio.get_running_loop().create_future()
        self.promote_requests.append((request, answer))
        self.wake.set()
        return await asyncio.wait_for(answer, timeout=5.0)

    def _promotes(self, elector: Elector, now: float) -> None:
        requests, self.promote_requests = self.promote_requests, []
        for request, answer in requests:
            if request.target not in self.script.server_names:
                reply = peer_pb2.PromoteReply(refusal=f"there is no server {request.target!r} in the script")
            else:
                epoch = elector.epoch  # (before: a forced promote takes the next one at once)
                result, effects = elector.promote(
                    now,
                    request.target,
                    request.request,
                    dry_run=request.dry_run,
                    force=request.force,
                    seen_epoch=self._highest_epoch_seen(),
                )
                self._carry_out(effects)
                reply = peer_pb2.PromoteReply(
                    accepted=result.accepted,
                    refusal=result.refusal,
                    plan=list(result.plan),
                    already=result.already,
                    epoch=epoch,
                )
                if request.force and result.accepted:
                    reply.warning = self._what_may_be_lost()
                if result.accepted and not result.already and not request.dry_run:
                    log.warning(
                        "%s: promote %s%s requested by an operator: accepted",
                        self.me.name,
                        request.target,
                        " (--force)" if request.force else "",
                    )
            reply.answered_by = self.me.name
            if not answer.done():
                answer.set_result(reply)

    def _highest_epoch_seen(self) -> int:
        """The highest epoch this node heard of: in its peers' last heartbeats, or in DNS."""
        epochs = [v.heartbeat.epoch for v in self.peers.values() if v.heartbeat is not None]
        if self.dns_named is not None and self.dns_named[1] is not None:
            epochs.append(self.dns_named[1])
        return max([self.state.epoch, *epochs])

    def _what_may_be_lost(self) -> str:
        heard = []
        for name, view in self.peers.items():
            beat = view.heartbeat
            if beat is not None and self.script.server(name).role != Role.WITNESS:
                heard.append((name, Position(beat.data_epoch, beat.generation)))
        return position_loss(self.position(), heard)

    def _announce_frozen_changes(self) -> None:
        """A switchover was abandoned: the changes seen meanwhile become a generation."""
        self.frozen_changes = False
        if not self.is_master:
            return  # (handed over: they are kept aside by the first pull from the new master)
        generation = self.state.generation + 1
        self.state = replace(
            self.state, generation=generation, data_epoch=self.state.epoch, data_generation=generation
        )
        save_state(self.state_path, self.state)
        self._spawn(self._notify_changed())

    # -- the election (automatic failover) ----------------------------------------------------

    def _elect(self) -> None:
        """Feed the elector what was observed since the last cycle (peers' heartbeats, the DNS
        epoch, replies, requests, the outcomes of catch-ups and DNS updates), then the time,
        and carry out what it decides. Requests are answered only after their effects (a
        vote, a new epoch) are on disk."""
        elector = self.elector
        assert elector is not None
        now = self.clock()
        was_leader = elector.phase == Phase.LEADER  # (it wins on a vote's reply, or in tick)
        dns_name = self.dns_named[0] if self.dns_named else None
        for view in self.peers.values():
            if view.heartbeat is not None and view.received_at is not None:
                elector.observe(view.received_at, standing_of(self.script, view.heartbeat, dns_name))
        elector.update_self(self._standing())
        effects: list[Effect] = []
        if self.dns_named is not None:
            effects += elector.observe_dns(now, self.dns_named[1])
        replies, self.election_replies = self.election_replies, []
        for reply in replies:
            effects += elector.on_reply(now, reply)
        outcomes, self.election_outcomes = self.election_outcomes, []
        for outcome in outcomes:
            effects += outcome(elector, now)
        self._carry_out(effects)
        self._promotes(elector, now)
        requests, self.election_requests = self.election_requests, []
        for request, answer in requests:
            reply, effects = elector.handle(now, request)
            self._carry_out(effects)
            if not answer.done():
                answer.set_result(reply)
        self._carry_out(elector.tick(now))
        if elector.phase == Phase.LEADER and not was_leader:
            self.metrics.elections.inc()
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.wall()))
            self.last_election = f"{stamp}: {elector.last_election}"
            log.info("%s: %s", self.me.name, elector.last_election)

    def _carry_out(self, effects: list[Effect]) -> None:
        """The elector's effects, in order: a Persist is on disk (fsync'd) before the next."""
        for effect in effects:
            if isinstance(effect, Persist):
                ballot = effect.ballot
                self.state = replace(self.state, epoch=ballot.epoch, voted_for=ballot.voted_for)
                save_state(self.state_path, self.state)
                log.info(
                    "%s: epoch %d%s%s",
                    self.me.name,
                    ballot.epoch,
                    f", voted for {ballot.voted_for}" if ballot.voted_for else "",
                    f" ({effect.why})" if effect.why else "",
                )
            elif isinstance(effect, Send):
                self._spawn(self._send(self.script.server(effect.to), effect.message))
            elif isinstance(effect, CatchUp):
                self._start_catch_up(effect.source, effect.position)
            elif isinstance(effect, Publish):
                self._spawn(self._publish(effect.epoch))
            elif isinstance(effect, Check):
                self._spawn(self._pre_promote(effect))

    def _spawn(self, work: object) -> None:
        task = asyncio.ensure_future(work)  # type: ignore[call-overload]
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def election_request(self, request: Request) -> Reply:
        """A peer's pre-vote, vote or renewal: queued for the cycle, answered once decided."""
        answer: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self.election_requests.append((request, answer))
        self.wake.set()
        return await asyncio.wait_for(answer, timeout=max(1.0, 2 * self.settings.heartbeat_interval))

    async def _send(self, server: Server, message: Request) -> None:
        stub = peer_pb2_grpc.PeerStub(self.channel(server))
        timeout = self.settings.heartbeat_interval * 2
        try:
            if isinstance(message, Renewal):
                beat = self.heartbeat()
                beat.lease_seconds, beat.renewal_sent = message.lease, message.sent_at
                beat.acting = message.acting
                reply = await stub.SendHeartbeat(beat, timeout=timeout)
                if reply.accepted and reply.self.node == server.name and self.accept(reply.self) is None:
                    self.record_peer(reply.self)
                    self.election_replies.append(renewal_reply(message, reply))
                    if reply.lease_granted and reply.self.epoch <= message.epoch:
                        return  # the next renewal's cycle (a heartbeat away) counts it: no wake-up
                elif not reply.accepted:
                    self.peers[server.name].error = f"refused our heartbeat: {reply.reason}"
            elif isinstance(message, Handover):
                answer = await self._handover_call(stub, server, message, timeout)
                if answer.voter == server.name:
                    self.election_replies.append(from_vote_reply("handover", message.epoch, answer))
            else:
                kind = "pre-vote" if isinstance(message, PreVote) else "vote"
                call = stub.PreVote if kind == "pre-vote" else stub.RequestVote
                answer = await call(vote_request(message), timeout=timeout)
                if answer.voter == server.name:
                    self.election_replies.append(from_vote_reply(kind, message.epoch, answer))
        except grpc.aio.AioRpcError as error:
            self.peers[server.name].error = f"{error.code().name}: {error.details()}"
            return
        self.wake.set()

    async def _handover_call(
        self, stub: peer_pb2_grpc.PeerAsyncStub, server: Server, message: Handover, timeout: float
    ) -> peer_pb2.VoteReply:
        """A switchover's step: a "ready" is tried three times (the master waits for it); a
        "prepare" that does not reach the target ends the switchover at once (the master would
        stay frozen for nothing)."""
        tries = 3 if message.step == "ready" else 1
        for attempt in range(tries):
            try:
                answer: peer_pb2.VoteReply = await stub.Handover(handover_message(message), timeout=timeout)
                return answer
            except grpc.aio.AioRpcError as error:
                if attempt + 1 < tries:
                    await asyncio.sleep(0.3)
                    continue
                if message.step == "prepare":
                    why = f"not reached: {error.code().name}"
                    self.election_replies.append(
                        Reply("handover", server.name, message.epoch, False, why, message.epoch)
                    )
                    self.wake.set()
                raise
        raise AssertionError("unreachable")

    async def _publish(self, epoch: int) -> None:
        """The DNS compare-and-set that lets the elected master act (in a thread: dnspython
        blocks), then, bounded, which authoritative servers do not serve it yet."""
        from synco.master_record import lagging, publish

        result = await asyncio.to_thread(publish, self.script, self.me.name, epoch)
        log.log(
            logging.INFO if result.outcome == PublishOutcome.APPLIED else logging.WARNING,
            "%s: DNS for epoch %d: %s (%s)",
            self.me.name,
            epoch,
            result.outcome.value,
            result.reason,
        )

        def outcome(elector: Elector, now: float) -> list[Effect]:
            return elector.published_as(now, result.outcome, result.epoch, result.reason)

        self.election_outcomes.append(outcome)
        self.wake.set()
        if result.change is not None:
            assert self.script.dns is not None
            self.dns_lagging = ["(checking)"]
            self.dns_lagging = await asyncio.to_thread(
                lagging, self.script, result.change, self.script.dns.propagation_timeout
            )
            if self.dns_lagging:
                log.warning(
                    "%s: %s do not serve epoch %d after %g s",
                    self.me.name,
                    ", ".join(self.dns_lagging),
                    epoch,
                    self.script.dns.propagation_timeout,
                )

    def _start_catch_up(self, source: str, position: Position) -> None:
        """The election's winner copies the newer data of `source` before it acts."""
        self._cancel_pull()
        self.catching_up = (source, position)
        if self.pull_task is not None:
            return  # started once the cancelled pull has ended (_finish_pull)
        server = self.script.server(source)
        log.info("%s: catching up from %s (%s) before acting", self.me.name, source, position.describe())
        self.pulling_from, self.pull_is_catch_up = source, True
        self.pull_task = asyncio.create_task(
            pull(self.script, server, self.me, position.generation, self._keep_aside_for(source))
        )
        self.pull_task.add_done_callback(lambda _: self.wake.set())

    def _choose_master(self) -> None:
        """The one writer of `master`: the elector's, or the script's or DNS's without one."""
        if self.elector is not None:
            master = self.elector.master(self.clock())
            reason = self.elector.verdict
        elif self.script.master in self.script.server_names:
            master, reason = self.script.master, "named in the script"
        elif self.dns_named is not None and self.dns_named[0] is not None:
            master, reason = self.dns_named[0], self.dns_named[2]
        else:
            return  # not known yet: keep the last one
        if master != self.master:
            self._master_now(master, reason)

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
            Problem(Level.DEGRADED, "no master")
            if self.elector is not None
            and self.master is None
            and self.started_at + 2 * self.settings.lease < self.clock()
            else None,
        ]

    def _next_check(self) -> float:
        """Seconds until a decision could change with no event: a debounce or retry expiring.
        Events (a change, a finished pull, an operator intent) wake the loop earlier."""
        now = self.clock()
        due = [1.0]
        if self.last_change_at is not None and self.master_generation > self.state.pulled_generation:
            due.append(self.timing.debounce - (now - self.last_change_at))
            if self.behind_since is not None:
                due.append(self.timing.max_delay - (now - self.behind_since))
        if self.last_pull is not None and not self.last_pull.ok and self.last_pull_at is not None:
            due.append(self.timing.retry - (now - self.last_pull_at))
        backup_due = self._backup_wake_at()
        if backup_due is not None:
            due.append(backup_due - self.wall())
        if self.elector is not None:
            due.append(self.elector.next_due(now) - now)
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
        now = self.clock()
        metrics.health.state(self.health.level.name.lower())
        follower = self.master is not None and self.master != self.me.name
        metrics.master_reachable.set(1 if follower and not self.master_silent() else 0)
        metrics.is_master.set(1 if self.is_master else 0)
        metrics.role.state(peer_pb2.Role.Name(self.role()).removeprefix("ROLE_").lower())
        if self.latest_snapshot is not None:
            metrics.latest_snapshot.set(self.latest_snapshot[1])
        metrics.epoch.set(self.state.epoch)
        metrics.lease_remaining.set(round(self.elector.lease_remaining(now), 3) if self.elector else 0)
        metrics.generation.set(self.state.generation if self.is_master else self.state.pulled_generation)
        metrics.master_generation.set(self.state.generation if self.is_master else self.master_generation)
        metrics.lag.set(
            0
            if self.is_master or self.is_backup
            else max(0, self.master_generation - self.state.pulled_generation)
        )
        metrics.lag_seconds.set(self.lag_seconds())
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
            behind_since=self.behind_since,
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
        self.pull_epoch = self.elector.epoch if self.elector else 0
        self.pull_task = asyncio.create_task(
            pull(self.script, master, self.me, self.master_generation, self._keep_aside_for(master.name))
        )
        self.pull_task.add_done_callback(lambda _: self.wake.set())

    def _keep_aside_for(self, source: str) -> str | None:
        """Where a pull from `source` keeps what it would overwrite or delete: a new source,
        or this node acted as master since its last pull (its own writes), or it stopped
        acting lately (clients that still hold the old DNS answer write here for up to the
        record's TTL); None otherwise."""
        since = None if self.stopped_acting_at is None else self.clock() - self.stopped_acting_at
        recent = since is not None and since < self._keep_aside_window()
        if self.state.pulled_master == source and not self.state.acted_as_master and not recent:
            return None
        stamp = time.strftime("%Y.%m.%d-%H.%M.%S", time.gmtime(self.wall()))
        keep_aside = str(self.state_path.parent / "kept-aside" / self.me.name / stamp)
        first = self.state.pulled_master != source or self.state.acted_as_master
        why = "first pull" if first else f"a pull {since or 0:.0f} s after acting as master"
        log.warning(
            "%s: %s from %s: files it would overwrite or delete go to %s",
            self.me.name,
            why,
            source,
            keep_aside,
        )
        return keep_aside

    def _keep_aside_window(self) -> float:
        """How long after it stopped acting a node's pulls keep aside what they would overwrite
        or delete: clients holding the old DNS answer may write there until the new master
        is elected (a catch-up may take its timeout), the name moved and served everywhere,
        and their cached answer expired."""
        dns = self.script.dns
        names = (dns.ttl + dns.propagation_timeout) if dns else 0.0
        return names + CATCH_UP_TIMEOUT + 2 * self.settings.lease

    def _finish_pull(self, task: asyncio.Task[PullResult]) -> None:
        """Record how the pull (snapshot, catch-up) ended; a catch-up that waited for it starts."""
        waiting = self.catching_up if not self.pull_is_catch_up else None
        if waiting is not None:
            self.catching_up = None
        self._record_pull(task)
        if waiting is not None:
            self._start_catch_up(*waiting)

    def _record_pull(self, task: asyncio.Task[PullResult]) -> None:
        source, self.pulling_from, self.pull_task, self.cancelling = self.pulling_from, None, None, False
        self.last_pull_at, self.last_pull_unix = self.clock(), self.wall()
        catching_up, self.catching_up = self.catching_up, None
        self.pull_is_catch_up = False
        if self.is_backup:  # a cancelled snapshot may still have been published meanwhile
            self.latest_snapshot = self._newest_snapshot()
        if task.cancelled():
            log.info(
                "%s: %s from %s cancelled", self.me.name, "snapshot" if self.is_backup else "pull", source
            )
            if catching_up is not None:
                self._caught_up(catching_up, False, "cancelled")
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
            epoch = catching_up[1].epoch if catching_up is not None else self.pull_epoch
            self.state = replace(
                self.state,
                pulled_generation=result.generation,
                pulled_master=source,
                acted_as_master=False,
                data_epoch=epoch,
                data_generation=result.generation,
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
        if catching_up is not None:
            self._caught_up(catching_up, result.ok, result.message)

    def _caught_up(self, catching_up: tuple[str, Position], ok: bool, reason: str) -> None:
        source = catching_up[0]
        position = self.position()

        def outcome(elector: Elector, now: float) -> list[Effect]:
            return elector.caught_up_with(now, source, ok, position, reason)

        self.election_outcomes.append(outcome)
        self.wake.set()

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
        self.once_a_minute(f"refused a caller: {reason}")
        return reason

    def once_a_minute(self, text: str) -> None:
        """A WARNING line, at most once a minute for the same text."""
        now = self.clock()
        if now - self._refusals.get(text, -1e9) >= 60:
            self._refusals[text] = now
            log.warning("%s: %s", self.me.name, text)

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
        rounds = 0
        try:
            while not stop.is_set():
                rounds += 1
                # One call per pair of nodes and interval: the reply carries the other side's
                # heartbeat, so the node whose name sorts first calls and both learn. While a
                # master renews its lease, the others need each other's news only to rank
                # candidates (within a lease): every other interval is enough.
                leased = self._leased_master() is not None
                for name in self.peers:
                    if self._renewals_cover(name) or (leased and rounds % 2):
                        continue
                    if name > self.me.name and (name not in pending or pending[name].done()):
                        pending[name] = asyncio.create_task(self._beat(self.script.server(name)))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.settings.heartbeat_interval)
        finally:
            for task in pending.values():
                task.cancel()
            await asyncio.gather(*pending.values(), return_exceptions=True)

    def _leased_master(self) -> str | None:
        return None if self.elector is None else self.elector.leased_to(self.clock())

    def _renewals_cover(self, peer: str) -> bool:
        """The elected master's renewals (heartbeats to every peer) already tell both sides."""
        elector = self.elector
        if elector is None:
            return False
        return elector.phase == Phase.LEADER or (elector.leader == peer and self._leased_master() == peer)

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
        """A master given as a DNS name is looked up again every `master_poll` seconds: an
        observation for the cycle (with automatic failover, the record's epoch as the zone's
        primary serves it: a stale secondary cannot move the master back)."""
        if self.script.master in self.script.server_names:
            return
        while not stop.is_set():
            try:
                if self.elector is not None:
                    from synco.master_record import read_master

                    seen = await asyncio.to_thread(read_master, self.script)
                    self.dns_named = (seen.server, seen.epoch, f"DNS names {seen.server}: {seen.record}")
                else:
                    decision, _ = await asyncio.to_thread(resolve, self.script, self.me.name)
                    self.dns_named = (decision.server, None, decision.reason)
                self.wake.set()
            except Exception as error:  # DNS and resolver errors of every kind: keep the last master
                log.warning("%s: cannot tell who is master: %s", self.me.name, error)
            # while a master holds its lease, the election tells who it is: DNS is read less
            # often then, to learn of an epoch this node missed (the record is the master's)
            every = self.settings.master_poll * (5 if self._leased_master() is not None else 1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every)

    def _master_now(self, master: str | None, reason: str) -> None:
        """The master changed (only the cycle calls this): the role's work starts again."""
        log.warning(
            "%s: master is now %s (was %s): %s",
            self.me.name,
            master or "unknown",
            self.master or "unknown",
            reason,
        )
        if self.master is not None:
            self.former_master = self.master
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
            if self.master is None or self.is_witness:
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
                if self.handing_over:
                    # the target's final pull copies the last generation: later changes are not
                    # announced; once the master follows the target, they are kept aside here
                    self.frozen_changes = True
                    if batch.lost_root:
                        return
                    continue
                self.state = replace(self.state, generation=batch.generation)
                if self.is_master:  # (not once it stepped down: a newer epoch is not its data's)
                    self.state = replace(
                        self.state, data_epoch=self.state.epoch, data_generation=batch.generation
                    )
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
                    if self.elector is not None and change.epoch < self.elector.epoch:
                        log.warning(
                            "%s: ignoring %s's change stream of epoch %d (this node has seen epoch %d)",
                            self.me.name,
                            change.master,
                            change.epoch,
                            self.elector.epoch,
                        )
                        break
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
