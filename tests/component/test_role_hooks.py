"""Role hooks run for real: commands with the change in their environment, in the server's
root, stopped with their whole process group when they overrun; Python callables in a
thread of their own; the script's handlers before the server's, the first failure last."""

from __future__ import annotations

import asyncio
import os
import shlex
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import synco
from synco import Directory, Script, Server
from synco.core.model import ROLE_EVENTS, Event, Events, Handler, Role
from synco.node.hooks import RoleChange, role_handlers, run_role_hooks

CHANGE = RoleChange(
    event=Event.PROMOTE,
    node="s02",
    epoch=7,
    old_master="s01",
    new_master="s02",
    reason="s01's lease ran out; s02 won epoch 7 with 2 of 3 votes",
    old_role="replica",
    new_role="master",
)


def script_of(
    tmp_path: Path,
    script: dict[str, Handler | list[Handler]] | None = None,
    s02: dict[str, Handler | list[Handler]] | None = None,
    s01: dict[str, Handler | list[Handler]] | None = None,
) -> Script:
    for name in ("s01", "s02"):
        (tmp_path / name).mkdir(exist_ok=True)
    return Script(
        master="s01",
        servers=(
            Server("s01", str(tmp_path / "s01"), events=Events.build(s01)),
            Server("s02", str(tmp_path / "s02"), events=Events.build(s02)),
            Server("w", "", role=Role.WITNESS),
        ),
        directories=(Directory("srv"),),
        events=Events.build(script),
    )


def run(
    script: Script,
    change: RoleChange = CHANGE,
    timeout: float = 10.0,
    server: str | None = None,
) -> tuple[str | None, list[str]]:
    lines: list[str] = []
    result = asyncio.run(run_role_hooks(script, server or change.node, change, timeout, lines.append))
    return result, lines


def sh(text: str) -> synco.core.model.CommandHandler:
    return synco.command("sh", "-c", text)


