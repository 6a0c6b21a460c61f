"""`synco run PLAN` and `synco run A B ...`: backup scripts in stages (adapter).

Each script runs as its own `synco run SCRIPT --json` child, in a session of its own, so that
its lock (synco.lock.ScriptLock), its handlers and its staged views are its own, exactly as
when run by hand. SIGTERM or SIGINT stops the plan: nothing new starts, every running
script gets SIGTERM (and cleans up: rsync stopped, staged views removed), is waited for
(SIGKILL after STOP_GRACE seconds), and the summary says what was stopped and what never
started.
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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from synco.cli.output import emit_json
from synco.core.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ConfigError, Terminated
from synco.core.problems import Problem
from synco.core.stages import (
    Plan,
    Result,
    Row,
    Stage,
    copied,
    is_plan,
    parse_plan,
    stage_result,
    table,
    why_skipped,
)
from synco.toml_lines import key_lines, line_of

STOP_GRACE = 30.0
COMMAND_LINE = "command-line"


def _data(path: Path) -> dict[str, Any] | None:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None


def is_plan_file(path: Path) -> bool:
    """A TOML file with a top-level `stages` array and no `servers`."""
    if path.suffix != ".toml":
        return False
    data = _data(path)
    return data is not None and is_plan(data)


def load_plan(path: Path) -> tuple[Plan | None, list[Problem]]:
    """The plan in `path` and every problem in it, its scripts' included."""
    from synco.cli.check import checked

    text = path.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    source = os.path.abspath(path)
    plan, problems = parse_plan(data, source)
    raw = data.get("stages")
    stages: list[Any] = raw if isinstance(raw, list) else []
    for index, table_ in enumerate(stages):
        scripts = table_.get("scripts") if isinstance(table_, dict) else None
        if not isinstance(scripts, list):
            continue
        for position, script in enumerate(scripts):
            if not isinstance(script, str) or not script:
                continue
            key = f"stages[{index}].scripts[{position}]"
            full = Path(os.path.dirname(source)) / script
            if not full.is_file():
                problems.append(Problem(key, f"{script}: no such backup script ({full})"))
                continue
            if is_plan_file(full):
                problems.append(Problem(key, f"{script} is a plan, not a backup script"))
                continue
            _, found = checked(full)
            if found:
                first = found[0]
                problems.append(
                    Problem(
                        key, f"{script}: {len(found)} problem(s), first: {first}; see synco check {script}"
                    )
                )
    lines = key_lines(text)
    located = [Problem(p.key, p.message, line_of(p.key, lines)) for p in problems]
    return (plan if not located else None), located


def command_line_plan(scripts: list[str]) -> Plan:
    """Scripts named on the command line: one after another, every one of them."""
    paths = tuple(os.path.abspath(s) for s in scripts)
    if len(set(paths)) != len(paths):
        raise ConfigError("a script is named twice: each runs once")
    for script in scripts:
        if not os.path.isfile(script):
            raise ConfigError(f"no such backup script: {script}")
    return Plan("", (Stage(COMMAND_LINE, paths),))


@dataclass
class _Child:
    script: str
    stage: str
    process: subprocess.Popen[str]
    started: float
    stdout: list[str] = field(default_factory=list)
    readers: list[threading.Thread] = field(default_factory=list)

    def report(self) -> dict[str, Any] | None:
        text = "".join(self.stdout).strip()
        try:
            value = json.loads(text) if text else None
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


def _label(script: str) -> str:
    return os.path.basename(script)


