"""`synco run PLAN` and `synco run A B ...`: backup scripts in stages (adapter).

Each script runs as its own `synco run SCRIPT --json` child process, in a session (and so
a process group) of its own, so that its lock (synco.lock.ScriptLock), its handlers and its
staged views are its own, exactly as when run by hand; its log goes to stderr line by line
as it comes, each line prefixed with `[the script's name]`, and its JSON report (stdout) is
what the summary is made of. SIGTERM or SIGINT stops the plan: nothing new starts, every
running script's process group gets SIGTERM (the script stops its rsync and removes its
staged views), and is waited for: SIGKILL after STOP_GRACE seconds, or at once on a second
signal. The summary then says what was stopped and what never started, and the exit
status is 143 (SIGTERM) or 130 (SIGINT).

The decisions (the order, what may run, the summary) are synco.core.stages'.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import synco
from synco.cli.output import emit_json
from synco.core.errors import EXIT_OK, EXIT_USAGE, ConfigError
from synco.core.problems import Problem
from synco.core.stages import (
    Plan,
    PlanScript,
    Result,
    Row,
    Stage,
    command_line_plan,
    command_line_problems,
    copied,
    exit_code,
    first_failure,
    is_plan,
    nested_problems,
    not_run,
    order,
    outcomes_of,
    parse_plan,
    script_result,
    summary,
    table,
    why_skipped,
)
from synco.toml_lines import key_lines, line_of

STOP_GRACE = 30.0  # seconds a stopped script has to clean up before SIGKILL
POLL = 0.05  # seconds between looks at the running scripts
READER_GRACE = 5.0  # seconds to wait for a finished script's last output


def _data(path: Path) -> dict[str, Any] | None:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None


def is_plan_file(path: Path) -> bool:
    """A TOML file with a top-level `stages` array and no `servers` (core.stages.is_plan)."""
    if path.suffix != ".toml":
        return False
    data = _data(path)
    return data is not None and is_plan(data)


def _script_problems(full: Path, label: str, key: str) -> list[Problem]:
    """What is wrong with one script of a plan: missing, not a file, a plan itself, or its
    own problems (every one, as `synco check SCRIPT` would name them)."""
    from synco.cli.check import checked  # imported late: the CLI imports this module

    if not full.exists():
        return [Problem(key, f"{label}: no such backup script ({full})")]
    if not full.is_file():
        return [Problem(key, f"{label}: not a file ({full})")]
    if is_plan_file(full):
        return [Problem(key, f"{label} is a plan, not a backup script: plans do not nest")]
    return nested_problems(key, label, checked(full)[1])


def load_plan(path: Path) -> tuple[Plan | None, list[Problem]]:
    """The plan in `path` and every problem in it, its scripts' included, each with the
    plan's line where it can be found."""
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except OSError as error:
        return None, [Problem("", f"cannot read {str(path)!r}: {error.strerror}")]
    except UnicodeDecodeError as error:
        return None, [Problem("", f"not UTF-8 text ({error.reason} at byte {error.start})")]
    except tomllib.TOMLDecodeError as error:
        return None, [Problem("", f"not valid TOML: {error}")]
    source = os.path.abspath(path)
    plan, problems = parse_plan(data, source)
    base = Path(os.path.dirname(source))
    same_file: dict[str, tuple[str, str]] = {}  # real path -> (path as joined, label)
    for key, label in _written_scripts(data):
        full = base / label
        problems += _script_problems(full, label, key)
        if full.is_file():
            real, joined = os.path.realpath(full), os.path.normpath(full)
            if real in same_file and joined != same_file[real][0]:
                problems.append(Problem(key, f"{label} is the same file as {same_file[real][1]!r}"))
            same_file.setdefault(real, (joined, label))
    lines = key_lines(text)
    located = [Problem(p.key, p.message, p.line or line_of(p.key, lines)) for p in problems]
    return (plan if not located else None), located


