"""`synco run PLAN` and `synco run A B`: real scripts (local servers with their own roots,
real rsync) run in stages by the command line as a child process. The order and the
parallel bound are observed by the scripts' own prepare/finish handlers, which write the
time and how many scripts are running at once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.support.cli import read_tree, synco, write_tree

pytestmark = pytest.mark.usefixtures("rsync")

# probe.sh start DIR NAME N TOTAL HOLD PATIENCE: note the start and how many of DIR's
# scripts are running now; wait (at most PATIENCE seconds) until N of them are running or
# every one of the TOTAL has come, so that a bound of N is reached whenever the runner
# allows it (and a bound passed is seen); note how many run then; then hold.
# probe.sh end DIR NAME: note the end.
PROBE = r"""
set -e
what=$1 dir=$2 name=$3
mkdir -p "$dir/running"
if [ "$what" = start ]; then
  echo "start $name $(date +%s.%N)" >> "$dir/../times.log"
  touch "$dir/running/$name"
  ls "$dir/running" | wc -l >> "$dir/counts"
  i=0
  while [ $i -lt $(($7 * 20)) ]; do
    running=$(ls "$dir/running" | wc -l)
    finished=$(cat "$dir/finished" 2>/dev/null | wc -l)
    [ "$running" -ge "$4" ] && break
    [ $((running + finished)) -ge "$5" ] && break
    sleep 0.05
    i=$((i + 1))
  done
  ls "$dir/running" | wc -l >> "$dir/counts"
  sleep "$6"
else
  rm -f "$dir/running/$name"
  echo "$name" >> "$dir/finished"
  echo "end $name $(date +%s.%N)" >> "$dir/../times.log"
fi
"""


class Site:
    def __init__(self, tmp_path: Path) -> None:
        self.directory = tmp_path
        self.log = tmp_path / "probes" / "times.log"
        self.probe = tmp_path / "probe.sh"
        self.probe.write_text(PROBE)
        self.source = tmp_path / "source"
        write_tree(self.source, {"a": "1", "sub/b": "2"})

    def script(
        self,
        name: str,
        *,
        group: str = "g",
        bound: int = 1,
        total: int = 1,
        hold: float = 0,
        patience: int = 30,
        fail: bool = False,
        arguments: tuple[str, ...] = (),
        source: Path | None = None,
    ) -> str:
        """A script copying `sub` of the source to its own target root; its handlers note
        when it runs, in the probe group `group` of `total` scripts expected `bound` at once."""
        probes = self.directory / "probes" / group
        start = [
            "sh",
            str(self.probe),
            "start",
            str(probes),
            name,
            str(bound),
            str(total),
            str(hold),
            str(patience),
        ]
        end = ["sh", str(self.probe), "end", str(probes), name]
        root = self.directory / "missing" if fail else (source or self.source)
        (self.directory / f"{name}.toml").write_text(
            f'master = "here"\n[method]\narguments = {json.dumps(["--archive", *arguments])}\n'
            f'[servers.here]\nroot = "{root}"\n'
            f'[servers.copy]\nroot = "{self.directory / (name + "-copy")}"\n'
            f"[events]\nprepare = [{json.dumps(start)}]\nfinish = [{json.dumps(end)}]\n"
            '[[directories]]\npath = "sub"\n'
        )
        return f"{name}.toml"

    def plan(self, text: str) -> Path:
        path = self.directory / "plan.toml"
        path.write_text(text)
        return path

    def times(self) -> dict[str, dict[str, float]]:
        """{"start": {name: time}, "end": {name: time}} from the handlers' notes."""
        found: dict[str, dict[str, float]] = {"start": {}, "end": {}}
        for line in (self.log.read_text() if self.log.exists() else "").splitlines():
            kind, name, at = line.split()
            found[kind][name] = float(at)
        return found

    def intervals(self) -> dict[str, tuple[float, float]]:
        times = self.times()
        return {name: (at, times["end"][name]) for name, at in times["start"].items()}

    def most_at_once(self, group: str = "g") -> int:
        return max(int(n) for n in (self.directory / "probes" / group / "counts").read_text().split())


def stage_text(name: str, scripts: list[str], extra: str = "") -> str:
    return f'[[stages]]\nname = "{name}"\nscripts = {json.dumps(scripts)}\n{extra}'


