"""When a backup server takes its next snapshot of the master: one decision per agent cycle,
with its verdict (pure).

A backup server does not mirror the master; it takes a snapshot every `interval` seconds,
on the multiples of the interval (an hourly schedule takes them on the hour, UTC, however
long each takes). The schedule runs on wall-clock time because it continues from the
newest snapshot, whose name is its UTC time: a restarted agent takes no extra snapshot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from synco.core.replication import Action, Decision, interruption
from synco.core.retention import FUTURE_TOLERANCE, Snapshot, format_duration

# A newest snapshot further in the future than this: the clock moved back (the same margin
# pruning allows before it stops counting a snapshot).
CLOCK_TOLERANCE = FUTURE_TOLERANCE.total_seconds()


@dataclass(frozen=True)
class BackupTiming:
    interval: float = 3600.0  # a snapshot this often
    retry: float = 10.0  # after a failed snapshot, wait this long before the next attempt...
    max_retry: float = 900.0  # ...doubling with each failure in a row, up to this (or the interval)

    def retry_after(self, failures: int) -> float:
        """The delay after `failures` failed attempts in a row."""
        ceiling = max(self.retry, min(self.interval, self.max_retry))
        return min(self.retry * 2.0 ** min(max(failures, 1) - 1, 30), ceiling)


@dataclass(frozen=True)
class BackupView:
    """What a backup server knows at one instant (`now` and snapshot times are UNIX seconds)."""

    now: float
    master: str | None
    latest_at: float | None = None  # when the newest snapshot was taken (its name)
    latest: str | None = None  # its name
    running_from: str | None = None  # the master of the snapshot in progress
    since_attempt: float | None = None  # seconds since the last attempt ended (monotonic)
    failures: int = 0  # attempts that failed in a row (0: the last one succeeded)
    paused: bool = False
    requested: bool = False  # an operator asked for a snapshot now
    master_view: str | None = None  # who the master's own last heartbeat names as master
    master_failing: str | None = None  # why the master's own heartbeat says it is failing
    outlived_silence: bool = False  # the master went silent since the last attempt began, and is back


def schedule_basis(snapshots: list[Snapshot], now: float) -> Snapshot | None:
    """The snapshot the schedule continues from: the newest, except one named in the future
    (taken while the clock was ahead) once the clock is right again, which would otherwise
    make every snapshot look due at once."""
    if not snapshots:
        return None
    ordered = sorted(snapshots, key=lambda s: s.order)
    current = [s for s in ordered if s.time.timestamp() <= now + CLOCK_TOLERANCE]
    return current[-1] if current else ordered[-1]


def due_at(latest_at: float, timing: BackupTiming) -> float:
    """The first multiple of the interval after the newest snapshot."""
    return (math.floor(latest_at / timing.interval) + 1) * timing.interval


def wake_at(view: BackupView, timing: BackupTiming) -> float | None:
    """UNIX time the decision changes by itself (a snapshot falls due, a retry delay ends)."""
    if _overdue(view, timing) is None:
        assert view.latest_at is not None
        return due_at(view.latest_at, timing)
    wait = _retry_wait(view, timing)
    return view.now + wait if wait > 0 else None


def decide(view: BackupView, timing: BackupTiming = BackupTiming()) -> Decision:
    """The backup server's next step and the reason for it."""
    first = interruption(
        view.paused,
        view.master,
        view.running_from,
        "snapshot",
        view.master_view,
        view.master_failing,
        view.outlived_silence,
    )
    if first is not None:
        return first
    if view.running_from is not None:
        return Decision(Action.WAIT, f"taking a snapshot from {view.master}")
    if view.requested:
        return Decision(Action.SNAPSHOT, f"operator asked for a snapshot from {view.master}")
    overdue = _overdue(view, timing)
    if overdue is None:
        assert view.latest_at is not None
        return Decision(
            Action.IDLE,
            f"newest snapshot {view.latest}; next from {view.master} at "
            f"{_clock(due_at(view.latest_at, timing))} (every {describe_seconds(timing.interval)})",
        )
    if _retry_wait(view, timing) > 0:
        failed = "last snapshot failed" if view.failures == 1 else f"last {view.failures} snapshots failed"
        delay = describe_seconds(timing.retry_after(view.failures))
        return Decision(Action.WAIT, f"{failed}: retrying {view.master} after {delay}")
    return Decision(Action.SNAPSHOT, f"{overdue}: taking one from {view.master}")


def _overdue(view: BackupView, timing: BackupTiming) -> str | None:
    """Why a snapshot is due now, or None when it is not."""
    if view.latest_at is None:
        return "no snapshot yet"
    if view.latest_at > view.now + CLOCK_TOLERANCE:
        return f"the newest snapshot {view.latest} is in the future (the clock moved back?)"
    if view.now >= due_at(view.latest_at, timing):
        return f"snapshot due (every {describe_seconds(timing.interval)})"
    return None


def _retry_wait(view: BackupView, timing: BackupTiming) -> float:
    """Seconds still to wait after failed attempts (0: none)."""
    if view.failures == 0 or view.since_attempt is None or view.outlived_silence:
        return 0.0  # (failures during a silence of the master end with it)
    return max(0.0, timing.retry_after(view.failures) - view.since_attempt)


def describe_seconds(seconds: float) -> str:
    if seconds < 1 or seconds != int(seconds):
        return f"{seconds:g} s"
    return format_duration(timedelta(seconds=seconds))


def _clock(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
