"""Lease arithmetic (pure): how long a master may act, and how long a voter protects it.

A lease travels as a duration, never a timestamp: each side counts it on its own monotonic
clock, so no two clocks are ever compared. The master counts from the moment it *sent* the
renewal, the voter from the moment it *received* it, which is later in true time; and the
master stops `margin` seconds early, which covers clocks that run at different rates (a
clock running fast by a rate `r` against one running slow by `r` drift apart by about
2r of the lease; see `safe_margin`).
"""

from __future__ import annotations

from collections.abc import Iterable

# The largest difference in clock rate Synco assumes between two hosts. Real quartz clocks
# drift by parts per million; NTP slews by at most 500 ppm. 1% leaves a wide berth.
MAX_DRIFT = 0.01


def majority(voters: int) -> int:
    """How many votes (or lease grants) make a majority of `voters`."""
    return voters // 2 + 1


def lease_end(acks: Iterable[float], needed: int, lease: float, margin: float) -> float | None:
    """When the master's lease ends on its clock, given the send times of the renewals each
    voter granted (the master's own grant among them): the `needed`-th newest grant counts,
    since a majority granted at least that recently. None if fewer than `needed` granted."""
    newest = sorted(acks, reverse=True)
    if len(newest) < needed:
        return None
    return newest[needed - 1] + lease - margin


def safe_margin(lease: float, drift: float = MAX_DRIFT) -> float:
    """The smallest margin that keeps the master's lease inside every voter's, when the
    master's clock runs slow by `drift` and a voter's runs fast by `drift`:
    (lease - margin) / (1 - drift) <= lease / (1 + drift)."""
    return lease * 2 * drift / (1 + drift)
