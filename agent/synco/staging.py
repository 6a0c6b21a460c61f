"""Make the frozen views a run's copies read from, and remove every one of them (adapter).

The commands come from `synco.core.staging`; they run on the master, here or through ssh.
A `Stager` is a context manager: whatever happens inside it (a failed copy, SIGTERM or
SIGINT unwinding as an exception), leaving it undoes, in reverse, every creation step that
succeeded, with SIGTERM and SIGINT held off meanwhile so that a second signal does not
leave a view half removed. A SIGKILL leaves the view behind: the next run of the same
script finds it by name (`clean`) and removes it, unless the process named in it is still
running (a run of the same script that took another lock, or this process's own runs).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import posixpath
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType

import psutil

from synco import shell
from synco.core import commands
from synco.core import staging as rules
from synco.core.errors import OperationError
from synco.core.model import Directory, Script, Server, Staging, StagingProvider
from synco.core.paths import normalize_relative

Runner = Callable[[Sequence[str], Mapping[str, str]], shell.Completed]

_COUNT = itertools.count(1)  # one name per view in this process, across every run in it
_IN_USE: set[str] = set()  # the views this process made and has not removed yet
_IN_USE_LOCK = threading.Lock()


def _in_use(name: str, used: bool) -> None:
    with _IN_USE_LOCK:
        if used:
            _IN_USE.add(name)
        else:
            _IN_USE.discard(name)


def still_running(name: str) -> int | None:
    """The process (of this machine, which made the view: the name says so) that may still
    read view `name`, or None if it is gone (or its pid now belongs to a later process)."""
    made = rules.made_by(name)
    if made is None:
        return None
    when, pid = made
    if pid == os.getpid():
        with _IN_USE_LOCK:
            return pid if name in _IN_USE else None
    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:
        return None
    return pid if started <= when.timestamp() + 1 else None


def runner_on(server: Server, local: bool) -> Runner:
    """Run a command on `server`: here, or through ssh with its settings."""

    def run(argv: Sequence[str], env: Mapping[str, str]) -> shell.Completed:
        if local:
            return shell.run(argv, env=env)
        return shell.run(commands.remote_argv(server, argv, env))

    return run


def identity_of(script: Script, runner: str | None) -> str:
    """Which script, run by which server (or machine), a view belongs to."""
    source = os.path.realpath(script.source) if script.source else repr(script.server_names)
    return rules.stage_id(source, runner or socket.gethostname())


@dataclass(frozen=True)
class View:
    """A view made for this run: `path` on the master stands for `plan.origin` at `at`."""

    plan: rules.StagePlan
    path: str
    at: datetime

    def record(self) -> dict[str, str]:
        """What a backup snapshot's metadata says of it."""
        return {
            "provider": self.plan.staging.provider.value,
            "origin": self.plan.origin,
            "name": self.plan.name,
            "at": self.at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


@dataclass
class Stager:
    run: Runner
    identity: str
    server: str  # the master's name, for messages
    log: Callable[[str], None]
    dry_run: bool = False
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    views: list[View] = field(default_factory=list)
    _undo: list[tuple[tuple[str, ...], dict[str, str], str]] = field(default_factory=list)
    _surveyed: set[tuple[str, ...]] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)  # views that could not be removed

    # -- what an earlier run left behind -------------------------------------------------------

    def clean(self, staging: Staging, origin: str) -> None:
        """Remove the views a crashed run of this script left (found by name); report,
        and leave, a thing at such a name that Synco did not make."""
        argv = rules.survey_argv(staging, origin, self.identity)
        if argv is None or argv in self._surveyed:
            return
        self._surveyed.add(argv)
        listed = self.run(argv, {})
        if listed.returncode != 0:
            what = "the survey" if argv[0] == "sh" else argv[0]
            raise OperationError(
                f"staging on {self.server}: cannot list earlier views ({what} exit "
                f"{listed.returncode}): {listed.last_lines(3)}"
            )
        for leftover in rules.found(staging, self.identity, listed.stdout):
            if not leftover.ours:
                self.log(
                    f"warning: staging on {self.server}: {leftover.name} is at one of Synco's names "
                    f"but is {leftover.why}: not removing it"
                )
                continue
            running = still_running(leftover.name)
            if running is not None:
                self.log(
                    f"staging on {self.server}: leaving {leftover.name}: the run that made it "
                    f"(process {running}) is still going"
                )
                continue
            if self.dry_run:
                self.log(f"would remove {leftover.name} on {self.server}, left by an earlier run")
                continue
            env = rules.environment(staging, leftover.name, origin)
            for step in rules.removal(staging, origin, leftover.name):
                done = self.run(step.argv, env)
                if done.returncode != 0 and not step.tolerated:
                    raise OperationError(
                        f"staging on {self.server}: cannot remove {leftover.name}, left by an "
                        f"earlier run: {step.describe()}: exit {done.returncode}: {done.last_lines(3)}"
                    )
            self.log(f"removed {leftover.name} on {self.server}, left by an earlier run")

    def nested(self, staging: Staging, origin: str, root: str) -> list[rules.Nested]:
        """The file systems nested below `origin` on the master (see synco.core.staging)."""
        argv = rules.nested_probe_argv(staging, origin, root)
        if argv is None:
            return []
        done = self.run(argv, {})
        if done.returncode != 0:
            raise OperationError(
                f"staging on {self.server}: cannot list the file systems below {origin} "
                f"(exit {done.returncode}): {done.last_lines(3)}"
            )
        return rules.nested_in(done.stdout)

    # -- this run's views ----------------------------------------------------------------------

    def make(self, staging: Staging, origin: str) -> View | None:
        """Make a view of `origin` (None in a dry run: nothing is created)."""
        name = rules.stage_name(self.identity, self.clock(), os.getpid(), next(_COUNT))
        plan = rules.plan(staging, origin, name)
        if self.dry_run:
            self.log(f"would stage {plan.describe()} on {self.server}")
            return None
        _in_use(name, True)
        try:
            return self._make(staging, plan)
        except BaseException:
            _in_use(name, False)  # what was made of it is undone, now or by close()
            raise

    def _make(self, staging: Staging, plan: rules.StagePlan) -> View:
        env = dict(plan.env)
        at = self.clock()
        output = ""
        mark = len(self._undo)
        # A signal between a step's success and its undo being noted would leave the view
        # behind: SIGTERM and SIGINT wait for each step (not for an operator's own commands,
        # which may take long; a view they leave is found by name on the next run).
        hold = _signals_held if staging.provider != StagingProvider.COMMAND else contextlib.nullcontext
        for step in plan.create:
            with hold():
                done = self.run(step.argv, env)
                if done.returncode == 0 and step.undo:
                    self._undo.append((step.undo, env, plan.name))
            if done.returncode != 0:
                self._unwind(mark)
                raise OperationError(
                    f"staging {plan.describe()} on {self.server} failed: {step.describe()}: "
                    f"exit {done.returncode}: {done.last_lines(3)}"
                )
            output = done.stdout
        path = plan.view or self._view_path(staging, env, output, mark, plan)
        view = View(plan, path, at)
        self.views.append(view)
        self.log(f"staged {plan.describe()} on {self.server}: reading {path}")
        return view

    def _view_path(
        self, staging: Staging, env: dict[str, str], output: str, mark: int, plan: rules.StagePlan
    ) -> str:
        """The `command` provider's view: what `path` prints, or create's last line."""
        if staging.path:
            done = self.run(staging.path, env)
            if done.returncode != 0:
                self._unwind(mark)
                raise OperationError(
                    f"staging {plan.origin} on {self.server}: the path command failed: "
                    f"{' '.join(staging.path)}: exit {done.returncode}: {done.last_lines(3)}"
                )
            output = done.stdout
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        path = lines[-1] if lines else ""
        if not path.startswith("/"):
            self._unwind(mark)
            said = f"printed {path!r}" if path else "printed nothing"
            raise OperationError(
                f"staging {plan.origin} on {self.server}: the {'path' if staging.path else 'create'} "
                f"command {said}, not the view's absolute path"
            )
        return path

    def _unwind(self, mark: int) -> None:
        while len(self._undo) > mark:
            argv, env, name = self._undo.pop()
            done = self.run(argv, env)
            if not any(undo_name == name for _, _, undo_name in self._undo):
                _in_use(name, False)  # its last undo ran: no run of this process reads it
            if done.returncode != 0:
                message = (
                    f"staging on {self.server}: {name} was not removed: {' '.join(argv)}: "
                    f"exit {done.returncode}: {done.last_lines(3)}"
                )
                self.failures.append(message)
                self.log(f"warning: {message}")

    def close(self) -> None:
        """Undo every view's creation, in reverse order."""
        with _signals_held():
            names = sorted({name for _, _, name in self._undo})
            self._unwind(0)
            for name in names:
                if not any(name in failure for failure in self.failures):
                    self.log(f"removed {name} on {self.server}")

    def __enter__(self) -> Stager:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGTERM and SIGINT wait until the views are removed (main thread only: Python runs
    signal handlers there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGTERM, signal.SIGINT}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def stage(
    stager: Stager, master: Server, directories: Sequence[Directory], arguments: Sequence[str] = ()
) -> dict[str, rules.InView]:
    """Make the views the copies of `directories` from `master` read from (one per staging
    and origin, shared by every target): where each staged directory is in its view, by its
    normalized relative path. Leftovers of a crashed run are removed first; a file system
    nested in a copied path, which a view would show empty, refuses the run before any view
    is made, unless the copy leaves it out (`arguments`: the method's rsync arguments)."""
    needed: list[tuple[Directory, Staging, str]] = []
    for directory in directories:
        staging = rules.staging_of(master, directory)
        if staging is not None:
            needed.append((directory, staging, rules.origin_of(staging, master, directory)))
    for _, staging, origin in needed:
        stager.clean(staging, origin)
    refusals: list[str] = []
    probed: dict[tuple[Staging, str], list[rules.Nested]] = {}
    for directory, staging, origin in needed:
        if (staging, origin) not in probed:
            probed[(staging, origin)] = stager.nested(staging, origin, master.root)
        live = rules.live_path(master, directory)
        for item in rules.uncovered(
            probed[(staging, origin)], staging, origin, live, [*arguments, *directory.arguments]
        ):
            refusals.append(
                f"{posixpath.join(live, item.path)} ({item.kind}) in directory {directory.path!r}"
            )
    if refusals:
        raise OperationError(
            f"staging on {stager.server}: a snapshot holds one file system, and these below a copied "
            f"path would be copied empty (and emptied on every target): {'; '.join(refusals)}. "
            'Leave each out of its directory (arguments = ["--exclude=/PATH/"]) and copy it as a '
            "directory of its own with its own staging, or pass --one-file-system"
        )
    views: dict[tuple[Staging, str], View | None] = {}
    sources: dict[str, rules.InView] = {}
    for directory, staging, origin in needed:
        if (staging, origin) not in views:
            views[(staging, origin)] = stager.make(staging, origin)
        view = views[(staging, origin)]
        if view is not None:
            live = rules.live_path(master, directory)
            sources[normalize_relative(directory.path)] = rules.in_view(origin, view.path, live)
    return sources
