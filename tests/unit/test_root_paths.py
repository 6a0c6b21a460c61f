"""Which components of a directory's path are checked, what the remote check prints and the
verdict (pure); the remote check's shell text run by a real `sh` on this machine."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from synco.core.errors import ConfigError
from synco.core.model import Direction, Directory, Method, Script, Server
from synco.core.root_paths import (
    Kind,
    Observation,
    Side,
    components,
    parse_remote_guard,
    refusal,
    remote_guard_argv,
)
from synco.core.rsync import Features
from synco.core.transfer import plan_transfer
from synco.root_guard import observe_local


@pytest.mark.parametrize(
    ("relative", "into", "expected"),
    [
        (".", None, []),
        ("data", None, ["data"]),
        ("data/sub/deep", None, ["data", "data/sub", "data/sub/deep"]),
        (".", "latest.snapshot", ["latest.snapshot"]),
        (
            "data/sub",
            "latest.snapshot",
            ["latest.snapshot", "latest.snapshot/data", "latest.snapshot/data/sub"],
        ),
    ],
)
def test_components(relative: str, into: str | None, expected: list[str]) -> None:
    assert components(relative, into) == expected


def test_refusal_names_the_server_the_directory_and_the_symlink() -> None:
    observation = Observation((Kind.DIRECTORY, Kind.SYMLINK), "../../elsewhere")
    message = refusal("s02", "data/sub", ["data", "data/sub"], observation, Side.TARGET)
    assert message == (
        "s02: directory data/sub: data/sub is a symlink (-> ../../elsewhere) on s02; "
        "refusing to copy through it"
    )


@pytest.mark.parametrize("kinds", [(), (Kind.DIRECTORY,), (Kind.DIRECTORY, Kind.MISSING), (Kind.OTHER,)])
def test_no_symlink_no_refusal(kinds: tuple[Kind, ...]) -> None:
    assert refusal("s01", "d", ["a", "a/b"], Observation(kinds), Side.SOURCE) is None


def test_an_unmounted_source_and_target() -> None:
    unmounted = Observation((Kind.DIRECTORY,), mounted=False)
    source = refusal("s01", "data", ["data"], unmounted, Side.SOURCE, "/mnt/disk")
    assert source is not None and source.startswith(
        "s01: /mnt/disk is not mounted on s01; refusing to copy from it"
    )
    target = refusal("s02", "data", ["data"], unmounted, Side.TARGET, "/mnt/disk")
    assert target == "s02: /mnt/disk is not mounted on s02; refusing to write to the disk beneath it"
    assert refusal("s01", "data", ["data"], Observation((), mounted=True), Side.SOURCE, "/mnt/disk") is None


@pytest.mark.parametrize(
    ("output", "mountpoint", "expected"),
    [
        ("-\nD\nM\n", None, Observation((Kind.DIRECTORY, Kind.MISSING))),
        ("mounted\nD\n", "/m", Observation((Kind.DIRECTORY,), mounted=True)),
        ("unmounted\n", "/m", Observation((), mounted=False)),
        (
            "-\nD\nL\n../x\nwith a newline",
            None,
            Observation((Kind.DIRECTORY, Kind.SYMLINK), "../x\nwith a newline"),
        ),
    ],
)
def test_parse_remote_guard(output: str, mountpoint: str | None, expected: Observation) -> None:
    assert parse_remote_guard(output, mountpoint) == expected


@pytest.mark.parametrize(
    ("output", "mountpoint"), [("", None), ("-\nX\n", None), ("-\n", "/m"), ("motd\n", None)]
)
def test_parse_remote_guard_refuses_what_it_does_not_know(output: str, mountpoint: str | None) -> None:
    with pytest.raises(ValueError, match=r"unexpected answer|is not a valid"):
        parse_remote_guard(output, mountpoint)


def test_the_remote_check_agrees_with_the_local_one(tmp_path: Path) -> None:
    """The shell text REMOTE_GUARD, run by sh here, sees what lstat sees."""
    root = tmp_path / "with space 'root'"
    (root / "data" / "sub").mkdir(parents=True)
    (root / "data" / "file").write_text("f")
    os.symlink("../../else where\nline", root / "data" / "link")
    paths = ["data", "data/sub", "data/file", "data/missing", "data/missing/deeper", "data/link", "after"]
    for mountpoint in (None, "/", str(tmp_path)):
        argv = remote_guard_argv(str(root), mountpoint, paths)
        output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        assert parse_remote_guard(output, mountpoint) == observe_local(str(root), paths, mountpoint)
    observed = observe_local(str(root), paths, None)
    assert observed.kinds == (Kind.DIRECTORY,) * 2 + (Kind.OTHER, Kind.MISSING, Kind.MISSING, Kind.SYMLINK)
    assert observed.link == "../../else where\nline"


def plan(directory: Directory, method: Method) -> list[str]:
    here, there = Server("here", "/srv/here"), Server("there", "/srv/there")
    script = Script(servers=(here, there), directories=(directory,), master="here", method=method)
    transfer = plan_transfer(
        script, here, there, directory, is_local=lambda s: True, features=Features((3, 2, 7))
    )
    return [*transfer.guarded_paths(Side.SOURCE), "|", *transfer.guarded_paths(Side.TARGET)]


def test_guarded_paths_of_a_copy_and_of_a_snapshot() -> None:
    assert plan(Directory("a/b"), Method()) == ["a", "a/b", "|", "a", "a/b"]
    snapshot = Method(name="snapshot", direction=Direction.PULL)
    assert plan(Directory("a"), snapshot) == ["a", "|", "latest.snapshot", "latest.snapshot/a", "latest/a"]
    assert plan(Directory("."), snapshot) == ["|", "latest.snapshot"]


@pytest.mark.parametrize("argument", ["--keep-dirlinks", "-K", "-aK", "-avzK"])
def test_keep_dirlinks_is_refused(argument: str) -> None:
    with pytest.raises(ConfigError, match="follows symlinks on the target"):
        plan(Directory("a", arguments=(argument,)), Method())


@pytest.mark.parametrize("arguments", [("-e", "ssh -K"), ("--filter", "- K*"), ("-essh -K",), ("--", "-K")])
def test_values_that_look_like_k_are_not_keep_dirlinks(arguments: tuple[str, ...]) -> None:
    assert plan(Directory("a", arguments=arguments), Method())