def summary_rows(stdout: str) -> dict[str, list[str]]:
    """The table's rows by script: [script, stage, result, ...]."""
    lines = stdout.splitlines()
    assert lines[0].split() == ["script", "stage", "result", "duration", "copied"]
    rows = {}
    for line in lines[1:]:
        if line.split()[0].endswith(":"):  # the reasons below the table
            break
        cells = line.split()
        rows[cells[0]] = cells
    return rows


def test_stages_run_in_order_with_the_parallel_bound_reached_and_never_passed(tmp_path: Path) -> None:
    site = Site(tmp_path)
    local = [site.script(n, group="local", bound=2, total=3, hold=0.3) for n in ("a", "b", "c")]
    plan = site.plan(
        "parallel = 2\n"
        + stage_text("local", local)
        + stage_text("offsite", [site.script("d", group="offsite")], 'after = ["local"]\n')
    )
    result = synco("run", "--json", str(plan))
    assert result.returncode == 0, result.stderr
    assert site.most_at_once("local") == 2  # three scripts, two at once, never three
    times = site.intervals()
    assert times["d"][0] > max(times[n][1] for n in "abc")  # offsite after every local one
    report = json.loads(result.stdout)
    assert report["ok"] and report["exit_code"] == 0 and not report["stopped"]
    assert [(s["name"], s["result"], s["parallel"]) for s in report["stages"]] == [
        ("local", "ok", 2),
        ("offsite", "ok", 2),
    ]
    assert [(r["script"], r["stage"], r["result"], r["exit_code"]) for r in report["scripts"]] == [
        ("a.toml", "local", "ok", 0),
        ("b.toml", "local", "ok", 0),
        ("c.toml", "local", "ok", 0),
        ("d.toml", "offsite", "ok", 0),
    ]
    first = report["scripts"][0]
    assert (first["copies"], first["copies_ok"], first["files"], first["bytes"]) == (1, 1, 1, 1)
    assert first["copied"] == "1/1 copies, 1 files, 1 B" and first["duration"] > 0
    assert first["path"] == str(tmp_path / "a.toml")
    assert read_tree(tmp_path / "d-copy") == {"sub/b": "2"}
    assert "[a.toml] " in result.stderr  # each script's log, prefixed with its name


def test_a_stages_own_parallel_overrides_the_plans(tmp_path: Path) -> None:
    site = Site(tmp_path)
    scripts = [site.script(n, group="wide", bound=3, total=3, hold=0.3) for n in ("a", "b", "c")]
    plan = site.plan("parallel = 1\n" + stage_text("wide", scripts, "parallel = 3\n"))
    result = synco("run", str(plan))
    assert result.returncode == 0, result.stderr
    assert site.most_at_once("wide") == 3


def test_parallel_one_never_runs_two_at_once(tmp_path: Path) -> None:
    site = Site(tmp_path)
    # each waits a while for a second one to come: none may come until it has ended
    scripts = [site.script(n, bound=2, total=3, hold=0.2, patience=2) for n in ("a", "b", "c")]
    plan = site.plan(stage_text("one", scripts))
    result = synco("run", str(plan))
    assert result.returncode == 0, result.stderr
    assert site.most_at_once() == 1
    times = site.intervals()
    assert times["a"][1] < times["b"][0] < times["b"][1] < times["c"][0]  # in the order written


def test_a_failed_stage_skips_its_dependants_while_independent_stages_run(tmp_path: Path) -> None:
    site = Site(tmp_path)
    plan = site.plan(
        stage_text("local", [site.script("a"), site.script("broken", fail=True)])
        + stage_text("offsite", [site.script("b")], 'after = ["local"]\n')
        + stage_text("archive", [site.script("e")], 'after = ["offsite"]\n')
        + stage_text("other", [site.script("c")])
        + stage_text("report", [site.script("d")], 'after = ["local"]\nwhen = "always"\n')
    )
    result = synco("run", str(plan))
    assert result.returncode == 1
    rows = summary_rows(result.stdout)
    assert {name: cells[2] for name, cells in rows.items()} == {
        "a.toml": "ok",
        "broken.toml": "failed",
        "b.toml": "skipped",
        "e.toml": "skipped",
        "c.toml": "ok",
        "d.toml": "ok",
    }
    assert rows["a.toml"][1] == "local" and rows["d.toml"][1] == "report"
    assert " ".join(rows["a.toml"][3:]).endswith("s 1/1 copies, 1 files, 1 B")
    reasons = result.stdout.splitlines()
    assert "b.toml: skipped: needs local to succeed (local failed)" in reasons
    assert "e.toml: skipped: needs offsite to succeed (offsite skipped)" in reasons
    assert any(line.startswith("broken.toml: failed: ") and "rsync exit 23" in line for line in reasons)
    assert not (tmp_path / "b-copy").exists() and not (tmp_path / "e-copy").exists()
    assert read_tree(tmp_path / "c-copy") == {"sub/b": "2"} and (tmp_path / "d-copy").exists()
    times = site.intervals()
    assert times["d"][0] > times["broken"][1]  # "always": once local was done
    assert "stage offsite: skipped: needs local to succeed (local failed)" in result.stderr
    assert "[broken.toml] " in result.stderr


