"""Plans: stages of backup scripts, their checks, their order and their summary (pure).

A plan file (TOML) is told from a backup script by its top-level `stages` array (a
backup script has `servers`). Stages run in the order they are written; the scripts of a
stage run side by side, at most `parallel` at once (the stage's own `parallel`, else the
plan's, else 1). A stage with `after = [...]` depends on those earlier stages: with
`when = "succeeded"` (the default) it runs only if every one of them succeeded, with
`when = "always"` once they are done whatever happened; a stage without `after` runs
whatever happened before it. A skipped stage counts as not succeeded, so the stages that
need it are skipped in turn.

Nothing here reads a file or a clock: the runner (synco.staged_run) passes in what it saw.
"""

from __future__ import annotations

import difflib
import posixpath
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from synco.core.problems import Problem

PLAN_KEYS = ("description", "parallel", "stages")
STAGE_KEYS = ("name", "scripts", "after", "when", "parallel")
WHEN = ("succeeded", "always")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit"
COMMAND_LINE = "command-line"  # the one stage of scripts named on the command line


class Result(StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"  # an earlier stage it depends on did not succeed
    STOPPED = "stopped"  # running when the plan was stopped (SIGTERM, SIGINT)
    NOT_STARTED = "not started"  # the plan was stopped before its turn


@dataclass(frozen=True)
class PlanScript:
    """One backup script of a stage: its path (resolved against the plan file's directory)
    and its name as written, which the log and the summary show."""

    path: str
    label: str


@dataclass(frozen=True)
class Stage:
    name: str
    scripts: tuple[PlanScript, ...]
    after: tuple[str, ...] = ()
    when: str = "succeeded"
    parallel: int = 1


@dataclass(frozen=True)
class Plan:
    source: str  # the plan file, "" for scripts named on the command line
    stages: tuple[Stage, ...]

    @property
    def scripts(self) -> tuple[tuple[Stage, PlanScript], ...]:
        """Every script with its stage, in the order written."""
        return tuple((stage, script) for stage in self.stages for script in stage.scripts)


def is_plan(data: Mapping[str, Any]) -> bool:
    """A plan has a top-level `stages` array; a backup script has `servers` (a file with
    both is a backup script, whose check names `stages` as an unknown key)."""
    return isinstance(data.get("stages"), list) and "servers" not in data


def command_line_plan(scripts: Sequence[str], paths: Sequence[str]) -> Plan:
    """Scripts named on the command line (`paths` are their absolute paths): one stage,
    run one after another, every one of them whatever happened to the one before."""
    entries = tuple(PlanScript(path, label) for label, path in zip(scripts, paths, strict=True))
    return Plan("", (Stage(COMMAND_LINE, entries, parallel=1),))


def command_line_problems(scripts: Sequence[str], paths: Sequence[str]) -> list[Problem]:
    """A script named twice on the command line (each runs once, so which one was meant?)."""
    seen: dict[str, str] = {}
    problems = []
    for label, path in zip(scripts, paths, strict=True):
        if path in seen:
            problems.append(Problem("", f"{label}: named twice (as {seen[path]!r}): each script runs once"))
        seen.setdefault(path, label)
    return problems


def parse_plan(data: Mapping[str, Any], source: str) -> tuple[Plan | None, list[Problem]]:
    """The plan in parsed TOML `data` of the file `source`, and every problem in it. The
    scripts' own files are looked at by the caller (synco.staged_run.load_plan)."""
    problems: list[Problem] = []
    base = posixpath.dirname(source) or "."
    for key in data:
        if key not in PLAN_KEYS:
            problems.append(_unknown(key, PLAN_KEYS))
    if "description" in data and not isinstance(data["description"], str):
        problems.append(Problem("description", "must be a string"))
    default = _parallel(data.get("parallel", 1), "parallel", problems)
    raw = data.get("stages")
    if not isinstance(raw, list) or not raw:
        problems.append(Problem("stages", "must be a non-empty array of tables ([[stages]])"))
        return None, problems
    stages: list[Stage] = []
    seen_names: dict[str, int] = {}
    seen_scripts: dict[str, str] = {}
    for index, table in enumerate(raw):
        key = f"stages[{index}]"
        if not isinstance(table, dict):
            problems.append(Problem(key, "must be a table ([[stages]])"))
            continue
        for name in table:
            if name not in STAGE_KEYS:
                problems.append(_unknown(f"{key}.{name}", STAGE_KEYS))
        name = table.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            problems.append(
                Problem(f"{key}.name", f"is required: {NAME_RULE}")
                if name is None
                else Problem(f"{key}.name", f"{name!r} is not a stage name: {NAME_RULE}")
            )
            name = f"#{index}"
        elif name in seen_names:
            problems.append(
                Problem(f"{key}.name", f"{name!r} is already the name of stages[{seen_names[name]}]")
            )
        seen_names.setdefault(name, index)
        scripts = _strings(table.get("scripts"), f"{key}.scripts", problems, required=True)
        entries = []
        for position, script in enumerate(scripts):
            path = posixpath.normpath(posixpath.join(base, script))
            if path in seen_scripts:
                problems.append(
                    Problem(f"{key}.scripts[{position}]", f"{script!r} is already in {seen_scripts[path]}")
                )
            seen_scripts.setdefault(path, f"stage {name!r}")
            entries.append(PlanScript(path, script))
        after = _strings(table.get("after"), f"{key}.after", problems)
        when = table.get("when", "succeeded")
        if when not in WHEN:
            problems.append(Problem(f"{key}.when", f"{when!r} is not one of: {', '.join(WHEN)}"))
            when = "succeeded"
        if "when" in table and not after:
            problems.append(Problem(f"{key}.when", "says when to run after the stages in `after`: add them"))
        parallel = _parallel(table.get("parallel", default), f"{key}.parallel", problems)
        stages.append(Stage(name, tuple(entries), tuple(after), str(when), parallel))
    problems += _order_problems(stages)
    return (Plan(source, tuple(stages)) if not problems else None), problems


def nested_problems(key: str, label: str, found: Iterable[Problem]) -> list[Problem]:
    """The problems of the script `label` of a plan, each said under the plan's `key` (the
    line, if any, is then the plan's; the script's own line stays in the message)."""
    return [Problem(key, f"{label}: {problem}") for problem in found]


def _unknown(key: str, allowed: tuple[str, ...]) -> Problem:
    name = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(allowed)}"
    return Problem(key, f"unknown key{hint}")


