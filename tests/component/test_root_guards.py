"""Nothing is read or written outside a server's root, and nothing is copied from an
unmounted source: real rsync, real symlinks, a real sshd and a real loop-mounted file
system, through `synco run`, the agent's pull and a backup server's snapshot."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from synco.core.model import Directory, Method, Role, Script, Server
from synco.node.backup import take_snapshot
from synco.node.pull import PullResult, pull
from synco.snapshot_store import SnapshotStore
from tests.support.cli import read_tree, synco, write_tree
from tests.support.loopfs import loop_filesystem
from tests.support.scripts import root, toml_script
from tests.support.sshd import Sshd

pytestmark = pytest.mark.usefixtures("rsync")

DELETE = ["--archive", "--delete"]


def two_roots(tmp_path: Path) -> tuple[Path, Path]:
    """The master's and the target's roots, each in a directory of its own, so that
    `../../elsewhere` from a directory of a root is a different place on each side."""
    master, target = tmp_path / "M" / "root", tmp_path / "T" / "root"
    master.mkdir(parents=True)
    target.mkdir(parents=True)
    return master, target


def run(
    tmp_path: Path,
    directories: list[str],
    servers: dict[str, str],
    *,
    direction: str = "push",
    master: str = "s01",
) -> subprocess.CompletedProcess[str]:
    script = toml_script(
        tmp_path / "s.toml",
        master=master,
        direction=direction,
        servers=servers,
        directories=[{"path": d} for d in directories],
        arguments=DELETE,
    )
    return synco("run", "--as", "s01", "--json", str(script))


# -- synco run, on this machine ----------------------------------------------------------


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_a_symlinked_directory_on_the_master_is_never_followed(tmp_path: Path, direction: str) -> None:
    """Directories `data` and `data/sub`, the master's `data/sub` a symlink out of its root:
    copying `data` puts the symlink on the target (as a symlink); `data/sub` is refused on
    every run, and what the links point at on either side is neither read nor written."""
    m, t = two_roots(tmp_path)
    write_tree(m / "data", {"file": "m"})
    os.symlink("../../elsewhere", m / "data" / "sub")
    write_tree(tmp_path / "M" / "elsewhere", {"master-secret": "outside the master's root"})
    write_tree(tmp_path / "T" / "elsewhere", {"victim": "outside the target's root"})
    servers = {"s01": root(m), "s02": root(t)}
    for _ in range(2):
        result = run(tmp_path, ["data", "data/sub"], servers, direction=direction)
        assert result.returncode == 1, result.stderr
        assert (
            "s01: directory data/sub: data/sub is a symlink (-> ../../elsewhere) on s01; "
            "refusing to copy through it"
        ) in result.stderr
        assert os.readlink(t / "data" / "sub") == "../../elsewhere"  # copied as a symlink
        assert read_tree(tmp_path / "T" / "elsewhere") == {"victim": "outside the target's root"}
        copies = {c["directory"]: c for c in json.loads(result.stdout)["copies"]}
        assert copies["data"]["status"] == "ok"
        assert copies["data/sub"]["status"] == "failed" and copies["data/sub"]["command"] == []


@pytest.mark.parametrize("directory", ["data", "data/sub"])
def test_a_symlink_on_the_target_at_or_above_a_directory_is_refused(tmp_path: Path, directory: str) -> None:
    m, t = two_roots(tmp_path)
    write_tree(m / directory, {"new": "from the master"})
    victim = tmp_path / "victim"
    write_tree(victim, {"precious": "not the target's", "sub/precious": "nor this"})
    os.symlink(victim, t / "data")
    result = run(tmp_path, [directory], {"s01": root(m), "s02": root(t)})
    assert result.returncode == 1, result.stderr
    assert f"s02: directory {directory}: data is a symlink (-> {victim}) on s02" in result.stderr
    assert read_tree(victim) == {"precious": "not the target's", "sub/precious": "nor this"}


def test_a_directory_reached_through_a_symlink_on_the_master_is_not_read(tmp_path: Path) -> None:
    """`data/rootlink -> /` would make rsync copy `/`; here it points at a small tree outside
    the master's root, which must not reach the target."""
    m, t = two_roots(tmp_path)
    outside = tmp_path / "outside"
    write_tree(outside, {"secret": "not the master's"})
    write_tree(m / "data", {"file": "m"})
    os.symlink(outside, m / "data" / "rootlink")
    result = run(tmp_path, ["data/rootlink"], {"s01": root(m), "s02": root(t)})
    assert result.returncode == 1, result.stderr
    assert f"s01: directory data/rootlink: data/rootlink is a symlink (-> {outside}) on s01" in result.stderr
    assert read_tree(t) == {}