@dataclass
class StagedRun:
    plan: Plan
    extra: list[str]  # the options passed to every script's run (--dry-run, --as X)
    log: Callable[[str], None]
    rows: dict[str, Row] = field(default_factory=dict)
    outcomes: dict[str, Result] = field(default_factory=dict)
    _running: list[_Child] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def order(self) -> list[str]:
        lines = []
        for stage in self.plan.stages:
            when = "if they succeeded" if stage.when == "succeeded" else "always"
            after = f", after {' and '.join(stage.after)} ({when})" if stage.after else ""
            scripts = ", ".join(_label(s) for s in stage.scripts)
            lines.append(f"stage {stage.name}: {scripts} (at most {stage.parallel} at once{after})")
        return lines

    def run(self) -> None:
        for stage in self.plan.stages:
            reason = why_skipped(stage, self.outcomes)
            if reason is not None:
                self.log(f"stage {stage.name}: skipped: {reason}")
                for script in stage.scripts:
                    self.rows[script] = Row(_label(script), stage.name, Result.SKIPPED, None, "", reason)
                self.outcomes[stage.name] = Result.SKIPPED
                continue
            self.log(f"stage {stage.name}: {len(stage.scripts)} script(s), at most {stage.parallel} at once")
            pending = list(stage.scripts)
            while pending or self._running:
                while pending and len(self._running) < stage.parallel:
                    self._start(pending.pop(0), stage.name)
                self._reap()
                time.sleep(0.05)
            results = [self.rows[s].result for s in stage.scripts]
            self.outcomes[stage.name] = stage_result(results)
            self.log(f"stage {stage.name}: {self.outcomes[stage.name].value}")

    def _start(self, script: str, stage: str) -> None:
        argv = [sys.executable, "-m", "synco.cli.main", "run", "--json", *self.extra, script]
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        child = _Child(script, stage, process, time.monotonic())
        label = _label(script)

        def pump_stderr() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                self.log(f"[{label}] {line.rstrip()}")

        def pump_stdout() -> None:
            assert process.stdout is not None
            child.stdout.append(process.stdout.read())

        child.readers = [
            threading.Thread(target=pump_stderr, daemon=True),
            threading.Thread(target=pump_stdout, daemon=True),
        ]
        for reader in child.readers:
            reader.start()
        self._running.append(child)
        self.log(f"[{label}] started (stage {stage})")

    def _finish(self, child: _Child, result: Result | None = None) -> None:
        for reader in child.readers:
            reader.join(5)
        report = child.report()
        code = child.process.returncode
        if result is None:
            result = Result.OK if code == 0 else Result.FAILED
        reason = ""
        if result == Result.FAILED:
            failures = (report or {}).get("failures") or [(report or {}).get("error") or f"exit {code}"]
            reason = str(failures[0])
        duration = time.monotonic() - child.started
        self.rows[child.script] = Row(
            _label(child.script), child.stage, result, round(duration, 1), copied(report), reason
        )
        self.log(f"[{_label(child.script)}] {result.value} in {duration:.1f} s")

    def _reap(self) -> None:
        for child in list(self._running):
            if child.process.poll() is not None:
                self._running.remove(child)
                self._finish(child)

    def stop(self) -> None:
        """Stop every running script (SIGTERM to its session, SIGKILL after STOP_GRACE)."""
        self._reap()  # those that ended on their own keep their own result
        for child in self._running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for child in self._running:
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait()
            self._finish(child, Result.STOPPED)
        self._running.clear()
        for stage in self.plan.stages:
            for script in stage.scripts:
                if script not in self.rows:
                    self.rows[script] = Row(_label(script), stage.name, Result.NOT_STARTED, None, "")
            if stage.name not in self.outcomes:
                self.outcomes[stage.name] = stage_result([self.rows[s].result for s in stage.scripts])

    def ordered_rows(self) -> list[Row]:
        return [self.rows[s] for stage in self.plan.stages for s in stage.scripts if s in self.rows]


def command(scripts: list[str], arguments: argparse.Namespace) -> int:
    """Run a plan file, or several scripts one after another; the summary at the end."""
    if len(scripts) == 1:
        plan, problems = load_plan(Path(scripts[0]))
        if plan is None:
            raise ConfigError(
                f"{scripts[0]}: {len(problems)} problem(s) in the plan", tuple(map(str, problems))
            )
    else:
        if any(is_plan_file(Path(s)) for s in scripts):
            raise ConfigError("a plan runs on its own: name one plan, or several backup scripts")
        plan = command_line_plan(scripts)
    extra = (["--dry-run"] if arguments.dry_run else []) + (
        ["--as", arguments.as_server] if arguments.as_server else []
    )
    run = StagedRun(plan, extra, lambda line: print(line, file=sys.stderr, flush=True))
    for line in run.order():
        run.log(("would run " if arguments.dry_run else "") + line)
    stopped: int | None = None
    started = time.monotonic()
    try:
        run.run()
    except (Terminated, KeyboardInterrupt) as interruption:
        stopped = 143 if isinstance(interruption, Terminated) else 130
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        run.log("stopping: every running script is asked to stop; nothing new starts")
        run.stop()
    rows = run.ordered_rows()
    ok = stopped is None and all(r.result == Result.OK for r in rows)
    if arguments.json:
        emit_json(
            {
                "ok": ok,
                "plan": plan.source or None,
                "dry_run": bool(arguments.dry_run),
                "stopped": stopped is not None,
                "duration": round(time.monotonic() - started, 1),
                "stages": [
                    {"name": s.name, "result": run.outcomes.get(s.name, Result.NOT_STARTED).value}
                    for s in plan.stages
                ],
                "scripts": [{**asdict(r), "result": r.result.value} for r in rows],
            }
        )
    else:
        print("\n".join(table(rows)), flush=True)
    if stopped is not None:
        return stopped
    return EXIT_OK if ok else EXIT_FAILED


def check_command(path: Path, arguments: argparse.Namespace) -> int:
    """`synco check PLAN`: every problem of the plan and of its scripts."""
    plan, problems = load_plan(path)
    if arguments.json:
        emit_json({"ok": not problems, "plan": str(path), "problems": [p.to_json() for p in problems]})
    elif problems:
        print(f"{path}: {len(problems)} problem(s):")
        for problem in problems:
            print(f"  {problem}")
    else:
        assert plan is not None
        print(
            f"{path}: ok ({len(plan.stages)} stage(s), {sum(len(s.scripts) for s in plan.stages)} script(s))"
        )
    return EXIT_OK if not problems else EXIT_USAGE