def test_scripts_on_the_command_line_run_one_after_another_all_of_them(tmp_path: Path) -> None:
    site = Site(tmp_path)
    scripts = [
        site.script("a", bound=2, total=3, hold=0.2, patience=2),
        site.script("x", bound=2, total=3, patience=2, fail=True),
        site.script("b", bound=2, total=3, hold=0.2, patience=2),
    ]
    result = synco("run", "--json", *(str(tmp_path / s) for s in scripts))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["plan"] is None
    assert [(r["script"], r["stage"], r["result"]) for r in report["scripts"]] == [
        (str(tmp_path / "a.toml"), "command-line", "ok"),
        (str(tmp_path / "x.toml"), "command-line", "failed"),
        (str(tmp_path / "b.toml"), "command-line", "ok"),
    ]
    assert "rsync exit 23" in report["scripts"][1]["reason"]  # the script's own first failure
    assert site.most_at_once() == 1
    times = site.intervals()
    assert times["a"][1] < times["x"][0] and times["x"][1] < times["b"][0]


def test_scripts_on_the_command_line_are_checked_before_any_runs(tmp_path: Path) -> None:
    site = Site(tmp_path)
    good = str(tmp_path / site.script("a"))
    broken = tmp_path / "broken.toml"
    broken.write_text('master = "nowhere"\n')
    result = synco("run", good, str(broken), str(tmp_path / "missing.toml"), good)
    assert result.returncode == 2
    assert "nothing was run" in result.stderr
    assert f"{broken}: " in result.stderr and "missing.toml: no such backup script" in result.stderr
    assert "named twice" in result.stderr
    assert not site.log.exists() and not (tmp_path / "a-copy").exists()


