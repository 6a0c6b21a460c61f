"""Carry out a retention plan on a snapshot store: the one erasing loop behind `synco prune`
and a backup server's agent (adapter)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from synco.core.errors import SyncoError
from synco.core.retention import Decision, Policy, plan
from synco.snapshot_store import SnapshotStore, remove_tree


@dataclass(frozen=True)
class Outcome:
    decision: Decision
    error: str | None = None  # why it could not be erased

    @property
    def erased(self) -> bool:
        return not self.decision.keep and self.error is None


@dataclass(frozen=True)
class Pruning:
    latest: str | None
    outcomes: list[Outcome]
    failures: list[str]  # "NAME: why", leftovers of an interrupted deletion included


def prune(store: SnapshotStore, policy: Policy, now: datetime, dry_run: bool = False) -> Pruning:
    """Erase every snapshot `policy` does not keep (none in a dry run), after the leftovers of
    an interrupted prune; one failure does not stop the others."""
    failures: list[str] = []
    if not dry_run:
        for leftover in store.leftovers():
            try:
                remove_tree(store.root / leftover)
            except (OSError, SyncoError) as leftover_error:
                failures.append(f"{leftover}: {leftover_error}")
    latest = store.latest_name()
    outcomes = []
    for decision in plan(store.snapshots(), now, policy, latest):
        error: str | None = None
        if not decision.keep and not dry_run:
            try:
                store.delete(decision.snapshot.name)
            except (OSError, SyncoError) as failure:
                error = str(failure)
                failures.append(f"{decision.snapshot.name}: {error}")
        outcomes.append(Outcome(decision, error))
    return Pruning(latest, outcomes, failures)
