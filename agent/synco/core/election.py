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
- An operator's promote (synco.core.switchover) hands over from a live master in three
  steps, or directs an election at the chosen node; no rule above is bent but the order of
  candidates, the pause and the anti-flap interval (and, with --force, the majority).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from enum import StrEnum

from synco.core.lease import lease_end, majority
from synco.core.ranking import Position, Standing, ahead_of, most_current, ranked, why_lost
from synco.core.switchover import Answer, Handover, Promotion, plan, why_not_chosen


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
    directed: bool = False  # an operator promotes this candidate: rank, pause and anti-flap give way


@dataclass(frozen=True)
class Vote:
    candidate: str
    epoch: int
    position: Position
    directed: bool = False


@dataclass(frozen=True)
class Renewal:
    master: str
    epoch: int
    lease: float  # a duration: the voter counts it from when it receives it
    sent_at: float  # on the master's clock; echoed back, never interpreted by the voter
    acting: bool  # the master acts (DNS names it): followers may pull from it


Request = PreVote | Vote | Renewal | Handover


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
    why: str = field(default="", compare=False)  # logged beside the epoch (a higher one adopted)


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


@dataclass(frozen=True)
class Check:
    """Run the pre-promote check before standing in `epoch` (its failure vetoes this node)."""

    epoch: int
    reason: str


Effect = Persist | Send | CatchUp | Publish | Check


class PublishOutcome(StrEnum):
    APPLIED = "applied"  # the zone's primary names this node with this epoch
    STALE = "stale"  # DNS carries a higher epoch: another master was elected since
    FAILED = "failed"  # refused, timed out or unknown: read again and retry


@dataclass
class _Round:
    kind: str  # "pre-vote" | "vote"
    epoch: int
    started: float
    directed: bool = False
    granted: set[str] = field(default_factory=set)
    refused: dict[str, str] = field(default_factory=dict)


@dataclass
class _Handing:
    """As master: a switchover to `target` under way (prepare sent, waiting for ready)."""

    target: str
    position: Position
    started: float
    request: str


