"""The election's pure core, case by case: votes, pre-votes, lease arithmetic, stepping down,
ranking and DNS epochs (inputs -> decision + verdict)."""

from __future__ import annotations

import random

import pytest

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
    Send,
    Vote,
)
from synco.core.lease import lease_end, majority, safe_margin
from synco.core.ranking import NO_DATA, Position, Standing, ahead_of, most_current, ranked, why_not

TIMING = ElectionTiming(heartbeat=0.5, lease=2.0, margin=0.25, min_failover_interval=30.0)
VOTERS = ("a", "b", "c")
START = 100.0
LATER = START + TIMING.lease + 0.01  # after the restart guard
CURRENT = Position(1, 10)
FIRST = Ballot(1, None)


def elector(
    name: str = "b",
    position: Position = CURRENT,
    ballot: Ballot = FIRST,
    ineligible: str = "",
    voters: tuple[str, ...] = VOTERS,
) -> Elector:
    peers = tuple(v for v in voters if v != name)
    return Elector(
        Standing(name, position, 100, ineligible), voters, peers, TIMING, ballot, START, random.Random(1)
    )


def sends(effects: list[Effect]) -> list[Send]:
    return [e for e in effects if isinstance(e, Send)]


# -- lease arithmetic -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("acks", "needed", "expected"),
    [
        ([10.0, 9.0, 8.0], 2, 9.0 + 2.0 - 0.25),  # the second newest grant counts for a majority of 3
        ([10.0], 2, None),  # one grant is not a majority
        ([float("inf"), 7.0, 3.0], 2, 7.0 + 1.75),  # the master's own grant and one voter's
        ([5.0, 9.0, 1.0, 8.0, 7.0], 3, 7.0 + 1.75),  # 5 voters: the third newest
    ],
)
def test_lease_end(acks: list[float], needed: int, expected: float | None) -> None:
    assert lease_end(acks, needed, 2.0, 0.25) == expected


def test_majority_and_safe_margin() -> None:
    assert [majority(n) for n in (1, 2, 3, 4, 5, 7)] == [1, 2, 2, 3, 3, 4]
    # a master's clock slow by 1% and a voter's fast by 1%: the default margin is far above it
    assert safe_margin(2.0) == pytest.approx(2.0 * 0.02 / 1.01)
    assert TIMING.margin > safe_margin(TIMING.lease)
    lease, margin = 2.0, safe_margin(2.0)
    assert (lease - margin) / 0.99 == pytest.approx(lease / 1.01)


# -- votes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ballot", "asked", "granted", "reason", "persisted"),
    [
        (Ballot(1), Vote("a", 2, Position(1, 10)), True, "", Ballot(2, "a")),
        (Ballot(1), Vote("a", 2, Position(1, 12)), True, "", Ballot(2, "a")),
        (Ballot(3), Vote("a", 2, Position(1, 10)), False, "epoch 2 is older than 3", None),
        (Ballot(2, "c"), Vote("a", 2, Position(1, 10)), False, "voted for c in epoch 2", None),
        (Ballot(2, "a"), Vote("a", 2, Position(1, 10)), True, "", None),  # the same vote again
        (Ballot(1), Vote("a", 2, Position(1, 9)), False, "older than b's", Ballot(2, None)),
        (Ballot(1), Vote("a", 2, Position(0, 99)), False, "older than b's", Ballot(2, None)),
    ],
)
def test_vote(ballot: Ballot, asked: Vote, granted: bool, reason: str, persisted: Ballot | None) -> None:
    voter = elector(ballot=ballot)
    reply, effects = voter.handle(LATER, asked)
    assert (reply.granted, reply.kind, reply.asked_epoch) == (granted, "vote", asked.epoch)
    assert reason in reply.reason
    assert [e.ballot for e in effects if isinstance(e, Persist)] == ([persisted] if persisted else [])
    if persisted is not None:
        assert voter.ballot == persisted and reply.epoch == persisted.epoch


