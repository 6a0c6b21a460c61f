"""Push and pull over a real sshd on a loopback port, with rsync local or remote."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.cli import read_tree, synco, write_tree
from tests.support.scripts import root, toml_script
from tests.support.sshd import Sshd

pytestmark = pytest.mark.usefixtures("rsync")

FILES = {
    "srv/site/index.html": "hello",
    'srv/with space/it\'s "quoted" $HOME `x`.txt': "q",
    "srv/ünïcødé/日本語 ; rm -rf x.txt": "u",
}


@pytest.mark.parametrize(("direction", "master", "target"), [("push", "s01", "s02"), ("pull", "s02", "s01")])
def test_between_here_and_a_server_over_ssh(
    tmp_path: Path, sshd: Sshd, direction: str, master: str, target: str
) -> None:
    """s01 is this machine, s02 is reached through ssh; rsync runs here and ssh-es to s02."""
    roots = {"s01": tmp_path / "here root", "s02": tmp_path / "there root"}
    servers = {"s01": root(roots["s01"]), "s02": sshd.server_toml() + root(roots["s02"])}
    write_tree(roots[master], FILES)
    write_tree(roots[target], {"srv/site/index.html": "stale, longer", "srv/extra": "not on master"})
    script = toml_script(
        tmp_path / "a.toml",
        master=master,
        direction=direction,
        servers=servers,
        directories=[{"path": "srv"}],
        arguments=["--archive", "--delete"],
    )
    result = synco("run", "--as", "s01", "--json", str(script))
    assert result.returncode == 0, result.stderr
    assert read_tree(roots[target]) == FILES
    copy = json.loads(result.stdout)["copies"][0]
    assert copy["runs_on"] == "s01"
    assert "-e" in copy["command"]


def test_hostless_server_unreachable_from_the_rsync_side_is_explained(tmp_path: Path, sshd: Sshd) -> None:
    servers = {"s01": root(tmp_path / "a"), "s02": sshd.server_toml() + root(tmp_path / "b")}
    script = toml_script(
        tmp_path / "a.toml", master="s01", direction="pull", servers=servers, directories=[{"path": "srv"}]
    )
    result = synco("run", "--as", "s01", str(script))
    assert result.returncode == 1
    assert "s01 has no host to reach it by; set servers.s01.host" in result.stderr


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_rsync_runs_on_a_remote_server(tmp_path: Path, sshd: Sshd, direction: str) -> None:
    """Master sB and target sC share a remote login: rsync runs there through ssh; sA is here,
    reached from sB through ssh again (push) or pulling from sB (pull)."""
    a, b, c = tmp_path / "A", tmp_path / "B b", tmp_path / "C'c"
    write_tree(b, FILES)
    servers = {
        "sA": sshd.server_toml("localhost") + root(a),
        "sB": sshd.server_toml("127.0.0.1") + root(b),
        "sC": sshd.server_toml("127.0.0.1") + root(c),
    }
    script = toml_script(
        tmp_path / "s.toml", master="sB", direction=direction, servers=servers, directories=[{"path": "srv"}]
    )
    result = synco("run", "--as", "sA", "--json", str(script))
    assert result.returncode == 0, result.stderr
    assert read_tree(a) == FILES
    assert read_tree(c) == FILES
    runs_on = {c["target"]: c["runs_on"] for c in json.loads(result.stdout)["copies"]}
    if direction == "push":
        assert runs_on == {"sA": "sB", "sC": "sB"}
    else:
        assert runs_on == {"sA": "sA", "sC": "sC"}


def test_unreachable_server_is_a_clear_error(tmp_path: Path, sshd: Sshd) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    write_tree(here, {"d/f": "1"})
    broken = sshd.server_toml().replace(f"port = {sshd.port}", "port = 1")
    script = toml_script(
        tmp_path / "s.toml",
        master="s01",
        servers={"s01": root(here), "s02": broken + root(there)},
        directories=[{"path": "d"}],
    )
    result = synco("run", "--as", "s01", str(script))
    assert result.returncode == 1
    assert "s02" in result.stderr and "exit 255" in result.stderr  # the path check's ssh, before rsync
    assert "Connection refused" in result.stderr


def test_hostile_names_have_no_side_effect_on_the_remote_shell(tmp_path: Path, sshd: Sshd) -> None:
    canary = tmp_path / "canary"
    hostile = {f"d/$(touch {canary})": "1", f"d/`touch {canary}`; touch {canary}": "2", "d/x\ny": "newline"}
    here, there = tmp_path / "here", tmp_path / "there"
    write_tree(here, hostile)
    servers = {"s01": root(here), "s02": sshd.server_toml() + root(there)}
    for direction, master in (("push", "s01"), ("pull", "s02")):
        source = here if master == "s01" else there
        write_tree(source, hostile)
        script = toml_script(
            tmp_path / f"{direction}.toml", master=master, direction=direction, servers=servers,
            directories=[{"path": "d"}],
        )  # fmt: skip
        result = synco("run", "--as", "s01", str(script))
        assert result.returncode == 0, result.stderr
        assert not canary.exists()
    assert read_tree(there) == hostile


def test_old_argument_style_in_the_environment_changes_nothing(tmp_path: Path, sshd: Sshd) -> None:
    """RSYNC_OLD_ARGS=1 would let the remote shell split `d d` into two paths."""
    here, there = tmp_path / "here", tmp_path / "there"
    write_tree(here, {"d d/f": "1"})
    servers = {"s01": root(here), "s02": sshd.server_toml() + root(there)}
    script = toml_script(tmp_path / "s.toml", master="s01", servers=servers, directories=[{"path": "d d"}])
    result = synco("run", "--as", "s01", str(script), env={"RSYNC_OLD_ARGS": "1"})
    assert result.returncode == 0, result.stderr
    assert read_tree(there) == {"d d/f": "1"}


def test_push_to_a_server_over_ssh_compares_nanoseconds_where_it_keeps_them(
    tmp_path: Path, sshd: Sshd
) -> None:
    """The target's file system is probed through ssh: a same-size rewrite within the second
    of the last copy still reaches it."""
    here, there = tmp_path / "here", tmp_path / "there"
    servers = {"s01": root(here), "s02": sshd.server_toml() + root(there)}
    script = toml_script(
        tmp_path / "a.toml", master="s01", direction="push", servers=servers, directories=[{"path": "d"}]
    )
    write_tree(here, {"d/f": "v1"})
    os.utime(here / "d/f", ns=(SECOND_NS + 100_000_000, SECOND_NS + 100_000_000))
    first = synco("run", "--as", "s01", "--json", str(script))
    assert first.returncode == 0, first.stderr
    assert "--modify-window=-1" in json.loads(first.stdout)["copies"][0]["command"]
    (here / "d/f").write_text("v2")  # the same size, later within the same second
    os.utime(here / "d/f", ns=(SECOND_NS + 600_000_000, SECOND_NS + 600_000_000))
    assert synco("run", "--as", "s01", str(script)).returncode == 0
    assert (there / "d/f").read_text() == "v2"
    assert not [p for p in there.iterdir() if p.name.startswith(".synco-probe")]


SECOND_NS = 1_700_000_000 * 10**9
