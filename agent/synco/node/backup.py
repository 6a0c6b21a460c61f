"""A backup server's snapshot of the master: pull every directory into the snapshot in
progress, publish it, then prune by the retention policy (adapter).

The same snapshot layout and policy as `synco run` with the snapshot method and
`synco prune`: `latest.snapshot/` in progress, timestamped snapshots, `latest`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from synco.core.errors import SyncoError
from synco.core.model import Direction, Method, Script, Server
from synco.core.paths import normalize_relative
from synco.core.resolution import CurrentDecision, is_local
from synco.core.retention import Policy
from synco.core.staging import staging_of
from synco.lock import snapshot_lock
from synco.node.pull import PullResult, check_mounted, copy_all
from synco.pruning import prune
from synco.snapshot_store import SnapshotStore
from synco.staging import Stager, identity_of, runner_on, stage

log = logging.getLogger("synco.agent")

T = TypeVar("T")


def store_of(me: Server) -> SnapshotStore:
    return SnapshotStore(Path(me.root))


async def take_snapshot(
    script: Script,
    master: Server,
    me: Server,
    generation: int,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> PullResult:
    """Snapshot the master's directories into `me`'s root (rsync runs here, pulling)."""
    started = time.monotonic()
    unmounted = await asyncio.to_thread(check_mounted, me)
    if unmounted is not None:
        return PullResult(False, unmounted, 0.0, generation)
    try:
        with snapshot_lock(me.root, create=True):
            return await _take(script, master, me, generation, clock, started)
    except (OSError, SyncoError) as error:  # busy root (LockedError), a root we cannot create...
        return PullResult(False, str(error), time.monotonic() - started, generation)


async def _take(
    script: Script,
    master: Server,
    me: Server,
    generation: int,
    clock: Callable[[], datetime],
    started: float,
) -> PullResult:
    began = clock()
    settings = script.backup
    store = replace(store_of(me), clock=clock)

    def failed(message: str) -> PullResult:
        return PullResult(False, message, time.monotonic() - started, generation)

    directories = [normalize_relative(d.path) for d in script.directories]
    try:
        removed = await _finish(asyncio.to_thread(store.begin, settings.backend, directories))
    except (OSError, SyncoError) as error:
        return failed(f"preparing the snapshot: {error}")
    for path in removed:
        log.info("%s: removed %s from the snapshot in progress: no longer copied", me.name, path)
    method = Method(
        name="snapshot",
        direction=Direction.PULL,
        arguments=script.method.arguments,
        snapshot_backend=settings.backend,
    )
    snapshotting = replace(script, method=method)
    staging_of_any = any(staging_of(master, d) for d in script.directories)
    if staging_of_any:
        stager = Stager(
            runner_on(master, is_local(master, CurrentDecision(me.name, "the agent"), script)),
            identity_of(script, f"agent:{me.name}"),
            master.name,
            lambda line: log.info("%s: %s", me.name, line),
        )
        try:
            sources = await _finish(
                asyncio.to_thread(stage, stager, master, script.directories, script.method.arguments)
            )
            failure = await copy_all(
                snapshotting, master, me, link_dest=store.latest_name() is not None, sources=sources
            )
        except SyncoError as error:
            failure = str(error)
        finally:
            await _finish(asyncio.to_thread(stager.close))
        failure = failure or (stager.failures[0] if stager.failures else None)
    else:
        failure = await copy_all(snapshotting, master, me, link_dest=store.latest_name() is not None)
    if failure is not None:
        return failed(failure)
    metadata: dict[str, object] = {
        "source": master.name,
        "target": me.name,
        "started": began.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "finished": clock().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "generation": generation,
        "taken_by": "synco-agent",
    }
    if staging_of_any:
        metadata["staged"] = [view.record() for view in stager.views]
    try:
        name = await _finish(
            asyncio.to_thread(
                store.publish, metadata, with_manifest=settings.verify, backend=settings.backend
            )
        )
    except (OSError, SyncoError) as error:
        reason = str(error)  # the store's own failures name the snapshot, the step and the path
        return failed(reason if reason.startswith("publishing") else f"publishing the snapshot: {reason}")
    message = f"snapshot {name}"
    if settings.prune:
        message += await _prune(store, settings.policy, clock(), me.name)
    return PullResult(True, message, time.monotonic() - started, generation, snapshot=name)


async def _prune(store: SnapshotStore, policy: Policy, now: datetime, me: str) -> str:
    """Prune after a snapshot; what to add to its message (a failure does not undo the snapshot)."""
    try:
        pruning = await _finish(asyncio.to_thread(prune, store, policy, now))
    except (OSError, SyncoError) as error:
        log.warning("%s: pruning failed: %s", me, error)
        return f"; pruning failed: {error}"
    erased = [o.decision.snapshot.name for o in pruning.outcomes if o.erased]
    note = ""
    if erased:
        note += f"; pruned {len(erased)}"
        log.info("%s: pruned %s (%s)", me, ", ".join(erased), policy.effective().describe())
    if pruning.failures:
        note += f"; {len(pruning.failures)} could not be pruned: {pruning.failures[0]}"
        log.warning("%s: pruning failed: %s", me, "; ".join(pruning.failures))
    return note


async def _finish(work: Awaitable[T]) -> T:
    """Await file-system work in a thread to its end even when cancelled: a publication or a
    deletion half-watched would let the next snapshot start beside it."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
            continue
        if cancelled:
            raise asyncio.CancelledError
        return result
