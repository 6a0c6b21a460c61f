"""The retention planner: hand-worked tables for each rule, and properties (hypothesis)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synco.core.retention import (
    BUCKETS,
    DEFAULT_COUNTS,
    PERIODS,
    Decision,
    Policy,
    Snapshot,
    parse_duration,
    plan,
)

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def snaps(*stamps: str) -> list[Snapshot]:
    return [Snapshot(s, datetime.fromisoformat(s).replace(tzinfo=UTC)) for s in stamps]


def kept(decisions: list[Decision]) -> dict[str, tuple[str, ...]]:
    return {d.snapshot.name: d.reasons for d in decisions if d.keep}


DAYS = snaps(
    "2026-01-01T00:00",
    "2026-01-01T12:00",
    "2026-01-02T06:00",
    "2026-01-03T01:00",
    "2026-01-03T23:00",
    "2026-01-04T10:00",
)


def test_daily_keep_old() -> None:
    decisions = plan(DAYS, NOW, Policy({"daily": 3}))
    assert kept(decisions) == {
        "2026-01-04T10:00": ("daily #1",),
        "2026-01-03T01:00": ("daily #2",),
        "2026-01-02T06:00": ("daily #3",),
    }
    assert decisions[0].snapshot.name == "2026-01-04T10:00"  # newest first


def test_daily_keep_new() -> None:
    assert kept(plan(DAYS, NOW, Policy({"daily": 2}, keep="new"))) == {
        "2026-01-04T10:00": ("daily #1",),
        "2026-01-03T23:00": ("daily #2",),
    }


def test_hourly_and_union_of_rules() -> None:
    decisions = plan(DAYS, NOW, Policy({"hourly": 2, "daily": 2}))
    assert kept(decisions) == {
        "2026-01-04T10:00": ("hourly #1", "daily #1"),
        "2026-01-03T23:00": ("hourly #2",),
        "2026-01-03T01:00": ("daily #2",),
    }


def test_iso_weeks_start_monday_and_cross_years() -> None:
    # 2025-12-29 is a Monday of ISO week 2026-W01, which also holds Thursday 2026-01-01;
    # Sunday 2026-01-04 ends that week and Monday 2026-01-05 starts W02.
    weeks = snaps(
        "2025-12-28T12:00", "2025-12-29T00:00", "2026-01-01T00:00", "2026-01-04T23:59", "2026-01-05T00:00"
    )
    assert kept(plan(weeks, NOW, Policy({"weekly": 3}))) == {
        "2026-01-05T00:00": ("weekly #1",),
        "2025-12-29T00:00": ("weekly #2",),
        "2025-12-28T12:00": ("weekly #3",),
    }


def test_quarters_and_months() -> None:
    q = snaps(
        "2026-01-01T00:00", "2026-03-31T23:59", "2026-04-01T00:00", "2026-09-30T00:00", "2026-10-01T00:00"
    )
    later = datetime(2026, 12, 1, tzinfo=UTC)
    assert kept(plan(q, later, Policy({"quarterly": 3}))) == {
        "2026-10-01T00:00": ("quarterly #1",),
        "2026-09-30T00:00": ("quarterly #2",),
        "2026-04-01T00:00": ("quarterly #3",),
    }
    assert kept(plan(q, later, Policy({"monthly": 10}))) == {
        "2026-10-01T00:00": ("monthly #1",),
        "2026-09-30T00:00": ("monthly #2",),
        "2026-04-01T00:00": ("monthly #3",),
        "2026-03-31T23:59": ("monthly #4",),
        "2026-01-01T00:00": ("monthly #5",),
    }


def test_yearly() -> None:
    years = snaps("2024-12-31T23:00", "2025-01-01T00:00", "2025-06-01T00:00", "2026-01-01T00:00")
    assert kept(plan(years, NOW, Policy({"yearly": 2}))) == {
        "2026-01-01T00:00": ("yearly #1",),
        "2025-01-01T00:00": ("yearly #2",),
    }


def test_leap_years() -> None:
    leap = snaps("2024-02-28T12:00", "2024-02-29T12:00", "2024-03-01T12:00")
    assert len(kept(plan(leap, NOW, Policy({"daily": 10})))) == 3
    assert len(kept(plan(leap, NOW, Policy({"monthly": 10})))) == 2
    common = snaps("2023-02-28T12:00", "2023-03-01T12:00")
    assert len(kept(plan(common, NOW, Policy({"daily": 10})))) == 2


def test_time_zone_moves_the_day_boundary() -> None:
    late = snaps("2026-03-01T22:30", "2026-03-01T23:30")
    assert len(kept(plan(late, NOW, Policy({"daily": 5})))) == 1
    paris = Policy({"daily": 5}, timezone=ZoneInfo("Europe/Paris"))  # UTC+1: 23:30Z is March 2
    assert len(kept(plan(late, NOW, paris))) == 2


def test_keep_last_within_and_latest() -> None:
    many = snaps("2026-05-30T00:00", "2026-05-31T00:00", "2026-05-31T12:00", "2026-05-31T18:00")
    policy = Policy(keep_last=1, keep_within=timedelta(hours=13))
    assert kept(plan(many, NOW, policy, latest="2026-05-30T00:00")) == {
        "2026-05-31T18:00": ("last #1", "within 13h"),
        "2026-05-31T12:00": ("within 13h",),
        "2026-05-30T00:00": ("latest",),
    }


def test_zero_keeps_nothing_by_that_rule_and_no_rule_means_defaults() -> None:
    assert kept(plan(DAYS, NOW, Policy({"daily": 0}))) == {}
    assert Policy().effective().counts == DEFAULT_COUNTS
    assert all("hourly #" in r[0] for r in kept(plan(DAYS, NOW, Policy())).values())


def test_collisions_order_by_suffix() -> None:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    same = [Snapshot("a_2", moment, 2), Snapshot("a", moment, 0), Snapshot("a_1", moment, 1)]
    assert kept(plan(same, NOW, Policy({"daily": 1}))) == {"a": ("daily #1",)}
    assert kept(plan(same, NOW, Policy({"daily": 1}, keep="new"))) == {"a_2": ("daily #1",)}


@pytest.mark.parametrize(
    ("text", "seconds"), [("36h", 129600), ("14d", 1209600), ("1d12h", 129600), ("2w", 1209600)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "h", "12", "3x", "-1d", "1d-"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


# -- properties ---------------------------------------------------------------------------

moments = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2026, 5, 31)).map(
    lambda d: d.replace(microsecond=0, tzinfo=UTC)
)
snapshot_sets = st.lists(moments, min_size=0, max_size=60, unique=True).map(
    lambda ms: [Snapshot(m.strftime("%Y.%m.%d-%H.%M.%S"), m) for m in ms]
)
policies = st.builds(
    Policy,
    counts=st.dictionaries(st.sampled_from(PERIODS), st.integers(0, 12), max_size=4),
    keep=st.sampled_from(["old", "new"]),
    keep_last=st.none() | st.integers(0, 5),
    keep_within=st.none() | st.integers(0, 2000).map(lambda h: timedelta(hours=h)),
    timezone=st.sampled_from(
        [UTC, ZoneInfo("Europe/Paris"), ZoneInfo("America/New_York"), ZoneInfo("Asia/Kolkata")]
    ),
)


@settings(max_examples=200, deadline=None)
@given(snapshot_sets, policies, st.randoms(use_true_random=False), st.data())
def test_properties(
    snapshots: list[Snapshot], policy: Policy, rng: random.Random, data: st.DataObject
) -> None:
    latest = data.draw(st.sampled_from([s.name for s in snapshots])) if snapshots else None
    decisions = plan(snapshots, NOW, policy, latest)
    # every snapshot gets exactly one decision
    assert sorted(d.snapshot.name for d in decisions) == sorted(s.name for s in snapshots)
    # the listing order does not matter
    shuffled = list(snapshots)
    rng.shuffle(shuffled)
    assert plan(shuffled, NOW, policy, latest) == decisions
    # latest is never erased
    if latest is not None:
        assert next(d for d in decisions if d.snapshot.name == latest).keep
    # each rule keeps exactly min(N, buckets) snapshots
    effective = policy.effective()
    for period, count in effective.counts.items():
        buckets = {BUCKETS[period](s.time.astimezone(effective.timezone)) for s in snapshots}
        by_rule = [d for d in decisions if any(r.startswith(f"{period} #") for r in d.reasons)]
        assert len(by_rule) == min(count, len(buckets))
    # a second prune with the same now erases nothing
    survivors = [d.snapshot for d in decisions if d.keep]
    assert all(d.keep for d in plan(survivors, NOW, policy, latest))


def test_snapshots_from_the_future_are_kept_and_not_counted() -> None:
    """Taken while the clock was ahead: they must not take the newest places of the rules."""
    recent = snaps("2026-05-29T12:00", "2026-05-30T12:00", "2026-05-31T12:00")
    ahead = snaps("2030-01-01T00:00", "2030-01-02T00:00")
    decisions = plan(recent + ahead, NOW, Policy(keep_last=2))
    assert kept(decisions) == {
        "2030-01-02T00:00": ("named after now (a clock ahead?)",),
        "2030-01-01T00:00": ("named after now (a clock ahead?)",),
        "2026-05-31T12:00": ("last #1",),
        "2026-05-30T12:00": ("last #2",),
    }
