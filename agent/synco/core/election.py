"""Who acts as master: epochs, pre-votes, votes and leases, as one node sees them (pure).

An `Elector` is a state machine with no I/O: the agent (or the simulation) feeds it what
happens — a message, a reply, the time, the outcome of a catch-up or a DNS update — with
the local monotonic time, and carries out the effects it returns, *in order*: a `Persist`
must be on disk (fsync'd) before any later effect and before the reply is sent.

The rules, in short (docs: packaging/doc/failover.md):

- A voter grants at most one vote per epoch, persisted before it answers, and only to a
  candidate whose data (or the data it will catch up to first) is at least as current.
- A master acts only while a majority of voters has granted it a lease that it renewed
  recently enough, and only once DNS names it (the compare-and-set carrying its epoch was
  applied by the zone's primary). It stops acting `margin` before its lease ends.
- A voter that granted a lease votes for nobody else until that lease has run out on its
  own clock, and a voter that restarted counts itself as having granted one: it does not
  know to whom it did before.
- A candidate first asks for pre-votes (nothing is persisted, no epoch is spent) and asks
  for votes only if a majority also lost the master; nodes that rank lower (see
  synco.core.ranking) wait longer before they try.
- Any message carrying a higher epoch makes the node adopt it (persisted) and follow.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from enum import StrEnum

from synco.core.lease import lease_end, majority
from synco.core.ranking import Position, Standing, ahead_of, most_current, ranked, why_lost


class Phase(StrEnum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"  # asking for pre-votes
    CANDIDATE = "candidate"  # asking for votes in a new epoch
    LEADER = "leader"  # won the epoch's election; acts once caught up, published and leased


@dataclass(frozen=True)
class Ballot:
    """What a voter must never forget: the highest epoch it has seen and its vote in it."""

    epoch: int = 0
    voted_for: str | None = None


@dataclass(frozen=True)
class ElectionTiming:
    heartbeat: float = 0.7  # the master renews its lease this often
    lease: float = 2.1  # a lease lasts this long (counted by each side on its own clock)
    margin: float = 0.25  # the master stops acting this long before its lease ends
    min_failover_interval: float = 30.0  # no automatic failover sooner than this after one
    catch_up_timeout: float = 60.0  # a winner that cannot catch up within this steps down

    @property
    def round_timeout(self) -> float:
        """How long a candidate waits for (pre-)vote replies before it gives up the round."""
        return max(2 * self.heartbeat, 0.2)

    @property
    def rank_delay(self) -> float:
        """How much longer each better candidate gives before a node tries itself."""
        return self.heartbeat


# -- messages ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreVote:
    candidate: str
    epoch: int  # the epoch it would ask votes for: its own plus one
    position: Position  # the data it holds, or will catch up to first


@dataclass(frozen=True)
class Vote:
    candidate: str
    epoch: int
    position: Position


@dataclass(frozen=True)
class Renewal:
    master: str
    epoch: int
    lease: float  # a duration: the voter counts it from when it receives it
    sent_at: float  # on the master's clock; echoed back, never interpreted by the voter
    acting: bool  # the master acts (DNS names it): followers may pull from it


Request = PreVote | Vote | Renewal


@dataclass(frozen=True)
class Reply:
    kind: str  # "pre-vote" | "vote" | "renewal"
    voter: str
    epoch: int  # the voter's epoch after handling the request
    granted: bool
    reason: str = ""
    asked_epoch: int = 0  # the epoch the request was for
    sent_at: float = 0.0  # a renewal's send time, echoed


# -- effects ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Persist:
    ballot: Ballot


@dataclass(frozen=True)
class Send:
    to: str
    message: Request


@dataclass(frozen=True)
class CatchUp:
    source: str
    position: Position


@dataclass(frozen=True)
class Publish:
    epoch: int


Effect = Persist | Send | CatchUp | Publish


class PublishOutcome(StrEnum):
    APPLIED = "applied"  # the zone's primary names this node with this epoch
    STALE = "stale"  # DNS carries a higher epoch: another master was elected since
    FAILED = "failed"  # refused, timed out or unknown: read again and retry


@dataclass
class _Round:
    kind: str  # "pre-vote" | "vote"
    epoch: int
    started: float
    granted: set[str] = field(default_factory=set)
    refused: dict[str, str] = field(default_factory=dict)


class Elector:
    """One node's view of the election. `voters` lists every voting node (this one too, if it
    votes); `peers` every other node (voters or not) that hears the master's renewals."""

    def __init__(
        self,
        me: Standing,
        voters: tuple[str, ...],
        peers: tuple[str, ...],
        timing: ElectionTiming,
        ballot: Ballot,
        now: float,
        rng: random.Random,
    ) -> None:
        self.me = me
        self.voters = voters
        self.peers = peers
        self.timing = timing
        self.ballot = ballot
        self.rng = rng
        self.phase = Phase.FOLLOWER
        self.votes = me.node in voters
        # After a (re)start this node may have granted a lease it no longer remembers:
        # it protects an unknown master for a whole lease before it votes or stands.
        self.lease_holder: str | None = None
        self.lease_until = now + timing.lease
        self.leader: str | None = None  # the master of `ballot.epoch`, once heard from
        self.leader_acting = False
        self.standings: dict[str, tuple[Standing, float]] = {}
        self.round: _Round | None = None
        self.retry_at = now  # a candidate that failed waits until then (randomized)
        self.last_failover_at: float | None = None  # when a different master was first heard
        self.paused = False  # an operator stopped automatic failover (elections still answer)
        # as leader
        self.elected_at = 0.0
        self.acks: dict[str, float] = {}
        self.next_renewal = 0.0
        self.caught_up = False
        self.catching_up_since: float | None = None
        self.unreachable: set[str] = set()  # peers a catch-up failed from, this term
        self.failed_catch_up = ""
        self.published = False
        self.publishing = False
        self.publish_retry_at = 0.0
        self.verdict = "starting: waiting one lease before voting or standing"
        self.last_election = ""  # the last election this node won, and why no other node did

    # -- what others read ----------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self.ballot.epoch

    def lease_deadline(self) -> float | None:
        """As leader: when this node's lease ends (on its clock, the margin taken off)."""
        if self.phase != Phase.LEADER:
            return None
        acks = [t for voter, t in self.acks.items() if voter in self.voters]
        if self.votes:
            acks.append(float("inf"))  # its own grant never lapses while it leads
        return lease_end(acks, majority(len(self.voters)), self.timing.lease, self.timing.margin)

    def acting(self, now: float) -> bool:
        """This node acts as master now: elected, caught up, named by DNS, and leased."""
        if self.phase != Phase.LEADER or not (self.caught_up and self.published):
            return False
        deadline = self.lease_deadline()
        return deadline is not None and now < deadline

    def master(self, now: float) -> str | None:
        """The node acting as master as far as this one knows, or None."""
        if self.acting(now):
            return self.me.node
        leader = self.leader
        if leader not in (None, self.me.node) and self.leader_acting and self.leased_to(now) == leader:
            return leader
        return None

    def leased_to(self, now: float) -> str | None:
        """The node this one holds a lease for now (its own, as master), if any."""
        return self.lease_holder if now < self.lease_until else None

    def next_due(self, now: float) -> float:
        """When `tick` may next have something to do (with no message meanwhile)."""
        due: list[float] = []
        if self.phase == Phase.LEADER:
            due.append(self.next_renewal)
            deadline = self.lease_deadline()
            due.append(
                self.elected_at + self.timing.lease - self.timing.margin if deadline is None else deadline
            )
            if self.caught_up and not self.published and not self.publishing:
                due.append(self.publish_retry_at)
        elif self.round is not None:
            due.append(self.round.started + self.timing.round_timeout)
        else:
            due += [self.lease_until, self.retry_at]
        later = [t for t in due if t > now]
        return min(later) if later else now + self.timing.rank_delay

    def lease_remaining(self, now: float) -> float:
        deadline = self.lease_deadline()
        return 0.0 if deadline is None else max(0.0, deadline - now)

    # -- observations ----------------------------------------------------------------------------

    def update_self(self, standing: Standing) -> None:
        self.me = standing

    def observe(self, now: float, standing: Standing) -> None:
        """A peer's heartbeat said this of it."""
        if standing.node != self.me.node:
            self.standings[standing.node] = (standing, now)

    def recent(self, now: float) -> list[Standing]:
        """The peers heard from within two leases (while a master holds its lease, the others
        hear from each other every other heartbeat)."""
        return [s for s, at in self.standings.values() if now - at <= 2 * self.timing.lease]

    def rivals(self, now: float) -> list[Standing]:
        """The peers that may stand before this node: heard from recently, but not the master
        whose lease just ran out here (it had its chance: it did not renew)."""
        lost = self.lease_holder if self.leased_to(now) is None else None
        return [s for s in self.recent(now) if s.node != lost]

    def observe_dns(self, now: float, epoch: int | None) -> list[Effect]:
        """DNS (its primary) carries `epoch` beside the master record."""
        if epoch is not None and epoch > self.epoch:
            return self._adopt(now, epoch, f"DNS carries epoch {epoch}")
        return []

    # -- time ----------------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Effect]:
        """What is due at `now`: renewals, a lapsed lease, a round's end, a candidacy."""
        if self.phase == Phase.LEADER:
            return self._lead(now)
        if self.round is not None and now - self.round.started >= self.timing.round_timeout:
            self._give_up_round(now, "no majority answered in time")
        if self.round is None and self.phase == Phase.FOLLOWER:
            return self._maybe_stand(now)
        return []

    def _lead(self, now: float) -> list[Effect]:
        deadline = self.lease_deadline()
        if deadline is None:
            deadline = self.elected_at + self.timing.lease - self.timing.margin
        if now >= deadline:
            was = "acting as master" if self.published and self.caught_up else "elected"
            self._step_down(now, f"{was} in epoch {self.epoch} but could not renew its lease with a majority")
            return []
        if self.catching_up_since is not None and now - self.catching_up_since > self.timing.catch_up_timeout:
            self._step_down(now, f"could not catch up within {self.timing.catch_up_timeout:g} s")
            return []
        effects: list[Effect] = []
        if now >= self.next_renewal:
            self.next_renewal = now + self.timing.heartbeat
            renewal = Renewal(self.me.node, self.epoch, self.timing.lease, now, self.acting(now))
            effects += [Send(peer, renewal) for peer in self.peers]
        if self.caught_up and not self.published and not self.publishing and now >= self.publish_retry_at:
            self.publishing = True
            effects.append(Publish(self.epoch))
        self._describe_leader(now)
        return effects

    def _maybe_stand(self, now: float) -> list[Effect]:
        if now < self.lease_until:
            return []  # a master (or an unknown one, after a restart) may still hold its lease
        if self.paused or self.me.ineligible:
            why = "automatic failover is paused" if self.paused else f"not eligible: {self.me.ineligible}"
            self.verdict = f"no master: {why}"
            return []
        if now < self.retry_at:
            return []
        if self.last_failover_at is not None:
            wait = self.timing.min_failover_interval - (now - self.last_failover_at)
            if wait > 0:
                self.verdict = (
                    f"no master, but the last failover was {now - self.last_failover_at:.1f} s ago: "
                    f"no automatic failover for {wait:.1f} s more"
                )
                return []
        better = ahead_of(self.me, self.rivals(now))
        delay = len(better) * self.timing.rank_delay
        if now < max(self.lease_until, self.retry_at) + delay:
            self.verdict = (
                f"no master: {', '.join(s.node for s in better)} ranks first, waiting for it to stand"
            )
            return []
        return self._start_round(now, "pre-vote", self.epoch + 1)

    def _claim(self, now: float) -> Position:
        """The data this node holds, or will hold once it caught up from the most current peer."""
        best = most_current([self.me, *self.recent(now)])
        return self.me.position if best is None else max(best.position, self.me.position)

    def _start_round(self, now: float, kind: str, epoch: int) -> list[Effect]:
        self.round = _Round(kind, epoch, now)
        effects: list[Effect] = []
        claim = self._claim(now)
        if kind == "pre-vote":
            self.phase = Phase.PRE_CANDIDATE
            message: Request = PreVote(self.me.node, epoch, claim)
            self.verdict = f"no master: asking for pre-votes for epoch {epoch}"
        else:
            self.phase = Phase.CANDIDATE
            self.ballot = Ballot(epoch, self.me.node)
            effects.append(Persist(self.ballot))
            message = Vote(self.me.node, epoch, claim)
            self.verdict = f"standing for master in epoch {epoch}"
        if self.votes:
            self.round.granted.add(self.me.node)
        effects += [Send(v, message) for v in self.voters if v != self.me.node]
        return effects + self._count(now)

    def _give_up_round(self, now: float, why: str) -> None:
        assert self.round is not None
        refused = "; ".join(f"{v}: {r}" for v, r in sorted(self.round.refused.items()))
        self.verdict = f"{self.round.kind} for epoch {self.round.epoch} failed: {why}" + (
            f" ({refused})" if refused else ""
        )
        self.round = None
        self.phase = Phase.FOLLOWER
        self.retry_at = now + self.rng.uniform(0, 2 * self.timing.heartbeat)

    # -- requests from peers ------------------------------------------------------------------------

    def handle(self, now: float, request: Request) -> tuple[Reply, list[Effect]]:
        """Answer a peer's request; the effects (a Persist) come before the reply."""
        if isinstance(request, Renewal):
            return self._renewal(now, request)
        kind = "pre-vote" if isinstance(request, PreVote) else "vote"
        effects: list[Effect] = []
        if not self.votes:
            return self._answer(kind, request, False, "not a voter"), effects
        if isinstance(request, PreVote):
            return self._answer(kind, request, *self._pre_vote(now, request)), effects
        refusal = self._refuse_any(now, request.candidate)
        if request.epoch < self.epoch:
            refusal = f"epoch {request.epoch} is older than {self.epoch}"
        if refusal is not None:
            return self._answer(kind, request, False, refusal), effects
        if request.epoch > self.epoch:
            effects += self._adopt(now, request.epoch, f"{request.candidate} stands in epoch {request.epoch}")
        if self.ballot.voted_for not in (None, request.candidate):
            return self._answer(
                kind, request, False, f"voted for {self.ballot.voted_for} in epoch {self.epoch}"
            ), effects
        if request.position < self.me.position:
            return self._answer(kind, request, False, self._older(request.position)), effects
        if self.ballot.voted_for is None:
            self.ballot = Ballot(self.epoch, request.candidate)
            effects = [e for e in effects if not isinstance(e, Persist)] + [Persist(self.ballot)]
        return self._answer(kind, request, True), effects

    def _pre_vote(self, now: float, request: PreVote) -> tuple[bool, str]:
        refusal = self._refuse_any(now, request.candidate)
        if refusal is not None:
            return False, refusal
        if request.epoch <= self.epoch:
            return False, f"epoch {request.epoch} is not newer than {self.epoch}"
        if request.position < self.me.position:
            return False, self._older(request.position)
        better = self._ranks_before(now, request.candidate)
        if better is not None:
            return False, f"{better} ranks before {request.candidate} and may stand first"
        if self.last_failover_at is not None:
            since = now - self.last_failover_at
            if since < self.timing.min_failover_interval:
                return False, f"the last failover was {since:.1f} s ago"
        return True, ""

    def _ranks_before(self, now: float, candidate: str) -> str | None:
        """An eligible node this voter heard from recently that ranks before `candidate`, for a
        while after the master was lost (two leases): the better one gets its chance first;
        after that, any candidate as current as the voter may win (an election must end)."""
        if now - self.lease_until > 2 * self.timing.lease:
            return None
        heard = {s.node: s for s in self.rivals(now)}
        if not self.me.ineligible:
            heard[self.me.node] = self.me
        standing = heard.pop(candidate, None) or next(
            (s for s in self.recent(now) if s.node == candidate), None
        )
        if standing is None:
            return None
        better = ahead_of(standing, heard.values())
        return better[0].node if better else None

    def _refuse_any(self, now: float, candidate: str) -> str | None:
        """Why this voter refuses `candidate` whatever it asks: it leads, or protects a lease."""
        if self.phase == Phase.LEADER:
            return f"{self.me.node} is the master of epoch {self.epoch}"
        if now < self.lease_until and self.lease_holder != candidate:
            holder = self.lease_holder or "a master (restarted since)"
            return f"holds a lease for {holder} for {self.lease_until - now:.2f} s more"
        return None

    def _older(self, position: Position) -> str:
        return (
            f"its data ({position.describe()}) is older than {self.me.node}'s ({self.me.position.describe()})"
        )

    def _answer(self, kind: str, request: PreVote | Vote, granted: bool, reason: str = "") -> Reply:
        return Reply(kind, self.me.node, self.epoch, granted, reason, request.epoch)

    def _renewal(self, now: float, renewal: Renewal) -> tuple[Reply, list[Effect]]:
        effects: list[Effect] = []
        if renewal.epoch < self.epoch:
            reason = f"epoch {renewal.epoch} is older than {self.epoch}"
            return Reply(
                "renewal", self.me.node, self.epoch, False, reason, renewal.epoch, renewal.sent_at
            ), effects
        if renewal.epoch > self.epoch:
            effects += self._adopt(now, renewal.epoch, f"{renewal.master} leads epoch {renewal.epoch}")
        elif self.phase != Phase.FOLLOWER:
            self._step_down(now, f"{renewal.master} leads epoch {self.epoch}")
        self._heard_leader(now, renewal.master)
        self.leader, self.leader_acting = renewal.master, renewal.acting
        granted = self.votes
        # (a node that does not vote records the lease too: it tells it whom to follow)
        self.lease_holder, self.lease_until = renewal.master, now + renewal.lease
        self.verdict = f"{renewal.master} is master of epoch {self.epoch}" + (
            "" if renewal.acting else " (not acting yet: catching up or publishing to DNS)"
        )
        reply = Reply(
            "renewal",
            self.me.node,
            self.epoch,
            granted,
            "" if granted else "not a voter",
            renewal.epoch,
            renewal.sent_at,
        )
        return reply, effects

    def _heard_leader(self, now: float, leader: str) -> None:
        """A master acts (or will): a different one from the last counts as a failover."""
        previous = self.lease_holder if self.lease_holder is not None else self.leader
        if previous is not None and previous != leader:
            self.last_failover_at = now

    # -- replies ------------------------------------------------------------------------------------

    def on_reply(self, now: float, reply: Reply) -> list[Effect]:
        effects: list[Effect] = []
        if reply.epoch > self.epoch:
            return self._adopt(now, reply.epoch, f"{reply.voter} is in epoch {reply.epoch}")
        if reply.kind == "renewal":
            if self.phase == Phase.LEADER and reply.asked_epoch == self.epoch and reply.granted:
                self.acks[reply.voter] = max(self.acks.get(reply.voter, reply.sent_at), reply.sent_at)
            return effects
        current = self.round
        if current is None or current.kind != reply.kind or current.epoch != reply.asked_epoch:
            return effects  # a late answer to a round that is over
        if reply.granted:
            current.granted.add(reply.voter)
        else:
            current.refused[reply.voter] = reply.reason
        return self._count(now)

    def _count(self, now: float) -> list[Effect]:
        current = self.round
        assert current is not None
        needed = majority(len(self.voters))
        if len(current.granted) >= needed:
            if current.kind == "pre-vote":
                return self._start_round(now, "vote", current.epoch)
            return self._win(now)
        if len(self.voters) - len(current.refused) < needed:
            self._give_up_round(now, "a majority refused")
        return []

    def _win(self, now: float) -> list[Effect]:
        self.round = None
        self.phase = Phase.LEADER
        self.elected_at = now
        self.acks = {}
        self.next_renewal = now
        self.published = self.publishing = False
        self.publish_retry_at = now
        self._heard_leader(now, self.me.node)
        rivals = self.rivals(now)
        others = [why_lost(s, self.me) for s in ranked(rivals)]
        others += [
            f"{s.node}: its lease ran out here (it stopped renewing)"
            for s in self.recent(now)
            if s not in rivals and s.node != self.me.node
        ]
        self.last_election = f"won epoch {self.epoch}" + (f"; {'; '.join(others)}" if others else "")
        self.leader, self.leader_acting = self.me.node, False
        self.lease_holder, self.lease_until = self.me.node, now
        self.caught_up, self.catching_up_since, self.unreachable = False, now, set()
        self.failed_catch_up = ""
        return self._next_source(now) + self._lead(now)

    def _next_source(self, now: float) -> list[Effect]:
        """Catch up from the most current peer that holds newer data and has not failed yet;
        with none left, the winner goes on with what it holds."""
        sources = [s for s in self.recent(now) if s.node not in self.unreachable]
        best = most_current(sources)
        if best is not None and best.position > self.me.position:
            return [CatchUp(best.node, best.position)]
        self.caught_up, self.catching_up_since = True, None
        return []

    # -- outcomes of the leader's work -------------------------------------------------------------

    def caught_up_with(
        self, now: float, source: str, ok: bool, position: Position, reason: str = ""
    ) -> list[Effect]:
        """The outcome of the catch-up from `source`: this node now holds `position`."""
        if self.phase != Phase.LEADER or self.caught_up:
            return []
        self.me = replace(self.me, position=max(position, self.me.position))
        if not ok:
            self.unreachable.add(source)
            self.failed_catch_up = f"catching up from {source} failed ({reason})"
        effects = self._next_source(now)
        return effects if effects else self._lead(now)

    def published_as(
        self, now: float, outcome: PublishOutcome, epoch: int | None, reason: str = ""
    ) -> list[Effect]:
        """The outcome of the DNS compare-and-set (or of reading it again)."""
        self.publishing = False
        if outcome == PublishOutcome.STALE and epoch is not None and epoch > self.epoch:
            return self._adopt(now, epoch, f"DNS carries epoch {epoch}: another master was elected")
        if self.phase != Phase.LEADER:
            return []
        if outcome == PublishOutcome.APPLIED and epoch == self.epoch:
            self.published = True
            return self._lead(now)
        self.publish_retry_at = now + self.timing.heartbeat
        self.verdict = f"elected in epoch {self.epoch}; DNS update failed ({reason}): not acting, retrying"
        return []

    # -- epochs ---------------------------------------------------------------------------------------

    def _adopt(self, now: float, epoch: int, why: str) -> list[Effect]:
        """A higher epoch exists: take it (on disk first) and follow."""
        asking = self.phase == Phase.PRE_CANDIDATE
        if self.phase != Phase.FOLLOWER or self.round is not None:
            self._step_down(now, f"{why}: stepping down")
        if asking:
            self.retry_at = now  # its pre-vote named an old epoch: nothing was refused yet
        self.ballot = Ballot(epoch, None)
        self.leader, self.leader_acting = None, False
        return [Persist(self.ballot)]

    def _step_down(self, now: float, why: str) -> None:
        jitter = self.rng.uniform(0, 2 * self.timing.heartbeat)
        self.retry_at = now + jitter
        if self.phase == Phase.LEADER:
            self.lease_holder, self.lease_until = None, now
            # The voters protect its lease a while longer, and would grant it again first:
            # a master that stepped down stands again only after a lease, as they would.
            self.retry_at = now + self.timing.lease + jitter
        self.phase = Phase.FOLLOWER
        self.round = None
        self.caught_up = self.published = self.publishing = False
        self.catching_up_since = None
        self.failed_catch_up = ""
        self.acks = {}
        self.verdict = why

    def _describe_leader(self, now: float) -> None:
        if not self.caught_up:
            failed = f" ({self.failed_catch_up})" if self.failed_catch_up else ""
            self.verdict = f"elected in epoch {self.epoch}: catching up before acting{failed}"
        elif not self.published:
            self.verdict = f"elected in epoch {self.epoch}: publishing to DNS before acting"
        elif self.acting(now):
            self.verdict = f"master of epoch {self.epoch}"  # (the lease left is in status and metrics)
        else:
            self.verdict = f"elected in epoch {self.epoch}: waiting for a majority to grant the lease"
