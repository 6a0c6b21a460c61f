"""Plans of stages: parsing, every problem named, the order, the skip decisions and the
summary (pure)."""

from __future__ import annotations

import tomllib

from synco.core.problems import Problem
from synco.core.stages import (
    COMMAND_LINE,
    Copied,
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
    stage_result,
    summary,
    table,
    why_skipped,
)


def parsed(text: str) -> tuple[Plan | None, list[str]]:
    plan, problems = parse_plan(tomllib.loads(text), "/etc/synco/plan.toml")
    return plan, [str(p) for p in problems]


GOOD = """
parallel = 3
description = "nightly"
[[stages]]
name = "local"
scripts = ["a.toml", "sub/../sub/b.toml"]
[[stages]]
name = "offsite"
after = ["local"]
when = "always"
parallel = 1
scripts = ["/srv/c.toml"]
"""


def script(path: str, label: str | None = None) -> PlanScript:
    return PlanScript(path, label or path.rsplit("/", 1)[-1])


def test_a_plan_parses_with_paths_beside_it_and_names_as_written() -> None:
    plan, problems = parsed(GOOD)
    assert problems == []
    assert plan is not None
    local, offsite = plan.stages
    assert local == Stage(
        "local",
        (PlanScript("/etc/synco/a.toml", "a.toml"), PlanScript("/etc/synco/sub/b.toml", "sub/../sub/b.toml")),
        (),
        "succeeded",
        3,  # the plan's parallel
    )
    assert offsite == Stage("offsite", (PlanScript("/srv/c.toml", "/srv/c.toml"),), ("local",), "always", 1)
    assert [(stage.name, s.label) for stage, s in plan.scripts] == [
        ("local", "a.toml"),
        ("local", "sub/../sub/b.toml"),
        ("offsite", "/srv/c.toml"),
    ]


def test_parallel_defaults_to_one() -> None:
    plan, _ = parsed('[[stages]]\nname = "s"\nscripts = ["a.toml"]\n')
    assert plan is not None and plan.stages[0].parallel == 1


def test_a_plan_is_told_from_a_script_by_its_stages_array() -> None:
    assert is_plan({"stages": []})
    assert not is_plan({"servers": {}, "stages": []})  # a script (its check names `stages`)
    assert not is_plan({"servers": {}})
    assert not is_plan({"stages": "local"})  # not an array


def test_every_problem_is_named_together() -> None:
    text = """
paralel = 2
parallel = 0
description = 3
[[stages]]
name = "local"
scripts = ["a.toml", "./a.toml"]
when = "sometimes"
[[stages]]
name = "local"
scripts = []
after = ["locl", "locl"]
[[stages]]
scripts = ["b.toml"]
parallel = true
[[stages]]
name = "-x"
scripts = "c.toml"
after = "local"
"""
    plan, problems = parsed(text)
    assert plan is None
    assert problems == [
        "paralel: unknown key; did you mean 'parallel'?",
        "description: must be a string",
        "parallel: must be a whole number of scripts at once, 1 or more, not 0",
        "stages[0].scripts[1]: './a.toml' is already in stage 'local'",
        "stages[0].when: 'sometimes' is not one of: succeeded, always",
        "stages[0].when: says when to run after the stages in `after`: add them",
        "stages[1].name: 'local' is already the name of stages[0]",
        "stages[1].scripts: is empty: a stage runs at least one script",
        "stages[2].name: is required: letters, digits, '.', '_' and '-', starting with a letter or digit",
        "stages[2].parallel: must be a whole number of scripts at once, 1 or more, not True",
        "stages[3].name: '-x' is not a stage name: letters, digits, '.', '_' and '-', "
        "starting with a letter or digit",
        "stages[3].scripts: must be an array of non-empty strings",
        "stages[3].after: must be an array of non-empty strings",
        "stages[1].after[0]: no stage is named 'locl'; did you mean 'local'?",
        "stages[1].after[1]: no stage is named 'locl'; did you mean 'local'?",
    ]


def test_unknown_keys_of_a_stage_and_a_missing_stages_array() -> None:
    _, problems = parsed('[[stages]]\nname = "s"\nscripts = ["a.toml"]\nafterr = ["x"]\ncolour = 1\n')
    assert problems == [
        "stages[0].afterr: unknown key; did you mean 'after'?",
        "stages[0].colour: unknown key; known keys: name, scripts, after, when, parallel",
    ]
    assert parsed("parallel = 2\n")[1] == ["stages: must be a non-empty array of tables ([[stages]])"]
    assert parsed("stages = [1]\n")[1] == ["stages[0]: must be a table ([[stages]])"]


