"""An operator moves the master on purpose: what a promote would do, and why it is refused
(pure). The steps themselves are the Elector's (synco.core.election).

A switchover (`synco-ctl promote NODE` while a master acts) goes in three steps, each a
`Handover` message:

1. "prepare": the master stops announcing generations (its data stays at its last one)
   and asks NODE for a final pull of it; NODE runs its pre-promote check first.
2. "ready": NODE holds that generation (or says why not: the switchover is abandoned and
   the master goes on).
3. "release": the master stops acting, then tells every peer to grant NODE alone for a
   lease; NODE stands at once, wins the next epoch, moves DNS compare-and-set and acts.
   Writes that reached the old master after NODE's final pull are kept aside on it by its
   first pull from NODE (it acted as master since its last pull).

Without a live master, a promote is a *directed election*: NODE stands at once, and the
voters grant it even while failover is paused or a better-ranked node exists, but never
while they protect a live master's lease, and never with older data than theirs. `--force`
makes NODE master without a majority (the operator takes responsibility): it is refused
while a live master holds its lease.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from synco.core.ranking import Position, Standing, order_key, why_not


@dataclass(frozen=True)
class Handover:
    master: str  # the master handing over
    epoch: int  # its epoch
    target: str
    step: str  # "prepare" | "ready" | "release"
    position: Position  # the master's last generation (prepare, release); the target's (ready)
    ok: bool = True  # ready: the final pull (and the pre-promote check) succeeded
    reason: str = ""  # ready: why not
    request: str = ""  # the operator's request id, shown in every node's status


@dataclass
class Promotion:
    """What this node did last for an operator's promote, for its status (synco-ctl follows
    every node's and prints each step as it happens)."""

    request: str
    target: str
    steps: list[str]  # in order (at most MAX_STEPS: the last ones)
    failed: bool = False
    done: bool = False  # this node's part is over (it may still be failed)

    def add(self, step: str) -> None:
        self.steps = [*self.steps, step][-MAX_STEPS:]


MAX_STEPS = 16


@dataclass(frozen=True)
class Answer:
    """The reply to a promote (or its dry run): refused with a reason, or accepted."""

    accepted: bool
    refusal: str = ""
    plan: tuple[str, ...] = ()  # who would become master, and why every other node would not
    already: bool = False  # the target acts as master already: nothing to do


def plan(target: Standing, others: Iterable[Standing], epoch: int, master: str | None) -> tuple[str, ...]:
    """Who would become master, in which epoch, and why each other node would not."""
    lines = [
        f"{target.node} would become master in epoch {epoch}: {target.position.describe()}, "
        f"priority {target.priority}" + (f", not eligible ({target.ineligible})" if target.ineligible else "")
    ]
    for other in sorted(others, key=order_key):
        if other.node == target.node:
            continue
        if other.node == master:
            lines.append(f"{other.node}: the master now: it hands over to {target.node} and follows it")
        else:
            lines.append(why_not_chosen(other, target))
    return tuple(lines)


def why_not_chosen(other: Standing, target: Standing) -> str:
    """Why `other` would not become master when the operator promotes `target`."""
    if other.ineligible:
        return f"{other.node}: not eligible ({other.ineligible})"
    if order_key(other) < order_key(target):
        return f"{other.node}: ranks before {target.node} on its own, but the operator chose {target.node}"
    return why_not(other, target)


def position_loss(target: Position, heard: Iterable[tuple[str, Position]]) -> str:
    """What a forced promotion may lose: the nodes last heard with newer data than the target."""
    newer = [(node, position) for node, position in heard if position > target]
    if not newer:
        return ""
    parts = [f"{node} was last heard at {position.describe()}" for node, position in sorted(newer)]
    return (
        f"{'; '.join(parts)} (this node holds {target.describe()}): changes made there after this "
        "node's last pull are not here; they are kept aside on that node when it rejoins"
    )
