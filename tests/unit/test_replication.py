"""The replica's decisions, as a table: each row is one situation and the verdict it gets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from synco.core.replication import Action, ReplicaView, Timing, decide, master_silent

T = Timing(debounce=0.2, periodic=300, retry=10, unwatched=5)
SYNCED = dict(
    now=1000.0,
    master="s01",
    master_generation=7,
    pulled_generation=7,
    pulled_master="s01",
    last_pull_at=990.0,
)


@pytest.mark.parametrize(
    ("changes", "action", "verdict"),
    [
        ({}, Action.IDLE, "in sync with s01 at generation 7"),
        ({"paused": True}, Action.IDLE, "paused by the operator"),
        ({"paused": True, "pulling_from": "s01"}, Action.CANCEL, "paused: cancelling the pull from s01"),
        ({"master": None}, Action.IDLE, "no master known: waiting"),
        (
            {"master": None, "pulling_from": "s01"},
            Action.CANCEL,
            "no master known: cancelling the pull from s01",
        ),
        (
            {"master": "s02", "pulling_from": "s01"},
            Action.CANCEL,
            "master changed from s01 to s02: cancelling the pull",
        ),
        ({"pulling_from": "s01", "master_generation": 9}, Action.WAIT, "pulling from s01 (generation 9)"),
        ({"sync_requested": True}, Action.PULL, "operator asked for a pull from s01"),
        ({"master": "s02"}, Action.PULL, "master is s02: full pull (last complete pull from s01)"),
        (
            {"master_generation": 8, "last_change_at": 999.9},
            Action.WAIT,
            "generation 8 > 7: letting the changes settle",
        ),
        (
            {"master_generation": 8, "last_change_at": 999.0},
            Action.PULL,
            "generation 8 > 7: pulling from s01",
        ),
        (  # a steady stream of changes: pulled once the oldest has waited max_delay
            {"master_generation": 8, "last_change_at": 999.9, "behind_since": 999.5},
            Action.WAIT,
            "generation 8 > 7: letting the changes settle",
        ),
        (
            {"master_generation": 8, "last_change_at": 999.9, "behind_since": 999.0},
            Action.PULL,
            "generation 8 > 7: pulling from s01",
        ),
        (
            {"master_generation": 8, "last_change_at": 990.0, "last_pull_ok": False, "last_pull_at": 995.0},
            Action.WAIT,
            "generation 8 > 7: last pull failed, retrying after 10 s",
        ),
        (
            {"master_generation": 8, "last_pull_ok": False, "last_pull_at": 985.0},
            Action.PULL,
            "generation 8 > 7: pulling from s01",
        ),
        (  # the last pull succeeded 1 s ago: the retry delay is for failures only
            {"master_generation": 8, "last_change_at": 990.0, "last_pull_ok": True, "last_pull_at": 999.0},
            Action.PULL,
            "generation 8 > 7: pulling from s01",
        ),
        (  # a new master right after a successful pull from the old one: at once
            {"master": "s02", "last_pull_ok": True, "last_pull_at": 999.0},
            Action.PULL,
            "master is s02: full pull (last complete pull from s01)",
        ),
        (
            {"last_pull_at": 700.0},
            Action.PULL,
            "periodic pull from s01 (a notification may have been missed)",
        ),
        ({"last_pull_at": None}, Action.PULL, "periodic pull from s01 (a notification may have been missed)"),
        (
            {"master": "s02", "last_pull_ok": False, "last_pull_at": 999.0},
            Action.WAIT,
            "last pull failed: retrying s02 after 10 s",
        ),
        ({"master_generation": 8, "master_view": "s01"}, Action.PULL, "generation 8 > 7: pulling from s01"),
        (  # the named master's own heartbeat names another: its data may be stale
            {"master_generation": 8, "master_view": "s03"},
            Action.WAIT,
            "s01 does not act as master (its heartbeat names s03): no pull",
        ),
        (
            {"sync_requested": True, "master_view": ""},
            Action.WAIT,
            "s01 does not act as master (its heartbeat names no master): no pull",
        ),
        (  # an unmounted disk reads as an empty tree: copying it with --delete empties the copy
            {"master_generation": 8, "master_failing": "/mnt/data is not mounted"},
            Action.WAIT,
            "s01 is failing (/mnt/data is not mounted): no pull",
        ),
        (
            {"pulling_from": "s01", "master_failing": "/mnt/data is not mounted"},
            Action.CANCEL,
            "s01 is failing (/mnt/data is not mounted): cancelling the pull",
        ),
        (  # a pull over a link that was cut may sit in TCP's backoff long after the heal
            {"pulling_from": "s01", "outlived_silence": True},
            Action.CANCEL,
            "s01 is back after a silence: starting the pull again",
        ),
        (  # it failed while the master could not be reached: no retry delay once it is back
            {"master_generation": 8, "last_pull_ok": False, "last_pull_at": 999.0, "outlived_silence": True},
            Action.PULL,
            "generation 8 > 7: pulling from s01",
        ),
        (  # failback: generations agree, but this node wrote as master since its last pull
            {"diverged": True},
            Action.PULL,
            "master is s01: full pull (this node acted as master since its last pull)",
        ),
        (
            {"diverged": True, "last_pull_ok": False, "last_pull_at": 999.0},
            Action.WAIT,
            "last pull failed: retrying s01 after 10 s",
        ),
        (  # the master's watcher is down: nothing announces its changes, so poll
            {"master_unwatched": True, "last_pull_at": 994.0},
            Action.PULL,
            "periodic pull from s01 (every 5 s while its watcher is down)",
        ),
        (
            {"master_unwatched": True, "last_pull_at": 998.0},
            Action.IDLE,
            "in sync with s01 at generation 7 (its watcher is down: pulling every 5 s)",
        ),
    ],
)
def test_decisions(changes: dict[str, object], action: Action, verdict: str) -> None:
    decision = decide(ReplicaView(**{**SYNCED, **changes}), T)  # type: ignore[arg-type]
    assert (decision.action, decision.verdict) == (action, verdict)


@given(
    st.builds(
        ReplicaView,
        now=st.floats(0, 1e6),
        master=st.sampled_from([None, "s01", "s02"]),
        master_generation=st.integers(0, 10),
        last_change_at=st.none() | st.floats(0, 1e6),
        pulled_generation=st.integers(0, 10),
        pulled_master=st.sampled_from([None, "s01", "s02"]),
        pulling_from=st.sampled_from([None, "s01", "s02"]),
        last_pull_at=st.none() | st.floats(0, 1e6),
        last_pull_ok=st.booleans(),
        paused=st.booleans(),
        sync_requested=st.booleans(),
        master_view=st.sampled_from([None, "", "s01", "s02"]),
        master_failing=st.sampled_from([None, "/mnt is not mounted"]),
        master_unwatched=st.booleans(),
        diverged=st.booleans(),
        outlived_silence=st.booleans(),
    )
)
def test_safety(view: ReplicaView) -> None:
    decision = decide(view, T)
    # never a pull from a master that does not consider itself master, or that is failing
    if view.master_view is not None and view.master_view != view.master:
        assert decision.action != Action.PULL
    if view.master_failing is not None:
        assert decision.action != Action.PULL
    # never two pulls at once, never a pull while paused or without a master
    if view.pulling_from is not None:
        assert decision.action in (Action.WAIT, Action.CANCEL)
    if view.paused or view.master is None:
        assert decision.action in (Action.IDLE, Action.CANCEL)
    # a pull from a master that is no longer master is always cancelled
    if view.pulling_from is not None and view.master is not None and view.pulling_from != view.master:
        assert decision.action == Action.CANCEL
    assert decision.verdict


def test_a_silent_master_is_named_in_the_verdict() -> None:
    decision = master_silent(decide(ReplicaView(**SYNCED), T), "s01", 3.0)  # type: ignore[arg-type]
    assert decision.action == Action.IDLE
    assert decision.verdict == "no heartbeat from master s01 for over 3 s; in sync with s01 at generation 7"
