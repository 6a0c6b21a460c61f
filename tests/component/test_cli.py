"""The command line's contract: exit codes, messages without tracebacks, JSON."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from synco import __version__
from tests.support.cli import read_tree, synco, write_tree
from tests.support.scripts import root, toml_script

BROKEN = {
    "syntax.toml": ("master = \n", "not valid TOML"),
    "empty.toml": ("", "master: is required"),
    "no-servers.toml": ('master = "a"\n[[directories]]\npath = "x"\n', "servers: is required"),
    "one-server.toml": (
        'master = "a"\n[servers.a]\nroot = "/a"\n[[directories]]\npath = "x"\n',
        "at least two servers",
    ),
    "escape.toml": (
        'master = "a"\n[servers.a]\nroot = "/a"\n[servers.b]\nroot = "/b"\n'
        '[[directories]]\npath = "../../etc"\n',
        "directories[0].path (line 7)",
    ),
    "absolute.toml": (
        'master = "a"\n[servers.a]\nroot = "/a"\n[servers.b]\nroot = "/b"\n[[directories]]\npath = "/etc"\n',
        "is absolute",
    ),
    "bad-port.toml": (
        'master = "a"\n[servers.a]\nroot = "/a"\n[servers.b]\nroot = "/b"\nhost = "b.example"\n'
        'port = "ssh"\n[[directories]]\npath = "x"\n',
        "servers.b.port (line 7): must be an integer",
    ),
    "typo.toml": (
        'master = "a"\n[servers.a]\nroot = "/a"\n[servers.b]\nroot = "/b"\n[[directory]]\npath = "x"\n',
        "did you mean 'directories'",
    ),
    "unknown-master.toml": (
        'master = "c"\n[servers.a]\nroot = "/a"\n[servers.b]\nroot = "/b"\n[[directories]]\npath = "x"\n',
        "'c' is not a server of this script (a, b)",
    ),
    "direction.toml": (
        'master = "a"\n[method]\ndirection = "both"\n[servers.a]\nroot = "/a"\n'
        '[servers.b]\nroot = "/b"\n[[directories]]\npath = "x"\n',
        "method.direction (line 3)",
    ),
    "handler.toml": (
        'master = "a"\n[events]\nprepare = "pg_dump"\n[servers.a]\nroot = "/a"\n'
        '[servers.b]\nroot = "/b"\n[[directories]]\npath = "x"\n',
        "events.prepare (line 3)",
    ),
    "binary.toml": (b"\xff\xfe master".decode("latin-1"), "not UTF-8"),
    "host-option.toml": (
        'master = "a"\n[servers.a]\nroot = "/a"\n[servers.b]\nroot = "/b"\n'
        'host = "-oProxyCommand=touch /tmp/x"\n[[directories]]\npath = "x"\n',
        "not a host name",
    ),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_check_names_each_problem_and_exits_2(tmp_path: Path, name: str) -> None:
    text, expected = BROKEN[name]
    path = tmp_path / name
    if name == "binary.toml":
        path.write_bytes(b"\xff\xfe master")
    else:
        path.write_text(text)
    result = synco("check", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    run = synco("run", str(path))
    assert run.returncode == 2
    assert "Traceback" not in run.stderr


def test_check_json_lists_problems(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('master = "a"\n[servers.a]\nroot = "a"\n[servers.b]\nroot = "/b"\nport = 0\n')
    result = synco("check", "--json", str(path))
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert report["ok"] is False
    keys = {p["key"] for p in report["problems"]}
    assert {"servers.a.root", "servers.b.port", "directories", "servers.b.host"} <= keys


def test_check_good_script(tmp_path: Path) -> None:
    script = toml_script(
        tmp_path / "s.toml",
        master="s01",
        servers={"s01": root(tmp_path), "s02": root(tmp_path / "b")},
        directories=[{"path": "d"}],
    )
    result = synco("check", str(script))
    assert (result.returncode, result.stdout.strip()) == (0, f"{script}: ok")


def test_missing_script_and_usage_errors_exit_2(tmp_path: Path) -> None:
    missing = synco("run", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "cannot read backup script" in missing.stderr
    assert synco("run").returncode == 2
    assert synco("frobnicate").returncode == 2
    assert synco().returncode == 2


def test_unknown_as_server_exits_2(tmp_path: Path) -> None:
    script = toml_script(
        tmp_path / "s.toml",
        master="s01",
        servers={"s01": root(tmp_path / "a"), "s02": root(tmp_path / "b")},
        directories=[{"path": "d"}],
    )
    result = synco("run", "--as", "s09", str(script))
    assert result.returncode == 2
    assert "--as 's09': no such server; servers are s01, s02" in result.stderr


def test_version() -> None:
    result = synco("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"synco {__version__}")


def test_master_by_name_and_by_dns(tmp_path: Path) -> None:
    servers = {
        "s01": 'host = "localhost"\n' + root(tmp_path / "a"),
        "s02": 'host = "127.0.0.2"\n' + root(tmp_path / "b"),
    }
    named = toml_script(tmp_path / "n.toml", master="s02", servers=servers, directories=[{"path": "d"}])
    result = synco("master", "--as", "s01", "--json", str(named))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["master"] == "s02"
    by_dns = toml_script(
        tmp_path / "d.toml", master="localhost", servers=servers, directories=[{"path": "d"}]
    )
    result = synco("master", "--as", "s01", str(by_dns))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "s01"
    assert "DNS localhost" in result.stdout
    unresolvable = toml_script(
        tmp_path / "u.toml", master="no-such-host.invalid", servers=servers, directories=[{"path": "d"}]
    )
    result = synco("master", "--as", "s01", str(unresolvable))
    assert result.returncode == 2
    assert "cannot resolve 'no-such-host.invalid'" in result.stderr


def test_current_server_ambiguity_is_explained(tmp_path: Path) -> None:
    """`synco run` needs to know which server this is; `synco master` says it does not."""
    servers = {
        "s01": 'host = "localhost"\n' + root(tmp_path / "a"),
        "s02": 'host = "127.0.0.2"\n' + root(tmp_path / "b"),
    }
    script = toml_script(tmp_path / "s.toml", master="s01", servers=servers, directories=[{"path": "d"}])
    result = synco("run", str(script))
    assert result.returncode == 2
    assert "cannot tell which server this machine is" in result.stderr and "pass --as" in result.stderr
    master = synco("master", "--json", str(script))
    assert master.returncode == 0, master.stderr
    assert json.loads(master.stdout)["current"] is None
    assert "cannot tell" in json.loads(master.stdout)["current_reason"]


def test_python_script_is_executable_and_loadable(tmp_path: Path) -> None:
    write_tree(tmp_path / "a", {"www/index.html": "hi"})
    path = tmp_path / "backup.py"
    path.write_text(
        f"""#!{os.environ.get("SYNCO_PYTHON", __import__("sys").executable)}