def test_a_voter_that_restarted_protects_an_unknown_lease() -> None:
    voter = elector()
    reply, effects = voter.handle(START + 1.0, Vote("a", 2, Position(1, 10)))
    assert not reply.granted and "a master (restarted since)" in reply.reason and effects == []
    reply, _ = voter.handle(START + 1.0, PreVote("a", 2, Position(1, 10)))
    assert not reply.granted
    assert voter.handle(LATER, Vote("a", 2, Position(1, 10)))[0].granted


def test_a_voter_holding_a_lease_votes_only_for_its_holder() -> None:
    voter = elector()
    voter.handle(LATER, Renewal("a", 1, 2.0, 5.0, True))
    for request in (Vote("c", 2, Position(1, 10)), PreVote("c", 2, Position(1, 10))):
        reply, effects = voter.handle(LATER + 1.9, request)
        assert not reply.granted and "holds a lease for a for 0.10 s more" in reply.reason
        assert effects == [] and voter.epoch == 1  # not even the epoch moved
    assert voter.handle(LATER + 1.0, PreVote("a", 2, Position(1, 10)))[0].granted  # the holder
    assert voter.handle(LATER + 2.01, PreVote("c", 2, Position(1, 10)))[0].granted


@pytest.mark.parametrize(
    ("ballot", "asked", "granted", "reason"),
    [
        (Ballot(1), PreVote("a", 2, Position(1, 10)), True, ""),
        (Ballot(2), PreVote("a", 2, Position(1, 10)), False, "epoch 2 is not newer than 2"),
        (Ballot(1), PreVote("a", 2, Position(1, 3)), False, "older than b's"),
    ],
)
def test_pre_vote_persists_nothing(ballot: Ballot, asked: PreVote, granted: bool, reason: str) -> None:
    voter = elector(ballot=ballot)
    reply, effects = voter.handle(LATER, asked)
    assert (reply.granted, reply.kind) == (granted, "pre-vote") and reason in reply.reason
    assert effects == [] and voter.ballot == ballot


def test_pre_votes_are_refused_soon_after_a_failover() -> None:
    voter = elector()
    voter.handle(LATER, Renewal("a", 1, 2.0, 5.0, True))
    voter.handle(LATER + 3.0, Renewal("c", 2, 2.0, 5.0, True))  # c took over from a
    reply, _ = voter.handle(LATER + 6.0, PreVote("a", 3, Position(2, 0)))
    assert not reply.granted and "the last failover was 3.0 s ago" in reply.reason  # c's lease ran out
    assert voter.handle(LATER + 3.0 + 30.1, PreVote("a", 3, Position(2, 0)))[0].granted


def test_a_witness_grants_any_candidate_and_a_non_voter_grants_nothing() -> None:
    witness = elector(name="c", position=NO_DATA, ineligible="a witness holds no data")
    assert witness.handle(LATER, Vote("a", 2, Position(0, 0)))[0].granted
    outsider = elector(name="d", voters=(*VOTERS, "d"))
    outsider.votes = False
    reply, _ = outsider.handle(LATER, Vote("a", 2, Position(9, 9)))
    assert not reply.granted and reply.reason == "not a voter"


# -- standing and winning --------------------------------------------------------------------------------


def win(candidate: Elector, now: float) -> list[Effect]:
    """Run `candidate` through a pre-vote and a vote that every voter grants."""
    effects = candidate.tick(now)
    pre = [s for s in sends(effects) if isinstance(s.message, PreVote)]
    assert pre, candidate.verdict
    effects = candidate.on_reply(
        now, Reply("pre-vote", pre[0].to, candidate.epoch, True, "", pre[0].message.epoch)
    )
    assert isinstance(effects[0], Persist) and effects[0].ballot == Ballot(
        pre[0].message.epoch, candidate.me.node
    )
    assert candidate.phase == Phase.CANDIDATE
    vote = next(s for s in sends(effects) if isinstance(s.message, Vote))
    return candidate.on_reply(now, Reply("vote", vote.to, candidate.epoch, True, "", candidate.epoch))