def _written_scripts(data: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Each script path written in the plan, with its key (stages[0].scripts[1])."""
    stages = data.get("stages")
    for index, stage in enumerate(stages if isinstance(stages, list) else []):
        scripts = stage.get("scripts") if isinstance(stage, dict) else None
        for position, script in enumerate(scripts if isinstance(scripts, list) else []):
            if isinstance(script, str) and script:
                yield f"stages[{index}].scripts[{position}]", script


def load_command_line(scripts: list[str]) -> Plan:
    """Scripts named on the command line, checked before any runs: ConfigError names every
    problem of every one of them."""
    if any(is_plan_file(Path(s)) for s in scripts):
        raise ConfigError("a plan runs on its own: name one plan, or several backup scripts")
    paths = [os.path.abspath(s) for s in scripts]
    problems = command_line_problems(scripts, paths)
    for script, path in zip(scripts, paths, strict=True):
        problems += _script_problems(Path(path), script, "")
    if problems:
        raise ConfigError(
            f"{len(problems)} problem(s) in the scripts named: nothing was run", tuple(map(str, problems))
        )
    return command_line_plan(scripts, paths)


def child_command(path: str, extra: list[str]) -> list[str]:
    """How one script of a plan is run: this same synco, `run --json`, the plan's options."""
    return [sys.executable, "-m", "synco.cli.main", "run", "--json", *extra, path]


def child_environment() -> dict[str, str]:
    """This process's environment, with this synco first on the module path, so that the
    child runs the same code whatever its working directory."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(synco.__file__)))
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, path) if p)}


@dataclass
class _Child:
    script: PlanScript
    stage: str
    process: subprocess.Popen[str]
    started: float
    stdout: list[str] = field(default_factory=list)
    readers: list[threading.Thread] = field(default_factory=list)
    stop_sent: float | None = None  # when SIGTERM was sent
    killed: bool = False

    def report(self) -> dict[str, Any] | None:
        text = "".join(self.stdout).strip()
        try:
            value = json.loads(text) if text else None
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


def _signal_group(child: _Child, signum: int) -> None:
    """`signum` to every process of the child's group (its session: the child's pid)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.process.pid, signum)


class StagedRun:
    """One run of a plan: the scripts as child processes, the stages in order, each bound
    to its `parallel`. `request_stop` (from a signal handler) only records the signal; the
    loop acts on it."""

    def __init__(
        self,
        plan: Plan,
        extra: list[str],
        log: Callable[[str], None],
        *,
        grace: float = STOP_GRACE,
    ) -> None:
        self.plan = plan
        self.extra = extra  # the options passed to every script's run (--dry-run, --as X)
        self.log = log
        self.grace = grace
        self.rows: dict[str, Row] = {}
        self.stopped_by: int | None = None  # the first signal that stopped the plan
        self._signals = 0
        self._running: list[_Child] = []

    def request_stop(self, signum: int) -> None:
        """Stop the plan (the first call) or kill what still runs (a second one); safe in a
        signal handler: it changes two fields and nothing else."""
        if self.stopped_by is None:
            self.stopped_by = signum
        self._signals += 1

    def run(self) -> list[Row]:
        """Run every stage in order (or until stopped); the summary rows, in plan order."""
        for stage in self.plan.stages:
            if self.stopped_by is not None:
                break
            reason = why_skipped(stage, outcomes_of(self.plan, self.rows))
            if reason is not None:
                self.log(f"stage {stage.name}: skipped: {reason}")
                for script in stage.scripts:
                    self.rows[script.path] = Row(
                        script.label, script.path, stage.name, Result.SKIPPED, reason=reason
                    )
                continue
            self._run_stage(stage)
        if self.stopped_by is not None:
            self._stop_running()
        rows = {**self.rows, **{row.path: row for row in not_run(self.plan, self.rows)}}
        return [rows[script.path] for _, script in self.plan.scripts]

    def _run_stage(self, stage: Stage) -> None:
        bound = "one at a time" if stage.parallel == 1 else f"at most {stage.parallel} at once"
        self.log(f"stage {stage.name}: {len(stage.scripts)} script(s), {bound}")
        pending = deque(stage.scripts)
        while (pending or self._running) and self.stopped_by is None:
            while pending and len(self._running) < stage.parallel and self.stopped_by is None:
                self._start(pending.popleft(), stage.name)
            self._reap()
            time.sleep(POLL)
        if self.stopped_by is None:
            self.log(f"stage {stage.name}: {outcomes_of(self.plan, self.rows)[stage.name].value}")

    def _start(self, script: PlanScript, stage: str) -> None:
        label = script.label
        process = subprocess.Popen(
            child_command(script.path, self.extra),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env=child_environment(),
            start_new_session=True,  # its own process group: signalled as one, apart from ours
        )
        child = _Child(script, stage, process, time.monotonic())
        self._running.append(child)

        def pump_stderr() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                self.log(f"[{label}] {line.rstrip()}")

        def pump_stdout() -> None:
            assert process.stdout is not None
            child.stdout.append(process.stdout.read())

        child.readers = [
            threading.Thread(target=pump_stderr, daemon=True, name=f"stderr {label}"),
            threading.Thread(target=pump_stdout, daemon=True, name=f"stdout {label}"),
        ]
        for reader in child.readers:
            reader.start()
        self.log(f"[{label}] started (stage {stage}, pid {process.pid})")

    def _reap(self) -> None:
        for child in list(self._running):
            if child.process.poll() is not None:
                self._finish(child)
                self._running.remove(child)

    def _finish(self, child: _Child) -> None:
        if child.stop_sent is not None:
            _signal_group(child, signal.SIGKILL)  # whatever of a stopped script's group outlived it
        for reader in child.readers:
            reader.join(READER_GRACE)  # a handler's leftover process may hold the pipes open
        code = child.process.returncode
        report = child.report()
        result = script_result(code, child.stop_sent is not None)
        if result == Result.FAILED:
            reason = first_failure(report, code)
        elif result == Result.STOPPED:
            name = signal.Signals(self.stopped_by or signal.SIGTERM).name
            reason = (
                f"did not stop within {self.grace:g} s of SIGTERM: killed"
                if child.killed
                else f"stopped by {name} to the plan"
            )
        else:
            reason = ""
        duration = round(time.monotonic() - child.started, 1)
        self.rows[child.script.path] = Row(
            child.script.label, child.script.path, child.stage, result, duration, copied(report), code, reason
        )
        self.log(f"[{child.script.label}] {result.value} in {duration:.1f} s (exit {code})")

    def _stop_running(self) -> None:
        """SIGTERM to every running script's group; wait for each to clean up, SIGKILL
        after the grace period or on a second signal."""
        name = signal.Signals(self.stopped_by or signal.SIGTERM).name
        self._reap()  # those that ended on their own keep their own result
        self.log(f"{name}: stopping {len(self._running)} running script(s); nothing new starts")
        now = time.monotonic()
        for child in self._running:
            child.stop_sent = now
            _signal_group(child, signal.SIGTERM)
        deadline = now + self.grace
        while self._running:
            if self._signals > 1 or time.monotonic() >= deadline:
                for child in self._running:
                    if not child.killed:
                        child.killed = True
                        self.log(f"[{child.script.label}] still running: killed (SIGKILL)")
                        _signal_group(child, signal.SIGKILL)
            self._reap()
            time.sleep(POLL)


