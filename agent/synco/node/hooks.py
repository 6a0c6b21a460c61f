"""Role-change hooks: what a server's agent runs when its role changes (adapter: runs
commands and Python callables on the agent's machine).

The handlers of a role event are the script's `[events]` (every agent runs them), then
the server's own `[servers.NAME.events]`. They run in that order, each command or callable
within the agent's `hook_timeout`; the first failure stops the rest and comes back as the
reason, which for pre-promote is a veto. A failing hook never raises out of here: the
agent decides what a failure means.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import shlex
import signal
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from synco.core.model import ROLE_EVENTS, CommandHandler, Event, Handler, HandlerFunction, Script, Server

KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL of a command's process group that overran
OUTPUT_GRACE = 1.0  # seconds output is still read after a command exits (a child it left may hold it)
LAST_LINES = 3  # of a failed command's output, in its reason
LONGEST_LINE = 4096  # characters of one output line logged


@dataclass(frozen=True)
class RoleChange:
    """A change of this server's role, as its role handlers see it (commands get it as
    environment variables, Python callables as this object)."""

    event: Event  # one of ROLE_EVENTS
    node: str  # this server
    epoch: int
    old_master: str  # "" if unknown
    new_master: str  # "" if unknown (e.g. a master that lost its lease)
    reason: str
    old_role: str  # "master" | "replica" | "backup" | "witness"
    new_role: str

    def __post_init__(self) -> None:
        if self.event not in ROLE_EVENTS:
            raise ValueError(f"{self.event!r} is not a role event")

    def environment(self) -> dict[str, str]:
        """The variables a command handler gets, beside the agent's own environment."""
        return {
            "SYNCO_EVENT": self.event.value,
            "SYNCO_NODE": self.node,
            "SYNCO_EPOCH": str(self.epoch),
            "SYNCO_OLD_MASTER": self.old_master,
            "SYNCO_NEW_MASTER": self.new_master,
            "SYNCO_REASON": self.reason,
            "SYNCO_ROLE": self.new_role,
            "SYNCO_OLD_ROLE": self.old_role,
        }


def role_handlers(script: Script, server: str, event: Event) -> tuple[Handler, ...]:
    """The handlers of role event `event` on `server`'s agent: the script's, then the server's.

    KeyError if `server` is not in the script; ValueError if `event` is no role event.
    """
    if event not in ROLE_EVENTS:
        raise ValueError(f"{event!r} is not a role event")
    return script.events.of(event) + script.server(server).events.of(event)


async def run_role_hooks(
    script: Script,
    server: str,
    change: RoleChange,
    timeout: float,
    log: Callable[[str], None],
) -> str | None:
    """Run every handler of `change.event` on `server`'s agent, in order; None if all
    succeeded (or there are none), otherwise why the first one failed (the rest are not run).

    A command fails by a non-zero exit, by outliving `timeout` seconds (its whole process
    group is then stopped: SIGTERM, SIGKILL after KILL_GRACE seconds, and reaped) or by not
    starting. It runs in the server's root (or / when there is none), its output going to
    `log` line by line. A callable fails by raising, by returning False, or by outliving
    `timeout`. A callable that overruns cannot be stopped: Python cannot kill a thread. It
    keeps running in a daemon thread (which does not hold up the agent's exit) and whatever
    it returns or raises after its time is up is ignored. If this coroutine is cancelled,
    a running command's process group is stopped and reaped before the cancellation goes on.
    """
    event = change.event.value
    handlers = role_handlers(script, server, change.event)
    if not handlers:
        return None
    cwd = _working_directory(script.server(server))
    env = {**os.environ, **change.environment()}
    for handler in handlers:
        if isinstance(handler, CommandHandler):
            for argv in handler.commands:
                failure = await _run_command(argv, env, cwd, timeout, event, log)
                if failure is not None:
                    return failure
        else:
            failure = await _call(handler, change, timeout, event, log)
            if failure is not None:
                return failure
    return None


def _working_directory(server: Server) -> str:
    root = server.root
    return root if root and os.path.isdir(root) else "/"