def test_a_cycle_is_named_and_so_are_a_later_stage_itself_and_a_repeat() -> None:
    text = """
[[stages]]
name = "a"
scripts = ["1.toml"]
after = ["c"]
[[stages]]
name = "b"
scripts = ["2.toml"]
after = ["d"]
[[stages]]
name = "c"
scripts = ["3.toml"]
after = ["b", "a"]
[[stages]]
name = "d"
scripts = ["4.toml"]
[[stages]]
name = "e"
scripts = ["5.toml"]
after = ["e", "d", "d"]
"""
    _, problems = parsed(text)
    assert problems == [
        "stages[0].after[0]: a cycle: a -> c -> a",
        "stages[1].after[0]: 'd' comes later: stages run in order, move it before 'b'",
        "stages[4].after[0]: stage 'e' cannot wait for itself",
        "stages[4].after[2]: 'd' is already named in `after`",
    ]


def test_a_longer_cycle_is_named_whole() -> None:
    text = "".join(
        f'[[stages]]\nname = "{name}"\nscripts = ["{name}.toml"]\nafter = ["{after}"]\n'
        for name, after in (("a", "c"), ("b", "a"), ("c", "b"))
    )
    assert parsed(text)[1] == ["stages[0].after[0]: a cycle: a -> c -> b -> a"]


def test_a_scripts_own_problems_are_said_under_the_plans_key() -> None:
    found = [Problem("master", "is required", 1), Problem("servers", "is required")]
    assert [str(p) for p in nested_problems("stages[0].scripts[1]", "b.toml", found)] == [
        "stages[0].scripts[1]: b.toml: master (line 1): is required",
        "stages[0].scripts[1]: b.toml: servers: is required",
    ]


def test_scripts_on_the_command_line_are_one_stage_one_at_a_time() -> None:
    plan = command_line_plan(["a.toml", "x/b.toml"], ["/w/a.toml", "/w/x/b.toml"])
    (stage,) = plan.stages
    assert stage == Stage(
        COMMAND_LINE,
        (PlanScript("/w/a.toml", "a.toml"), PlanScript("/w/x/b.toml", "x/b.toml")),
        (),
        "succeeded",
        1,
    )
    assert plan.source == ""
    twice = command_line_problems(["a.toml", "./a.toml"], ["/w/a.toml", "/w/a.toml"])
    assert [str(p) for p in twice] == ["./a.toml: named twice (as 'a.toml'): each script runs once"]


def test_the_order_says_stages_scripts_bounds_and_dependencies() -> None:
    plan, _ = parsed(GOOD + '[[stages]]\nname = "tail"\nafter = ["local", "offsite"]\nscripts = ["d.toml"]\n')
    assert plan is not None
    assert order(plan) == [
        "stage 1 local: a.toml, sub/../sub/b.toml (at most 3 at once)",
        "stage 2 offsite: /srv/c.toml (one at a time; after local, whatever happened)",
        "stage 3 tail: d.toml (at most 3 at once; after local, offsite, if they succeeded)",
    ]


def test_a_stage_runs_when_what_it_needs_succeeded_or_always() -> None:
    needs = Stage("offsite", (script("x"),), ("local", "db"))
    assert why_skipped(needs, {"local": Result.OK, "db": Result.OK}) is None
    assert why_skipped(needs, {"local": Result.FAILED, "db": Result.OK}) == (
        "needs local and db to succeed (local failed)"
    )
    assert why_skipped(needs, {"local": Result.SKIPPED, "db": Result.FAILED}) == (
        "needs local and db to succeed (local skipped, db failed)"
    )
    always = Stage("report", (script("x"),), ("local",), "always")
    assert why_skipped(always, {"local": Result.FAILED}) is None
    assert why_skipped(always, {"local": Result.SKIPPED}) is None
    assert why_skipped(Stage("free", (script("x"),)), {"local": Result.FAILED}) is None


def test_a_stages_result_is_its_worst_scripts() -> None:
    assert stage_result([Result.OK, Result.OK]) == Result.OK
    assert stage_result([Result.OK, Result.FAILED]) == Result.FAILED
    assert stage_result([Result.SKIPPED, Result.SKIPPED]) == Result.SKIPPED
    assert stage_result([Result.FAILED, Result.STOPPED, Result.NOT_STARTED]) == Result.STOPPED
    assert stage_result([Result.OK, Result.NOT_STARTED]) == Result.NOT_STARTED


def test_a_scripts_result_from_how_it_ended() -> None:
    assert script_result(0, stop_sent=False) == Result.OK
    assert script_result(0, stop_sent=True) == Result.OK  # it finished as it was asked to stop
    assert script_result(1, stop_sent=False) == Result.FAILED
    assert script_result(2, stop_sent=False) == Result.FAILED
    assert script_result(143, stop_sent=True) == Result.STOPPED
    assert script_result(-9, stop_sent=True) == Result.STOPPED