def test_a_dry_run_shows_the_order_and_each_scripts_dry_run_and_copies_nothing(tmp_path: Path) -> None:
    site = Site(tmp_path)
    plan = site.plan(
        "parallel = 2\n"
        + stage_text("local", [site.script("a"), site.script("b")])
        + stage_text("offsite", [site.script("c")], 'after = ["local"]\n')
    )
    result = synco("run", "--dry-run", "--json", str(plan))
    assert result.returncode == 0, result.stderr
    assert f"dry run of {plan}: 2 stage(s), 3 script(s), in this order:" in result.stderr
    assert "  stage 1 local: a.toml, b.toml (at most 2 at once)" in result.stderr
    assert "  stage 2 offsite: c.toml (at most 2 at once; after local, if they succeeded)" in result.stderr
    assert "[a.toml] " in result.stderr and "[c.toml] " in result.stderr  # each script's own dry run
    report = json.loads(result.stdout)
    assert report["dry_run"] and report["ok"]
    assert {r["copied"] for r in report["scripts"]} == {"1/1 copies (dry run)"}
    assert not any((tmp_path / f"{n}-copy").exists() for n in "abc")
    assert not site.log.exists()  # a dry run runs no handler


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def rsyncs_under(path: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["name", "cmdline", "status"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        alive = process.info["status"] != psutil.STATUS_ZOMBIE
        if process.info["name"] == "rsync" and str(path) in cmdline and alive:
            found.append(process)
    return found


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_every_running_script_and_starts_nothing_new(
    tmp_path: Path, signum: signal.Signals, code: int
) -> None:
    site = Site(tmp_path)
    big = tmp_path / "big"
    (big / "sub").mkdir(parents=True)
    (big / "sub" / "data").write_bytes(b"\0" * 5_000_000)  # 100 s at 50 kB/s
    copying = site.script("copying", arguments=("--bwlimit=50",), source=big)
    waiting = site.script("waiting", hold=120)
    plan = site.plan(
        "parallel = 2\n"
        + stage_text("local", [copying, waiting])
        + stage_text("later", [site.script("later")], 'after = ["local"]\nwhen = "always"\n')
    )
    run = subprocess.Popen(
        [sys.executable, "-m", "synco.cli.main", "run", "--json", str(plan)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: len(rsyncs_under(tmp_path / "copying-copy")) > 0, "the slow copy's rsync")
        wait_for(lambda: "waiting" in site.times()["start"], "the waiting script's handler")
        children = psutil.Process(run.pid).children(recursive=True)
        run.send_signal(signum)
        stdout, stderr = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == code, stderr
    report = json.loads(stdout)
    assert report["stopped"] and not report["ok"] and report["signal"] == signum.name
    assert report["exit_code"] == code
    assert [(r["script"], r["result"]) for r in report["scripts"]] == [
        ("copying.toml", "stopped"),
        ("waiting.toml", "stopped"),
        ("later.toml", "not started"),
    ]
    # each stopped itself on the SIGTERM it was sent (143), none had to be killed
    assert [r["exit_code"] for r in report["scripts"]] == [143, 143, None]
    assert report["scripts"][0]["reason"] == f"stopped by {signum.name} to the plan"
    assert [s["result"] for s in report["stages"]] == ["stopped", "not started"]
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    assert rsyncs_under(tmp_path) == []
    assert "later" not in site.times()["start"] and not (tmp_path / "later-copy").exists()
    assert f"{signum.name}: stopping 2 running script(s); nothing new starts" in stderr


def test_synco_check_names_every_problem_of_a_plan(tmp_path: Path) -> None:
    site = Site(tmp_path)
    broken = tmp_path / "broken.toml"
    broken.write_text('master = "nowhere"\n')
    ok = site.script("ok")
    plan = site.plan(
        "parallel = 0\ncolour = 1\n"
        + stage_text("a", [ok, "missing.toml", "broken.toml"], 'after = ["b"]\n')
        + stage_text("b", [site.script("x"), ok], 'after = ["a"]\nwhen = "later"\n')
        + stage_text("c", [site.script("y")], 'after = ["nope"]\n')
        + stage_text("c", [site.script("z")])
    )
    result = synco("check", str(plan))
    assert result.returncode == 2
    out = result.stdout.splitlines()
    assert out[0] == f"{plan}: {len(out) - 1} problem(s):"
    expected = [
        "parallel (line 1): must be a whole number of scripts at once, 1 or more, not 0",
        "colour (line 2): unknown key; known keys: description, parallel, stages",
        "stages[0].scripts[1] (line 5): missing.toml: no such backup script",
        "stages[0].scripts[2] (line 5): broken.toml: ",
        "stages[1].scripts[1] (line 9): 'ok.toml' is already in stage 'a'",
        "stages[1].when (line 11): 'later' is not one of: succeeded, always",
        "stages[3].name (line 17): 'c' is already the name of stages[2]",
        "stages[0].after[0] (line 6): a cycle: a -> b -> a",
        "stages[2].after[0] (line 15): no stage is named 'nope'",
    ]
    for start in expected:
        assert any(line.strip().startswith(start) for line in out), start
    refused = synco("run", str(plan))
    assert refused.returncode == 2 and "problem(s) in the plan: nothing was run" in refused.stderr
    assert "a cycle: a -> b -> a" in refused.stderr
    assert not site.log.exists()  # nothing ran
    as_json = json.loads(synco("check", "--json", str(plan)).stdout)
    assert not as_json["ok"] and len(as_json["problems"]) == len(out) - 1
    assert {"key": "stages[2].after[0]", "message": "no stage is named 'nope'", "line": 15} in as_json[
        "problems"
    ]


def test_synco_check_of_a_good_plan_shows_its_order(tmp_path: Path) -> None:
    site = Site(tmp_path)
    plan = site.plan(stage_text("local", [site.script("a"), site.script("b")], "parallel = 2\n"))
    result = synco("check", str(plan))
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines() == [
        f"{plan}: ok (1 stage(s), 2 script(s))",
        "  stage 1 local: a.toml, b.toml (at most 2 at once)",
    ]
