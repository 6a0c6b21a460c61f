"""The master's watcher: file-system changes under its directories become generations (adapter).

inotify (through asyncinotify) watches every directory of the trees; the changes that
arrive within `debounce_ms` of the first one are one batch, and each batch is one
generation. Symlinks are never followed, neither to add watches nor when a watch is added
(IN_DONT_FOLLOW): a link to `/` in a tree is a link, not the whole file system. A missed
notification is not fatal: replicas also pull periodically.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from asyncinotify import Event, Inotify, Mask

CHANGES = (
    Mask.CREATE
    | Mask.DELETE
    | Mask.MODIFY
    | Mask.ATTRIB
    | Mask.CLOSE_WRITE
    | Mask.MOVED_FROM
    | Mask.MOVED_TO
    | Mask.DELETE_SELF
    | Mask.MOVE_SELF
)
WATCH = CHANGES | Mask.ONLYDIR | Mask.DONT_FOLLOW | Mask.EXCL_UNLINK
GONE = (errno.ENOENT, errno.ENOTDIR)  # a directory that vanished (or became a file) meanwhile


class WatchError(Exception):
    """The trees cannot be watched (the watch limit, permissions): changes are not announced."""


@dataclass(frozen=True)
class Batch:
    generation: int
    changes: int  # how many file events the batch held
    lost_root: bool = False  # watch again: a watched directory was replaced, or events were lost


class _Trees:
    """The inotify watches on every directory under some roots, symlinks not followed."""

    def __init__(self, inotify: Inotify, roots: Sequence[Path]) -> None:
        self.inotify = inotify
        self.roots = set(roots)

    def add(self, directory: Path) -> None:
        """Watch `directory` and every directory beneath it (not through symlinks)."""
        pending = [directory]
        while pending:
            current = pending.pop()
            try:
                self.inotify.add_watch(current, WATCH)
                with os.scandir(current) as entries:
                    pending.extend(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))
            except OSError as error:
                if error.errno in GONE and current not in self.roots:
                    continue  # removed while being added: its parent's event says so
                if error.errno == errno.ENOSPC:
                    raise WatchError(
                        f"cannot watch {current}: the inotify watch limit is reached "
                        "(raise fs.inotify.max_user_watches)"
                    ) from error
                raise WatchError(f"cannot watch {current}: {error.strerror}") from error

    def forget(self, directory: Path) -> None:
        """Stop watching a directory moved out of the way, and everything beneath it."""
        for watch in self.inotify.watches:
            if watch.path == directory or directory in watch.path.parents:
                with contextlib.suppress(OSError):
                    self.inotify.rm_watch(watch)

    def handle(self, event: Event) -> bool:
        """Follow the trees' shape after `event`; True when the watch must start again."""
        if Mask.Q_OVERFLOW in event.mask:
            return True  # events were lost, new directories among them perhaps
        watch = event.watch
        if (
            watch is not None
            and watch.path in self.roots
            and event.mask & (Mask.DELETE_SELF | Mask.MOVE_SELF)
        ):
            return True
        if event.path is not None and Mask.ISDIR in event.mask:
            if event.mask & (Mask.CREATE | Mask.MOVED_TO):
                self.add(event.path)
            elif Mask.MOVED_FROM in event.mask:
                self.forget(event.path)
        return False


async def generations(
    paths: Sequence[Path],
    start: int,
    stop: asyncio.Event,
    debounce_ms: int = 50,
    announce_ready: bool = False,
) -> AsyncIterator[Batch]:
    """Yield a new generation for every batch of changes under `paths`, until `stop` is set.

    With `announce_ready`, one more generation (with no changes) marks the moment the watch
    is in place: replicas pulling then cannot miss a change made while it was being set up.
    Raises WatchError when the trees cannot be watched.
    """
    existing = [p for p in paths if p.exists() or p.is_symlink()]
    if not existing:
        return
    generation = start
    queue: asyncio.Queue[Event] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    with Inotify() as inotify:
        os.set_blocking(inotify.fd, False)  # drain() reads until there is nothing left
        trees = _Trees(inotify, existing)

        def drain() -> None:  # read everything there is; no read is ever cancelled halfway
            with contextlib.suppress(BlockingIOError):
                while True:
                    event = inotify.sync_get()
                    if event is not None:
                        queue.put_nowait(event)

        loop.add_reader(inotify.fd, drain)
        try:
            for root in existing:
                if root.is_symlink():
                    raise WatchError(f"{root} is a symlink: not watched (nor copied through)")
                trees.add(root)
            if announce_ready:
                generation += 1
                yield Batch(generation, 0)
            while not stop.is_set():
                try:
                    first = await asyncio.wait_for(queue.get(), timeout=1.0)
                except TimeoutError:
                    continue
                events = [first]
                await asyncio.sleep(debounce_ms / 1000)
                while not queue.empty():
                    events.append(queue.get_nowait())
                lost = False
                for event in events:
                    lost = trees.handle(event) or lost
                generation += 1
                yield Batch(generation, len(events), lost)
                if lost:
                    return
        finally:
            loop.remove_reader(inotify.fd)