def _parallel(value: object, key: str, problems: list[Problem]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problems.append(Problem(key, f"must be a whole number of scripts at once, 1 or more, not {value!r}"))
        return 1
    return value


def _strings(value: object, key: str, problems: list[Problem], required: bool = False) -> list[str]:
    if value is None:
        if required:
            problems.append(Problem(key, "is required: the backup scripts of this stage"))
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        problems.append(Problem(key, "must be an array of non-empty strings"))
        return []
    if required and not value:
        problems.append(Problem(key, "is empty: a stage runs at least one script"))
    return list(value)


def _order_problems(stages: list[Stage]) -> Iterator[Problem]:
    """Each `after` must name an earlier stage: an unknown name, the stage itself, a repeat,
    a cycle and a later stage are each said so."""
    position = {stage.name: index for index, stage in reversed(list(enumerate(stages)))}
    for index, stage in enumerate(stages):
        for number, name in enumerate(stage.after):
            key = f"stages[{index}].after[{number}]"
            if name not in position:
                close = difflib.get_close_matches(name, list(position), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                yield Problem(key, f"no stage is named {name!r}{hint}")
            elif name == stage.name:
                yield Problem(key, f"stage {name!r} cannot wait for itself")
            elif name in stage.after[:number]:
                yield Problem(key, f"{name!r} is already named in `after`")
            elif position[name] > index:
                cycle = _cycle(stages, stage.name, name)
                if cycle:
                    yield Problem(key, f"a cycle: {' -> '.join(cycle)}")
                else:
                    yield Problem(
                        key, f"{name!r} comes later: stages run in order, move it before {stage.name!r}"
                    )


def _cycle(stages: list[Stage], start: str, first: str) -> list[str] | None:
    """The path start -> first -> ... -> start through `after`, if there is one."""
    after = {stage.name: stage.after for stage in stages}
    path = [start, first]
    seen = {first}

    def walk(node: str) -> bool:
        for dependency in after.get(node, ()):
            if dependency == start:
                path.append(start)
                return True
            if dependency not in seen:
                seen.add(dependency)
                path.append(dependency)
                if walk(dependency):
                    return True
                path.pop()
        return False

    return path if walk(first) else None


def order(plan: Plan) -> list[str]:
    """The order a plan runs in, one line per stage (what `--dry-run` and `check` show)."""
    lines = []
    for number, stage in enumerate(plan.stages, start=1):
        if stage.after:
            when = "if they succeeded" if stage.when == "succeeded" else "whatever happened"
            after = f"; after {', '.join(stage.after)}, {when}"
        else:
            after = ""
        scripts = ", ".join(s.label for s in stage.scripts)
        bound = "one at a time" if stage.parallel == 1 else f"at most {stage.parallel} at once"
        lines.append(f"stage {number} {stage.name}: {scripts} ({bound}{after})")
    return lines


def why_skipped(stage: Stage, outcomes: Mapping[str, Result]) -> str | None:
    """Why `stage` does not run given the earlier stages' outcomes, or None: it runs."""
    if stage.when == "always":
        return None
    failed = [name for name in stage.after if outcomes.get(name) != Result.OK]
    if not failed:
        return None
    what = ", ".join(f"{name} {outcomes.get(name, Result.NOT_STARTED).value}" for name in failed)
    return f"needs {' and '.join(stage.after)} to succeed ({what})"


def stage_result(results: Iterable[Result]) -> Result:
    """A stage's outcome from its scripts': the worst of them."""
    found = set(results)
    for worst in (Result.STOPPED, Result.FAILED, Result.SKIPPED, Result.NOT_STARTED):
        if worst in found:
            return worst
    return Result.OK


def script_result(exit_code: int | None, stop_sent: bool) -> Result:
    """A script's result from how its run ended: one that exits 0 succeeded, even if it
    was asked to stop just as it finished; any other end after a stop is `stopped`."""
    if exit_code == 0:
        return Result.OK
    return Result.STOPPED if stop_sent else Result.FAILED


def first_failure(report: Mapping[str, Any] | None, exit_code: int | None) -> str:
    """Why a script failed, from its own report: its first failure, else its error."""
    report = report or {}
    failures = report.get("failures")
    if isinstance(failures, list) and failures:
        return str(failures[0])
    if report.get("error"):
        return str(report["error"])
    if exit_code is not None and exit_code < 0:
        return f"killed by signal {-exit_code}"
    return f"exit {exit_code} without a report"


@dataclass(frozen=True)
class Copied:
    """What one script copied, from the copies in its `synco run --json` report."""

    copies: int = 0
    copies_ok: int = 0  # ok or warning
    files: int = 0  # regular files transferred (rsync --stats)
    bytes: int = 0  # their total size
    dry_run: bool = False

    def __str__(self) -> str:
        text = f"{self.copies_ok}/{self.copies} copies"
        if self.dry_run:
            return text + " (dry run)"
        return f"{text}, {self.files} files, {human(self.bytes)}"


def copied(report: Mapping[str, Any] | None) -> Copied | None:
    """What a `synco run --json` report says was copied; None without a report."""
    if not report or not isinstance(report.get("copies"), list):
        return None
    copies = [c for c in report["copies"] if isinstance(c, dict)]
    stats: list[dict[str, Any]] = [c["stats"] if isinstance(c.get("stats"), dict) else {} for c in copies]
    return Copied(
        copies=len(copies),
        copies_ok=sum(1 for c in copies if c.get("status") in ("ok", "warning")),
        files=sum(_count(s.get("files")) for s in stats),
        bytes=sum(_count(s.get("transferred_size")) for s in stats),
        dry_run=bool(report.get("dry_run")),
    )


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


@dataclass(frozen=True)
class Row:
    """One script's line of the summary."""

    script: str  # as written in the plan or on the command line
    path: str
    stage: str
    result: Result
    duration: float | None = None  # seconds; None if it did not run
    copied: Copied | None = None
    exit_code: int | None = None
    reason: str = ""  # why it did not succeed

    def to_json(self) -> dict[str, object]:
        what = self.copied
        return {
            "script": self.script,
            "path": self.path,
            "stage": self.stage,
            "result": self.result.value,
            "exit_code": self.exit_code,
            "duration": self.duration,
            "copied": "" if what is None else str(what),
            "copies": None if what is None else what.copies,
            "copies_ok": None if what is None else what.copies_ok,
            "files": None if what is None or what.dry_run else what.files,
            "bytes": None if what is None or what.dry_run else what.bytes,
            "reason": self.reason,
        }


def not_run(plan: Plan, rows: Mapping[str, Row]) -> list[Row]:
    """The rows of the scripts a stopped plan never started."""
    return [
        Row(script.label, script.path, stage.name, Result.NOT_STARTED)
        for stage, script in plan.scripts
        if script.path not in rows
    ]


def outcomes_of(plan: Plan, rows: Mapping[str, Row]) -> dict[str, Result]:
    """Each stage's outcome from its scripts' rows (a script without one never started)."""
    return {
        stage.name: stage_result(
            rows[s.path].result if s.path in rows else Result.NOT_STARTED for s in stage.scripts
        )
        for stage in plan.stages
    }


def exit_code(rows: Iterable[Row], stopped_by: int | None) -> int:
    """143 or 130 (128 + the signal) for a plan stopped by SIGTERM or SIGINT; 0 only if
    every script succeeded; else 1 (one failed, or was skipped because one failed)."""
    if stopped_by is not None:
        return 128 + stopped_by
    return 0 if all(row.result == Result.OK for row in rows) else 1


def summary(
    plan: Plan,
    rows: Sequence[Row],
    *,
    dry_run: bool,
    duration: float,
    stopped_by: str | None,
    code: int,
) -> dict[str, object]:
    """The `--json` document of a plan's run (the same as the table)."""
    by_path = {row.path: row for row in rows}
    outcomes = outcomes_of(plan, by_path)
    skipped = {row.stage: row.reason for row in rows if row.result == Result.SKIPPED}
    return {
        "ok": code == 0,
        "exit_code": code,
        "plan": plan.source or None,
        "dry_run": dry_run,
        "stopped": stopped_by is not None,
        "signal": stopped_by,
        "duration": round(duration, 1),
        "stages": [
            {
                "name": stage.name,
                "after": list(stage.after),
                "when": stage.when,
                "parallel": stage.parallel,
                "result": outcomes[stage.name].value,
                "reason": skipped.get(stage.name, ""),
            }
            for stage in plan.stages
        ],
        "scripts": [row.to_json() for row in rows],
    }


def table(rows: Sequence[Row]) -> list[str]:
    """The summary printed at the end of a plan's run: one line per script, then why each
    one that did not succeed did not (the first line of the reason)."""
    header = ("script", "stage", "result", "duration", "copied")
    cells = [header] + [
        (
            r.script,
            r.stage,
            r.result.value,
            "" if r.duration is None else f"{r.duration:.1f} s",
            "" if r.copied is None else str(r.copied),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]
    for row in rows:
        if row.reason:
            lines.append(f"{row.script}: {row.result.value}: {row.reason.splitlines()[0]}")
    return lines
