"""The master's watcher against real inotify: symlinks are links, never followed."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from synco.node.watch import Batch, WatchError, generations

Scenario = Callable[[list[Batch], Callable[[int], Awaitable[None]]], Awaitable[None]]


def watch(paths: list[Path], scenario: Scenario) -> list[Batch]:
    """Run the watcher on `paths` while `scenario` acts; the batches it produced."""

    async def main() -> list[Batch]:
        stop = asyncio.Event()
        batches: list[Batch] = []

        async def seen(count: int) -> None:
            deadline = asyncio.get_running_loop().time() + 10
            while len(batches) < count:
                assert asyncio.get_running_loop().time() < deadline, f"batch {count} not seen within 10 s"
                await asyncio.sleep(0.02)

        async def act() -> None:
            await seen(1)  # the watch is in place
            await scenario(batches, seen)
            stop.set()

        actor = asyncio.create_task(act())
        async for batch in generations(paths, 0, stop, debounce_ms=30, announce_ready=True):
            batches.append(batch)
        await actor  # a watch that ended by itself (a root replaced): the scenario still checks
        return batches

    return asyncio.run(asyncio.wait_for(main(), timeout=60))


def test_a_symlink_to_the_root_is_not_followed(tmp_path: Path) -> None:
    """A link to `/` in the tree is a link: the watcher neither walks `/` (it used to, and
    failed on /proc, restarting for ever) nor reports changes behind links."""
    tree, outside = tmp_path / "srv", tmp_path / "outside"
    tree.mkdir()
    outside.mkdir()
    (tree / "rootlink").symlink_to("/")
    (tree / "outlink").symlink_to(outside)

    async def scenario(batches: list[Batch], seen: Callable[[int], Awaitable[None]]) -> None:
        (outside / "behind-the-link.txt").write_text("not ours")
        await asyncio.sleep(0.5)
        assert len(batches) == 1, "a change behind a symlink was reported"
        (tree / "ours.txt").write_text("ours")
        await seen(2)

    batches = watch([tree], scenario)
    assert [b.generation for b in batches] == [1, 2]


def test_new_and_moved_in_directories_are_watched(tmp_path: Path) -> None:
    tree, elsewhere = tmp_path / "srv", tmp_path / "elsewhere"
    tree.mkdir()
    (elsewhere / "a" / "b").mkdir(parents=True)

    async def scenario(batches: list[Batch], seen: Callable[[int], Awaitable[None]]) -> None:
        (tree / "new" / "deeper").mkdir(parents=True)
        await seen(2)
        await asyncio.sleep(0.1)
        (tree / "new" / "deeper" / "file").write_text("1")
        await seen(3)
        os.rename(elsewhere / "a", tree / "moved-in")
        await seen(4)
        (tree / "moved-in" / "b" / "file").write_text("2")
        await seen(5)

    batches = watch([tree], scenario)
    assert len(batches) == 5 and not any(b.lost_root for b in batches)


def test_every_name_counts(tmp_path: Path) -> None:
    """Editors' and version control's files are data too: nothing is filtered out."""
    tree = tmp_path / "srv"
    (tree / ".git").mkdir(parents=True)
    names = [".git/index", "notes.txt.swp", "draft~", "module.pyc", ".#lock"]

    async def scenario(batches: list[Batch], seen: Callable[[int], Awaitable[None]]) -> None:
        for count, name in enumerate(names, start=2):
            (tree / name).write_text("x")
            await seen(count)

    assert len(watch([tree], scenario)) == 1 + len(names)


def test_a_replaced_root_ends_the_watch(tmp_path: Path) -> None:
    tree = tmp_path / "srv"
    tree.mkdir()

    async def scenario(batches: list[Batch], seen: Callable[[int], Awaitable[None]]) -> None:
        tree.rename(tmp_path / "srv.old")
        await seen(2)

    batches = watch([tree], scenario)
    assert batches[-1].lost_root


def test_a_root_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "srv").symlink_to(tmp_path / "real")

    async def main() -> None:
        async for _ in generations([tmp_path / "srv"], 0, asyncio.Event(), announce_ready=True):
            pass

    with pytest.raises(WatchError, match="srv is a symlink"):
        asyncio.run(main())
