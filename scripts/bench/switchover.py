"""Figure: switchover time, `synco-ctl promote NODE` with writes in flight, on the hosts of
tests/support/failover_hosts.py: network namespaces joined by one bridge, three for the agents
(sshd on each, mutual TLS) and two for BIND (a primary and a secondary).

A switchover, as the agents run it: the master stops announcing generations, NODE makes a
final pull of the last one, the master stops acting and every node grants NODE alone, NODE
wins the next epoch, moves the DNS record compare-and-set and acts, and the old master
follows it (its first pull from NODE keeps aside what was written on it after NODE's final
pull).

Each trial: the acting master (the one node acting, named by both DNS servers with its
epoch); a writer on it writing a small file into its tree every 10 ms (as an application
would); after a moment of writing (uniformly random within one heartbeat, past 0.3 s), on
the master's host (its network namespace: it reaches the DNS servers), `synco-ctl promote
NODE --json` with the next node as NODE (round-robin: the master moves around the three);
the writer stops when the command returns.

Measured: the command's own figure (its JSON "seconds"), from its start (just before it sends
the promote) until it concludes with exit 0: NODE acts as master, every authoritative server
names it with its new epoch (the command asks each one) and the old master follows NODE.
Beside it, from the command's steps: the final pull's duration (NODE's "final pull of
generation N done in X s") and when NODE first acted; and the command's wall time as a
process (with the interpreter's start and `ip netns exec`).

Checked after each trial, once every node holds the new master's tree: nothing lost (every
file written is on the new master, or kept aside on the node it was written on), and NODE is
the one master named by both DNS servers. At the end: never two nodes acting as master at
once (the agents' own log lines of when each started and stopped acting).

Result: p50, p99 and max of the command's seconds, the final pull's p50, the p50 of each
trial's seconds minus its own final pull, the writes in flight per trial (during the
command), the writes lost, the overlaps. A failed promote, a lost write or an overlap is
told in detail (the command's output, the agents' log tails) and makes the bench exit 1.

Target: p50 <= 2 s + the final sync (the final pull's p50), with the default timings.

SYNCO_BENCH_KEEP=1 keeps the hosts' directory (the agents' logs) afterwards; it is kept
anyway when something failed."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import REPO, emit, percentile

sys.path.insert(0, str(REPO))

from tests.support.failover_hosts import (
    PROFILES,
    THREE,
    DnsAnswer,
    FailoverHosts,
    Timings,
    Written,
    failover_hosts,
)

FINAL_PULL = re.compile(r"final pull of generation (\d+) done in ([0-9.]+) s")
ACTS = re.compile(r"acts as master of epoch (\d+)")
WRITE_EVERY = 0.01
LOG_TAIL = 60  # lines of each agent's log told with a failure


class Writer:
    """A small file written into `node`'s tree every 10 ms until stopped; each write's
    (monotonic) time."""

    def __init__(self, hosts: FailoverHosts, node: str, trial: int) -> None:
        self.hosts, self.node, self.trial = hosts, node, trial
        self.times: list[float] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        index = 0
        while not self.stopped.is_set():
            path = f"trial-{self.trial:03d}/w{index:05d}.txt"
            self.hosts.write(self.node, {path: f"trial {self.trial} write {index} on {self.node}\n"})
            self.times.append(time.monotonic())
            index += 1
            self.stopped.wait(WRITE_EVERY)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()

    def between(self, start: float, end: float) -> int:
        return sum(1 for at in self.times if start <= at <= end)


@dataclass
class Trial:
    number: int
    master: str
    target: str
    seconds: float | None = None  # the command's own figure
    wall_s: float | None = None  # the command's process, start to exit
    final_pull_s: float | None = None
    acts_at_s: float | None = None
    writes: int = 0  # during the command
    kept_aside: int = 0  # this trial's writes not on the new master but kept aside on the old one
    lost: list[Written] = field(default_factory=list)
    failure: str = ""

    def record(self) -> dict[str, object]:
        return {
            "trial": self.number,
            "from": self.master,
            "to": self.target,
            "seconds": self.seconds,
            "wall_s": self.wall_s,
            "final_pull_s": self.final_pull_s,
            "acts_at_s": self.acts_at_s,
            "writes_in_flight": self.writes,
            "kept_aside": self.kept_aside,
            "lost": len(self.lost),
            **({"failure": self.failure.splitlines()[0]} if self.failure else {}),
        }


def text(output: str | bytes | None) -> str:
    """A process's output as text (a timed-out run's is bytes, whatever `text` said)."""
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def tails(hosts: FailoverHosts) -> str:
    parts = []
    for name in hosts.names:
        try:
            lines = hosts.log(name).splitlines()[-LOG_TAIL:]
        except OSError as error:
            lines = [f"(no log: {error})"]
        parts.append(f"--- {name}'s log, its last {len(lines)} lines ---\n" + "\n".join(lines))
    return "\n".join(parts)


def describe(hosts: FailoverHosts) -> str:
    try:
        return hosts.describe()
    except Exception as error:  # (what the nodes say is for the report: it must not hide the failure)
        return f"(the nodes' status: {type(error).__name__}: {error})"


def run_trial(
    hosts: FailoverHosts, number: int, rng: random.Random, timings: Timings, known: set[Written]
) -> Trial:
    """One switchover; `known`: the writes found lost already (a trial tells only new ones)."""
    master = hosts.wait_for_master(timeout=60)
    names = hosts.names
    trial = Trial(number, master, names[(names.index(master) + 1) % len(names)])
    epoch = hosts.epoch(master)
    writer = Writer(hosts, master, number)
    try:
        time.sleep(0.3 + rng.uniform(0, timings.heartbeat_interval))  # writes in flight, at a random phase
        started = time.monotonic()
        try:
            result = hosts.ctl_on(master, "promote", trial.target, "--json", timeout=120)
        except subprocess.TimeoutExpired as error:
            trial.failure = f"synco-ctl promote {trial.target} did not exit within {error.timeout:g} s"
            trial.failure += f"\nstdout:\n{text(error.stdout)}\nstderr:\n{text(error.stderr)}"
            return trial
        finally:
            ended = time.monotonic()
    finally:
        writer.stop()
    trial.wall_s = round(ended - started, 3)
    trial.writes = writer.between(started, ended)
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        report = None
    if result.returncode != 0 or not isinstance(report, dict) or not report.get("ok"):
        trial.failure = (
            f"synco-ctl promote {trial.target} on {master} exited {result.returncode}"
            f"{'' if isinstance(report, dict) and report.get('ok') else ' (not ok)'}"
            f"\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
        return trial
    trial.seconds = float(report["seconds"])
    for step in report.get("steps", []):
        if step.get("node") != trial.target:
            continue
        pulled = FINAL_PULL.search(str(step.get("step", "")))
        if pulled is not None and trial.final_pull_s is None:
            trial.final_pull_s = float(pulled.group(2))
        if ACTS.search(str(step.get("step", ""))) and trial.acts_at_s is None:
            trial.acts_at_s = float(step["at_seconds"])
    if trial.final_pull_s is None:
        trial.failure = (
            f"the promote of {trial.target} succeeded without a final pull step from it\n"
            f"stdout:\n{result.stdout}"
        )
    hosts.wait_replicated(trial.target, timeout=60)
    trial.lost = [w for w in hosts.lost(trial.target) if w not in known]
    final, kept = hosts.tree(trial.target), hosts.kept_aside(master)
    trial.kept_aside = sum(
        1
        for w in hosts.written
        if w.path.startswith(f"trial-{number:03d}/")
        and final.get(w.path) != w.content
        and w.content in kept.get(w.path, [])
    )
    known.update(trial.lost)
    now = hosts.wait_for_master(timeout=30)
    new_epoch = hosts.epoch(now)
    if now != trial.target or new_epoch <= epoch or hosts.dns() != [DnsAnswer(now, new_epoch)] * 2:
        trial.failure += (
            f"\nafter the promote of {trial.target} (epoch {epoch}): {now} acts in epoch {new_epoch}"
        )
    if trial.lost:
        listed = "\n".join(f"  {w.node}: {w.path} = {w.content.strip()!r}" for w in trial.lost[:50])
        trial.failure += (
            f"\n{len(trial.lost)} writes lost (neither on {trial.target} nor kept aside where written):\n"
            f"{listed}\nthe command's output:\n{result.stdout}"
        )
    return trial


def overlaps(found: list[tuple[str, float, float]]) -> list[tuple[str, str, float, float]]:
    """Each pair of intervals of two nodes acting as master at once (and when)."""
    return [
        (a, b, max(a0, b0), min(a1, b1))
        for index, (a, a0, a1) in enumerate(found)
        for b, b0, b1 in found[index + 1 :]
        if a != b and a0 < b1 and b0 < a1
    ]


def p(values: list[float], fraction: float) -> float | None:
    return round(percentile(values, fraction), 3) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=10, help="switchovers (default 10)")
    parser.add_argument(
        "--profile", choices=list(PROFILES), default="default", help="timings (default: default)"
    )
    options = parser.parse_args()
    if options.trials < 1:
        parser.error("--trials must be at least 1")
    # a SIGTERM ends the bench as a Ctrl-C does: through its clean-up (agents, namespaces)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    timings = PROFILES[options.profile]
    rng = random.Random(1)  # the moments of the promotes within a heartbeat
    trials: list[Trial] = []
    failures: list[str] = []
    known: set[Written] = set()
    directory = tempfile.mkdtemp(prefix=f"synco-bench-switchover-{options.profile}-")
    with contextlib.ExitStack() as stack:
        keep = bool(os.environ.get("SYNCO_BENCH_KEEP"))  # (set it to look at the agents' logs afterwards)
        stack.callback(lambda: None if keep or failures else shutil.rmtree(directory, ignore_errors=True))
        hosts = stack.enter_context(failover_hosts(Path(directory), THREE, timings))
        for number in range(1, options.trials + 1):
            try:
                trial = run_trial(hosts, number, rng, timings, known)
            except AssertionError as error:  # a wait that timed out: the cluster is not back
                failures.append(f"trial {number}: {error}\n{tails(hosts)}")
                print(f"trial {number}: {str(error).splitlines()[0]}", file=sys.stderr)
                break
            trials.append(trial)
            if trial.failure:
                failures.append(f"trial {number}: {trial.failure}\n{describe(hosts)}\n{tails(hosts)}")
            print(
                f"trial {number}: {trial.master} -> {trial.target}: "
                + (
                    f"{trial.seconds:.2f} s (final pull {trial.final_pull_s} s, acts at "
                    f"{trial.acts_at_s} s, wall {trial.wall_s:.2f} s), {trial.writes} writes in flight, "
                    f"{trial.kept_aside} kept aside on {trial.master}, {len(trial.lost)} lost"
                    if trial.seconds is not None
                    else "FAILED"
                )
                + (f" -- {trial.failure.strip().splitlines()[0]}" if trial.failure else ""),
                file=sys.stderr,
            )
            if trial.seconds is None:  # a failed promote: does the cluster settle again?
                try:
                    hosts.wait_for_master(timeout=60)
                except AssertionError as error:
                    failures.append(f"after trial {number}: {error}")
                    break
        both = overlaps(hosts.acting_intervals())
        if both:
            failures.append(f"two masters at once: {both}\n{tails(hosts)}")
    done = [t for t in trials if t.seconds is not None]
    seconds = [t.seconds for t in done if t.seconds is not None]
    pulls = [t.final_pull_s for t in done if t.final_pull_s is not None]
    beyond = [
        t.seconds - t.final_pull_s for t in done if t.seconds is not None and t.final_pull_s is not None
    ]
    acts = [t.acts_at_s for t in done if t.acts_at_s is not None]
    walls = [t.wall_s for t in done if t.wall_s is not None]
    p50, final_pull_p50 = p(seconds, 0.5), p(pulls, 0.5)
    emit(
        "switchover",
        {
            "profile": options.profile,
            "timings": {
                k: getattr(timings, k) for k in ("heartbeat_interval", "lease", "lease_margin", "master_poll")
            },
            "trials": len(done),
            "failed_promotes": len(trials) - len(done),
            "trials_not_run": options.trials - len(trials),
            "p50_s": p50,
            "p99_s": p(seconds, 0.99),
            "max_s": max(seconds) if seconds else None,
            "final_pull_p50_s": final_pull_p50,
            "p50_minus_final_pull_s": p(beyond, 0.5),
            "acts_at_p50_s": p(acts, 0.5),
            "wall_p50_s": p(walls, 0.5),
            "writes_in_flight_per_trial": round(sum(t.writes for t in done) / len(done), 1) if done else None,
            "kept_aside_per_trial": round(sum(t.kept_aside for t in done) / len(done), 1) if done else None,
            "lost_writes": len(known),
            "two_masters_seen": len(both),
            "target": "p50 <= 2 s + the final sync",
            "target_met": (
                p50 is not None
                and final_pull_p50 is not None
                and p50 <= 2.0 + final_pull_p50
                and not failures
            ),
            "per_trial": [t.record() for t in trials],
        },
    )
    if failures:
        print("\n\n".join(failures), file=sys.stderr)
        print(f"the hosts' directory is kept: {directory}", file=sys.stderr)
        sys.exit(1)
    if keep:
        print(f"the hosts' directory is kept: {directory}", file=sys.stderr)


if __name__ == "__main__":
    main()