def gone(pid: int) -> bool:
    """The process has exited (a zombie left to a PID 1 that does not reap counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def our_zombies() -> list[int]:
    zombies = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if fields[0] == "Z" and int(fields[1]) == os.getpid():
                zombies.append(int(entry.name))
    return zombies


# Commands


def test_a_command_sees_the_change_in_its_environment_and_runs_in_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNCO_TEST_INHERITED", "from the agent")
    script = script_of(tmp_path, s02={"promote": sh("env -0 > env.out; pwd > pwd.out")})
    result, lines = run(script)
    assert result is None
    assert lines == ["promote: running `sh -c 'env -0 > env.out; pwd > pwd.out'`"]
    env = dict(v.split("=", 1) for v in (tmp_path / "s02/env.out").read_text().split("\0") if v)
    expected = {
        "SYNCO_EVENT": "promote",
        "SYNCO_NODE": "s02",
        "SYNCO_EPOCH": "7",
        "SYNCO_OLD_MASTER": "s01",
        "SYNCO_NEW_MASTER": "s02",
        "SYNCO_REASON": "s01's lease ran out; s02 won epoch 7 with 2 of 3 votes",
        "SYNCO_ROLE": "master",
        "SYNCO_OLD_ROLE": "replica",
        "SYNCO_TEST_INHERITED": "from the agent",
    }
    assert {k: env.get(k) for k in expected} == expected
    assert env["PATH"] == os.environ["PATH"]
    assert (tmp_path / "s02/pwd.out").read_text() == f"{tmp_path / 's02'}\n"


def test_a_demoted_master_with_no_known_successor(tmp_path: Path) -> None:
    change = RoleChange(Event.DEMOTE, "s01", 8, "s01", "", "lease lost", "master", "replica")
    out = tmp_path / "demote.out"
    script = script_of(
        tmp_path, script={"demote": sh(f'echo "[$SYNCO_EVENT|$SYNCO_NEW_MASTER|$SYNCO_ROLE]" > {out}')}
    )
    assert run(script, change) == (
        None,
        [f"demote: running `sh -c 'echo \"[$SYNCO_EVENT|$SYNCO_NEW_MASTER|$SYNCO_ROLE]\" > {out}'`"],
    )
    assert out.read_text() == "[demote||replica]\n"


def test_a_server_without_a_root_runs_its_hooks_in_slash(tmp_path: Path) -> None:
    out = tmp_path / "pwd.out"
    change = RoleChange(Event.ROLE_CHANGE, "w", 3, "s01", "s02", "s02 is master", "witness", "witness")
    result, _ = run(script_of(tmp_path, script={"role-change": sh(f"pwd > {out}")}), change)
    assert result is None
    assert out.read_text() == "/\n"


def test_a_missing_root_falls_back_to_slash(tmp_path: Path) -> None:
    out = tmp_path / "pwd.out"
    script = script_of(tmp_path, s02={"promote": sh(f"pwd > {out}")})
    (tmp_path / "s02").rmdir()
    assert run(script)[0] is None
    assert out.read_text() == "/\n"


def test_a_failing_command_says_its_status_and_last_lines(tmp_path: Path) -> None:
    text = "echo one; echo two >&2; echo; echo three; echo four >&2; exit 3"
    script = script_of(tmp_path, s02={"promote": sh(text)})
    result, lines = run(script)
    assert result == f"`sh -c '{text}'` exited with status 3: two / three / four"
    assert lines == [
        f"promote: running `sh -c '{text}'`",
        "promote: | one",
        "promote: | two",
        "promote: | ",
        "promote: | three",
        "promote: | four",
    ]


def test_a_failing_command_without_output(tmp_path: Path) -> None:
    result, _ = run(script_of(tmp_path, s02={"promote": synco.command("false")}))
    assert result == "`false` exited with status 1"


def test_a_command_killed_by_a_signal(tmp_path: Path) -> None:
    result, _ = run(script_of(tmp_path, s02={"promote": sh("printf 'last words'; kill -USR1 $$")}))
    assert (
        result == "`sh -c 'printf '\"'\"'last words'\"'\"'; kill -USR1 $$'` was killed by SIGUSR1: last words"
    )


@pytest.mark.parametrize("argv", [("/nonexistent/can-i-be-master",), ("no-such-program-here", "x")])
def test_a_missing_program_could_not_start(tmp_path: Path, argv: tuple[str, ...]) -> None:
    result, _ = run(script_of(tmp_path, s02={"promote": synco.command(*argv)}))
    assert result is not None
    assert result.startswith(f"`{' '.join(argv)}` could not start: [Errno 2] No such file or directory")


def test_a_program_that_is_not_executable_could_not_start(tmp_path: Path) -> None:
    program = tmp_path / "hook"
    program.write_text("#!/bin/sh\nexit 0\n")
    result, _ = run(script_of(tmp_path, s02={"promote": synco.command(str(program))}))
    assert result == f"`{program}` could not start: [Errno 13] Permission denied: '{program}'"


@pytest.mark.parametrize(
    ("text", "signal"),
    [
        # the shell and its child ignore SIGTERM: both need the SIGKILL after 2 s
        ('trap "" TERM; echo $$ > leader.pid; sleep 300 & echo $! > child.pid; wait', "KILL"),
        # the shell dies on SIGTERM, the child it left behind ignores it
        ('echo $$ > leader.pid; (trap "" TERM; exec sleep 300) & echo $! > child.pid; wait', "TERM+KILL"),
        # both die on SIGTERM
        ("echo $$ > leader.pid; sleep 300 & echo $! > child.pid; wait", "TERM"),
    ],
)
def test_a_command_that_overruns_is_stopped_with_its_whole_group(
    tmp_path: Path, text: str, signal: str
) -> None:
    script = script_of(tmp_path, s02={"promote": [sh(text), sh("touch not-run")]})
    started = time.monotonic()
    result, lines = run(script, timeout=1.0)
    elapsed = time.monotonic() - started
    assert result == f"`{shlex.join(('sh', '-c', text))}` timed out after 1 s"
    assert 1.0 <= elapsed < 1.0 + 3.0, elapsed
    if signal == "TERM":
        assert elapsed < 1.0 + 1.5, elapsed  # no need to wait for the SIGKILL
    leader = int((tmp_path / "s02/leader.pid").read_text())
    child = int((tmp_path / "s02/child.pid").read_text())
    assert not Path(f"/proc/{leader}").exists()  # reaped, not a zombie
    deadline = time.monotonic() + 2
    while not gone(child) and time.monotonic() < deadline:  # an orphan is reaped by PID 1
        time.sleep(0.02)
    assert gone(child)
    assert our_zombies() == []
    assert not (tmp_path / "s02/not-run").exists()
    assert lines == [f"promote: running `{shlex.join(('sh', '-c', text))}`"]


def test_a_child_left_holding_the_output_does_not_hold_up_the_hook(tmp_path: Path) -> None:
    script = script_of(tmp_path, s02={"promote": sh("echo started; sleep 30 & echo $! > child.pid")})
    started = time.monotonic()
    result, lines = run(script)
    assert result is None
    assert time.monotonic() - started < 3
    assert lines[1:] == [
        "promote: | started",
        "promote: `sh -c 'echo started; sleep 30 & echo $! > child.pid'` left processes holding its "
        "output, which is no longer read",
    ]
    child = int((tmp_path / "s02/child.pid").read_text())
    assert not gone(child)  # a hook may start something that outlives it
    os.kill(child, 15)


def test_a_cancelled_hook_stops_its_command(tmp_path: Path) -> None:
    script = script_of(tmp_path, s02={"promote": sh("echo $$ > leader.pid; exec sleep 300")})

    async def cancel_soon() -> None:
        task = asyncio.create_task(run_role_hooks(script, "s02", CHANGE, 60, lambda _: None))
        while not (tmp_path / "s02/leader.pid").exists():
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(cancel_soon(), 10))
    assert not Path(f"/proc/{int((tmp_path / 's02/leader.pid').read_text())}").exists()


# Callables


def test_a_callable_gets_the_change_in_a_thread_of_its_own(tmp_path: Path) -> None:
    seen: list[tuple[RoleChange, bool]] = []

    def record(change: RoleChange) -> None:
        seen.append((change, threading.current_thread() is threading.main_thread()))

    def agree(change: RoleChange) -> bool:
        return True

    result, lines = run(script_of(tmp_path, s02={"promote": [record, agree]}))
    assert result is None
    assert seen == [(CHANGE, False)]
    assert seen[0][0] is CHANGE
    assert lines == [
        "promote: calling test_a_callable_gets_the_change_in_a_thread_of_its_own.<locals>.record",
        "promote: calling test_a_callable_gets_the_change_in_a_thread_of_its_own.<locals>.agree",
    ]


def refuse(change: RoleChange) -> bool:
    return False


def explode(change: RoleChange) -> None:
    raise ValueError(f"epoch {change.epoch} is cursed")


def quit_(change: RoleChange) -> None:
    raise SystemExit(4)


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        (refuse, "refuse returned False"),
        (explode, "explode raised ValueError: epoch 7 is cursed"),
        (lambda change: 1 / 0, "<lambda> raised ZeroDivisionError: division by zero"),
        (quit_, "quit_ called sys.exit(4)"),
    ],
)
def test_a_failing_callable_says_why_and_stops_the_rest(
    tmp_path: Path, handler: Callable[[RoleChange], object], reason: str
) -> None:
    after: list[RoleChange] = []
    result, _ = run(script_of(tmp_path, script={"pre-promote": [handler, after.append]}), CHANGE_PRE)
    assert result == reason
    assert after == []


CHANGE_PRE = RoleChange(Event.PRE_PROMOTE, "s02", 7, "s01", "", "s01 does not answer", "replica", "replica")


def test_an_overrunning_callable_times_out(tmp_path: Path) -> None:
    finished = threading.Event()

    def slow(change: RoleChange) -> bool:
        time.sleep(3)
        finished.set()
        return True

    started = time.monotonic()
    result, _ = run(script_of(tmp_path, script={"pre-promote": slow}), CHANGE_PRE, timeout=0.3)
    assert result == "test_an_overrunning_callable_times_out.<locals>.slow timed out after 0.3 s"
    assert time.monotonic() - started < 2  # asyncio.run did not wait for the thread to end
    assert not finished.is_set()
    assert finished.wait(10)  # it ran on, and what it returned was ignored


def test_a_late_result_is_ignored_quietly(tmp_path: Path) -> None:
    returned = threading.Event()
    errors: list[dict[str, object]] = []

    def late(change: RoleChange) -> bool:
        try:
            time.sleep(0.5)
            return False
        finally:
            returned.set()

    script = script_of(tmp_path, script={"pre-promote": late})

    async def main() -> str | None:
        asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
        result = await run_role_hooks(script, "s02", CHANGE_PRE, 0.2, lambda _: None)
        await asyncio.sleep(1)  # the loop still runs when the callable returns
        return result

    assert asyncio.run(main()) == "test_a_late_result_is_ignored_quietly.<locals>.late timed out after 0.2 s"
    assert returned.is_set()
    assert errors == []


# Order


def test_the_scripts_handlers_run_before_the_servers_and_only_this_servers(tmp_path: Path) -> None:
    order = tmp_path / "order"

    def mark(label: str) -> Callable[[RoleChange], None]:
        def append(change: RoleChange) -> None:
            with order.open("a") as file:
                file.write(f"{label} {change.event}\n")

        append.__qualname__ = label
        return append

    script = script_of(
        tmp_path,
        script={"promote": [sh(f"echo script-1 $SYNCO_EVENT >> {order}"), mark("script-2")]},
        s02={
            "promote": [
                mark("s02-1"),
                synco.command("sh", "-c", f"echo s02-2 >> {order}"),
                sh(f"echo s02-3 >> {order}"),
            ]
        },
        s01={"promote": [mark("s01"), sh(f"echo s01 >> {order}")]},
    )
    assert [getattr(h, "__qualname__", "cmd") for h in role_handlers(script, "s02", Event.PROMOTE)] == [
        "cmd",
        "script-2",
        "s02-1",
        "cmd",
        "cmd",
    ]
    result, lines = run(script)
    assert result is None
    assert order.read_text().splitlines() == [
        "script-1 promote",
        "script-2 promote",
        "s02-1 promote",
        "s02-2",
        "s02-3",
    ]
    assert [line.split(" ", 2)[1] for line in lines] == [
        "running",
        "calling",
        "calling",
        "running",
        "running",
    ]


def test_the_first_failure_stops_the_rest(tmp_path: Path) -> None:
    order = tmp_path / "order"
    script = script_of(
        tmp_path,
        script={
            "demote": [
                synco.command(
                    ["sh", "-c", f"echo 1 >> {order}"],
                    ["sh", "-c", "exit 2"],
                    ["sh", "-c", f"echo 2 >> {order}"],
                )
            ]
        },
        s01={"demote": [sh(f"echo 3 >> {order}")]},
    )
    change = RoleChange(Event.DEMOTE, "s01", 9, "s01", "s02", "s02 won epoch 9", "master", "replica")
    result, _ = run(script, change)
    assert result == "`sh -c 'exit 2'` exited with status 2"
    assert order.read_text() == "1\n"


def test_only_the_events_handlers_run(tmp_path: Path) -> None:
    order = tmp_path / "order"
    handlers = {e.value: sh(f"echo {e.value} >> {order}") for e in ROLE_EVENTS}
    script = script_of(tmp_path, script=dict(handlers), s02={"prepare": sh(f"echo prepare >> {order}")})
    for change in (CHANGE_PRE, CHANGE):
        assert run(script, change)[0] is None
    assert order.read_text() == "pre-promote\npromote\n"


def test_no_handlers_no_output(tmp_path: Path) -> None:
    assert run(script_of(tmp_path)) == (None, [])


def test_role_handlers_are_for_role_events_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a role event"):
        role_handlers(script_of(tmp_path), "s02", Event.PREPARE)
    with pytest.raises(ValueError, match="not a role event"):
        RoleChange(Event.FINISH, "s02", 1, "", "", "", "replica", "replica")


# synco run never fires them


@pytest.mark.usefixtures("rsync")
@pytest.mark.parametrize("dry_run", [False, True])
def test_synco_run_never_fires_role_events(tmp_path: Path, dry_run: bool) -> None:
    fired: list[str] = []
    (tmp_path / "s01/srv").mkdir(parents=True)
    (tmp_path / "s01/srv/f").write_text("1")
    handlers: dict[str, Handler | list[Handler]] = {
        e.value: [fired.append, sh(f"touch {tmp_path}/{e.value}")] for e in ROLE_EVENTS
    }
    script = script_of(tmp_path, script=dict(handlers), s01=dict(handlers), s02=dict(handlers))
    report = synco.run(script, lock=False, dry_run=dry_run)
    assert report.ok, report.failures
    assert fired == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s01", "s02"]
    assert report.events == []
    assert (tmp_path / "s02/srv/f").exists() != dry_run