def test_symlinks_inside_a_copied_tree_are_copied_as_symlinks(tmp_path: Path) -> None:
    m, t = two_roots(tmp_path)
    write_tree(m / "data", {"file": "m"})
    os.symlink("/", m / "data" / "rootlink")
    result = run(tmp_path, ["data"], {"s01": root(m), "s02": root(t)})
    assert result.returncode == 0, result.stderr
    assert os.readlink(t / "data" / "rootlink") == "/"
    assert read_tree(t) == {"data/file": "m"}


def test_one_refused_target_does_not_stop_the_others(tmp_path: Path) -> None:
    m, t = two_roots(tmp_path)
    other = tmp_path / "U" / "root"
    write_tree(m / "data", {"file": "m"})
    victim = tmp_path / "victim"
    victim.mkdir()
    os.symlink(victim, t / "data")
    result = run(tmp_path, ["data"], {"s01": root(m), "s02": root(t), "s03": root(other)})
    assert result.returncode == 1
    assert read_tree(other) == {"data/file": "m"}
    assert list(victim.iterdir()) == []


# -- synco run, over ssh -------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_a_symlink_on_a_remote_target_is_refused(tmp_path: Path, sshd: Sshd, direction: str) -> None:
    """s02 is reached through ssh; its `data` is a symlink out of its root."""
    m, t = two_roots(tmp_path)
    write_tree(m / "data", {"new": "from the master"})
    victim = tmp_path / "victim"
    write_tree(victim, {"precious": "not the target's"})
    os.symlink(victim, t / "data")
    servers = {"s01": root(m), "s02": sshd.server_toml() + root(t)}
    if direction == "pull":  # rsync runs on s02 and reaches s01 through ssh
        servers["s01"] = sshd.server_toml("localhost") + root(m)
    result = run(tmp_path, ["data"], servers, direction=direction)
    assert result.returncode == 1, result.stderr
    assert f"s02: directory data: data is a symlink (-> {victim}) on s02" in result.stderr
    assert read_tree(victim) == {"precious": "not the target's"}


def test_a_symlink_on_a_remote_master_is_refused(tmp_path: Path, sshd: Sshd) -> None:
    """The master s02 is reached through ssh, s01 (here) pulls from it."""
    m, t = two_roots(tmp_path)
    outside = tmp_path / "outside"
    write_tree(outside, {"secret": "not the master's"})
    (m / "data").mkdir()
    os.symlink(outside, m / "data" / "rootlink")
    servers = {"s01": root(t), "s02": sshd.server_toml() + root(m)}
    result = run(tmp_path, ["data/rootlink"], servers, direction="pull", master="s02")
    assert result.returncode == 1, result.stderr
    assert f"s02: directory data/rootlink: data/rootlink is a symlink (-> {outside}) on s02" in result.stderr
    assert read_tree(t) == {}


# -- the agent: pulls and backup snapshots -----------------------------------------------


def agent_script(m: Path, t: Path, directories: list[str], master: Server | None = None) -> Script:
    return Script(
        servers=(master or Server("s01", str(m)), Server("s02", str(t))),
        directories=tuple(Directory(d) for d in directories),
        master="s01",
        method=Method(arguments=tuple(DELETE)),
    )


def agent_pull(script: Script) -> PullResult:
    return asyncio.run(pull(script, script.server("s01"), script.server("s02"), 7))


def test_the_agents_pull_never_follows_a_symlinked_directory(tmp_path: Path) -> None:
    m, t = two_roots(tmp_path)
    write_tree(m / "data", {"file": "m"})
    os.symlink("../../elsewhere", m / "data" / "sub")
    write_tree(tmp_path / "M" / "elsewhere", {"master-secret": "outside the master's root"})
    write_tree(tmp_path / "T" / "elsewhere", {"victim": "outside the target's root"})
    script = agent_script(m, t, ["data", "data/sub"])
    for _ in range(2):
        result = agent_pull(script)
        assert not result.ok
        assert result.message == (
            "s01: directory data/sub: data/sub is a symlink (-> ../../elsewhere) on s01; "
            "refusing to copy through it"
        )
        assert read_tree(tmp_path / "T" / "elsewhere") == {"victim": "outside the target's root"}


