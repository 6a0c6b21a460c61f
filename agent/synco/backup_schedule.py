"""When a backup server takes its next snapshot of the master: one decision per agent cycle,
with its verdict (pure).

A backup server does not mirror the master; it takes a snapshot every `interval` seconds.
The schedule runs on wall-clock time because it continues from the newest published
snapshot, whose name is its UTC time: a restarted agent does not take an extra snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from synco.replication import Action, Decision
from synco.retention import format_duration

CLOCK_TOLERANCE = 60.0  # a newest snapshot further in the future than this: the clock moved back


@dataclass(frozen=True)
class BackupTiming:
    interval: float = 3600.0  # a snapshot this often
    retry: float = 10.0  # after a failed snapshot, wait this long before the next attempt


@dataclass(frozen=True)
class BackupView:
    """What a backup server knows at one instant (times are UNIX seconds)."""

    now: float
    master: str | None
    latest_at: float | None = None  # when the newest published snapshot was taken
    latest: str | None = None  # its name
    running_from: str | None = None  # the master of the snapshot in progress
    last_attempt_at: float | None = None  # when the last attempt ended
    last_attempt_ok: bool = True
    paused: bool = False
    requested: bool = False  # an operator asked for a snapshot now


def wake_at(view: BackupView, timing: BackupTiming) -> float | None:
    """UNIX time the decision changes by itself (a snapshot falls due, a retry delay ends)."""
    overdue = _overdue(view, timing)
    if overdue is None:
        assert view.latest_at is not None
        return view.latest_at + timing.interval
    return _retry_at(view, timing)


def decide(view: BackupView, timing: BackupTiming = BackupTiming()) -> Decision:
    """The backup server's next step and the reason for it."""
    if view.paused:
        if view.running_from is not None:
            return Decision(Action.CANCEL, f"paused: cancelling the snapshot from {view.running_from}")
        return Decision(Action.IDLE, "paused by the operator")
    if view.master is None:
        if view.running_from is not None:
            return Decision(
                Action.CANCEL, f"no master known: cancelling the snapshot from {view.running_from}"
            )
        return Decision(Action.IDLE, "no master known: waiting")
    if view.running_from is not None:
        if view.running_from != view.master:
            return Decision(
                Action.CANCEL,
                f"master changed from {view.running_from} to {view.master}: cancelling the snapshot",
            )
        return Decision(Action.WAIT, f"taking a snapshot from {view.master}")
    if view.requested:
        return Decision(Action.SNAPSHOT, f"operator asked for a snapshot from {view.master}")
    overdue = _overdue(view, timing)
    if overdue is None:
        assert view.latest_at is not None
        return Decision(
            Action.IDLE,
            f"newest snapshot {view.latest}; next from {view.master} at "
            f"{_clock(view.latest_at + timing.interval)} (every {describe_seconds(timing.interval)})",
        )
    if _retry_at(view, timing) is not None:
        return Decision(Action.WAIT, f"last snapshot failed: retrying {view.master} after {timing.retry:g} s")
    return Decision(Action.SNAPSHOT, f"{overdue}: taking one from {view.master}")


def _overdue(view: BackupView, timing: BackupTiming) -> str | None:
    """Why a snapshot is due now, or None when it is not."""
    if view.latest_at is None:
        return "no snapshot yet"
    if view.latest_at > view.now + CLOCK_TOLERANCE:
        return f"the newest snapshot {view.latest} is in the future (the clock moved back?)"
    if view.now >= view.latest_at + timing.interval:
        return f"snapshot due (every {describe_seconds(timing.interval)})"
    return None


def _retry_at(view: BackupView, timing: BackupTiming) -> float | None:
    if view.last_attempt_ok or view.last_attempt_at is None:
        return None
    retry_at = view.last_attempt_at + timing.retry
    return retry_at if retry_at > view.now else None


def describe_seconds(seconds: float) -> str:
    if seconds < 1 or seconds != int(seconds):
        return f"{seconds:g} s"
    return format_duration(timedelta(seconds=seconds))


def _clock(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