def test_why_a_script_failed_is_its_own_first_failure() -> None:
    assert first_failure({"failures": ["copy of 'a' failed", "second"]}, 1) == "copy of 'a' failed"
    assert first_failure({"ok": False, "error": "servers: is required"}, 2) == "servers: is required"
    assert first_failure(None, -9) == "killed by signal 9"
    assert first_failure(None, 1) == "exit 1 without a report"


def test_what_was_copied_comes_from_the_scripts_report() -> None:
    report = {
        "dry_run": False,
        "copies": [
            {"status": "ok", "stats": {"files": 3, "transferred_size": 1500}},
            {"status": "warning", "stats": {"files": 1, "transferred_size": 500}},
            {"status": "failed", "stats": {}},
        ],
    }
    what = copied(report)
    assert what == Copied(copies=3, copies_ok=2, files=4, bytes=2000)
    assert str(what) == "2/3 copies, 4 files, 2.0 kB"
    dry = copied({"dry_run": True, "copies": [{"status": "ok"}]})
    assert str(dry) == "1/1 copies (dry run)"
    assert copied(None) is None and copied({"ok": False, "error": "x"}) is None


ROWS = [
    Row("a.toml", "/p/a.toml", "local", Result.OK, 1.24, Copied(1, 1, 3, 12), 0),
    Row("b.toml", "/p/b.toml", "local", Result.FAILED, 0.5, Copied(1, 0, 0, 0), 1, "rsync exit 23\nmore"),
    Row(
        "offsite.toml",
        "/p/offsite.toml",
        "offsite",
        Result.SKIPPED,
        reason="needs local to succeed (local failed)",
    ),
]
PLAN = Plan(
    "/p/plan.toml",
    (
        Stage("local", (script("/p/a.toml"), script("/p/b.toml")), parallel=2),
        Stage("offsite", (script("/p/offsite.toml"),), ("local",)),
    ),
)


def test_the_summary_table_lines_up_with_reasons_below() -> None:
    header, first, second, third, why_b, why_offsite = table(ROWS)
    assert header.split() == ["script", "stage", "result", "duration", "copied"]
    assert first.index("1.2 s") == header.index("duration") and first.index("1/1") == header.index("copied")
    assert first.endswith("1/1 copies, 3 files, 12 B")
    assert second.split()[:3] == ["b.toml", "local", "failed"]
    assert third == "offsite.toml  offsite  skipped"  # no trailing blanks
    assert why_b == "b.toml: failed: rsync exit 23"  # the reason's first line
    assert why_offsite == "offsite.toml: skipped: needs local to succeed (local failed)"


def test_the_exit_status() -> None:
    assert exit_code(ROWS[:1], None) == 0
    assert exit_code(ROWS, None) == 1
    assert exit_code([ROWS[0], ROWS[2]], None) == 1  # skipped because of a failure
    assert exit_code(ROWS[:1], 15) == 143 and exit_code(ROWS[:1], 2) == 130


def test_a_stopped_plan_lists_what_never_started() -> None:
    rows = {ROWS[0].path: ROWS[0]}
    assert not_run(PLAN, rows) == [
        Row("b.toml", "/p/b.toml", "local", Result.NOT_STARTED),
        Row("offsite.toml", "/p/offsite.toml", "offsite", Result.NOT_STARTED),
    ]
    assert outcomes_of(PLAN, rows) == {"local": Result.NOT_STARTED, "offsite": Result.NOT_STARTED}


def test_the_json_summary() -> None:
    document = summary(PLAN, ROWS, dry_run=False, duration=2.04, stopped_by=None, code=1)
    assert {k: v for k, v in document.items() if k not in ("stages", "scripts")} == {
        "ok": False,
        "exit_code": 1,
        "plan": "/p/plan.toml",
        "dry_run": False,
        "stopped": False,
        "signal": None,
        "duration": 2.0,
    }
    assert document["stages"] == [
        {"name": "local", "after": [], "when": "succeeded", "parallel": 2, "result": "failed", "reason": ""},
        {
            "name": "offsite",
            "after": ["local"],
            "when": "succeeded",
            "parallel": 1,
            "result": "skipped",
            "reason": "needs local to succeed (local failed)",
        },
    ]
    scripts = document["scripts"]
    assert isinstance(scripts, list)
    assert scripts[0] == {
        "script": "a.toml",
        "path": "/p/a.toml",
        "stage": "local",
        "result": "ok",
        "exit_code": 0,
        "duration": 1.24,
        "copied": "1/1 copies, 3 files, 12 B",
        "copies": 1,
        "copies_ok": 1,
        "files": 3,
        "bytes": 12,
        "reason": "",
    }
    assert scripts[2]["copies"] is None and scripts[2]["duration"] is None
    stopped = summary(PLAN, ROWS[:1], dry_run=True, duration=0, stopped_by="SIGTERM", code=143)
    assert stopped["stopped"] is True and stopped["signal"] == "SIGTERM" and stopped["dry_run"] is True