def test_the_agents_pull_refuses_a_symlink_in_its_own_root(tmp_path: Path) -> None:
    m, t = two_roots(tmp_path)
    write_tree(m / "data/sub", {"new": "from the master"})
    victim = tmp_path / "victim"
    write_tree(victim, {"precious": "kept"})
    os.symlink(victim, t / "data")
    result = agent_pull(agent_script(m, t, ["data/sub"]))
    assert (
        not result.ok and f"s02: directory data/sub: data is a symlink (-> {victim}) on s02" in result.message
    )
    assert read_tree(victim) == {"precious": "kept"}


def test_the_agents_pull_refuses_a_symlink_on_a_master_over_ssh(tmp_path: Path, sshd: Sshd) -> None:
    m, t = two_roots(tmp_path)
    outside = tmp_path / "outside"
    write_tree(outside, {"secret": "not the master's"})
    (m / "data").mkdir()
    os.symlink(outside, m / "data" / "rootlink")
    remote = Server(
        "s01",
        str(m),
        host="127.0.0.1",
        user=sshd.user,
        port=sshd.port,
        identity_file=str(sshd.identity_file),
        ssh_options=tuple(sshd.ssh_options),
    )
    result = agent_pull(agent_script(m, t, ["data/rootlink"], master=remote))
    assert not result.ok
    assert f"s01: directory data/rootlink: data/rootlink is a symlink (-> {outside}) on s01" in result.message
    assert read_tree(t) == {}


def test_a_backup_snapshot_never_follows_a_symlinked_directory(tmp_path: Path) -> None:
    m, b = two_roots(tmp_path)
    outside = tmp_path / "outside"
    write_tree(outside, {"victim": "outside every root"})
    write_tree(m / "data", {"file": "m"})
    os.symlink(outside, m / "data" / "sub")
    script = Script(
        servers=(Server("s01", str(m)), Server("b01", str(b), role=Role.BACKUP)),
        directories=(Directory("data"), Directory("data/sub")),
        master="s01",
        method=Method(arguments=tuple(DELETE)),
    )
    result = asyncio.run(take_snapshot(script, script.server("s01"), script.server("b01"), 3))
    assert not result.ok
    assert f"s01: directory data/sub: data/sub is a symlink (-> {outside}) on s01" in result.message
    assert read_tree(outside) == {"victim": "outside every root"}
    assert SnapshotStore(b).snapshots() == []
    assert os.readlink(b / "latest.snapshot" / "data" / "sub") == str(outside)  # a symlink, as copied


# -- an unmounted source -----------------------------------------------------------------


@pytest.fixture
def unmounted_master(tmp_path: Path) -> tuple[Path, Path]:
    """A master whose root is on a loop-mounted disk, copied once to the target while
    mounted, then unmounted: beneath the mount point its root is an empty directory."""
    _, t = two_roots(tmp_path)
    with loop_filesystem(tmp_path, "ext4", size_mb=32) as disk:
        write_tree(disk / "srv" / "data", {"a": "1", "b/c": "2"})
        subprocess.run(["rsync", "-a", f"{disk}/srv/", f"{t}/"], check=True)
    (disk / "srv" / "data").mkdir(parents=True)  # what an unmounted disk leaves: an empty tree
    return disk, t


def test_synco_run_copies_nothing_from_an_unmounted_master(
    tmp_path: Path, unmounted_master: tuple[Path, Path]
) -> None:
    disk, t = unmounted_master
    servers = {"s01": root(disk / "srv") + f'\nmountpoint = "{disk}"', "s02": root(t)}
    result = run(tmp_path, ["data"], servers)
    assert result.returncode == 1, result.stderr
    assert f"{disk} is not mounted on s01; refusing to copy from it" in result.stderr
    assert read_tree(t) == {"data/a": "1", "data/b/c": "2"}
    assert [c["status"] for c in json.loads(result.stdout)["copies"]] == ["skipped"]


