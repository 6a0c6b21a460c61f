"""An operator's promote in the pure core: the three-step handover, directed and forced
elections, refusals, dry runs, maintenance (pause) and the pre-promote check. Three
Electors talk over an in-memory network that checks, after every message, that no two of
them act at once."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

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
    Send,
)
from synco.core.ranking import NO_DATA, Position, Standing
from synco.core.switchover import Handover, plan, position_loss

TIMING = ElectionTiming(heartbeat=0.5, lease=2.0, margin=0.25, min_failover_interval=30.0)
VOTERS = ("a", "b", "c")
START = 100.0
DATA = Position(1, 10)


@dataclass
class Net:
    nodes: dict[str, Elector]
    down: set[str] = field(default_factory=set)
    catch_ups: list[tuple[str, CatchUp]] = field(default_factory=list)
    checks: list[tuple[str, Check]] = field(default_factory=list)
    publishes: list[tuple[str, Publish]] = field(default_factory=list)
    persisted: list[tuple[str, Ballot]] = field(default_factory=list)
    handovers: list[Handover] = field(default_factory=list)

    def run(self, now: float, source: str, effects: list[Effect]) -> None:
        """Deliver `source`'s effects (and what they cause) at `now`, depth first."""
        for effect in effects:
            if isinstance(effect, Persist):
                self.persisted.append((source, effect.ballot))
            elif isinstance(effect, CatchUp):
                self.catch_ups.append((source, effect))
            elif isinstance(effect, Check):
                self.checks.append((source, effect))
            elif isinstance(effect, Publish):
                self.publishes.append((source, effect))
            elif isinstance(effect, Send) and effect.to not in self.down and source not in self.down:
                if isinstance(effect.message, Handover):
                    self.handovers.append(effect.message)
                reply, caused = self.nodes[effect.to].handle(now, effect.message)
                self.assert_one_master(now)
                self.run(now, effect.to, caused)
                self.run(now, source, self.nodes[source].on_reply(now, reply))
                self.assert_one_master(now)

    def assert_one_master(self, now: float) -> None:
        acting = [name for name, e in self.nodes.items() if e.acting(now)]
        assert len(acting) <= 1, f"two nodes act at {now}: {acting}"

    def tick(self, now: float, *names: str) -> None:
        for name in names or tuple(self.nodes):
            if name not in self.down:
                self.run(now, name, self.nodes[name].tick(now))

    def publish_all(self, now: float) -> None:
        pending, self.publishes = self.publishes, []
        for name, publish in pending:
            self.run(now, name, self.nodes[name].published_as(now, PublishOutcome.APPLIED, publish.epoch))

    def observe_all(self, now: float) -> None:
        for name, e in self.nodes.items():
            for other, o in self.nodes.items():
                if other != name and other not in self.down:
                    e.observe(now, o.me)

    def acting(self, now: float) -> list[str]:
        return [name for name, e in self.nodes.items() if e.acting(now)]


def cluster(witness: str | None = None, **standings: Standing) -> Net:
    nodes = {}
    for name in VOTERS:
        if name == witness:
            me = Standing(name, NO_DATA, 0, "a witness holds no data")
        else:
            me = standings.get(name, Standing(name, DATA, 100))
        peers = tuple(v for v in VOTERS if v != name)
        nodes[name] = Elector(me, VOTERS, peers, TIMING, Ballot(1, None), START, random.Random(7))
    return Net(nodes)


def elect_a(net: Net) -> float:
    """`a` (first by name, all else equal) wins epoch 2 and acts; the time after."""
    now = START + TIMING.lease + 0.01
    net.observe_all(now)
    net.tick(now, "a")
    net.publish_all(now)
    net.tick(now + 0.01, "a")  # renewals: the lease granted
    assert net.acting(now + 0.02) == ["a"]
    return now + 0.02


