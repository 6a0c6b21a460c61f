"""Staged runs: a plan of stages of backup scripts, its checks, its order and its summary (pure).

A plan file (TOML) is told from a backup script by its top-level `stages` array (a
backup script has `servers`). Stages run in the order they are written; the scripts of a
stage run side by side, at most `parallel` at once. A stage with `after = [...]` depends on
those earlier stages: with `when = "succeeded"` (the default) it runs only if every one of
them succeeded, with `when = "always"` once they are done whatever happened; a stage
without `after` runs whatever happened before it.
"""

from __future__ import annotations

import difflib
import posixpath
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from synco.core.problems import Problem

PLAN_KEYS = ("description", "parallel", "stages")
STAGE_KEYS = ("name", "scripts", "after", "when", "parallel")
WHEN = ("succeeded", "always")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class Result(StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"  # an earlier stage it depends on did not succeed
    STOPPED = "stopped"  # running when the plan was stopped (SIGTERM, SIGINT)
    NOT_STARTED = "not started"  # the plan was stopped before its turn


@dataclass(frozen=True)
class Stage:
    name: str
    scripts: tuple[str, ...]  # paths, resolved against the plan file's directory
    after: tuple[str, ...] = ()
    when: str = "succeeded"
    parallel: int = 1


@dataclass(frozen=True)
class Plan:
    source: str
    stages: tuple[Stage, ...]


def is_plan(data: Mapping[str, Any]) -> bool:
    return "stages" in data and "servers" not in data


def parse_plan(data: Mapping[str, Any], source: str) -> tuple[Plan | None, list[Problem]]:
    """The plan in parsed TOML `data` of file `source`, and every problem in it (the
    scripts' own files are looked at by the caller: `script_keys` says where each is)."""
    problems: list[Problem] = []
    base = posixpath.dirname(source) or "."
    for key in data:
        if key not in PLAN_KEYS:
            problems.append(_unknown(key, PLAN_KEYS))
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
            problems.append(Problem(key, "must be a table"))
            continue
        for name in table:
            if name not in STAGE_KEYS:
                problems.append(_unknown(f"{key}.{name}", STAGE_KEYS))
        name = table.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            problems.append(Problem(f"{key}.name", "is required: letters, digits, '.', '_' and '-'"))
            name = f"#{index}"
        elif name in seen_names:
            problems.append(
                Problem(f"{key}.name", f"{name!r} is already the name of stages[{seen_names[name]}]")
            )
        seen_names.setdefault(name, index)
        scripts = _strings(table.get("scripts"), f"{key}.scripts", problems, required=True)
        resolved = []
        for position, script in enumerate(scripts):
            path = posixpath.normpath(posixpath.join(base, script))
            if path in seen_scripts:
                problems.append(
                    Problem(f"{key}.scripts[{position}]", f"{script!r} is already in {seen_scripts[path]}")
                )
            seen_scripts.setdefault(path, f"stage {name!r}")
            resolved.append(path)
        after = _strings(table.get("after"), f"{key}.after", problems)
        when = table.get("when", "succeeded")
        if when not in WHEN:
            problems.append(Problem(f"{key}.when", f"{when!r} is not one of: {', '.join(WHEN)}"))
            when = "succeeded"
        if "when" in table and not after:
            problems.append(Problem(f"{key}.when", "says when to run after the stages in `after`: add them"))
        parallel = _parallel(table.get("parallel", default), f"{key}.parallel", problems)
        stages.append(Stage(name, tuple(resolved), tuple(after), str(when), parallel))
    problems += _order_problems(stages)
    return (Plan(source, tuple(stages)) if not problems else None), problems


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
    """Each `after` must name an earlier stage: an unknown name, a cycle and a later stage
    are each said so."""
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


def why_skipped(stage: Stage, outcomes: Mapping[str, Result]) -> str | None:
    """Why `stage` does not run given the earlier stages' outcomes, or None: it runs."""
    if stage.when == "always":
        return None
    failed = [name for name in stage.after if outcomes.get(name) != Result.OK]
    if not failed:
        return None
    what = ", ".join(f"{name} {outcomes.get(name, Result.NOT_STARTED).value}" for name in failed)
    return f"needs {' and '.join(stage.after)} to succeed ({what})"


def stage_result(results: list[Result]) -> Result:
    """A stage's outcome from its scripts'."""
    for worst in (Result.STOPPED, Result.FAILED, Result.SKIPPED, Result.NOT_STARTED):
        if worst in results:
            return worst
    return Result.OK


@dataclass(frozen=True)
class Row:
    """One script's line of the summary."""

    script: str
    stage: str
    result: Result
    duration: float | None
    copied: str  # what was copied, from the script's own report
    reason: str = ""


def copied(report: Mapping[str, Any] | None) -> str:
    """'2/2 copies, 31 files, 1.2 MB' from a `synco run --json` report."""
    if not report:
        return ""
    copies = [c for c in report.get("copies", []) if isinstance(c, dict)]
    done = sum(1 for c in copies if c.get("status") in ("ok", "warning"))
    files = sum(int(c.get("stats", {}).get("files", 0)) for c in copies)
    size = sum(int(c.get("stats", {}).get("transferred_size", 0)) for c in copies)
    text = f"{done}/{len(copies)} copies"
    if report.get("dry_run"):
        return text + " (dry run)"
    return f"{text}, {files} files, {human(size)}"


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def table(rows: list[Row]) -> list[str]:
    """The summary printed at the end of a staged run: one line per script, then why each
    one that did not succeed did not (its first line)."""
    header = ("script", "stage", "result", "duration", "copied")
    cells = [header] + [
        (r.script, r.stage, r.result.value, "" if r.duration is None else f"{r.duration:.1f} s", r.copied)
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
