"""Which node should become master, and why each other one should not (pure).

The order: eligible nodes first (priority above 0, healthy, its own mountpoint present,
within the lag limit: the node says so itself), then the newest data it holds, then the
node DNS names as master now (the incumbent: starting the agents does not move the master),
then priority, then name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Position:
    """How current the data a node holds is: the epoch of the master it came from, and that
    master's generation. Generations count per master, and one master acts per epoch, so
    positions of replicas of different masters compare by epoch first."""

    epoch: int = 0
    generation: int = 0

    def describe(self) -> str:
        return f"epoch {self.epoch} generation {self.generation}"


NO_DATA = Position(-1, -1)  # a witness: it holds nothing, any candidate is as current


@dataclass(frozen=True)
class Standing:
    """What a node says of itself as a candidate (in its heartbeats)."""

    node: str
    position: Position
    priority: int
    ineligible: str = ""  # why it may not become master ("" when it may)
    incumbent: bool = False  # DNS names it as master now


def order_key(standing: Standing) -> tuple[bool, Position, bool, int, str]:
    """Sort ascending: the best candidate first."""
    return (
        bool(standing.ineligible),
        Position(-standing.position.epoch, -standing.position.generation),
        not standing.incumbent,
        -standing.priority,
        standing.node,
    )


def ranked(standings: Iterable[Standing]) -> list[Standing]:
    return sorted(standings, key=order_key)


def why_not(loser: Standing, winner: Standing) -> str:
    """Why `loser` is not the master `winner` should be: the first criterion that decides."""
    if loser.ineligible:
        return f"{loser.node}: not eligible ({loser.ineligible})"
    if loser.position < winner.position:
        return (
            f"{loser.node}: older data ({loser.position.describe()} < {winner.node}'s "
            f"{winner.position.describe()})"
        )
    if winner.incumbent and not loser.incumbent:
        return f"{loser.node}: as current as {winner.node}, which DNS names as master now"
    if loser.priority < winner.priority:
        return f"{loser.node}: lower priority ({loser.priority} < {winner.node}'s {winner.priority})"
    return f"{loser.node}: same data and priority as {winner.node}, whose name sorts first"


def why_lost(other: Standing, winner: Standing) -> str:
    """Why `other` did not win the election `winner` won."""
    if order_key(other) < order_key(winner):
        return f"{other.node}: ranks first, but a majority granted {winner.node} its votes first"
    return why_not(other, winner)


def ahead_of(me: Standing, others: Iterable[Standing]) -> list[Standing]:
    """The eligible nodes that rank before `me` (a candidate waits for them to try first)."""
    mine = order_key(me)
    return [s for s in others if s.node != me.node and not s.ineligible and order_key(s) < mine]


def most_current(standings: Iterable[Standing]) -> Standing | None:
    """The node holding the newest data, eligible or not (the winner catches up from it)."""
    best = None
    for standing in standings:
        if standing.position != NO_DATA and (best is None or standing.position > best.position):
            best = standing
    return best
