"""The example scripts run as written, with their hosts pointed at a local sshd and roots at temp dirs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import read_tree, synco, write_tree
from tests.support.loopfs import loop_filesystem
from tests.support.snapshots import SYNCO, inode, latest
from tests.support.sshd import Sshd

pytestmark = pytest.mark.usefixtures("rsync")

EXAMPLES = Path(__file__).resolve().parents[2] / "scripts" / "examples"


def localize(text: str, sshd: Sshd, hosts: dict[str, str], roots: dict[str, Path]) -> str:
    """Point each example host at the local sshd (by another loopback name) and a temp root."""
    sections = re.split(r"(?m)^(?=\[)", text)
    out = []
    for section in sections:
        match = re.match(r"\[servers\.([\w-]+)\]\n", section)
        if match and match.group(1) in roots:
            name = match.group(1)
            section = re.sub(r"(?m)^(host|user|root) = .*\n", "", section)
            section = section.replace(
                match.group(0),
                match.group(0) + sshd.server_toml(hosts[name]) + f'root = "{roots[name]}"\n',
                1,
            )
        out.append(section)
    return "".join(out)


def test_sync_push(tmp_path: Path, sshd: Sshd) -> None:
    roots = {n: tmp_path / n for n in ("s01", "s02", "s03")}
    text = (EXAMPLES / "sync-push.toml").read_text()
    text = text.replace('"--acls", "--xattrs"', '"--acls"')  # tmpfs may lack user xattrs
    script = tmp_path / "sync-push.toml"
    script.write_text(
        localize(text, sshd, {"s01": "localhost", "s02": "127.0.0.1", "s03": "127.0.0.1"}, roots)
    )
    write_tree(
        roots["s01"], {"srv/http/index.html": "hi", "srv/http/cache/x": "c", "etc/nginx/nginx.conf": "n"}
    )
    write_tree(roots["s02"], {"srv/http/stale.html": "old"})
    result = synco("run", "--as", "s01", str(script))
    assert result.returncode == 0, result.stderr
    for target in ("s02", "s03"):
        assert read_tree(roots[target]) == {"srv/http/index.html": "hi", "etc/nginx/nginx.conf": "n"}


@pytest.mark.parametrize("example", ["backup-pull.toml", "server-backup.toml", "backup.py"])
def test_backups(tmp_path: Path, sshd: Sshd, example: str) -> None:
    master = "web" if example == "backup-pull.toml" else "server"
    roots = {master: tmp_path / "server root", "backup": tmp_path / "backup root"}
    hosts = {master: "127.0.0.1", "backup": "localhost"}
    text = (EXAMPLES / example).read_text()
    if example.endswith(".py"):
        for name in roots:
            pattern = rf'synco.Server\("{name}", host="[^"]+", root="[^"]+"'
            replacement = (
                f'synco.Server("{name}", host="{hosts[name]}", root="{roots[name]}", '
                f'user="{sshd.user}", port={sshd.port}, identity_file="{sshd.identity_file}", '
                f"ssh_options={sshd.ssh_options!r}"
            )
            text, count = re.subn(pattern, replacement, text)
            assert count == 1
    else:
        text = localize(text, sshd, hosts, roots)
    script = tmp_path / example
    script.write_text(text)
    write_tree(
        roots[master],
        {
            "etc/hostname": "server",
            "srv/www/a": "1",
            "home/u/.cache/junk": "j",
            "home/u/notes": "n",
            "var/backups/old.tar": "t",
        },
    )
    result = synco("run", "--as", "backup", str(script))
    assert result.returncode == 0, result.stderr
    copied = read_tree(roots["backup"])
    assert copied["etc/hostname"] == "server"
    assert "home/u/.cache/junk" not in copied
    if master == "server":
        assert copied["home/u/notes"] == "n"
        assert "var/backups/synco/packages.list" in copied  # the master's prepare handler ran there
        assert copied["var/backups/synco/packages.list"].strip()
    else:
        assert copied["srv/www/a"] == "1"


def test_python_example_runs_as_a_program(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "backup.py"), "check"], capture_output=True, text=True
    )
    assert (result.returncode, result.stdout.strip()) == (0, "ok")


def test_dns_failover(tmp_path: Path, sshd: Sshd) -> None:
    """The master is a name; pointing the name at the other server reverses the flow."""
    roots = {"s01": tmp_path / "s01", "s02": tmp_path / "s02"}
    hosts = {"s01": "localhost", "s02": "127.0.0.2"}
    text = localize((EXAMPLES / "dns-failover.toml").read_text(), sshd, hosts, roots)
    script = tmp_path / "dns-failover.toml"
    # The system resolver knows "localhost" (s01); the name stands for primary.example.com.
    script.write_text(text.replace('master = "primary.example.com"', 'master = "localhost"'))
    write_tree(roots["s01"], {"srv/http/index.html": "from s01"})
    answer = json.loads(synco("master", "--as", "s01", "--json", str(script), check=True).stdout)
    assert answer["master"] == "s01" and "localhost" in answer["reason"]
    assert synco("run", "--as", "s01", str(script)).returncode == 0
    assert read_tree(roots["s02"]) == {"srv/http/index.html": "from s01"}

    # Fail over: the name now points at s02's address.
    write_tree(roots["s02"], {"srv/http/index.html": "written on s02 after failover"})
    script.write_text(text.replace('master = "primary.example.com"', 'master = "127.0.0.2"'))
    result = synco("run", "--as", "s01", "--json", str(script))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["master"]["server"] == "s02"
    assert read_tree(roots["s01"]) == {"srv/http/index.html": "written on s02 after failover"}


def test_incremental_backup_rotates_and_prunes_on_the_backup_server(tmp_path: Path, sshd: Sshd) -> None:
    roots = {"server": tmp_path / "server", "backup": tmp_path / "backup root"}
    hosts = {"server": "localhost", "backup": "127.0.0.1"}
    text = localize((EXAMPLES / "incremental-backup.toml").read_text(), sshd, hosts, roots)
    text = text.replace('["synco", ', f'["{SYNCO}", ')
    backup_root = f'root = "{roots["backup"]}"\n'
    text = text.replace(backup_root, f'{backup_root}synco_path = "{SYNCO}"\n')
    script = tmp_path / "incremental.toml"
    script.write_text(text)
    write_tree(roots["server"], {"etc/hostname": "server", "srv/a": "1", "srv/cache/x": "c", "home/u/n": "n"})
    assert synco("run", "--as", "server", str(script)).returncode == 0
    first = latest(roots["backup"])
    write_tree(roots["server"], {"srv/a": "changed, longer"})
    result = synco("run", "--as", "server", str(script))
    assert result.returncode == 0, result.stderr
    second = latest(roots["backup"])
    assert first != second
    assert inode(first / "etc/hostname") == inode(second / "etc/hostname")
    assert (second / "srv/a").read_text() == "changed, longer" and not (second / "srv/cache").exists()
    assert not (roots["backup"] / "latest.snapshot").exists()

    script.write_text(text.replace('"--daily", "14"', '"--daily", "fourteen"'))
    write_tree(roots["server"], {"srv/a": "third version"})
    failed = synco("run", "--as", "server", str(script))
    assert failed.returncode == 1
    assert "server backup: success handler failed" in failed.stderr and "fourteen" in failed.stderr


def test_server_snapshots_with_manifest(tmp_path: Path, sshd: Sshd) -> None:
    roots = {"db": tmp_path / "db", "backup": tmp_path / "backup"}
    hosts = {"db": "127.0.0.1", "backup": "localhost"}
    text = localize((EXAMPLES / "server-snapshots.toml").read_text(), sshd, hosts, roots)
    script = tmp_path / "snapshots.toml"
    script.write_text(text.replace('["synco", ', f'["{SYNCO}", '))
    write_tree(roots["db"], {"etc/hostname": "db", "tmp/junk": "j", "srv/data": "d"})
    result = synco("run", "--as", "backup", str(script))
    assert result.returncode == 0, result.stderr
    snapshot = latest(roots["backup"])
    assert (snapshot / "var/backups/synco/packages.list").read_text().strip()
    assert not (snapshot / "tmp").exists()
    assert synco("--root", str(roots["backup"]), "verify").returncode == 0
    (snapshot / "srv/data").write_text("bit rot")
    rotten = synco("--root", str(roots["backup"]), "verify")
    assert rotten.returncode == 1 and "srv/data" in rotten.stdout


def test_staged_backup_reads_a_btrfs_snapshot_of_the_master(tmp_path: Path, sshd: Sshd) -> None:
    with loop_filesystem(tmp_path, "btrfs") as mountpoint:
        data = mountpoint / "data"
        subprocess.run(["btrfs", "subvolume", "create", str(data)], check=True, capture_output=True)
        roots = {"db": data, "backup": tmp_path / "backups"}
        text = localize(
            (EXAMPLES / "staged-backup.toml").read_text(),
            sshd,
            {"db": "127.0.0.1", "backup": "localhost"},
            roots,
        )
        script = tmp_path / "staged-backup.toml"
        script.write_text(text)
        assert synco("check", str(script)).returncode == 0
        write_tree(data, {"postgresql/base/1": "rows", "mail/cur/m1": "hello", "tmp/scratch": "not copied"})
        dry = synco("run", "--as", "backup", "--dry-run", str(script))
        assert dry.returncode == 0 and "would stage" in dry.stderr, dry.stderr
        assert not (mountpoint / ".synco-staging").exists()
        result = synco("run", "--as", "backup", "--json", str(script))
        assert result.returncode == 0, result.stderr
        snapshot = latest(roots["backup"])
        assert (snapshot / "postgresql/base/1").read_text() == "rows"
        assert (snapshot / "mail/cur/m1").read_text() == "hello"
        assert not (snapshot / "tmp").exists()
        (staged,) = json.loads(result.stdout)["staged"]
        assert staged["origin"] == str(data) and staged["provider"] == "btrfs"
        assert list((mountpoint / ".synco-staging").iterdir()) == []
        listed = synco("--root", str(roots["backup"]), "list").stdout
        assert f"staged {staged['at']}" in listed


def test_nightly_plan_runs_its_stages(tmp_path: Path, sshd: Sshd) -> None:
    """The plan as written, beside its three example scripts pointed at the local sshd."""
    masters = {"backup-pull.toml": "web", "server-backup.toml": "server", "server-snapshots.toml": "db"}
    backups = {}
    for example, master in masters.items():
        roots = {master: tmp_path / f"{master} root", "backup": tmp_path / f"{example} backups"}
        text = localize(
            (EXAMPLES / example).read_text(), sshd, {master: "127.0.0.1", "backup": "localhost"}, roots
        )
        text = text.replace('["synco", ', f'["{SYNCO}", ')
        (tmp_path / example).write_text(text)
        tree = {"etc/hostname": master, "srv/www/a": "1", "home/u/notes": "n", "var/backups/old.tar": "t"}
        write_tree(roots[master], tree)
        backups[example] = roots["backup"]
    plan = tmp_path / "nightly-plan.toml"
    plan.write_text((EXAMPLES / "nightly-plan.toml").read_text())
    assert synco("check", str(plan)).returncode == 0
    result = synco("run", "--as", "backup", "--json", str(plan), timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [(r["script"], r["stage"], r["result"]) for r in report["scripts"]] == [
        ("backup-pull.toml", "local", "ok"),
        ("server-backup.toml", "local", "ok"),
        ("server-snapshots.toml", "snapshots", "ok"),
    ]
    assert read_tree(backups["backup-pull.toml"])["srv/www/a"] == "1"
    assert read_tree(backups["server-backup.toml"])["home/u/notes"] == "n"
    assert (latest(backups["server-snapshots.toml"]) / "etc/hostname").read_text() == "db"