def _log_to_stderr() -> Callable[[str], None]:
    lock = threading.Lock()

    def log(line: str) -> None:
        with lock:
            print(line, file=sys.stderr, flush=True)

    return log


def command(scripts: list[str], arguments: argparse.Namespace) -> int:
    """Run a plan file, or several scripts one after another; the summary at the end."""
    if len(scripts) == 1:
        plan, problems = load_plan(Path(scripts[0]))
        if plan is None:
            raise ConfigError(
                f"{scripts[0]}: {len(problems)} problem(s) in the plan: nothing was run",
                tuple(map(str, problems)),
            )
    else:
        plan = load_command_line(scripts)
    extra = (
        (["--dry-run"] if arguments.dry_run else [])
        + (["--as", arguments.as_server] if arguments.as_server else [])
        + (["--if-master"] if getattr(arguments, "if_master", False) else [])
    )
    log = _log_to_stderr()
    run = StagedRun(plan, extra, log)
    log(
        f"{'dry run of ' if arguments.dry_run else ''}"
        f"{plan.source or 'the scripts named'}: {len(plan.stages)} stage(s), "
        f"{len(plan.scripts)} script(s), in this order:"
    )
    for line in order(plan):
        log(f"  {line}")

    def on_signal(signum: int, frame: FrameType | None) -> None:
        run.request_stop(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    started = time.monotonic()
    try:
        rows = run.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    code = exit_code(rows, run.stopped_by)
    if arguments.json:
        stopped = signal.Signals(run.stopped_by).name if run.stopped_by is not None else None
        emit_json(
            summary(
                plan,
                rows,
                dry_run=bool(arguments.dry_run),
                duration=time.monotonic() - started,
                stopped_by=stopped,
                code=code,
            )
        )
    else:
        print("\n".join(table(rows)), flush=True)
    return code


def check_command(path: Path, arguments: argparse.Namespace) -> int:
    """`synco check PLAN`: every problem of the plan and of its scripts; the order if none."""
    plan, problems = load_plan(path)
    if arguments.json:
        document: dict[str, object] = {
            "ok": not problems,
            "plan": str(path),
            "problems": [p.to_json() for p in problems],
        }
        if plan is not None:
            document["order"] = order(plan)
        emit_json(document)
    elif problems:
        print(f"{path}: {len(problems)} problem(s):")
        for problem in problems:
            print(f"  {problem}")
    else:
        assert plan is not None
        print(f"{path}: ok ({len(plan.stages)} stage(s), {len(plan.scripts)} script(s))")
        for line in order(plan):
            print(f"  {line}")
    return EXIT_OK if not problems else EXIT_USAGE