@dataclass
class _Preparing:
    """As the target of a switchover: the final pull from `master` and what comes after."""

    master: str
    epoch: int
    position: Position
    started: float
    request: str
    checking: bool = False


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
        # the pre-promote check (an operator's hook), when there is one
        self.check_hooks = False
        self.checking = False
        self.check_passed_at: float | None = None
        self.vetoed: tuple[str, float] | None = None  # why, and until when
        # operators' promotes
        self.handing: _Handing | None = None  # as master
        self.preparing: _Preparing | None = None  # as the target of a switchover
        self.designated: tuple[str, float] | None = None  # a master handed over to it: grant it alone
        self.released: tuple[str, int] | None = None  # the master that handed over, and its epoch
        self.directed_until = 0.0  # an operator promotes this node: it stands at once until then
        self.directed_request = ""
        self.forced = False  # promoted with --force: acts without a majority's lease until one grants it
        self.promotion: Promotion | None = None  # this node's part in the last promote

    # -- what others read ----------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self.ballot.epoch

    def lease_deadline(self) -> float | None:
        """As leader: when this node's lease ends (on its clock, the margin taken off)."""
        if self.phase != Phase.LEADER:
            return None
        if self.forced:
            return float("inf")
        return self.lease_deadline_of_acks()  # (its own grant never lapses while it leads)

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

    def lease_deadline_of_acks(self) -> float | None:
        """When the lease the voters granted ends (None: no majority granted it)."""
        acks = [t for voter, t in self.acks.items() if voter in self.voters]
        if self.votes:
            acks.append(float("inf"))
        return lease_end(acks, majority(len(self.voters)), self.timing.lease, self.timing.margin)

    def lease_remaining(self, now: float) -> float:
        deadline = self.lease_deadline()
        if deadline is None or deadline == float("inf"):
            return 0.0  # (forced: it acts without a lease; its verdict says so)
        return max(0.0, deadline - now)

    # -- observations ----------------------------------------------------------------------------

    def update_self(self, standing: Standing) -> None:
        self.me = standing

    def observe(self, now: float, standing: Standing) -> None:
        """A peer's heartbeat said this of it."""
        if standing.node != self.me.node:
            self.standings[standing.node] = (standing, now)

    def recent(self, now: float, within: float | None = None) -> list[Standing]:
        """The peers heard from within two leases (while a master holds its lease, the others
        hear from each other every other heartbeat), or `within` seconds."""
        window = 2 * self.timing.lease if within is None else within
        return [s for s, at in self.standings.values() if now - at <= window]

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
        self._expire_promotion(now)
        if self.round is None and self.phase == Phase.FOLLOWER:
            return self._maybe_stand(now)
        return []

    def _expire_promotion(self, now: float) -> None:
        """A target that was not elected within its window: the promote failed here."""
        preparing = self.preparing
        if (
            preparing is not None
            and now - preparing.started > self.timing.catch_up_timeout + self.timing.lease
        ):
            self.preparing = None
            if self.directed_until <= now:
                self._promotion_step(preparing.request, self.me.node, "not elected in time", failed=True)
        if self.directed_request and now >= self.directed_until:
            why = self.verdict
            self._promotion_step(self.directed_request, self.me.node, f"not elected: {why}", failed=True)
            self.directed_request = ""
        if self.vetoed is not None and now >= self.vetoed[1]:
            self.vetoed = None

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
        handing = self.handing
        if handing is not None and now - handing.started > self.timing.catch_up_timeout:
            self._abandon(
                f"{handing.target}'s final pull did not end within {self.timing.catch_up_timeout:g} s"
            )
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
        directed = now < self.directed_until  # an operator promotes this node: it stands now
        if now < self.lease_until:
            # a master (or an unknown one, after a restart) may still hold its lease: never
            # bypassed (a switchover's target was released from it; a promote refused with it)
            return []
        if self.me.ineligible or (self.paused and not directed):
            why = (
                "automatic failover is paused"
                if not self.me.ineligible
                else f"not eligible: {self.me.ineligible}"
            )
            self.verdict = f"no master: {why}"
            return []
        if directed:
            if now < self.retry_at:
                return []
            return self._checked_round(now, "promoted by the operator")
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
        return self._checked_round(now, "the master was lost")

    def _checked_round(self, now: float, why: str) -> list[Effect]:
        """Ask for pre-votes, once the pre-promote check (if any) passed within a lease."""
        passed = self.check_passed_at is not None and now - self.check_passed_at <= self.timing.lease
        if self.check_hooks and not passed:
            if self.checking:
                return []
            self.checking = True
            self.verdict = (
                f"no master: running the pre-promote check before standing in epoch {self.epoch + 1}"
            )
            return [Check(self.epoch + 1, why)]
        return self._start_round(now, "pre-vote", self.epoch + 1)

    def checked(self, now: float, ok: bool, reason: str) -> list[Effect]:
        """The outcome of the pre-promote check: stand (or pull, for a switchover), or not."""
        self.checking = False
        preparing = self.preparing
        if preparing is not None and preparing.checking:
            preparing.checking = False
            if ok:
                self._promotion_step(
                    preparing.request, self.me.node, f"pre-promote passed; final pull from {preparing.master}"
                )
                return [CatchUp(preparing.master, preparing.position)]
            return self._ready(now, False, self.me.position, f"pre-promote vetoed: {reason}")
        if not ok:
            self.vetoed = (reason, now + 4 * self.timing.lease)
            self.verdict = f"not standing: pre-promote vetoed ({reason})"
            if self.directed_request:
                self._promotion_step(
                    self.directed_request, self.me.node, f"pre-promote vetoed: {reason}", failed=True
                )
                self.directed_request, self.directed_until = "", 0.0
            return []
        self.check_passed_at = now
        return self.tick(now)

    def veto(self, now: float) -> str:
        """Why the pre-promote check vetoed this node lately ("" if it did not)."""
        if self.vetoed is None or now >= self.vetoed[1]:
            return ""
        return f"pre-promote vetoed: {self.vetoed[0]}"

    def _claim(self, now: float) -> Position:
        """The data this node holds, or will hold once it caught up from the most current peer."""
        best = most_current([self.me, *self.recent(now)])
        return self.me.position if best is None else max(best.position, self.me.position)

    def _start_round(self, now: float, kind: str, epoch: int) -> list[Effect]:
        directed = now < self.directed_until
        self.round = _Round(kind, epoch, now, directed)
        effects: list[Effect] = []
        claim = self._claim(now)
        if kind == "pre-vote":
            self.phase = Phase.PRE_CANDIDATE
            message: Request = PreVote(self.me.node, epoch, claim, directed)
            self.verdict = f"no master: asking for pre-votes for epoch {epoch}"
        else:
            self.phase = Phase.CANDIDATE
            self.ballot = Ballot(epoch, self.me.node)
            self.leader, self.leader_acting = None, False  # (its master is not known yet)
            effects.append(Persist(self.ballot))
            message = Vote(self.me.node, epoch, claim, directed)
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
        if isinstance(request, Handover):
            return self._handover(now, request)
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
        if request.directed or self._designated(now) == request.candidate:
            return True, ""  # the operator chose it: rank, pause and anti-flap give way
        if self.paused:
            return False, "automatic failover is paused"
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

    def _designated(self, now: float) -> str | None:
        """The node a master handed over to, while the voters grant it alone."""
        if self.designated is None or now >= self.designated[1]:
            return None
        return self.designated[0]

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
        refusal = self._renewal_refusal(renewal)
        if refusal is not None:
            return Reply(
                "renewal", self.me.node, self.epoch, False, refusal, renewal.epoch, renewal.sent_at
            ), []
        effects: list[Effect] = []
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

    def _renewal_refusal(self, renewal: Renewal) -> str | None:
        """Why this node refuses a renewal, or None."""
        if renewal.epoch < self.epoch:
            return f"epoch {renewal.epoch} is older than {self.epoch}"
        if renewal.epoch > self.epoch:
            return None
        if self.released == (renewal.master, renewal.epoch):
            # a renewal it sent before its release, arriving after: it no longer acts
            return f"{renewal.master} handed over in epoch {renewal.epoch}"
        if self.leader not in (None, renewal.master):
            # two masters renewing in one epoch can only come of a --force: keep the first
            return f"{self.leader} is the master of epoch {self.epoch} here"
        return None

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
                if self.forced and self.lease_deadline_of_acks() is not None:
                    self.forced = False  # a majority grants it now: the usual lease rules again
            return effects
        if reply.kind == "handover":
            handing = self.handing
            if handing is not None and reply.voter == handing.target and not reply.granted:
                self._abandon(f"{handing.target} refused: {reply.reason}")
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

    def _win(self, now: float, how: str = "") -> list[Effect]:
        granted = sorted(self.round.granted) if self.round is not None else [self.me.node]
        self.round = None
        self.phase = Phase.LEADER
        self.elected_at = now
        self.acks = {}
        self.next_renewal = now
        self.published = self.publishing = False
        self.publish_retry_at = now
        self._heard_leader(now, self.me.node)
        request = self.directed_request or (self.preparing.request if self.preparing else "")
        rivals = self.rivals(now)
        if request:  # an operator's choice: why the others would not have been chosen instead
            others = [why_not_chosen(s, self.me) for s in ranked(self.recent(now)) if s.node != self.me.node]
        else:
            others = [why_lost(s, self.me) for s in ranked(rivals)]
            others += [
                f"{s.node}: its lease ran out here (it stopped renewing)"
                for s in self.recent(now)
                if s not in rivals and s.node != self.me.node
            ]
        votes = how or f"votes from {', '.join(granted)}" + ("; promoted by the operator" if request else "")
        self.last_election = f"won epoch {self.epoch} ({votes})" + (
            f"; {'; '.join(others)}" if others else ""
        )
        if request:
            self._promotion_step(request, self.me.node, f"won epoch {self.epoch} ({votes})")
        self.preparing, self.directed_request, self.directed_until = None, "", 0.0
        self.designated = None
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
        preparing = self.preparing
        if preparing is not None and self.phase == Phase.FOLLOWER and source == preparing.master:
            self.me = replace(self.me, position=max(position, self.me.position))
            return self._ready(now, ok and position >= preparing.position, position, reason)
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
        if outcome == PublishOutcome.STALE and epoch == self.epoch and self.phase == Phase.LEADER:
            self._step_down(now, f"DNS names another master of epoch {epoch} ({reason}): stepping down")
            return []
        if self.phase != Phase.LEADER:
            return []
        if outcome == PublishOutcome.APPLIED and epoch == self.epoch:
            self.published = True
            self.next_renewal = now  # a renewal at once says it acts: the others follow it now
            if (
                self.promotion is not None
                and self.promotion.target == self.me.node
                and not self.promotion.done
            ):
                self._promotion_step(
                    self.promotion.request,
                    self.me.node,
                    f"DNS names {self.me.node} (epoch {self.epoch}): acting as master",
                    done=True,
                )
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
        return [Persist(self.ballot, why)]

    def _step_down(self, now: float, why: str) -> None:
        if self.handing is not None:
            self._abandon(why)
        self.forced = False
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
        elif self.acting(now) and self.handing is not None:
            self.verdict = f"master of epoch {self.epoch}: handing over to {self.handing.target}"
        elif self.acting(now):
            self.verdict = f"master of epoch {self.epoch}" + (
                " (forced: no majority grants its lease yet)" if self.forced else ""
            )  # (the lease left is in status and metrics)
        else:
            self.verdict = f"elected in epoch {self.epoch}: waiting for a majority to grant the lease"

    # -- an operator's promote (synco.core.switchover) ------------------------------------------

    def promote(
        self,
        now: float,
        target: str,
        request: str,
        *,
        dry_run: bool = False,
        force: bool = False,
        seen_epoch: int = 0,
    ) -> tuple[Answer, list[Effect]]:
        """`synco-ctl promote target`, asked of this node: of the master (a switchover) or of
        the target (no live master: a directed election, or --force, which takes an epoch
        above any it has seen: its own, its peers' heartbeats', DNS's: `seen_epoch`)."""
        me = self.me.node
        known = {s.node: s for s in self.recent(now)}
        known[me] = self.me
        master = self.master(now)
        chosen = known.get(target)
        epoch = self.epoch + 1
        lines = plan(chosen, known.values(), epoch, master) if chosen is not None else ()
        refusal = self._promote_refusal(now, target, chosen, force)
        if refusal == "":
            return Answer(True, f"{target} acts as master of epoch {self.epoch} already", lines, True), []
        if refusal is not None or dry_run:
            return Answer(refusal is None, refusal or "", lines), []
        if self.acting(now):
            return Answer(True, "", lines), self._hand_over(now, target, request)
        if force:
            return Answer(True, "", lines), self._force(now, request, seen_epoch)
        self.directed_until, self.directed_request = now + 2 * self.timing.lease, request
        self.retry_at = now
        self._promotion_step(request, me, f"no live master: standing for epoch {epoch} at once")
        return Answer(True, "", lines), self.tick(now)

    def _promote_refusal(self, now: float, target: str, chosen: Standing | None, force: bool) -> str | None:
        """Why this node refuses to promote `target` (None: it will; "": it is master already)."""
        me = self.me.node
        if self.acting(now):
            if target == me:
                return ""
            if force:
                return (
                    f"{me} acts as master and holds its lease: --force is refused while a live master "
                    "holds its lease (without --force, it hands over gracefully)"
                )
            if self.handing is not None:
                return f"a switchover to {self.handing.target} is under way"
        elif target != me:
            holder = self.leased_to(now)
            named = f" ({holder} is, as far as {me} knows)" if holder else ""
            return f"{me} is neither the master{named} nor {target}: ask again"
        elif self.phase == Phase.LEADER:
            return f"{me} is elected in epoch {self.epoch} already: it acts once caught up and named by DNS"
        else:
            if now < self.lease_until and self.lease_holder != me:
                holder = self.lease_holder or "a master (unknown: this node restarted)"
                return (
                    f"{holder} holds its lease here for {self.lease_until - now:.1f} s more: it is the live "
                    "master" + (" (--force is refused while a live master holds its lease)" if force else "")
                )
        if chosen is None:
            return f"{target} has not been heard from within {2 * self.timing.lease:g} s"
        if chosen.ineligible:
            return f"{target} is not eligible: {chosen.ineligible}"
        if force:
            return None
        if self.paused:
            return "automatic failover is paused cluster-wide: resume it first (synco-ctl resume)"
        if not self.acting(now):
            # (a voter that answers heartbeats is heard every other one at least: within a lease)
            live = {s.node for s in self.recent(now, self.timing.lease)}
            heard = sorted(live & set(self.voters) | ({me} if self.votes else set()))
            needed = majority(len(self.voters))
            if len(heard) < needed:
                return (
                    f"no majority: {len(heard)} of {len(self.voters)} voters heard from "
                    f"({', '.join(heard)}), {needed} needed; "
                    f"--force promotes {target} without one (what may be lost is shown)"
                )
        return None

    def _hand_over(self, now: float, target: str, request: str) -> list[Effect]:
        """As master: freeze at the current generation and ask `target` for a final pull."""
        position = self.me.position
        self.handing = _Handing(target, position, now, request)
        self._promotion_step(
            request,
            target,
            f"{self.me.node} stopped announcing generations at {position.generation}; "
            f"asked {target} for a final pull",
        )
        self.verdict = f"master of epoch {self.epoch}: handing over to {target}"
        message = Handover(self.me.node, self.epoch, target, "prepare", position, request=request)
        return [Send(target, message)]

    def _abandon(self, why: str) -> None:
        """As master: the switchover is over without a handover; the master goes on."""
        handing, self.handing = self.handing, None
        if handing is not None:
            self._promotion_step(handing.request, handing.target, f"switchover abandoned: {why}", failed=True)

    def _handover(self, now: float, message: Handover) -> tuple[Reply, list[Effect]]:
        def answer(granted: bool, reason: str = "") -> Reply:
            return Reply("handover", self.me.node, self.epoch, granted, reason, message.epoch)

        effects: list[Effect] = []
        if message.epoch < self.epoch:
            return answer(False, f"epoch {message.epoch} is older than {self.epoch}"), effects
        if message.step == "ready":
            handing = self.handing
            if handing is None or message.target != handing.target or message.epoch != self.epoch:
                return answer(False, "no switchover to it is under way"), effects
            if not message.ok or message.position < handing.position:
                self._abandon(message.reason or f"{message.target} holds only {message.position.describe()}")
                return answer(True), effects
            return answer(True), self._release(now)
        if message.step == "prepare":
            if (
                message.target != self.me.node
                or message.epoch != self.epoch
                or self.leased_to(now) != message.master
            ):
                return answer(
                    False, f"{self.me.node} does not follow {message.master} in epoch {message.epoch}"
                ), effects
            if self.me.ineligible:
                return answer(False, f"not eligible: {self.me.ineligible}"), effects
            self.preparing = _Preparing(message.master, message.epoch, message.position, now, message.request)
            if self.check_hooks:
                self.preparing.checking = True
                self._promotion_step(message.request, self.me.node, "running the pre-promote check")
                return answer(True), [Check(self.epoch + 1, f"switchover from {message.master}")]
            self._promotion_step(message.request, self.me.node, f"final pull from {message.master}")
            return answer(True), [CatchUp(message.master, message.position)]
        # "release": the master stopped acting; grant its target alone for a lease
        if message.epoch > self.epoch:
            effects += self._adopt(now, message.epoch, f"{message.master} led epoch {message.epoch}")
        elif message.master not in (self.leader, self.lease_holder) or self.phase != Phase.FOLLOWER:
            return answer(False, f"{self.me.node} does not follow {message.master}"), effects
        self.leader, self.leader_acting = None, False
        self.lease_holder, self.lease_until = message.target, now + self.timing.lease
        self.designated = (message.target, now + self.timing.lease)
        self.released = (message.master, message.epoch)
        self.verdict = f"{message.master} handed over to {message.target}: waiting for it to be elected"
        if message.target == self.me.node:
            self.lease_until = now  # it stands now: its own grant protects nobody
            self.directed_until, self.retry_at = now + self.timing.lease, now
            self.directed_request = message.request
            self.check_passed_at = now if self.preparing is not None else self.check_passed_at
            self._promotion_step(
                message.request,
                self.me.node,
                f"released by {message.master}: standing for epoch {self.epoch + 1}",
            )
            effects += self.tick(now)
        return answer(True), effects

    def _ready(self, now: float, ok: bool, position: Position, reason: str) -> list[Effect]:
        """As the target: tell the master the final pull ended (and how)."""
        preparing = self.preparing
        assert preparing is not None
        if not ok:
            self.preparing = None
            why = reason or f"pulled only {position.describe()}"
            self._promotion_step(preparing.request, self.me.node, f"cannot take over: {why}", failed=True)
        else:
            took = now - preparing.started
            self._promotion_step(
                preparing.request,
                self.me.node,
                f"final pull of generation {position.generation} done in {took:.2f} s",
            )
        message = Handover(
            preparing.master, preparing.epoch, self.me.node, "ready", position, ok, reason, preparing.request
        )
        return [Send(preparing.master, message)]

    def _release(self, now: float) -> list[Effect]:
        """As master: stop acting, then tell every peer to elect the target."""
        handing, self.handing = self.handing, None
        assert handing is not None
        target = handing.target
        self._step_down(now, f"handed over to {target}: following it")
        self.lease_holder, self.lease_until = target, now + self.timing.lease
        self.designated = (target, now + self.timing.lease)
        self._promotion_step(
            handing.request, target, f"{self.me.node} stopped acting; every node grants {target} alone"
        )
        message = Handover(
            self.me.node, self.epoch, target, "release", handing.position, request=handing.request
        )
        return [Send(peer, message) for peer in self.peers]

    def _force(self, now: float, request: str, seen_epoch: int) -> list[Effect]:
        """--force: an epoch above any seen, this node's own vote, and acting without a
        majority's lease until a majority grants it one (the operator takes responsibility)."""
        self.ballot = Ballot(max(self.epoch, seen_epoch) + 1, self.me.node)
        self.leader, self.leader_acting = None, False
        self.round = None
        self.directed_request = request
        self.forced = True
        self._promotion_step(request, self.me.node, f"forced into epoch {self.epoch} without a majority")
        effects: list[Effect] = [Persist(self.ballot)]
        return effects + self._win(now, "forced by the operator, without a majority")

    def _promotion_step(
        self, request: str, target: str, step: str, failed: bool = False, done: bool = False
    ) -> None:
        if self.promotion is None or self.promotion.request != request:
            self.promotion = Promotion(request, target, [])
        self.promotion.add(step)
        self.promotion.failed = self.promotion.failed or failed
        self.promotion.done = self.promotion.done or done or failed
