"""Plans of stages: parsing, every problem named, the skip decisions and the summary (pure)."""

from __future__ import annotations

import tomllib

from synco.core.stages import (
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


def parsed(text: str) -> tuple[object, list[str]]:
    plan, problems = parse_plan(tomllib.loads(text), "/etc/synco/plan.toml")
    return plan, [str(p) for p in problems]


GOOD = """
parallel = 3
[[stages]]
name = "local"
scripts = ["a.toml", "sub/b.toml"]
[[stages]]
name = "offsite"
after = ["local"]
when = "always"
parallel = 1
scripts = ["/srv/c.toml"]
"""


def test_a_plan_parses_with_paths_beside_it() -> None:
    plan, problems = parsed(GOOD)
    assert problems == []
    assert plan is not None
    local, offsite = plan.stages  # type: ignore[attr-defined]
    assert local == Stage("local", ("/etc/synco/a.toml", "/etc/synco/sub/b.toml"), (), "succeeded", 3)
    assert offsite == Stage("offsite", ("/srv/c.toml",), ("local",), "always", 1)


def test_a_plan_is_told_from_a_script() -> None:
    assert (
        is_plan({"stages": []})
        and not is_plan({"servers": {}, "stages": []})
        and not is_plan({"servers": {}})
    )


def test_every_problem_is_named_together() -> None:
    text = """
paralel = 2
parallel = 0
[[stages]]
name = "local"
scripts = ["a.toml", "a.toml"]
when = "sometimes"
[[stages]]
name = "local"
scripts = []
after = ["locl"]
[[stages]]
scripts = ["b.toml"]
"""
    plan, problems = parsed(text)
    assert plan is None
    assert problems == [
        "paralel: unknown key; did you mean 'parallel'?",
        "parallel: must be a whole number of scripts at once, 1 or more, not 0",
        "stages[0].scripts[1]: 'a.toml' is already in stage 'local'",
        "stages[0].when: 'sometimes' is not one of: succeeded, always",
        "stages[0].when: says when to run after the stages in `after`: add them",
        "stages[1].name: 'local' is already the name of stages[0]",
        "stages[1].scripts: is empty: a stage runs at least one script",
        "stages[2].name: is required: letters, digits, '.', '_' and '-'",
        "stages[1].after[0]: no stage is named 'locl'; did you mean 'local'?",
    ]


def test_a_cycle_is_named_and_so_is_a_later_stage() -> None:
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
after = ["a"]
[[stages]]
name = "d"
scripts = ["4.toml"]
[[stages]]
name = "e"
scripts = ["5.toml"]
after = ["e"]
"""
    _, problems = parsed(text)
    assert problems == [
        "stages[0].after[0]: a cycle: a -> c -> a",
        "stages[1].after[0]: 'd' comes later: stages run in order, move it before 'b'",
        "stages[4].after[0]: stage 'e' cannot wait for itself",
    ]


def test_a_stage_runs_when_what_it_needs_succeeded_or_always() -> None:
    needs = Stage("offsite", ("x",), ("local", "db"))
    assert why_skipped(needs, {"local": Result.OK, "db": Result.OK}) is None
    assert why_skipped(needs, {"local": Result.FAILED, "db": Result.OK}) == (
        "needs local and db to succeed (local failed)"
    )
    assert why_skipped(needs, {"local": Result.SKIPPED, "db": Result.FAILED}) == (
        "needs local and db to succeed (local skipped, db failed)"
    )
    assert why_skipped(Stage("report", ("x",), ("local",), "always"), {"local": Result.FAILED}) is None
    assert why_skipped(Stage("free", ("x",)), {"local": Result.FAILED}) is None


def test_a_stages_result_is_its_worst_scripts() -> None:
    assert stage_result([Result.OK, Result.OK]) == Result.OK
    assert stage_result([Result.OK, Result.FAILED]) == Result.FAILED
    assert stage_result([Result.FAILED, Result.STOPPED, Result.NOT_STARTED]) == Result.STOPPED


def test_what_was_copied_comes_from_the_scripts_report() -> None:
    report = {
        "dry_run": False,
        "copies": [
            {"status": "ok", "stats": {"files": 3, "transferred_size": 1500}},
            {"status": "failed", "stats": {}},
        ],
    }
    assert copied(report) == "1/2 copies, 3 files, 1.5 kB"
    assert copied({"dry_run": True, "copies": [{"status": "ok"}]}) == "1/1 copies (dry run)"
    assert copied(None) == ""


def test_the_summary_table_lines_up() -> None:
    lines = table(
        [
            Row("a.toml", "local", Result.OK, 1.24, "1/1 copies, 3 files, 12 B"),
            Row("offsite.toml", "offsite", Result.SKIPPED, None, "", "needs local to succeed (local failed)"),
        ]
    )
    header, first, second, why = lines
    assert header.split() == ["script", "stage", "result", "duration", "copied"]
    assert first.index("1.2 s") == header.index("duration") and first.index("1/1") == header.index("copied")
    assert second == "offsite.toml  offsite  skipped"  # no trailing blanks
    assert why == "offsite.toml: skipped: needs local to succeed (local failed)"
