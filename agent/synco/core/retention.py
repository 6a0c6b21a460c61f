"""The backup policy: which snapshots to keep and why (pure, borg-style).

Rules group snapshots into calendar buckets (hour, day, ISO week, month, quarter, year)
in a time zone, take one representative per bucket (the oldest with keep=old, the newest
with keep=new) and keep the representatives of the N most recent buckets. The kept set is
the union over the rules, plus --keep-last, --keep-within and the snapshot `latest` names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo

PERIODS = ("hourly", "daily", "weekly", "monthly", "quarterly", "yearly")
DEFAULT_COUNTS = {"hourly": 24, "daily": 28, "weekly": 52, "monthly": 36, "quarterly": 40, "yearly": 20}

BucketKey = tuple[int, ...]
FUTURE_TOLERANCE = timedelta(minutes=1)

BUCKETS: dict[str, Callable[[datetime], BucketKey]] = {
    "hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "daily": lambda t: (t.year, t.month, t.day),
    "weekly": lambda t: tuple(t.isocalendar()[:2]),
    "monthly": lambda t: (t.year, t.month),
    "quarterly": lambda t: (t.year, (t.month - 1) // 3),
    "yearly": lambda t: (t.year,),
}


@dataclass(frozen=True)
class Snapshot:
    name: str
    time: datetime  # timezone-aware
    number: int = 0  # collision suffix: orders snapshots published in the same second

    @property
    def order(self) -> tuple[datetime, int, str]:
        return (self.time, self.number, self.name)


@dataclass(frozen=True)
class Policy:
    counts: dict[str, int] = field(default_factory=dict)  # period -> N, only the rules given
    keep: str = "old"  # "old" | "new": which snapshot represents its bucket
    keep_last: int | None = None
    keep_within: timedelta | None = None
    timezone: tzinfo = UTC

    @property
    def has_rules(self) -> bool:
        return bool(self.counts) or self.keep_last is not None or self.keep_within is not None

    def effective(self) -> Policy:
        """This policy, or the default rules when none was given."""
        if self.has_rules:
            return self
        return Policy(dict(DEFAULT_COUNTS), self.keep, None, None, self.timezone)

    def describe(self) -> str:
        parts = [f"{p} {self.counts[p]}" for p in PERIODS if p in self.counts]
        if self.keep_last is not None:
            parts.append(f"last {self.keep_last}")
        if self.keep_within is not None:
            parts.append(f"within {format_duration(self.keep_within)}")
        return ", ".join(parts) + f" (keep {self.keep})"


@dataclass(frozen=True)
class Decision:
    snapshot: Snapshot
    reasons: tuple[str, ...]

    @property
    def keep(self) -> bool:
        return bool(self.reasons)

    def describe(self) -> str:
        if self.keep:
            return f"keep  {self.snapshot.name}  ({', '.join(self.reasons)})"
        return f"erase {self.snapshot.name}"


def plan(
    snapshots: Iterable[Snapshot], now: datetime, policy: Policy, latest: str | None = None
) -> list[Decision]:
    """A decision for every snapshot, newest first; reasons say which rules keep it."""
    policy = policy.effective()
    everything = sorted(snapshots, key=lambda s: s.order, reverse=True)
    reasons: dict[str, list[str]] = {s.name: [] for s in everything}
    if latest is not None and latest in reasons:
        reasons[latest].append("latest")
    # Snapshots named after `now` were taken while the clock was ahead: counted, they would
    # take the newest places of every rule and push the real recent snapshots out.
    horizon_ahead = now + FUTURE_TOLERANCE
    ordered = [s for s in everything if s.time <= horizon_ahead]
    for snapshot in everything:
        if snapshot.time > horizon_ahead:
            reasons[snapshot.name].append("named after now (a clock ahead?)")
    if policy.keep_last is not None:
        for index, snapshot in enumerate(ordered[: policy.keep_last], start=1):
            reasons[snapshot.name].append(f"last #{index}")
    if policy.keep_within is not None:
        horizon = now - policy.keep_within
        for snapshot in ordered:
            if snapshot.time > horizon:
                reasons[snapshot.name].append(f"within {format_duration(policy.keep_within)}")
    for period in PERIODS:
        count = policy.counts.get(period)
        if not count:
            continue
        for index, snapshot in enumerate(_representatives(ordered, period, policy)[:count], start=1):
            reasons[snapshot.name].append(f"{period} #{index}")
    return [Decision(s, tuple(reasons[s.name])) for s in everything]


def _representatives(ordered: Sequence[Snapshot], period: str, policy: Policy) -> list[Snapshot]:
    """One snapshot per bucket, most recent bucket first."""
    key = BUCKETS[period]
    chosen: dict[BucketKey, Snapshot] = {}
    for snapshot in ordered:
        bucket = key(snapshot.time.astimezone(policy.timezone))
        current = chosen.get(bucket)
        if (
            current is None
            or (policy.keep == "old" and snapshot.order < current.order)
            or (policy.keep == "new" and snapshot.order > current.order)
        ):
            chosen[bucket] = snapshot
    return [chosen[b] for b in sorted(chosen, reverse=True)]


_DURATION = re.compile(r"(\d+)\s*([smhdwy])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def parse_duration(text: str) -> timedelta:
    """`36h`, `14d`, `2w`, `1d12h`: s, m, h, d, w and y (365 days)."""
    compact = text.replace(" ", "")
    parts = _DURATION.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"{text!r} is not a duration like 36h, 14d or 2w")
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in parts))


def format_duration(duration: timedelta) -> str:
    seconds = int(duration.total_seconds())
    for unit in ("w", "d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"
