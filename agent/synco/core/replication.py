"""When a replica pulls from the master: one decision per agent cycle, with its verdict (pure).

The agent observes (notifications from the master, its own pulls, operator intents) and
passes what it saw here with the time; the decision says what to do and why, and its
verdict is the cycle's log line and the status reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Action(StrEnum):
    IDLE = "idle"  # nothing to do
    WAIT = "wait"  # something will be due: a pull is running, or a change is being debounced
    PULL = "pull"  # start a pull from the master now
    CANCEL = "cancel"  # stop the pull (or the snapshot) in progress
    SNAPSHOT = "snapshot"  # a backup server: take a snapshot of the master now


@dataclass(frozen=True)
class Timing:
    debounce: float = 0.2  # let a burst of changes settle before pulling...
    periodic: float = 300.0  # pull at least this often, in case a notification was missed
    retry: float = 10.0  # after a failed pull, wait this long before the next
    unwatched: float = 5.0  # pull this often while the master's watcher is down
    max_delay: float = 1.0  # ...but a steady stream of changes is pulled at least this often


@dataclass(frozen=True)
class ReplicaView:
    """What a replica knows at one instant (times are monotonic seconds)."""

    now: float
    master: str | None  # the current master, if known
    master_generation: int = 0  # the newest generation the master announced
    last_change_at: float | None = None  # when that announcement arrived
    behind_since: float | None = None  # when the oldest change not pulled yet was announced
    pulled_generation: int = 0  # the generation of the last complete pull
    pulled_master: str | None = None  # the master that pull came from
    pulling_from: str | None = None  # the master of the pull in progress
    last_pull_at: float | None = None  # when the last pull ended, successful or not
    last_pull_ok: bool = True
    paused: bool = False
    sync_requested: bool = False  # an operator asked for a pull now
    master_view: str | None = None  # who the master's own last heartbeat names as master (None: none yet)
    master_failing: str | None = None  # why the master's own heartbeat says it is failing
    master_unwatched: bool = False  # the master's heartbeat says its watcher is down
    diverged: bool = False  # this node acted as master since its last complete pull
    outlived_silence: bool = False  # the master went silent since the last pull began, and is back


@dataclass(frozen=True)
class Decision:
    action: Action
    verdict: str


def interruption(
    paused: bool,
    master: str | None,
    running_from: str | None,
    work: str,
    master_view: str | None = None,
    master_failing: str | None = None,
    outlived_silence: bool = False,
) -> Decision | None:
    """What every follower (replica, backup server) decides first: nothing while paused or
    without a master, cancel `work` ("pull", "snapshot") running from a former master, and
    start none from a master whose own heartbeat says it is not the master (its data may
    be stale: DNS or the script moved on before it did, or it stepped down) or that it is
    failing (its disk is not mounted: an empty tree copied with --delete would empty every
    copy). Work that the master's silence interrupted is started again once it is heard
    from: its connection may be stuck in TCP's retransmission backoff for many seconds after
    a cut link came back (and work that failed meanwhile is retried at once, not after the
    retry delay). None when none of these applies."""
    if paused:
        if running_from is not None:
            return Decision(Action.CANCEL, f"paused: cancelling the {work} from {running_from}")
        return Decision(Action.IDLE, "paused by the operator")
    if master is None:
        if running_from is not None:
            return Decision(Action.CANCEL, f"no master known: cancelling the {work} from {running_from}")
        return Decision(Action.IDLE, "no master known: waiting")
    if running_from is not None and running_from != master:
        return Decision(
            Action.CANCEL, f"master changed from {running_from} to {master}: cancelling the {work}"
        )
    if running_from is not None and outlived_silence:
        return Decision(Action.CANCEL, f"{master} is back after a silence: starting the {work} again")
    if running_from is None and master_view is not None and master_view != master:
        names = f"names {master_view}" if master_view else "names no master"
        return Decision(Action.WAIT, f"{master} does not act as master (its heartbeat {names}): no {work}")
    if master_failing is not None:
        if running_from is not None:
            return Decision(Action.CANCEL, f"{master} is failing ({master_failing}): cancelling the {work}")
        return Decision(Action.WAIT, f"{master} is failing ({master_failing}): no {work}")
    return None


def decide(view: ReplicaView, timing: Timing = Timing()) -> Decision:
    """The replica's next step and the reason for it."""
    first = interruption(
        view.paused,
        view.master,
        view.pulling_from,
        "pull",
        view.master_view,
        view.master_failing,
        view.outlived_silence,
    )
    if first is not None:
        return first
    if view.pulling_from is not None:
        return Decision(Action.WAIT, f"pulling from {view.master} (generation {view.master_generation})")
    if view.sync_requested:
        return Decision(Action.PULL, f"operator asked for a pull from {view.master}")
    retry_in = _retry_in(view, timing)
    if view.pulled_master != view.master or view.diverged:
        if retry_in > 0:
            return Decision(Action.WAIT, f"last pull failed: retrying {view.master} after {timing.retry:g} s")
        since = (
            "this node acted as master since its last pull"
            if view.diverged
            else f"last complete pull from {view.pulled_master or 'nowhere'}"
        )
        return Decision(Action.PULL, f"master is {view.master}: full pull ({since})")
    if view.master_generation > view.pulled_generation:
        behind = f"generation {view.master_generation} > {view.pulled_generation}"
        settling = view.last_change_at is not None and view.now - view.last_change_at < timing.debounce
        waited = view.behind_since is not None and view.now - view.behind_since >= timing.max_delay
        if settling and not waited:
            return Decision(Action.WAIT, f"{behind}: letting the changes settle")
        if retry_in > 0:
            return Decision(Action.WAIT, f"{behind}: last pull failed, retrying after {timing.retry:g} s")
        return Decision(Action.PULL, f"{behind}: pulling from {view.master}")
    periodic = timing.unwatched if view.master_unwatched else timing.periodic
    if view.last_pull_at is None or view.now - view.last_pull_at >= periodic:
        why = (
            f"every {periodic:g} s while its watcher is down"
            if view.master_unwatched
            else "a notification may have been missed"
        )
        return Decision(Action.PULL, f"periodic pull from {view.master} ({why})")
    if view.master_unwatched:
        return Decision(
            Action.IDLE,
            f"in sync with {view.master} at generation {view.pulled_generation}"
            f" (its watcher is down: pulling every {periodic:g} s)",
        )
    return Decision(Action.IDLE, f"in sync with {view.master} at generation {view.pulled_generation}")


def master_silent(decision: Decision, master: str, timeout: float) -> Decision:
    """The follower's `decision`, saying that the master has not been heard from within the
    heartbeat timeout (it may be down, paused or cut off): its data may be going stale."""
    return Decision(
        decision.action, f"no heartbeat from master {master} for over {timeout:g} s; {decision.verdict}"
    )


def _retry_in(view: ReplicaView, timing: Timing) -> float:
    if view.last_pull_ok or view.last_pull_at is None or view.outlived_silence:
        return 0.0  # (a pull that failed while the master was silent is tried again once it is back)
    return max(0.0, timing.retry - (view.now - view.last_pull_at))