async def _run_command(
    argv: tuple[str, ...],
    env: dict[str, str],
    cwd: str,
    timeout: float,
    event: str,
    log: Callable[[str], None],
) -> str | None:
    shown = f"`{shlex.join(argv)}`"
    log(f"{event}: running {shown}")
    loop = asyncio.get_running_loop()
    output = _Lines(event, log)
    read_end, write_end = os.pipe()
    transport, _ = await loop.connect_read_pipe(lambda: output, os.fdopen(read_end, "rb", buffering=0))
    try:
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=write_end,
                stderr=write_end,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        except (OSError, ValueError) as error:  # ValueError: a NUL in an argument or a variable
            return f"{shown} could not start: {error}"
        finally:
            os.close(write_end)
        returncode: int | None
        try:
            returncode = await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            await _uncancellable(_stop(process))
            returncode = None
        except asyncio.CancelledError:
            await _uncancellable(_stop(process))
            raise
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(output.closed), OUTPUT_GRACE)
        if not output.closed.done():
            log(f"{event}: {shown} left processes holding its output, which is no longer read")
    finally:
        transport.close()
    if returncode is None:
        return f"{shown} timed out after {timeout:g} s"
    if returncode == 0:
        return None
    if returncode < 0:
        failure = f"{shown} was killed by {_signal_name(-returncode)}"
    else:
        failure = f"{shown} exited with status {returncode}"
    return failure + (": " + " / ".join(output.last) if output.last else "")


class _Lines(asyncio.Protocol):
    """A command's output: each line to `log` (after the event's name), the last few kept."""

    def __init__(self, event: str, log: Callable[[str], None]) -> None:
        self.event = event
        self.log = log
        self.last: deque[str] = deque(maxlen=LAST_LINES)
        self.partial = b""
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        *lines, self.partial = (self.partial + data).split(b"\n")
        for line in lines:
            self._line(line)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.partial:
            self._line(self.partial)
            self.partial = b""
        if not self.closed.done():
            self.closed.set_result(None)

    def _line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip()
        if len(line) > LONGEST_LINE:
            line = line[:LONGEST_LINE] + "…"
        self.log(f"{self.event}: | {line}")
        if line:
            self.last.append(line)


async def _stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM the command's process group, SIGKILL whatever of it is left after KILL_GRACE
    seconds (children it left behind too), and reap the command."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + KILL_GRACE
    _signal_group(process.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(process.wait(), KILL_GRACE)
    while _group_alive(process.pid) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    _signal_group(process.pid, signal.SIGKILL)
    await process.wait()


async def _uncancellable(coroutine: Coroutine[Any, Any, None]) -> None:
    """Finish `coroutine` even if cancelled meanwhile (a command must be gone before the
    agent goes on), and then pass the cancellation on."""
    task = asyncio.ensure_future(coroutine)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _signal_group(group: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signum)


def _group_alive(group: int) -> bool:
    """Whether a process of `group` still runs. Zombies do not count: an orphan a PID 1
    does not reap (in a container) would otherwise hold up every stop for KILL_GRACE."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        entries = []
    if not entries:  # no /proc: ask the kernel (zombies count then)
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as file:
                fields = file.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if len(fields) > 2 and fields[2] == str(group).encode() and fields[0] != b"Z":
            return True
    return False


async def _call(
    function: HandlerFunction,
    change: RoleChange,
    timeout: float,
    event: str,
    log: Callable[[str], None],
) -> str | None:
    """Call `function(change)` in a daemon thread of its own, within `timeout` seconds."""
    name = getattr(function, "__qualname__", None) or repr(function)
    log(f"{event}: calling {name}")
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[tuple[object, BaseException | None]] = loop.create_future()
    context = contextvars.copy_context()

    def settle(result: object, error: BaseException | None) -> None:
        if not outcome.done():  # not timed out (or cancelled) meanwhile
            outcome.set_result((result, error))

    def call() -> None:
        try:
            result: object = context.run(function, change)
        except BaseException as error:  # a handler's sys.exit() too: reported, not propagated
            settlement: tuple[object, BaseException | None] = (None, error)
        else:
            settlement = (result, None)
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(settle, *settlement)

    threading.Thread(target=call, name=f"synco {event} hook {name}", daemon=True).start()
    try:
        result, error = await asyncio.wait_for(outcome, timeout)
    except TimeoutError:
        return f"{name} timed out after {timeout:g} s"
    if isinstance(error, SystemExit):
        return f"{name} called sys.exit({error.code!r})"
    if error is not None:
        detail = str(error)
        return f"{name} raised {type(error).__name__}" + (f": {detail}" if detail else "")
    if result is False:
        return f"{name} returned False"
    return None