def test_a_candidate_persists_its_epoch_before_asking_for_votes_and_acts_only_once_published() -> None:
    candidate = elector()
    effects = win(candidate, LATER)
    assert candidate.phase == Phase.LEADER and candidate.epoch == 2
    assert [type(e) for e in effects] == [Send, Send, Publish]  # renewals, then DNS
    assert not candidate.acting(LATER)
    renewals = candidate.published_as(LATER, PublishOutcome.APPLIED, 2)  # at once: it may act now
    assert [(e.to, type(e.message)) for e in sends(renewals)] == [("a", Renewal), ("c", Renewal)]
    assert not candidate.acting(LATER), "no majority granted the lease yet"
    candidate.on_reply(LATER, Reply("renewal", "a", 2, True, "", 2, LATER))
    assert candidate.acting(LATER + 1.7) and not candidate.acting(LATER + 1.75)
    candidate.tick(LATER + 0.5)
    assert candidate.verdict == "master of epoch 2" and candidate.lease_remaining(LATER + 0.5) == 1.25
    candidate.tick(LATER + 1.75)
    assert str(candidate.phase) == "follower"
    assert "could not renew its lease with a majority" in candidate.verdict


def test_the_winner_catches_up_from_a_more_current_peer_first() -> None:
    candidate = elector()
    candidate.observe(LATER, Standing("c", Position(1, 14), 0, "priority 0"))
    effects = candidate.tick(LATER)
    assert sends(effects)[0].message == PreVote("b", 2, Position(1, 14))  # its claim: after catching up
    effects = candidate.on_reply(LATER, Reply("pre-vote", "a", 1, True, "", 2))
    effects = candidate.on_reply(LATER, Reply("vote", "a", 2, True, "", 2))
    assert effects[0] == CatchUp("c", Position(1, 14))
    assert not any(isinstance(e, Publish) for e in effects)
    assert "catching up" in candidate.verdict
    effects = candidate.caught_up_with(LATER + 0.3, "c", True, Position(1, 14))
    assert Publish(2) in effects


@pytest.mark.parametrize(
    ("outcome", "epoch", "phase", "acting", "verdict"),
    [
        (PublishOutcome.APPLIED, 2, Phase.LEADER, True, "master of epoch 2"),
        (PublishOutcome.STALE, 5, Phase.FOLLOWER, False, "DNS carries epoch 5"),
        (PublishOutcome.FAILED, None, Phase.LEADER, False, "DNS update failed (timeout): not acting"),
    ],
)
def test_publishing(
    outcome: PublishOutcome, epoch: int | None, phase: Phase, acting: bool, verdict: str
) -> None:
    candidate = elector()
    win(candidate, LATER)
    candidate.on_reply(LATER, Reply("renewal", "a", 2, True, "", 2, LATER))
    effects = candidate.published_as(LATER, outcome, epoch, "timeout")
    assert candidate.phase == phase and candidate.acting(LATER + 0.1) == acting
    assert verdict in candidate.verdict
    if outcome == PublishOutcome.STALE:
        assert effects == [Persist(Ballot(5, None))]
    if outcome == PublishOutcome.FAILED:  # tried again a heartbeat later
        assert Publish(2) not in candidate.tick(LATER + 0.2)
        assert Publish(2) in candidate.tick(LATER + 0.5)


def test_a_leader_steps_down_on_a_higher_epoch() -> None:
    leader = elector()
    win(leader, LATER)
    effects = leader.on_reply(LATER, Reply("renewal", "c", 7, False, "epoch 2 is older than 7", 2, LATER))
    assert effects == [Persist(Ballot(7, None))] and leader.phase == Phase.FOLLOWER
    assert "c is in epoch 7: stepping down" in leader.verdict