import synco

script = synco.Script(
    master="s01",
    servers=[synco.Server("s01", root={str(tmp_path / "a")!r}),
             synco.Server("s02", root={str(tmp_path / "b")!r},
                          events={{"success": [synco.command("touch", {str(tmp_path / "done")!r})]}})],
    directories=[synco.Directory("www")],
    method=synco.Method(arguments=["--archive", "--delete"]),
)

if __name__ == "__main__":
    raise SystemExit(synco.main(script))
"""
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    import subprocess

    result = subprocess.run([str(path), "--dry-run"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "b").exists()
    result = subprocess.run([str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert read_tree(tmp_path / "b") == {"www/index.html": "hi"}
    assert (tmp_path / "done").exists()
    assert synco("check", str(path)).returncode == 0
    (tmp_path / "b" / "www" / "index.html").unlink()
    assert synco("run", str(path)).returncode == 0
    assert read_tree(tmp_path / "b") == {"www/index.html": "hi"}


MANY_PROBLEMS = """\
master = "a"
colour = "blue"
[method]
arguments = []
[servers.a]
root = ""
[servers.b]
root = "/b"
port = 0
host = "x;y"
[[directories]]
path = "../etc"
"""


def test_check_lists_structural_and_semantic_problems_together(tmp_path: Path) -> None:
    path = tmp_path / "many.toml"
    path.write_text(MANY_PROBLEMS)
    result = synco("check", "--json", str(path))
    assert result.returncode == 2
    keys = {p["key"]: p["line"] for p in json.loads(result.stdout)["problems"]}
    assert keys == {
        "colour": 2,
        "method.arguments": 4,
        "servers.a.root": 6,
        "servers.b.port": 9,
        "servers.b.host": 10,
        "directories[0].path": 12,
    }


def test_overlapping_roots_on_one_host_are_refused(tmp_path: Path) -> None:
    write_tree(tmp_path / "srv/mirror", {"f": "master data"})
    script = toml_script(
        tmp_path / "s.toml",
        master="m",
        servers={"m": root(tmp_path / "srv/mirror"), "t": root(tmp_path / "srv")},
        directories=[{"path": "."}],
        arguments=["--archive", "--delete"],
    )
    result = synco("run", str(script))
    assert result.returncode == 2
    assert "would overlap" in result.stderr
    assert (tmp_path / "srv/mirror/f").read_text() == "master data"


def test_json_reports_errors_on_stdout(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('master = "a"\n')
    result = synco("run", "--json", str(path))
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["exit_code"] == 2
    assert any("servers" in p for p in report["problems"])


def test_if_master_does_nothing_elsewhere(tmp_path: Path) -> None:
    write_tree(tmp_path / "a", {"d/f": "1"})
    script = toml_script(
        tmp_path / "s.toml",
        master="s01",
        servers={"s01": root(tmp_path / "a"), "s02": root(tmp_path / "b")},
        directories=[{"path": "d"}],
    )
    idle = synco("run", "--if-master", "--as", "s02", str(script))
    assert idle.returncode == 0 and "is not the master" in idle.stderr
    assert not (tmp_path / "b").exists()
    assert synco("run", "--if-master", "--as", "s01", str(script)).returncode == 0
    assert read_tree(tmp_path / "b") == {"d/f": "1"}


def test_python_api_type_errors_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.py"
    path.write_text(
        "import synco\n"
        "script = synco.Script(master='a', servers=[synco.Server('a', root='/a', port='22'),"
        " synco.Server('b', root=None)], directories=[synco.Directory('x')])\n"
    )
    result = synco("check", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "servers.a.port: must be an integer" in result.stdout
    assert "servers.b.root: must be a string" in result.stdout


@pytest.mark.parametrize("method", ["rsync", "snapshot"])
def test_mountpoint_not_mounted_is_refused(tmp_path: Path, method: str) -> None:
    write_tree(tmp_path / "a", {"d/f": "1"})
    disk = tmp_path / "disk"
    script = toml_script(
        tmp_path / "s.toml",
        master="s01",
        servers={"s01": root(tmp_path / "a"), "s02": root(disk / "backup") + f'\nmountpoint = "{disk}"\n'},
        directories=[{"path": "d"}],
    )
    script.write_text(script.read_text().replace("[method]\n", f'[method]\nname = "{method}"\n'))
    result = synco("run", "--json", str(script))
    assert result.returncode == 1
    assert f"{disk} is not mounted on s02" in result.stderr
    assert not disk.exists()  # not even a lock file beneath the mount point
    assert json.loads(result.stdout)["copies"][0]["status"] == "skipped"


def _hosts_naming_this_machine() -> list[str]:
    """Hosts `synco run` takes for this machine: loopback names and addresses, its name and
    one of its interface addresses (when it has one besides loopback)."""
    import psutil

    addresses = [
        entry.address
        for entries in psutil.net_if_addrs().values()
        for entry in entries
        if entry.family == socket.AF_INET and not entry.address.startswith("127.")
    ]
    return ["localhost", "127.0.0.1", "[::1]", socket.gethostname(), *addresses[:1]]


@pytest.mark.parametrize("host", _hosts_naming_this_machine())
def test_check_reports_the_overlap_run_refuses_on_this_machine(tmp_path: Path, host: str) -> None:
    """A target whose host is this machine shares the master's file system: `check` reports
    the overlap that `run` refuses (the same rule), named by key, with exit 2."""
    write_tree(tmp_path / "srv/mirror", {"f": "master data"})
    script = toml_script(
        tmp_path / "s.toml",
        master="m",
        servers={"m": root(tmp_path / "srv"), "t": f'host = "{host}"\n' + root(tmp_path / "srv/mirror")},
        directories=[{"path": "."}],
        arguments=["--archive", "--delete"],
    )
    ran = synco("run", str(script))
    assert ran.returncode != 0 and "would overlap" in ran.stderr
    checked = synco("check", "--json", str(script))
    assert checked.returncode == 2, checked.stdout
    problems = json.loads(checked.stdout)["problems"]
    assert [p["key"] for p in problems] == ["servers.t.root"]
    assert "would overlap" in problems[0]["message"]
    assert (tmp_path / "srv/mirror/f").read_text() == "master data"


def test_check_of_a_python_script_names_each_problem_once(tmp_path: Path) -> None:
    path = tmp_path / "cluster.py"
    path.write_text(
        "import synco\nfrom synco.core.model import AgentSettings\n"
        "script = synco.Script(master='a', servers=[synco.Server('a', root='/a', agent='127.0.0.1:7001'),"
        " synco.Server('b', root='/b', agent='127.0.0.1:7002')], directories=[synco.Directory('/etc')],"
        " agent=AgentSettings(insecure=True))\n"
    )
    result = synco("check", "--json", str(path))
    assert result.returncode == 2
    assert [p["key"] for p in json.loads(result.stdout)["problems"]] == ["directories[0].path"]
    text = synco("check", str(path)).stdout
    assert text.count("problem(s)") == 1 and text.count("is absolute") == 1, text


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("script = 1 +* 2\n", 1),  # a syntax error: the parser's line, not importlib's
        ("import synco\n\nscript = (\n", 3),
        ("import synco\n\n\nsynco.Server('a', root='/a', events={'bogus': []})\n", 4),  # raised in synco
    ],
)
def test_a_python_script_error_names_its_file_and_its_line(tmp_path: Path, text: str, line: int) -> None:
    path = tmp_path / "backup.py"
    path.write_text(text)
    result = synco("check", str(path))
    assert result.returncode == 2
    assert f"{path}: line {line}: " in result.stdout, result.stdout


def run_into_a_closed_pipe(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run a command whose stdout is a pipe nobody reads any more (`... | head -1` once head
    has exited)."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        return subprocess.run([sys.executable, *argv], stdout=writer, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(writer)


def test_a_reader_that_went_away_ends_synco_quietly(tmp_path: Path) -> None:
    write_tree(tmp_path, {f"2026.01.0{day}-00.00.00/f": "1" for day in range(1, 8)})
    for argv in (["--root", str(tmp_path), "list"], ["--root", str(tmp_path), "list", "--json"]):
        result = run_into_a_closed_pipe("-m", "synco.cli.main", *argv)
        assert (result.returncode, result.stderr) == (141, ""), result.stderr


@pytest.mark.parametrize("command", ["list", "prune", "rotate", "verify"])
def test_a_misspelled_root_is_a_usage_error(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "misspelled"
    result = synco("--root", str(missing), command)
    assert result.returncode == 2
    assert f"no such directory: {missing}" in result.stderr
    assert not missing.exists()