def test_a_switchover_goes_prepare_ready_release_and_the_old_master_stops_first() -> None:
    net = cluster()
    now = elect_a(net)
    a, b = net.nodes["a"], net.nodes["b"]
    a.update_self(Standing("a", Position(2, 42), 100))
    answer, effects = a.promote(now, "b", "r1")
    assert answer.accepted and answer.plan[0].startswith("b would become master in epoch 3")
    net.run(now, "a", effects)
    assert net.catch_ups == [("b", CatchUp("a", Position(2, 42)))]  # b's final pull of a's last generation
    assert a.acting(now) and a.handing is not None and "handing over to b" in a.verdict
    # b pulled: it tells a, which stops acting, then releases b to every peer
    b.update_self(Standing("b", Position(2, 42), 100))
    later = now + 0.8
    net.run(later, "b", b.caught_up_with(later, "a", True, Position(2, 42)))
    assert [m.step for m in net.handovers] == ["prepare", "ready", "release", "release"]
    assert not a.acting(later) and a.phase == Phase.FOLLOWER
    assert b.phase == Phase.LEADER and b.epoch == 3  # elected at once: every voter granted it alone
    # (a majority: c hears of it later)
    assert "won epoch 3 (votes from a, b; promoted by the operator)" in b.last_election
    net.publish_all(later)
    net.tick(later + 0.01, "b")
    assert net.acting(later + 0.02) == ["b"]
    assert b.promotion is not None and b.promotion.done and not b.promotion.failed
    assert [s.split(":")[0] for s in b.promotion.steps] == [
        "final pull from a",
        "final pull of generation 42 done in 0.80 s",
        "released by a",
        "won epoch 3 (votes from a, b; promoted by the operator)",
        "DNS names b (epoch 3)",
    ]
    # the others follow b; the old master does not count the switchover as a failover
    net.tick(later + 0.6)
    assert net.nodes["c"].master(later + 0.6) == "b" and a.master(later + 0.6) == "b"
    assert a.last_failover_at is None


def test_a_final_pull_that_fails_abandons_the_switchover_and_the_master_goes_on() -> None:
    net = cluster()
    now = elect_a(net)
    a, b = net.nodes["a"], net.nodes["b"]
    net.run(now, "a", a.promote(now, "b", "r2")[1])
    net.run(now + 0.5, "b", b.caught_up_with(now + 0.5, "a", False, DATA, "rsync exited with status 23"))
    assert a.handing is None and a.acting(now + 0.5)
    assert a.promotion is not None and a.promotion.failed
    assert "rsync exited with status 23" in a.promotion.steps[-1]
    assert b.promotion is not None and b.promotion.failed


def test_a_final_pull_that_never_ends_is_abandoned_after_the_catch_up_timeout() -> None:
    net = cluster()
    now = elect_a(net)
    a = net.nodes["a"]
    net.run(now, "a", a.promote(now, "b", "r3")[1])
    t = now
    while t < now + TIMING.catch_up_timeout + 1:  # the lease renewed all the while
        t += 0.5
        net.tick(t, "a")
    assert a.handing is None and a.acting(t)
    assert a.promotion is not None and "did not end within 60 s" in a.promotion.steps[-1]


@pytest.mark.parametrize(
    ("target", "standing", "paused", "force", "refusal"),
    [
        ("b", Standing("b", DATA, 0, "priority 0"), False, False, "b is not eligible: priority 0"),
        ("c", None, False, False, "c is not eligible: a witness holds no data"),
        ("b", None, True, False, "automatic failover is paused cluster-wide"),
        ("b", None, False, True, "--force is refused while a live master holds its lease"),
        ("z", None, False, False, "z has not been heard from"),
    ],
)
def test_the_master_refuses_a_promote_it_cannot_carry_out(
    target: str, standing: Standing | None, paused: bool, force: bool, refusal: str
) -> None:
    net = cluster(witness="c", **({"b": standing} if standing else {}))
    now = elect_a(net)
    a = net.nodes["a"]
    a.paused = paused
    answer, effects = a.promote(now, target, "r4", force=force)
    assert not answer.accepted and refusal in answer.refusal and effects == []
    assert a.handing is None and a.acting(now)


def test_promoting_the_master_itself_is_nothing_to_do() -> None:
    net = cluster()
    now = elect_a(net)
    answer, effects = net.nodes["a"].promote(now, "a", "r5")
    assert answer.accepted and answer.already and effects == []


def test_a_dry_run_changes_nothing_and_says_who_and_why_not() -> None:
    net = cluster(c=Standing("c", Position(1, 9), 100))
    now = elect_a(net)
    a = net.nodes["a"]
    answer, effects = a.promote(now, "b", "r6", dry_run=True)
    assert answer.accepted and effects == [] and a.handing is None and a.promotion is None
    assert answer.plan == (
        "b would become master in epoch 3: epoch 1 generation 10, priority 100",
        "a: the master now: it hands over to b and follows it",
        "c: older data (epoch 1 generation 9 < b's epoch 1 generation 10)",
    )


