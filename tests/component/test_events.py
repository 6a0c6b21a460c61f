"""Event handlers fire in the documented order, on the right side, including failure paths."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import synco
from synco import Directory, Method, Script, Server
from synco.events import Scope
from tests.support.cli import read_tree, write_tree
from tests.support.cli import synco as synco_cli
from tests.support.scripts import root, toml_script
from tests.support.sshd import Sshd

pytestmark = pytest.mark.usefixtures("rsync")

EVENTS = ("prepare", "success", "failure", "finish")


def recorder(log: list[str], label: str, fail_on: str | None = None) -> dict[str, object]:
    def handler(event: str) -> object:
        def record(scope: Scope) -> None:
            target = f"@{scope.target.name}" if scope.target and scope.level == "directory" else ""
            log.append(f"{label}{target} {event}")
            if event == fail_on:
                raise RuntimeError(f"{label} refuses to {event}")

        return record

    return {event: handler(event) for event in EVENTS}


def build(tmp_path: Path, log: list[str], fail: dict[str, str] | None = None) -> Script:
    fail = fail or {}
    write_tree(tmp_path / "m", {"d1/f": "1", "d2/g": "2"})

    def events(label: str) -> synco.core.model.Events:
        return synco.core.model.Events.build(recorder(log, label, fail.get(label)))  # type: ignore[arg-type]

    return Script(
        master="m",
        servers=[
            Server("m", str(tmp_path / "m"), events=events("master")),
            Server("t1", str(tmp_path / "t1"), events=events("t1")),
            Server("t2", str(tmp_path / "t2"), events=events("t2")),
        ],
        directories=[Directory("d1", events=events("d1")), Directory("d2", events=events("d2"))],
        method=Method(events=events("method")),
        events=events("script"),
    )


def per_target(target: str, outcome: str = "success") -> list[str]:
    return [
        f"{target} prepare",
        f"d1@{target} prepare",
        f"d1@{target} success",
        f"d1@{target} finish",
        f"d2@{target} prepare",
        f"d2@{target} success",
        f"d2@{target} finish",
        f"{target} {outcome}",
        f"{target} finish",
    ]


OPENING = ["script prepare", "master prepare", "method prepare"]
CLOSING = [
    "method success",
    "method finish",
    "master success",
    "master finish",
    "script success",
    "script finish",
]


def test_documented_order(tmp_path: Path) -> None:
    log: list[str] = []
    report = synco.run(build(tmp_path, log), lock=False)
    assert report.ok, report.failures
    assert log == OPENING + per_target("t1") + per_target("t2") + CLOSING
    assert read_tree(tmp_path / "t2") == {"d1/f": "1", "d2/g": "2"}


def test_failing_server_prepare_skips_its_directories_only(tmp_path: Path) -> None:
    log: list[str] = []
    report = synco.run(build(tmp_path, log, {"t1": "prepare"}), lock=False)
    assert not report.ok
    assert log == [
        *OPENING,
        "t1 prepare",
        "t1 failure",
        "t1 finish",
        *per_target("t2"),
        *[
            "method failure",
            "method finish",
            "master failure",
            "master finish",
            "script failure",
            "script finish",
        ],
    ]
    assert not (tmp_path / "t1").exists()
    assert read_tree(tmp_path / "t2") == {"d1/f": "1", "d2/g": "2"}
    assert report.failures == ["server t1: prepare failed: RuntimeError: t1 refuses to prepare"]


def test_failing_directory_prepare_skips_that_copy(tmp_path: Path) -> None:
    log: list[str] = []
    report = synco.run(build(tmp_path, log, {"d1": "prepare"}), lock=False)
    assert not report.ok
    assert log[3:9] == [
        "t1 prepare",
        "d1@t1 prepare",
        "d1@t1 failure",
        "d1@t1 finish",
        "d2@t1 prepare",
        "d2@t1 success",
    ]
    assert "t1 failure" in log and "t2 failure" in log
    assert read_tree(tmp_path / "t1") == {"d2/g": "2"}


def test_failing_master_prepare_copies_nothing(tmp_path: Path) -> None:
    log: list[str] = []
    report = synco.run(build(tmp_path, log, {"master": "prepare"}), lock=False)
    assert not report.ok
    assert log == [
        "script prepare",
        "master prepare",
        "master failure",
        "master finish",
        "script failure",
        "script finish",
    ]
    assert not (tmp_path / "t1").exists()


def test_failing_copy_fires_failure_with_the_error(tmp_path: Path) -> None:
    log: list[str] = []
    errors: list[str | None] = []
    script = build(tmp_path, log)
    (tmp_path / "t1").write_text("a file, so rsync cannot create the root")
    d1 = Directory("d1", events=synco.core.model.Events.build({"failure": lambda s: errors.append(s.error)}))
    from dataclasses import replace

    report = synco.run(replace(script, directories=(d1, script.directories[1])), lock=False)
    assert not report.ok
    assert len(errors) == 1 and errors[0] is not None and "rsync exit" in errors[0]
    assert "t1 failure" in log and "t2 success" in log


def test_command_handlers_in_toml_run_on_their_side(tmp_path: Path, sshd: Sshd) -> None:
    """Handlers of a remote master run there through ssh, with the SYNCO_* environment."""
    here, there = tmp_path / "here", tmp_path / "there root"
    write_tree(there, {"d/f": "1"})
    here.mkdir()  # handlers run in their server's root, which must exist
    log = tmp_path / "event log.txt"

    def record(label: str, on: str | None = None) -> str:
        command = json.dumps(
            ["sh", "-c", 'echo "$1 $SYNCO_EVENT on $SYNCO_ROOT" >> "$2"', "sh", label, str(log)]
        )
        return f'{{ run = [{command}], on = "{on}" }}' if on else f"[{command}]"

    servers = {
        "s01": root(here) + f"\n[servers.s01.events]\nprepare = {record('target')}\n",
        "s02": sshd.server_toml() + root(there) + f"\n[servers.s02.events]\nprepare = {record('master')}\n"
        f"finish = {record('master-to-local', 'local')}\n",
    }
    script = toml_script(
        tmp_path / "s.toml",
        master="s02",
        direction="pull",
        servers=servers,
        directories=[{"path": "d"}],
        extra=f"[events]\nsuccess = {record('script', 'master')}\n",
    )
    result = synco_cli("run", "--as", "s01", str(script))
    assert result.returncode == 0, result.stderr
    assert [line.rstrip() for line in log.read_text().splitlines()] == [
        f"master prepare on {there}",
        f"target prepare on {here}",
        "master-to-local finish on",
        f"script success on {there}",
    ]
    assert read_tree(here) == {"d/f": "1"}


def test_failing_command_handler_fails_the_run(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_tree(a, {"d/f": "1"})
    script = toml_script(
        tmp_path / "s.toml",
        master="s01",
        servers={"s01": root(a), "s02": root(b)},
        directories=[{"path": "d"}],
        extra='[events]\nsuccess = [["sh", "-c", "echo no space left >&2; exit 3"]]\n',
    )
    result = synco_cli("run", str(script))
    assert result.returncode == 1
    assert "script s.toml: success handler failed" in result.stderr
    assert "exit status 3: no space left" in result.stderr


def test_failing_method_prepare_skips_every_target(tmp_path: Path) -> None:
    log: list[str] = []
    report = synco.run(build(tmp_path, log, {"method": "prepare"}), lock=False)
    assert log == ["script prepare", "master prepare", "method prepare", "method failure", "method finish",
                   "master failure", "master finish", "script failure", "script finish"]  # fmt: skip
    assert {c.status for c in report.copies} == {"skipped"} and len(report.copies) == 4


@pytest.mark.parametrize("failing", ["success", "failure", "finish"])
def test_failing_late_handlers(tmp_path: Path, failing: str) -> None:
    """A failing success handler turns into failure; failing failure/finish handlers are reported."""
    log: list[str] = []
    fail = {"t1": failing}
    if failing == "failure":
        fail = {"d1": "prepare", "t1": "failure"}
    report = synco.run(build(tmp_path, log, fail), lock=False)
    assert not report.ok
    t1 = [entry for entry in log if entry.startswith("t1 ")]
    if failing == "success":
        assert t1 == ["t1 prepare", "t1 success", "t1 failure", "t1 finish"]
        assert any("success handler failed" in f for f in report.failures)
    elif failing == "failure":
        assert t1 == ["t1 prepare", "t1 failure", "t1 finish"]
        assert any("failure handler failed" in f for f in report.failures)
    else:
        assert t1 == ["t1 prepare", "t1 success", "t1 finish"]
        assert any("finish handler failed" in f for f in report.failures)
    assert ("t2 failure" if failing == "failure" else "t2 success") in log  # t2 shares only d1's handlers


def test_handler_calling_sys_exit_fails_instead_of_ending_the_run(tmp_path: Path) -> None:
    log: list[str] = []
    script = build(tmp_path, log)
    from dataclasses import replace

    quitter = synco.core.model.Events.build({"prepare": lambda scope: sys.exit(0)})
    script = replace(
        script, servers=(script.servers[0], replace(script.servers[1], events=quitter), script.servers[2])
    )
    report = synco.run(script, lock=False)
    assert not report.ok
    assert any("sys.exit(0)" in f for f in report.failures)
    assert read_tree(tmp_path / "t2") == {"d1/f": "1", "d2/g": "2"}


def test_dry_run_calls_no_python_handler(tmp_path: Path) -> None:
    log: list[str] = []
    report = synco.run(build(tmp_path, log), dry_run=True)
    assert report.ok and log == []
    assert not (tmp_path / "t1").exists()


def test_handler_on_a_missing_root_fails_rather_than_running_elsewhere(tmp_path: Path, sshd: Sshd) -> None:
    here, there = tmp_path / "here", tmp_path / "not yet there"
    write_tree(here, {"d/f": "1"})
    relative = json.dumps(["sh", "-c", "touch created-here"])
    servers = {
        "s01": root(here),
        "s02": sshd.server_toml() + root(there) + f"\n[servers.s02.events]\nprepare = [{relative}]\n",
        "s03": root(tmp_path / "also missing") + f"\n[servers.s03.events]\nprepare = [{relative}]\n",
    }
    script = toml_script(tmp_path / "s.toml", master="s01", servers=servers, directories=[{"path": "d"}])
    result = synco_cli("run", "--as", "s01", str(script))
    assert result.returncode == 1
    assert f"{there} does not exist" in result.stderr and "also missing does not exist" in result.stderr
    assert not Path("/created-here").exists() and not (Path.home() / "created-here").exists()
