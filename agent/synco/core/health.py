"""How well a node does its job, and why: the worst of the problems it has observed (pure).

FAILING: it cannot do its job (its disk is not mounted, its decision loop failed); its
replicas and backup servers copy nothing from it. DEGRADED: it serves, but something is
wrong that an operator should see (a failed pull, a watcher down, a silent master).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum


class Level(IntEnum):
    OK = 0
    DEGRADED = 1
    FAILING = 2


@dataclass(frozen=True)
class Problem:
    level: Level
    reason: str


@dataclass(frozen=True)
class Health:
    level: Level = Level.OK
    reason: str = ""

    def line(self) -> str:
        """`ok`, or the level and the reason: what status shows and logs."""
        return self.level.name.lower() + (f": {self.reason}" if self.reason else "")


def assess(problems: Iterable[Problem | None]) -> Health:
    """The worst level among `problems` (None: no problem), with every reason at that level."""
    found = [p for p in problems if p is not None and p.level > Level.OK]
    if not found:
        return Health()
    worst = max(p.level for p in found)
    return Health(worst, "; ".join(p.reason for p in found if p.level == worst))