def test_without_a_master_a_promote_directs_the_election_past_the_ranking() -> None:
    # a ranks first (by name): the voters let it stand first, but not against an operator's choice
    net = cluster()
    now = START + TIMING.lease + 0.01
    net.observe_all(now)
    reply, _ = net.nodes["b"].handle(now, PreVote("c", 2, DATA))
    assert not reply.granted and reply.reason == "a ranks before c and may stand first"
    c = net.nodes["c"]
    c.paused = True
    answer, _ = c.promote(now, "c", "r7")
    assert not answer.accepted and "paused" in answer.refusal
    c.paused = False
    answer, effects = c.promote(now, "c", "r7")
    assert answer.accepted, answer.refusal
    net.run(now, "c", effects)
    assert c.phase == Phase.LEADER and c.epoch == 2


def test_paused_voters_refuse_an_automatic_candidate() -> None:
    net = cluster()
    now = START + TIMING.lease + 0.01
    for e in net.nodes.values():
        e.paused = True
    net.tick(now)
    assert net.acting(now) == [] and net.nodes["a"].verdict == "no master: automatic failover is paused"
    reply, _ = net.nodes["b"].handle(now, PreVote("a", 2, DATA))
    assert not reply.granted and reply.reason == "automatic failover is paused"
    assert net.nodes["b"].handle(now, PreVote("a", 2, DATA, directed=True))[0].granted


def test_a_directed_election_still_respects_a_live_masters_lease() -> None:
    net = cluster()
    now = elect_a(net)
    net.down.add("a")  # a's renewals stop reaching anyone; b and c still protect its lease
    c = net.nodes["c"]
    answer, _ = c.promote(now + 0.1, "c", "r8")
    assert not answer.accepted and "a holds its lease here" in answer.refusal


def test_no_majority_is_refused_unless_forced_and_force_says_what_may_be_lost() -> None:
    net = cluster()
    now = elect_a(net)
    net.down |= {"a", "b"}
    late = now + 3 * TIMING.lease  # their leases ran out; c hears nobody
    c = net.nodes["c"]
    answer, _ = c.promote(late, "c", "r9")
    assert not answer.accepted and "no majority: 1 of 3 voters heard from (c), 2 needed" in answer.refusal
    answer, effects = c.promote(late, "c", "r9", force=True)
    assert answer.accepted
    net.run(late, "c", effects)
    assert ("c", Ballot(3, "c")) in net.persisted and c.forced
    net.publish_all(late)
    assert c.acting(late + 100), "forced: acts without a majority's lease"
    assert "forced" in c.last_election
    net.down.clear()  # b is back and grants the renewals: the usual lease rules again
    net.tick(late + 100, "c")
    assert not c.forced and c.acting(late + 100.1)
    assert position_loss(Position(2, 0), [("a", Position(2, 5)), ("b", Position(1, 9))]).startswith(
        "a was last heard at epoch 2 generation 5"
    )


def test_the_pre_promote_check_runs_before_standing_and_a_veto_stops_it() -> None:
    net = cluster()
    now = START + TIMING.lease + 0.01
    net.observe_all(now)
    a = net.nodes["a"]
    a.check_hooks = True
    net.tick(now, "a")
    assert net.checks == [("a", Check(2, "the master was lost"))] and a.phase == Phase.FOLLOWER
    assert a.checked(now + 0.05, False, "replication lag too high") == []
    assert a.veto(now + 0.1) == "pre-promote vetoed: replication lag too high"
    assert a.veto(now + 0.1 + 4 * TIMING.lease) == ""
    net.checks.clear()
    effects = a.checked(now + 0.05, True, "")
    assert any(isinstance(e, Send) and isinstance(e.message, PreVote) for e in effects)


def test_a_switchover_target_whose_check_vetoes_leaves_the_master_in_place() -> None:
    net = cluster()
    now = elect_a(net)
    a, b = net.nodes["a"], net.nodes["b"]
    b.check_hooks = True
    net.run(now, "a", a.promote(now, "b", "r10")[1])
    assert net.checks == [("b", Check(3, "switchover from a"))] and net.catch_ups == []
    net.run(now + 0.1, "b", b.checked(now + 0.1, False, "exit status 1"))
    assert a.handing is None and a.acting(now + 0.1)
    assert a.promotion is not None and "pre-promote vetoed: exit status 1" in a.promotion.steps[-1]


