"""A backup server's snapshot schedule, as a table: each row is one situation and its verdict."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from synco.core.backup_schedule import BackupTiming, BackupView, decide, wake_at
from synco.core.replication import Action

T = BackupTiming(interval=3600, retry=10)
NOW = datetime(2026, 11, 26, 12, 30, tzinfo=UTC).timestamp()
TAKEN = dict(
    now=NOW,
    master="s01",
    latest_at=NOW - 1800,  # 12:00
    latest="2026.11.26-12.00.00",
)


@pytest.mark.parametrize(
    ("changes", "action", "verdict"),
    [
        (
            {},
            Action.IDLE,
            "newest snapshot 2026.11.26-12.00.00; next from s01 at 2026-11-26 13:00:00 UTC (every 1h)",
        ),
        ({"paused": True}, Action.IDLE, "paused by the operator"),
        ({"paused": True, "running_from": "s01"}, Action.CANCEL, "paused: cancelling the snapshot from s01"),
        ({"master": None}, Action.IDLE, "no master known: waiting"),
        (
            {"master": None, "running_from": "s01"},
            Action.CANCEL,
            "no master known: cancelling the snapshot from s01",
        ),
        (
            {"master": "s02", "running_from": "s01"},
            Action.CANCEL,
            "master changed from s01 to s02: cancelling the snapshot",
        ),
        ({"running_from": "s01"}, Action.WAIT, "taking a snapshot from s01"),
        ({"requested": True}, Action.SNAPSHOT, "operator asked for a snapshot from s01"),
        (
            {"latest_at": None, "latest": None},
            Action.SNAPSHOT,
            "no snapshot yet: taking one from s01",
        ),
        (
            {"latest_at": NOW - 3600},
            Action.SNAPSHOT,
            "snapshot due (every 1h): taking one from s01",
        ),
        (
            {"latest_at": NOW - 7200, "failures": 1, "since_attempt": 5},
            Action.WAIT,
            "last snapshot failed: retrying s01 after 10s",
        ),
        (
            {"latest_at": NOW - 7200, "failures": 1, "since_attempt": 11},
            Action.SNAPSHOT,
            "snapshot due (every 1h): taking one from s01",
        ),
        (  # they failed while the master could not be reached: no backoff once it is back
            {"latest_at": NOW - 7200, "failures": 3, "since_attempt": 30, "outlived_silence": True},
            Action.SNAPSHOT,
            "snapshot due (every 1h): taking one from s01",
        ),
        (  # failures in a row back off: 10, 20, 40 s...
            {"latest_at": NOW - 7200, "failures": 3, "since_attempt": 30},
            Action.WAIT,
            "last 3 snapshots failed: retrying s01 after 40s",
        ),
        (  # ...up to 15 minutes
            {"latest_at": NOW - 7200, "failures": 40, "since_attempt": 800},
            Action.WAIT,
            "last 40 snapshots failed: retrying s01 after 15m",
        ),
        (  # the snapshot falls on the next multiple of the interval, however long the last took
            {"latest_at": NOW - 1500, "latest": "2026.11.26-12.05.00"},
            Action.IDLE,
            "newest snapshot 2026.11.26-12.05.00; next from s01 at 2026-11-26 13:00:00 UTC (every 1h)",
        ),
        (  # a failed operator request does not bring the schedule forward
            {"failures": 1, "since_attempt": 60},
            Action.IDLE,
            "newest snapshot 2026.11.26-12.00.00; next from s01 at 2026-11-26 13:00:00 UTC (every 1h)",
        ),
        (
            {"latest_at": NOW + 7200, "latest": "2026.11.26-14.30.00"},
            Action.SNAPSHOT,
            "the newest snapshot 2026.11.26-14.30.00 is in the future (the clock moved back?): "
            "taking one from s01",
        ),
        (
            {"latest_at": None, "master_view": "s02"},
            Action.WAIT,
            "s01 does not act as master (its heartbeat names s02): no snapshot",
        ),
        (
            {"running_from": "s01", "outlived_silence": True},
            Action.CANCEL,
            "s01 is back after a silence: starting the snapshot again",
        ),
        (  # an unmounted master reads as an empty tree: no snapshot of it
            {"latest_at": None, "master_failing": "/srv is not mounted"},
            Action.WAIT,
            "s01 is failing (/srv is not mounted): no snapshot",
        ),
        (  # a clock a few seconds ahead on the previous run is no reason for a snapshot
            {"latest_at": NOW + 30},
            Action.IDLE,
            "newest snapshot 2026.11.26-12.00.00; next from s01 at 2026-11-26 13:00:00 UTC (every 1h)",
        ),
    ],
)
def test_decisions(changes: dict[str, object], action: Action, verdict: str) -> None:
    decision = decide(BackupView(**{**TAKEN, **changes}), T)  # type: ignore[arg-type]
    assert (decision.action, decision.verdict) == (action, verdict)


def test_wake_at() -> None:
    assert wake_at(BackupView(**TAKEN), T) == NOW + 1800  # type: ignore[arg-type]
    overdue = BackupView(**{**TAKEN, "latest_at": NOW - 7200})  # type: ignore[arg-type]
    assert wake_at(overdue, T) is None  # due now: no timer needed
    failed = BackupView(  # type: ignore[arg-type]
        **{**TAKEN, "latest_at": NOW - 7200, "failures": 1, "since_attempt": 4}
    )
    assert wake_at(failed, T) == NOW + 6


VIEWS = st.builds(
    BackupView,
    now=st.floats(0, 1e9),
    master=st.sampled_from([None, "s01", "s02"]),
    latest_at=st.none() | st.floats(0, 1e9),
    latest=st.sampled_from([None, "x"]),
    running_from=st.sampled_from([None, "s01", "s02"]),
    since_attempt=st.none() | st.floats(0, 1e6),
    failures=st.integers(0, 50),
    paused=st.booleans(),
    requested=st.booleans(),
    master_view=st.sampled_from([None, "", "s01", "s02"]),
)


@given(VIEWS, st.floats(1, 1e6))
def test_safety(view: BackupView, interval: float) -> None:
    timing = BackupTiming(interval=interval, retry=10)
    decision = decide(view, timing)
    assert decision.action in (Action.IDLE, Action.WAIT, Action.SNAPSHOT, Action.CANCEL)
    # never two snapshots at once, never one while paused or without a master
    if view.running_from is not None:
        assert decision.action in (Action.WAIT, Action.CANCEL)
    if view.paused or view.master is None:
        assert decision.action in (Action.IDLE, Action.CANCEL)
    if view.master_view is not None and view.master_view != view.master:
        assert decision.action != Action.SNAPSHOT
    # when idle with nothing running, a timer says when to look again (the loop never stalls);
    # the next snapshot is never due later than one interval after the newest
    waiting = (
        decision.action == Action.WAIT
        and view.running_from is None
        and (view.master_view is None or view.master_view == view.master)
    )
    if (decision.action == Action.IDLE and not view.paused and view.master is not None) or waiting:
        due = wake_at(view, timing)
        assert due is not None and due > view.now
        if decision.action == Action.IDLE and view.latest_at is not None:
            assert due <= view.latest_at + interval * (1 + 1e-9) + 1e-6
    assert decision.verdict


def test_schedule_basis_skips_a_snapshot_named_in_the_future() -> None:
    from synco.core.backup_schedule import schedule_basis
    from synco.core.retention import Snapshot

    def at(offset: float, name: str) -> Snapshot:
        return Snapshot(name, datetime.fromtimestamp(NOW + offset, UTC))

    ahead, current, older = at(86400, "ahead"), at(-60, "current"), at(-3600, "older")
    assert schedule_basis([ahead, older, current], NOW) == current
    assert schedule_basis([ahead], NOW) == ahead  # nothing else: the clock check in decide() acts
    assert schedule_basis([], NOW) is None
