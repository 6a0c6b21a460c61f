"""Event handlers fire in the documented order, on the right side, including failure paths."""

from __future__ import annotations

import json
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

    def events(label: str) -> synco.model.Events:
        return synco.model.Events.build(recorder(log, label, fail.get(label)))  # type: ignore[arg-type]

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
    d1 = Directory("d1", events=synco.model.Events.build({"failure": lambda s: errors.append(s.error)}))
    from dataclasses import replace

    report = synco.run(replace(script, directories=(d1, script.directories[1])), lock=False)
    assert not report.ok
    assert len(errors) == 1 and errors[0] is not None and "rsync exit" in errors[0]
    assert "t1 failure" in log and "t2 success" in log


def test_command_handlers_in_toml_run_on_their_side(tmp_path: Path, sshd: Sshd) -> None:
    """Handlers of a remote master run there through ssh, with the SYNCO_* environment."""
    here, there = tmp_path / "here", tmp_path / "there root"
    write_tree(there, {"d/f": "1"})
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