def test_followers_name_the_master_only_while_its_lease_runs() -> None:
    follower = elector()
    reply, effects = follower.handle(LATER, Renewal("a", 3, 2.0, 0.0, True))
    assert reply.granted and effects == [Persist(Ballot(3, None))]
    assert follower.master(LATER + 1.9) == "a" and follower.master(LATER + 2.0) is None
    follower.handle(LATER, Renewal("a", 3, 2.0, 0.0, False))
    assert follower.master(LATER) is None  # elected but not acting yet
    reply, _ = follower.handle(LATER, Renewal("c", 2, 2.0, 0.0, True))
    assert not reply.granted and reply.epoch == 3  # an older epoch's master is told so


def test_a_stale_dns_answer_does_not_move_the_epoch_back() -> None:
    follower = elector(ballot=Ballot(4))
    assert follower.observe_dns(LATER, 3) == [] and follower.epoch == 4
    assert follower.observe_dns(LATER, 6) == [Persist(Ballot(6, None))]


def test_lower_ranked_candidates_wait_and_say_for_whom() -> None:
    candidate = elector(position=Position(1, 9))
    candidate.observe(LATER, Standing("a", Position(1, 10), 100))
    assert candidate.tick(LATER) == []
    assert "a ranks first, waiting for it to stand" in candidate.verdict
    assert sends(candidate.tick(LATER + TIMING.rank_delay))


def test_voters_let_a_better_candidate_stand_first_for_two_leases() -> None:
    voter = elector(position=Position(1, 9))
    voter.observe(LATER, Standing("a", Position(1, 10), 100))
    voter.observe(LATER, Standing("c", Position(1, 10), 50))
    reply, _ = voter.handle(LATER, PreVote("c", 2, Position(1, 10)))
    assert not reply.granted and reply.reason == "a ranks before c and may stand first"
    assert voter.handle(LATER, PreVote("a", 2, Position(1, 10)))[0].granted
    voter.observe(START + 3 * TIMING.lease, Standing("a", Position(1, 10), 100))
    assert voter.handle(START + 3 * TIMING.lease + 0.01, PreVote("c", 2, Position(1, 10)))[0].granted


def test_an_ineligible_node_never_stands() -> None:
    node = elector(ineligible="priority 0")
    assert node.tick(LATER) == [] and node.verdict == "no master: not eligible: priority 0"


# -- ranking -------------------------------------------------------------------------------------------------


def s(name: str, epoch: int, generation: int, priority: int = 100, **extra: object) -> Standing:
    return Standing(name, Position(epoch, generation), priority, **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("standings", "winner", "reasons"),
    [
        (
            [s("a", 1, 5), s("b", 1, 7)],
            "b",
            ["a: older data (epoch 1 generation 5 < b's epoch 1 generation 7)"],
        ),
        ([s("a", 2, 1), s("b", 1, 9)], "a", ["b: older data"]),
        ([s("a", 1, 9, ineligible="unhealthy"), s("b", 1, 5)], "b", ["a: not eligible (unhealthy)"]),
        ([s("a", 1, 5, 50), s("b", 1, 5, 100)], "b", ["a: lower priority (50 < b's 100)"]),
        ([s("a", 1, 5), s("b", 1, 5, incumbent=True)], "b", ["a: as current as b, which DNS names"]),
        ([s("b", 1, 5), s("a", 1, 5)], "a", ["b: same data and priority as a, whose name sorts first"]),
    ],
)
def test_ranking(standings: list[Standing], winner: str, reasons: list[str]) -> None:
    order = ranked(standings)
    assert order[0].node == winner
    for loser, reason in zip(order[1:], reasons, strict=True):
        assert why_not(loser, order[0]).startswith(reason)


def test_most_current_and_ahead_of() -> None:
    witness = Standing("w", NO_DATA, 0, "a witness holds no data")
    lagging = s("r", 1, 9, 0, ineligible="priority 0")
    assert most_current([s("a", 1, 5), lagging, witness]) == lagging
    assert ahead_of(s("a", 1, 5), [lagging, witness, s("b", 1, 6)]) == [s("b", 1, 6)]