def test_plan_names_a_node_that_ranks_first_but_was_not_chosen() -> None:
    better = Standing("a", Position(1, 11), 100)
    lines = plan(
        Standing("b", DATA, 100), [better, Standing("c", NO_DATA, 0, "a witness holds no data")], 4, None
    )
    assert lines[1:] == (
        "a: ranks before b on its own, but the operator chose b",
        "c: not eligible (a witness holds no data)",
    )


def test_a_restarted_node_protects_an_unknown_lease_against_a_promote_too() -> None:
    net = cluster()
    now = elect_a(net)
    # b restarts: it may have granted a lease it no longer remembers
    b = Elector(Standing("b", DATA, 100), VOTERS, ("a", "c"), TIMING, Ballot(2, "a"), now, random.Random(3))
    for force in (False, True):
        answer, effects = b.promote(now + 0.01, "b", "r11", force=force)
        assert not answer.accepted and effects == []
        assert "a master (unknown: this node restarted) holds its lease here" in answer.refusal


def test_a_directed_node_that_granted_another_masters_lease_does_not_stand() -> None:
    net = cluster()
    now = START + TIMING.lease + 0.01
    net.observe_all(now)
    b = net.nodes["b"]
    answer, _ = b.promote(now, "b", "r12")  # directed; its pre-votes get lost
    assert answer.accepted
    b.round = None  # (the round gave up)
    b.handle(now + 0.1, Renewal("c", 2, TIMING.lease, now, True))  # c won epoch 2 meanwhile
    assert b.tick(now + 0.2) == [] and b.phase == Phase.FOLLOWER


def test_force_takes_an_epoch_above_any_seen_and_a_second_master_of_one_epoch_is_refused() -> None:
    net = cluster()
    now = elect_a(net)
    net.down |= {"a", "b"}
    late = now + 3 * TIMING.lease
    c = net.nodes["c"]
    c.promote(late, "c", "r13", force=True, seen_epoch=6)
    assert c.epoch == 7 and c.phase == Phase.LEADER
    # a voter already following another master of an epoch refuses a second one's renewals
    voter = Elector(
        Standing("b", DATA, 100), VOTERS, ("a", "c"), TIMING, Ballot(7, None), START, random.Random(4)
    )
    assert voter.handle(late, Renewal("x", 7, TIMING.lease, late, True))[0].granted
    reply, _ = voter.handle(late + 0.1, Renewal("c", 7, TIMING.lease, late, True))
    assert not reply.granted and reply.reason == "x is the master of epoch 7 here"
    # DNS naming another master of its own epoch makes the forced one step down
    c.published_as(late, PublishOutcome.STALE, 7, "DNS names x with epoch 7")
    assert c.phase == Phase.FOLLOWER and "another master of epoch 7" in c.verdict


def test_a_candidate_that_lost_its_epoch_follows_the_winner_of_it() -> None:
    # (a voter refuses a second master renewing in one epoch: that must not be the real one)
    c = Elector(Standing("c", DATA, 100), VOTERS, ("a", "b"), TIMING, Ballot(2, "a"), START, random.Random(5))
    now = START + TIMING.lease + 0.01
    c.handle(now, Renewal("a", 2, TIMING.lease, now, True))  # a leads epoch 2; then it dies
    later = now + TIMING.lease + 5
    effects = c.tick(later)
    assert any(isinstance(e, Send) and isinstance(e.message, PreVote) for e in effects), c.verdict
    c.on_reply(later, Reply("pre-vote", "b", 2, True, "", 3))  # -> its vote round for epoch 3
    assert c.phase == Phase.CANDIDATE and c.ballot == Ballot(3, "c")
    reply, _ = c.handle(later + 0.1, Renewal("b", 3, TIMING.lease, later, True))  # b won epoch 3
    assert reply.granted, reply.reason
    assert c.master(later + 0.2) == "b"


def test_a_renewal_sent_before_a_release_but_arriving_after_it_is_refused() -> None:
    net = cluster()
    now = elect_a(net)
    a, c = net.nodes["a"], net.nodes["c"]
    late_renewal = Renewal("a", a.epoch, TIMING.lease, now, True)
    reply, _ = c.handle(now, Handover("a", a.epoch, "b", "release", DATA, request="r14"))
    assert reply.granted
    reply, _ = c.handle(now + 0.01, late_renewal)
    assert not reply.granted and reply.reason == "a handed over in epoch 2"
    assert c.leased_to(now + 0.02) == "b"