def test_the_agents_pull_copies_nothing_from_an_unmounted_master(
    tmp_path: Path, unmounted_master: tuple[Path, Path]
) -> None:
    disk, t = unmounted_master
    script = agent_script(
        disk / "srv", t, ["data"], master=Server("s01", str(disk / "srv"), mountpoint=str(disk))
    )
    result = agent_pull(script)
    assert not result.ok and f"s01: {disk} is not mounted on s01; refusing to copy from it" in result.message
    assert read_tree(t) == {"data/a": "1", "data/b/c": "2"}


def test_a_backup_snapshot_copies_nothing_from_an_unmounted_master(
    tmp_path: Path, unmounted_master: tuple[Path, Path]
) -> None:
    disk, b = unmounted_master
    master = Server("s01", str(disk / "srv"), mountpoint=str(disk))
    script = Script(
        servers=(master, Server("b01", str(b), role=Role.BACKUP)),
        directories=(Directory("data"),),
        master="s01",
    )
    result = asyncio.run(take_snapshot(script, master, script.server("b01"), 3))
    assert not result.ok and "is not mounted on s01; refusing to copy from it" in result.message
    assert SnapshotStore(b).snapshots() == []


def test_an_unmounted_master_over_ssh_is_refused(
    tmp_path: Path, sshd: Sshd, unmounted_master: tuple[Path, Path]
) -> None:
    disk, t = unmounted_master
    servers = {"s01": root(t), "s02": sshd.server_toml() + root(disk / "srv") + f'\nmountpoint = "{disk}"'}
    result = run(tmp_path, ["data"], servers, direction="pull", master="s02")
    assert result.returncode == 1, result.stderr
    assert f"{disk} is not mounted on s02; refusing to copy from it" in result.stderr
    assert read_tree(t) == {"data/a": "1", "data/b/c": "2"}


def test_a_mounted_master_is_copied(tmp_path: Path) -> None:
    _, t = two_roots(tmp_path)
    with loop_filesystem(tmp_path, "ext4", size_mb=32) as disk:
        write_tree(disk / "srv" / "data", {"a": "1"})
        servers = {"s01": root(disk / "srv") + f'\nmountpoint = "{disk}"', "s02": root(t)}
        result = run(tmp_path, ["data"], servers)
        assert result.returncode == 0, result.stderr
        mounted = Server("s01", str(disk / "srv"), mountpoint=str(disk))
        agent = agent_pull(agent_script(disk / "srv", t, ["data"], master=mounted))
        assert agent.ok, agent.message
    assert read_tree(t) == {"data/a": "1"}


def test_the_agents_pull_copies_nothing_from_an_unmounted_master_over_ssh(
    sshd: Sshd, unmounted_master: tuple[Path, Path]
) -> None:
    """The master's mountpoint is read in the same ssh command as its path."""
    disk, t = unmounted_master
    remote = Server(
        "s01",
        str(disk / "srv"),
        host="127.0.0.1",
        user=sshd.user,
        port=sshd.port,
        identity_file=str(sshd.identity_file),
        ssh_options=tuple(sshd.ssh_options),
        mountpoint=str(disk),
    )
    result = agent_pull(agent_script(disk / "srv", t, ["data"], master=remote))
    assert not result.ok and f"s01: {disk} is not mounted on s01; refusing to copy from it" in result.message
    assert read_tree(t) == {"data/a": "1", "data/b/c": "2"}


def test_verify_compares_nothing_through_a_symlink(tmp_path: Path) -> None:
    m, t = two_roots(tmp_path)
    outside = tmp_path / "outside"
    write_tree(outside, {"secret": "not the master's"})
    (m / "data").mkdir()
    os.symlink(outside, m / "data" / "rootlink")
    script = toml_script(
        tmp_path / "s.toml",
        master="s01",
        servers={"s01": root(m), "s02": root(t)},
        directories=[{"path": "data/rootlink"}],
    )
    result = synco("verify", "--script", str(script), "--as", "s01", "--json")
    assert result.returncode == 1
    error = json.loads(result.stdout)["targets"]["s02"]["error"]
    assert error.startswith("s01: directory data/rootlink: data/rootlink is a symlink")
