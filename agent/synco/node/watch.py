"""The master's watcher: file-system changes under its directories become generations (adapter).

inotify (through watchfiles) reports changes in batches; each batch is one generation.
A missed notification is not fatal: replicas also pull periodically.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import watchfiles


@dataclass(frozen=True)
class Batch:
    generation: int
    changes: int  # how many file events the batch held
    lost_root: bool = False  # a watched directory itself was deleted or moved away


async def generations(
    paths: Sequence[Path],
    start: int,
    stop: asyncio.Event,
    debounce_ms: int = 50,
    step_ms: int = 100,
    announce_ready: bool = False,
) -> AsyncIterator[Batch]:
    """Yield a new generation for every batch of changes under `paths`, until `stop` is set.

    With `announce_ready`, one more generation (with no changes) marks the moment the watch
    is in place: replicas pulling then cannot miss a change made while it was being set up.
    """
    existing = [str(p) for p in paths if p.exists()]
    generation = start
    if not existing:
        return
    ready = not announce_ready
    async for changes in watchfiles.awatch(
        *existing,
        stop_event=stop,
        debounce=debounce_ms,
        step=step_ms,
        recursive=True,
        rust_timeout=1000,
        yield_on_timeout=True,
    ):
        if not changes and ready:
            continue  # the watcher's periodic wake-up
        ready = True
        generation += 1
        lost = any(kind == watchfiles.Change.deleted and path in existing for kind, path in changes)
        yield Batch(generation, len(changes), lost)
