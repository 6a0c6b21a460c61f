"""A deterministic world for the election: the agents' pure Electors on a fake clock and an
in-memory network, with faults (loss, delay, partitions, pauses, crashes and restarts,
clock-rate drift, a DNS primary that goes away) and operators (a `synco-ctl promote` of a
random node, asked of the acting master or of the node; failover paused for maintenance),
seeded and replayable.

Everything random comes from one `random.Random(seed)`: the same seed gives the same run,
event for event. `run(seed)` returns the violations the checker found (none, we hope), and
a trace of the run's notable events to replay a failing seed with.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from synco.core.election import (
    Ballot,
    CatchUp,
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
    Vote,
)
from synco.core.lease import MAX_DRIFT
from synco.core.ranking import NO_DATA, Position, Standing

DNS = "dns"  # the zone's primary, a host of the world like the nodes


@dataclass
class Disk:
    """What survives a crash: the ballot (as persisted) and the data."""

    ballot: Ballot = field(default_factory=Ballot)
    position: Position = field(default_factory=Position)


@dataclass
class SimNode:
    name: str
    witness: bool
    priority: int
    rate: float  # its clock's rate against true time
    offset: float
    disk: Disk = field(default_factory=Disk)
    elector: Elector | None = None  # None while crashed
    paused_until: float | None = None
    inbox: list[Callable[[], None]] = field(default_factory=list)  # held while paused
    used_epoch: int = 0  # the highest epoch it ever sent or answered with
    incumbent: bool = False

    def local(self, t: float) -> float:
        return self.offset + self.rate * t


@dataclass
class Scenario:
    nodes: int
    witness: bool
    loss: float
    delay: float  # mean one-way delay, seconds
    chaos: float  # seconds of faults before the calm
    calm: float  # seconds of calm in which an election must converge
    faults: int  # how many faults are injected during the chaos


@dataclass
class Outcome:
    seed: int
    scenario: Scenario
    violations: list[str]
    trace: list[str]
    elections: int
    failovers: int


class World:
    def __init__(self, seed: int, scenario: Scenario, timing: ElectionTiming) -> None:
        self.rng = random.Random(seed)
        self.scenario = scenario
        self.timing = timing
        self.t = 0.0
        self.queue: list[tuple[float, int, Callable[[], None]]] = []
        self.seq = 0
        names = [f"n{i}" for i in range(1, scenario.nodes + 1)]
        self.nodes: dict[str, SimNode] = {}
        for index, name in enumerate(names):
            witness = scenario.witness and index == len(names) - 1
            self.nodes[name] = SimNode(
                name,
                witness,
                0 if witness or (index > 0 and self.rng.random() < 0.2) else self.rng.choice([50, 100]),
                1 + self.rng.uniform(-MAX_DRIFT, MAX_DRIFT),
                self.rng.uniform(0, 1000),
            )
        self.voters = tuple(names)
        self.cut: set[frozenset[str]] = set()  # links that carry nothing
        self.dns_up = True
        self.dns_record: tuple[str | None, int] = (names[0], 0)  # who DNS names, and the epoch
        self.nodes[names[0]].incumbent = True
        self.loss = scenario.loss
        self.violations: list[str] = []
        self.trace: list[str] = []
        self.leaders: dict[int, str] = {}  # epoch -> the node elected in it
        self.votes: dict[tuple[str, int], str] = {}  # (voter, epoch) -> the candidate it voted for
        self.elections = 0
        self.failovers = 0
        self.last_acting: str | None = None
        self.maintenance_until = 0.0  # an operator paused failover cluster-wide until then
        self.promotes = 0
        for node in self.nodes.values():
            self._boot(node)

    # -- the event queue ---------------------------------------------------------------------------

    def at(self, t: float, action: Callable[[], None]) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (t, self.seq, action))

    def run_until(self, end: float) -> None:
        while self.queue and self.queue[0][0] <= end:
            self.t, _, action = heapq.heappop(self.queue)
            action()
            self._check()
        self.t = end

    def log(self, text: str) -> None:
        self.trace.append(f"{self.t:9.3f} {text}")

    # -- nodes ----------------------------------------------------------------------------------------

    def standing(self, node: SimNode) -> Standing:
        if node.witness:
            return Standing(node.name, NO_DATA, 0, "a witness holds no data")
        ineligible = "priority 0" if node.priority == 0 else ""
        return Standing(node.name, node.disk.position, node.priority, ineligible, node.incumbent)

    def _boot(self, node: SimNode) -> None:
        now = node.local(self.t)
        peers = tuple(n for n in self.nodes if n != node.name)
        node.elector = Elector(
            self.standing(node),
            self.voters,
            peers,
            self.timing,
            node.disk.ballot,
            now,
            random.Random(self.rng.random()),
        )
        node.elector.paused = self.t < self.maintenance_until  # (persisted, in the agents)
        if node.disk.ballot.epoch < node.used_epoch:
            self.violate(
                f"{node.name} restarted at epoch {node.disk.ballot.epoch} after using {node.used_epoch}"
            )
        self._schedule_tick(node, self.rng.uniform(0, 0.05))
        self._schedule_beat(node, self.rng.uniform(0, self.timing.heartbeat))
        self._schedule_dns_poll(node, self.rng.uniform(0, 2.0))

    def alive(self, node: SimNode) -> bool:
        return node.elector is not None

    def running(self, node: SimNode) -> bool:
        return node.elector is not None and node.paused_until is None

    def _deliver(self, node: SimNode, action: Callable[[], None]) -> None:
        """Run `action` on `node` now, or when it resumes if it is paused; dropped if it is down."""
        if node.elector is None:
            return
        if node.paused_until is not None:
            node.inbox.append(action)
            return
        action()

    def _schedule_tick(self, node: SimNode, after: float) -> None:
        elector = node.elector

        def tick() -> None:
            if node.elector is not elector:
                return  # it crashed meanwhile: the new incarnation has its own ticks
            if node.paused_until is None:  # a paused process does nothing, not even later
                self._tick(node)
            self._schedule_tick(node, self.rng.uniform(0.01, 0.05))

        self.at(self.t + after, tick)

    def _tick(self, node: SimNode) -> None:
        assert node.elector is not None
        now = node.local(self.t)
        elector = node.elector
        # the applications write on the master (not counted while it hands over: frozen)
        if elector.acting(now) and elector.handing is None and self.rng.random() < 0.3:
            node.disk.position = Position(elector.epoch, node.disk.position.generation + 1)
        elector.update_self(self.standing(node))
        self._apply(node, elector.tick(now))
        self._replicate(node)

    def _replicate(self, node: SimNode) -> None:
        """A replica copies its master's data when it can reach it (a pull, made instant)."""
        assert node.elector is not None
        if node.witness:
            return
        master = node.elector.master(node.local(self.t))
        if master is None or master == node.name:
            return
        source = self.nodes[master]
        pulled = self.reachable(node.name, master) and self.running(source) and self.rng.random() < 0.2
        if pulled and source.disk.position > node.disk.position:
            node.disk.position = source.disk.position

    def _schedule_beat(self, node: SimNode, after: float) -> None:
        elector = node.elector

        def beat() -> None:
            if node.elector is not elector:
                return
            if node.paused_until is None:
                standing = self.standing(node)
                for peer in self.nodes.values():
                    if peer is not node:
                        self.send(node.name, peer.name, partial(self._hear, peer, standing))
            self._schedule_beat(node, self.timing.heartbeat)

        self.at(self.t + after, beat)

    def _hear(self, node: SimNode, standing: Standing) -> None:
        self._deliver(node, lambda: node.elector.observe(node.local(self.t), standing))  # type: ignore[union-attr]

    def _schedule_dns_poll(self, node: SimNode, after: float) -> None:
        elector = node.elector

        def poll() -> None:
            if node.elector is not elector:
                return
            if node.paused_until is None and self.dns_up and self.reachable(node.name, DNS):
                master, epoch = self.dns_record
                # a secondary may answer with an older epoch: the elector ignores it
                seen = epoch if self.rng.random() < 0.8 else max(0, epoch - 1)
                node.incumbent = master == node.name
                self._apply(node, elector.observe_dns(node.local(self.t), seen))  # type: ignore[union-attr]
            self._schedule_dns_poll(node, 2.0)

        self.at(self.t + after, poll)

    # -- effects ----------------------------------------------------------------------------------------

    def _apply(self, node: SimNode, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Persist):
                if effect.ballot.epoch < node.disk.ballot.epoch:
                    self.violate(
                        f"{node.name} persisted epoch {effect.ballot.epoch} after {node.disk.ballot.epoch}"
                    )
                node.disk.ballot = effect.ballot
            elif isinstance(effect, Send):
                self._send_request(node, effect.to, effect.message)
            elif isinstance(effect, CatchUp):
                self._catch_up(node, effect)
            elif isinstance(effect, Publish):
                self._publish(node, effect.epoch)
        self._note_leader(node)

    def _used(self, node: SimNode, epoch: int) -> None:
        """`node` is about to say `epoch`: it must be on its disk already."""
        if epoch > node.disk.ballot.epoch:
            self.violate(
                f"{node.name} used epoch {epoch} before persisting it (disk: {node.disk.ballot.epoch})"
            )
        node.used_epoch = max(node.used_epoch, epoch)

    def _send_request(self, node: SimNode, to: str, message: Request) -> None:
        # a pre-vote names the epoch it would stand in: only the one before is in use
        self._used(node, message.epoch - 1 if isinstance(message, PreVote) else message.epoch)
        target = self.nodes[to]
        sender = node.elector

        def arrive() -> None:
            assert target.elector is not None
            reply, effects = target.elector.handle(target.local(self.t), message)
            self._apply(target, effects)
            self._used(target, reply.epoch)
            if isinstance(message, Vote) and reply.granted:
                self._vote(to, reply.asked_epoch, message.candidate)
            if isinstance(message, Renewal) and "is the master of epoch" in reply.reason:
                # (only two masters of one epoch, which only --force can make, justify it)
                self.violate(
                    f"{to} refused {message.master}'s renewal of epoch {message.epoch}: {reply.reason}"
                )
            self.send(to, node.name, lambda: self._reply(node, sender, reply))

        self.send(node.name, to, lambda: self._deliver(target, arrive))

    def _reply(self, node: SimNode, sender: Elector | None, reply: Reply) -> None:
        def arrive() -> None:
            if node.elector is not sender or node.elector is None:
                return  # an answer to a former incarnation
            self._apply(node, node.elector.on_reply(node.local(self.t), reply))

        self._deliver(node, arrive)

    def _vote(self, voter: str, epoch: int, candidate: str) -> None:
        earlier = self.votes.setdefault((voter, epoch), candidate)
        if earlier != candidate:
            self.violate(f"{voter} voted for {earlier} and {candidate} in epoch {epoch}")

    def _catch_up(self, node: SimNode, effect: CatchUp) -> None:
        elector = node.elector
        source = self.nodes[effect.source]
        took = self.rng.uniform(0.05, 0.4)

        def done() -> None:
            if node.elector is not elector or node.elector is None:
                return
            ok = self.reachable(node.name, source.name) and self.alive(source)
            if ok and source.disk.position > node.disk.position:
                node.disk.position = source.disk.position
            self._deliver(
                node,
                lambda: self._apply(
                    node,
                    node.elector.caught_up_with(  # type: ignore[union-attr]
                        node.local(self.t), source.name, ok, node.disk.position, "" if ok else "unreachable"
                    ),
                ),
            )

        self.at(self.t + took, done)

    def _publish(self, node: SimNode, epoch: int) -> None:
        """The agent's DNS compare-and-set: read the record and its epoch from the primary, and
        replace both if they are still what it read (all in one UPDATE at the primary)."""
        elector = node.elector

        def answer(outcome: PublishOutcome, seen: int | None) -> None:
            def arrive() -> None:
                if node.elector is not elector or node.elector is None:
                    return
                self._apply(node, node.elector.published_as(node.local(self.t), outcome, seen, "no answer"))

            self._deliver(node, arrive)

        def at_primary() -> None:
            if not self.dns_up:
                self.at(self.t + self.timing.heartbeat, lambda: answer(PublishOutcome.FAILED, None))
                return
            current = self.dns_record[1]
            if current > epoch:
                outcome = PublishOutcome.STALE
            else:
                if current < epoch:
                    self.dns_record = (node.name, epoch)
                    self.log(f"DNS: {node.name} in epoch {epoch}")
                    for other in self.nodes.values():
                        other.incumbent = other.name == node.name
                outcome = (
                    PublishOutcome.APPLIED if self.dns_record == (node.name, epoch) else PublishOutcome.STALE
                )
            seen = self.dns_record[1]
            if not self.send(DNS, node.name, lambda: answer(outcome, seen)):
                self.at(self.t + self.timing.heartbeat, lambda: answer(PublishOutcome.FAILED, None))

        if not self.send(node.name, DNS, at_primary):
            self.at(self.t + self.timing.heartbeat, lambda: answer(PublishOutcome.FAILED, None))

    # -- the network -----------------------------------------------------------------------------------

    def reachable(self, a: str, b: str) -> bool:
        return frozenset((a, b)) not in self.cut

    def send(self, source: str, to: str, action: Callable[[], None]) -> bool:
        """Deliver `action` at `to` after a random delay, unless lost or cut; False if dropped."""
        if not self.reachable(source, to) or self.rng.random() < self.loss:
            return False
        delay = self.rng.expovariate(1 / self.scenario.delay)
        if self.rng.random() < 0.01:
            delay += self.rng.uniform(0.1, 1.0)  # a slow path now and then
        self.at(self.t + delay, action)
        return True

    # -- faults -------------------------------------------------------------------------------------------

    def partition(self, group: set[str], until: float) -> None:
        others = [h for h in [*self.nodes, DNS] if h not in group]
        links = {frozenset((a, b)) for a in group for b in others}
        self.cut |= links
        self.log(f"partition {sorted(group)} | rest until {until:.3f}")
        self.at(until, lambda: self._heal(links))

    def _heal(self, links: set[frozenset[str]]) -> None:
        self.cut -= links
        self.log("healed")

    def pause(self, node: SimNode, until: float) -> None:
        if node.paused_until is not None or node.elector is None:
            return
        node.paused_until = until
        self.log(f"pause {node.name} until {until:.3f}")
        self.at(until, lambda: self.resume(node))

    def resume(self, node: SimNode) -> None:
        if node.paused_until is None:
            return
        node.paused_until = None
        self.log(f"resume {node.name}")
        held, node.inbox = node.inbox, []
        for action in held:
            if node.elector is not None and node.paused_until is None:
                action()

    def crash(self, node: SimNode, restart_at: float) -> None:
        if node.elector is None:
            return
        node.elector, node.paused_until, node.inbox = None, None, []
        self.log(f"crash {node.name}, restart at {restart_at:.3f}")
        self.at(restart_at, lambda: self.restart(node))

    def restart(self, node: SimNode) -> None:
        if node.elector is not None:
            return
        self.log(f"restart {node.name} (epoch {node.disk.ballot.epoch})")
        self._boot(node)

    def promote(self, target: SimNode) -> None:
        """An operator promotes `target`, asking the acting master (a switchover) or, with
        none, the target itself (a directed election), as synco-ctl's local agent would."""
        asker = self.nodes[self._acting() or target.name]
        self.promotes += 1
        request = f"promote-{self.promotes}"

        def ask() -> None:
            assert asker.elector is not None
            answer, effects = asker.elector.promote(asker.local(self.t), target.name, request)
            self.log(f"promote {target.name} asked of {asker.name}: {answer.refusal or 'accepted'}")
            self._apply(asker, effects)

        self._deliver(asker, ask)

    def maintenance(self, until: float) -> None:
        self.maintenance_until = until
        self.log(f"failover paused cluster-wide until {until:.3f}")
        self._set_paused(True)
        self.at(until, lambda: self._set_paused(self.t < self.maintenance_until))

    def _set_paused(self, paused: bool) -> None:
        for node in self.nodes.values():
            if node.elector is not None:
                node.elector.paused = paused

    def _cut_briefly(self, name: str) -> None:
        self.partition({name}, self.t + 0.2)

    def dns_outage(self, until: float) -> None:
        self.dns_up = False
        self.log(f"DNS down until {until:.3f}")

        def back() -> None:
            self.dns_up = True
            self.log("DNS back")

        self.at(until, back)

    def inject(self, start: float, end: float) -> None:
        """Schedule the scenario's faults at random times in [start, end)."""
        lease = self.timing.lease
        names = list(self.nodes)
        for _ in range(self.scenario.faults):
            when = self.rng.uniform(start, end)
            length = self.rng.uniform(0.2, 3 * lease)
            kind = self.rng.choice(
                [
                    "partition",
                    "partition",
                    "pause",
                    "crash",
                    "dns",
                    "isolate",
                    "flap",
                    "promote",
                    "maintenance",
                ]
            )
            node = self.nodes[self.rng.choice(names)]

            def fault(kind: str = kind, node: SimNode = node, length: float = length) -> None:
                until = min(end, self.t + length)
                if kind == "partition":
                    size = self.rng.randint(1, len(names) - 1)
                    self.partition(set(self.rng.sample(names, size)), until)
                elif kind == "isolate":
                    self.partition({self._acting() or node.name}, until)
                elif kind == "flap":
                    victim = self._acting() or node.name
                    for i in range(int(length / 0.4)):
                        self.at(self.t + i * 0.4, partial(self._cut_briefly, victim))
                elif kind == "pause":
                    self.pause(self.nodes[self._acting() or node.name], until)
                elif kind == "crash":
                    self.crash(self.nodes[self._acting() or node.name], until)
                elif kind == "promote":
                    self.promote(node)
                elif kind == "maintenance":
                    self.maintenance(until)
                else:
                    self.dns_outage(until)

            self.at(when, fault)

    def calm(self) -> None:
        """Heal every fault; sometimes a minority stays down for good (a majority can talk)."""
        self.cut.clear()
        self.loss = 0.0
        self.dns_up = True
        self.maintenance_until = 0.0
        self._set_paused(False)
        down: set[str] = set()
        if self.rng.random() < 0.3:
            eligible = [n.name for n in self.nodes.values() if n.priority > 0 and not n.witness]
            keep = self.rng.choice(eligible)
            others = [n for n in self.nodes if n != keep]
            down = set(self.rng.sample(others, self.rng.randint(1, (len(self.nodes) - 1) // 2)))
        for node in self.nodes.values():
            self.resume(node)
            if node.name in down:
                self.crash(node, float("inf"))
            elif node.elector is None:
                self.restart(node)
        self.log(f"calm: every fault healed{f', {sorted(down)} down for good' if down else ''}")

    # -- the checker -------------------------------------------------------------------------------------

    def violate(self, text: str) -> None:
        self.log(f"VIOLATION: {text}")
        self.violations.append(f"t={self.t:.3f}: {text}")

    def _acting(self) -> str | None:
        acting = [
            n.name for n in self.nodes.values() if n.elector is not None and n.elector.acting(n.local(self.t))
        ]
        return acting[0] if acting else None

    def _note_leader(self, node: SimNode) -> None:
        elector = node.elector
        if elector is None or elector.phase != Phase.LEADER:
            return
        elected = self.leaders.setdefault(elector.epoch, node.name)
        if elected != node.name:
            self.violate(f"two masters in epoch {elector.epoch}: {elected} and {node.name}")

    def _check(self) -> None:
        """After every event: never two nodes acting as master at one instant of true time
        (paused ones included: their leases run on)."""
        acting = [
            n.name for n in self.nodes.values() if n.elector is not None and n.elector.acting(n.local(self.t))
        ]
        if len(acting) > 1:
            self.violate(f"two nodes act as master: {', '.join(acting)}")
        if acting and acting[0] != self.last_acting:
            if self.last_acting is not None:
                self.failovers += 1
            self.elections += 1
            self.log(f"{acting[0]} acts as master (epoch {self.nodes[acting[0]].elector.epoch})")  # type: ignore[union-attr]
            self.last_acting = acting[0]


def converge_bound(timing: ElectionTiming) -> float:
    """How long after the calm begins a master must act: a lease for the guard of restarted
    nodes and for the old master's lease, the anti-flap interval, rank delays for up to six
    better candidates, a few rounds with their random back-off, a catch-up and DNS."""
    rounds = 6 * (timing.round_timeout + 2 * timing.heartbeat)
    return timing.lease * 2 + timing.min_failover_interval + 6 * timing.rank_delay + rounds + 3.0


def run(seed: int, scenario: Scenario, timing: ElectionTiming) -> Outcome:
    world = World(seed, scenario, timing)
    world.inject(2.0, 2.0 + scenario.chaos)
    world.run_until(2.0 + scenario.chaos)
    world.calm()
    calm_at = world.t
    bound = converge_bound(timing)
    converged_at = None
    while world.t < calm_at + scenario.calm:
        world.run_until(world.t + 0.25)
        if converged_at is None and world._acting() is not None:
            converged_at = world.t
    if converged_at is None or converged_at - calm_at > bound:
        world.violate(
            f"no master within {bound:.1f} s of the calm"
            + ("" if converged_at is None else f" (took {converged_at - calm_at:.1f} s)")
        )
    return Outcome(seed, scenario, world.violations, world.trace, world.elections, world.failovers)


def scenario_for(seed: int) -> Scenario:
    """The seed picks the cluster and the faults too: 3, 5 or 7 agents, with or without a witness."""
    rng = random.Random(seed * 7919 + 1)
    nodes = rng.choice([3, 3, 5, 5, 7])
    return Scenario(
        nodes=nodes,
        witness=rng.random() < 0.4,
        loss=rng.choice([0.0, 0.01, 0.05, 0.2]),
        delay=rng.choice([0.001, 0.005, 0.03]),
        chaos=rng.uniform(10, 40),
        calm=0.0,  # set by run_seed: the bound plus a little
        faults=rng.randint(1, 8),
    )


SIM_TIMING = ElectionTiming(heartbeat=0.5, lease=2.0, margin=0.25, min_failover_interval=5.0)


def run_seed(seed: int, timing: ElectionTiming = SIM_TIMING) -> Outcome:
    scenario = scenario_for(seed)
    scenario.calm = converge_bound(timing) + 2.0
    return run(seed, scenario, timing)
