"""`synco run PLAN` and `synco run A B`: real scripts (local servers, real rsync) run in
stages by the command line, with the order and the parallel bound observed from the times
the scripts' own handlers write."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.support.cli import read_tree, synco, write_tree

pytestmark = pytest.mark.usefixtures("rsync")


class Site:
    def __init__(self, tmp_path: Path) -> None:
        self.directory = tmp_path
        self.log = tmp_path / "times.log"
        self.source = tmp_path / "source"
        write_tree(self.source, {"a": "1", "sub/b": "2"})

    def script(self, name: str, *, hold: float = 1.5, fail: bool = False) -> str:
        """A script copying the source to its own target; its handlers log when it runs."""
        start = ["sh", "-c", f"echo start {name} $(date +%s.%N) >> {self.log}; sleep {hold}"]
        end = ["sh", "-c", f"echo end {name} $(date +%s.%N) >> {self.log}"]
        source = self.directory / "missing" if fail else self.source
        (self.directory / f"{name}.toml").write_text(
            'master = "here"\n[method]\narguments = ["--archive"]\n'
            f'[servers.here]\nroot = "{source}"\n'
            f'[servers.copy]\nroot = "{self.directory / (name + "-copy")}"\n'
            f"[events]\nprepare = [{json.dumps(start)}]\nfinish = [{json.dumps(end)}]\n"
            '[[directories]]\npath = "sub"\n'
        )
        return f"{name}.toml"

    def plan(self, text: str) -> Path:
        path = self.directory / "plan.toml"
        path.write_text(text)
        return path

    def intervals(self) -> dict[str, tuple[float, float]]:
        starts, ends = {}, {}
        for line in self.log.read_text().splitlines():
            kind, name, at = line.split()
            (starts if kind == "start" else ends)[name] = float(at)
        return {name: (starts[name], ends[name]) for name in starts}


def most_at_once(intervals: dict[str, tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals.values()] + [(e, -1) for _, e in intervals.values()])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def stage_text(name: str, scripts: list[str], extra: str = "") -> str:
    return f'[[stages]]\nname = "{name}"\nscripts = {json.dumps(scripts)}\n{extra}'


def test_stages_run_in_order_with_the_parallel_bound_observed(tmp_path: Path) -> None:
    site = Site(tmp_path)
    local = [site.script(n) for n in ("a", "b", "c")]
    plan = site.plan(
        "parallel = 2\n"
        + stage_text("local", local)
        + stage_text("offsite", [site.script("d")], 'after = ["local"]\n')
    )
    result = synco("run", "--json", str(plan))
    assert result.returncode == 0, result.stderr
    times = site.intervals()
    assert most_at_once({n: times[n] for n in "abc"}) == 2  # three scripts, at most two at once
    assert times["d"][0] > max(times[n][1] for n in "abc")  # offsite after every local one
    report = json.loads(result.stdout)
    assert report["ok"] and [s["result"] for s in report["stages"]] == ["ok", "ok"]
    assert [(r["script"], r["stage"], r["result"]) for r in report["scripts"]] == [
        ("a.toml", "local", "ok"),
        ("b.toml", "local", "ok"),
        ("c.toml", "local", "ok"),
        ("d.toml", "offsite", "ok"),
    ]
    assert report["scripts"][0]["copied"] == "1/1 copies, 1 files, 1 B"
    assert read_tree(tmp_path / "d-copy") == {"sub/b": "2"}


def test_parallel_one_never_runs_two_at_once(tmp_path: Path) -> None:
    site = Site(tmp_path)
    plan = site.plan(stage_text("one", [site.script(n, hold=0.3) for n in ("a", "b", "c")]))
    assert synco("run", str(plan)).returncode == 0
    times = site.intervals()
    assert most_at_once(times) == 1
    assert times["a"][1] < times["b"][0] < times["b"][1] < times["c"][0]  # in the order written


def test_a_failed_stage_skips_its_dependants_while_independent_stages_run(tmp_path: Path) -> None:
    site = Site(tmp_path)
    plan = site.plan(
        stage_text("local", [site.script("a", hold=0), site.script("broken", hold=0, fail=True)])
        + stage_text("offsite", [site.script("b", hold=0)], 'after = ["local"]\n')
        + stage_text("other", [site.script("c", hold=0)])
        + stage_text("report", [site.script("d", hold=0)], 'after = ["local"]\nwhen = "always"\n')
    )
    result = synco("run", str(plan))
    assert result.returncode == 1
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:6]}
    assert rows["a.toml"].split()[2] == "ok" and rows["broken.toml"].split()[2] == "failed"
    assert rows["b.toml"].split()[2] == "skipped"
    assert "b.toml: skipped: needs local to succeed (local failed)" in result.stdout.splitlines()
    assert rows["c.toml"].split()[2] == "ok" and rows["d.toml"].split()[2] == "ok"
    assert not (tmp_path / "b-copy").exists() and (tmp_path / "c-copy").exists()
    assert "stage offsite: skipped: needs local to succeed (local failed)" in result.stderr
    assert "[broken.toml]" in result.stderr  # each script's log, prefixed with its name


def test_scripts_on_the_command_line_run_one_after_another_all_of_them(tmp_path: Path) -> None:
    site = Site(tmp_path)
    first, broken, last = (
        site.script("a", hold=0.2),
        site.script("x", hold=0, fail=True),
        site.script("b", hold=0.2),
    )
    result = synco("run", "--json", *(str(tmp_path / s) for s in (first, broken, last)))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert [r["result"] for r in report["scripts"]] == ["ok", "failed", "ok"]
    assert "rsync exit 23" in report["scripts"][1]["reason"]  # the script's own first failure
    times = site.intervals()
    assert times["a"][1] < times["b"][0]


def test_a_dry_run_shows_the_order_and_copies_nothing(tmp_path: Path) -> None:
    site = Site(tmp_path)
    plan = site.plan(
        "parallel = 2\n"
        + stage_text("local", [site.script("a", hold=0), site.script("b", hold=0)])
        + stage_text("offsite", [site.script("c", hold=0)], 'after = ["local"]\n')
    )
    result = synco("run", "--dry-run", str(plan))
    assert result.returncode == 0, result.stderr
    assert "would run stage local: a.toml, b.toml (at most 2 at once)" in result.stderr
    assert (
        "would run stage offsite: c.toml (at most 2 at once, after local (if they succeeded))"
        in result.stderr
    )
    assert "(dry run)" in result.stdout
    assert not any((tmp_path / f"{n}-copy").exists() for n in "abc")
    assert not site.log.exists()  # a dry run runs no handler


def test_sigterm_stops_every_running_script_and_starts_nothing_new(tmp_path: Path) -> None:
    site = Site(tmp_path)
    plan = site.plan(
        "parallel = 2\n"
        + stage_text("local", [site.script("a", hold=60), site.script("b", hold=60)])
        + stage_text("offsite", [site.script("c", hold=0)])
    )
    run = subprocess.Popen(
        [sys.executable, "-m", "synco.cli.main", "run", "--json", str(plan)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
            not site.log.exists() or len(site.log.read_text().splitlines()) < 2
        ):
            time.sleep(0.05)
        children = psutil.Process(run.pid).children(recursive=True)
        assert any("sleep" in " ".join(c.cmdline()) for c in children if c.is_running())
        run.send_signal(signal.SIGTERM)
        stdout, stderr = run.communicate(timeout=40)
    finally:
        run.kill()
    assert run.returncode == 143, stderr
    report = json.loads(stdout)
    assert report["stopped"] and not report["ok"]
    assert [(r["script"], r["result"]) for r in report["scripts"]] == [
        ("a.toml", "stopped"),
        ("b.toml", "stopped"),
        ("c.toml", "not started"),
    ]
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    assert not (tmp_path / "c-copy").exists()


def test_synco_check_names_every_problem_of_a_plan(tmp_path: Path) -> None:
    site = Site(tmp_path)
    broken = tmp_path / "broken.toml"
    broken.write_text('master = "nowhere"\n')
    plan = site.plan(
        stage_text("a", [site.script("ok", hold=0), "missing.toml", "broken.toml"], 'after = ["b"]\n')
        + stage_text("b", [site.script("x", hold=0)], 'after = ["a"]\n')
        + stage_text("c", [site.script("y", hold=0)], 'after = ["nope"]\n')
    )
    result = synco("check", str(plan))
    assert result.returncode == 2
    out = result.stdout
    assert "stages[0].scripts[1] (line 3): missing.toml: no such backup script" in out
    assert "stages[0].scripts[2] (line 3): broken.toml: " in out and "see synco check broken.toml" in out
    assert "stages[0].after[0] (line 4): a cycle: a -> b -> a" in out
    assert "stages[2].after[0] (line 12): no stage is named 'nope'" in out
    refused = synco("run", str(plan))
    assert refused.returncode == 2 and "problem(s) in the plan" in refused.stderr
    assert not site.log.exists()  # nothing ran
    as_json = json.loads(synco("check", "--json", str(plan)).stdout)
    assert not as_json["ok"] and len(as_json["problems"]) == 4
