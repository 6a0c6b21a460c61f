"""The operator's controls with real agents on hosts in network namespaces (sshd, mutual TLS)
and BIND's primary and secondary: `synco-ctl promote` (a switchover with a writer on the old
master, a dry run, refusals, --force), `synco-ctl pause` / `resume`, and the role hooks
(pre-promote vetoing, promote, demote, role-change)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.support.agents import issue_certificates
from tests.support.failover_hosts import THREE, DnsAnswer, FailoverHosts, Member, Timings, failover_hosts

pytestmark = pytest.mark.usefixtures("rsync")
Build = Callable[..., FailoverHosts]
LEASE = Timings().lease


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return issue_certificates(tmp_path_factory.mktemp("certs"), ["s01", "s02", "s03", "w1"])


@pytest.fixture
def build(tmp_path: Path, certs: Path) -> Iterator[Build]:
    with ExitStack() as stack:

        def make(members: Sequence[Member] = THREE, extra_toml: str = "") -> FailoverHosts:
            return stack.enter_context(failover_hosts(tmp_path, members, certs=certs, extra_toml=extra_toml))

        yield make


def overlapping(intervals: list[tuple[str, float, float]]) -> list[tuple[str, str]]:
    return [
        (a, b)
        for i, (a, a0, a1) in enumerate(intervals)
        for b, b0, b1 in intervals[i + 1 :]
        if a != b and a0 < b1 and b0 < a1
    ]


def hooks_toml(directory: Path) -> str:
    """Every node records each role hook's SYNCO_* environment in a file of its own; the demote
    hook also stops the node's "application" (a writer that checks for the fence file)."""
    record = f'env | grep ^SYNCO_ | sort > "{directory}/$SYNCO_NODE.$SYNCO_EVENT.$(date +%s%N)"'
    fence = f'touch "{directory}/fenced-$SYNCO_NODE"'
    return (
        "[events]\n"
        f"promote = [{json.dumps(['sh', '-c', record])}]\n"
        f"demote = [{json.dumps(['sh', '-c', record])}, {json.dumps(['sh', '-c', fence])}]\n"
        f"role-change = {json.dumps(['sh', '-c', record])}\n"
    )


def fired(directory: Path, node: str, event: str) -> list[dict[str, str]]:
    found = []
    for path in sorted(directory.glob(f"{node}.{event}.*")):
        found.append(dict(line.split("=", 1) for line in path.read_text().splitlines()))
    return found


def test_a_switchover_with_a_writer_on_the_old_master_loses_nothing(build: Build, tmp_path: Path) -> None:
    recorded = tmp_path / "hooks"
    recorded.mkdir()
    hosts = build(extra_toml=hooks_toml(recorded))
    first = hosts.wait_for_master()
    epoch = hosts.epoch(first)
    hosts.write(first, {"before": "replicated before the switchover"})
    hosts.wait_replicated(first)
    target = next(n for n in hosts.names if n != first)
    stop = threading.Event()

    def writer() -> None:  # an application on the old master, stopped by its demote hook
        index = 0
        while not stop.is_set() and not (recorded / f"fenced-{first}").exists():
            hosts.write(first, {f"app/{index:05d}": f"write {index}"})
            index += 1
            time.sleep(0.01)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.5)
        result = hosts.ctl_on(first, "promote", target, "--json")
    finally:
        stop.set()
        thread.join()
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    steps = [f"{s['node']}: {s['step']}" for s in report["steps"]]
    assert report["ok"] and report["answered_by"] == first, steps
    assert any(f"{target}: final pull of generation" in s for s in steps), steps
    assert any(s.startswith(f"{first}: follows {target}") for s in steps), steps
    assert hosts.acting() == [target]
    assert hosts.dns() == [DnsAnswer(target, epoch + 1)] * 2
    writes = sum(1 for w in hosts.written if w.path.startswith("app/"))
    assert writes > 20, "the writer ran during the switchover"
    # clients that still hold the old DNS answer write on the old master after it follows
    # the new one (after its first pull): its next pulls keep those aside too
    hosts.write(first, {f"late/{i}": f"late write {i}" for i in range(5)})
    hosts.write(target, {"on-the-new-master": "makes every replica pull"})
    hosts.wait_replicated(target)
    assert hosts.lost(target) == [], "every write is on the new master or kept aside on the old one"
    assert overlapping(hosts.acting_intervals()) == []
    # the hooks: once each, with the switchover's environment
    (promoted,) = fired(recorded, target, "promote")
    assert promoted["SYNCO_EPOCH"] == str(epoch + 1)
    assert (promoted["SYNCO_OLD_MASTER"], promoted["SYNCO_NEW_MASTER"]) == (first, target)
    assert f"won epoch {epoch + 1}" in promoted["SYNCO_REASON"]
    (demoted,) = fired(recorded, first, "demote")
    assert (demoted["SYNCO_OLD_MASTER"], demoted["SYNCO_NEW_MASTER"]) == (first, target)
    assert f"handed over to {target}" in demoted["SYNCO_REASON"]
    assert [c["SYNCO_ROLE"] for c in fired(recorded, target, "role-change")] == ["master"]
    assert [c["SYNCO_ROLE"] for c in fired(recorded, first, "role-change")] == ["master", "replica"]
    other = next(n for n in hosts.names if n not in (first, target))
    assert fired(recorded, other, "role-change") == []


def test_a_dry_run_changes_nothing_and_a_promote_is_refused_with_its_reason(build: Build) -> None:
    hosts = build((Member("s01"), Member("s02"), Member("s03", priority=0), Member("w1", role="witness")))
    first = hosts.wait_for_master()
    epoch = hosts.epoch(first)
    other = "s02" if first == "s01" else "s01"
    dry = hosts.ctl_on(first, "promote", other, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"{other} would become master in epoch {epoch + 1}" in dry.stdout
    assert "s03: not eligible (priority 0)" in dry.stdout
    assert "w1: not eligible (a witness holds no data)" in dry.stdout
    hosts.hold(lambda: hosts.acting() == [first], 2 * LEASE, "nothing changed after the dry run")
    assert hosts.epoch(first) == epoch and hosts.dns() == [DnsAnswer(first, epoch)] * 2
    for target, reason in (("s03", "s03 is not eligible: priority 0"), ("w1", "a witness holds no data")):
        refused = hosts.ctl_on(other, "promote", target)
        assert refused.returncode == 1 and reason in refused.stderr, refused.stderr
    paused = hosts.ctl_on(other, "pause")
    assert paused.returncode == 0, paused.stderr
    refused = hosts.ctl_on(other, "promote", other)
    assert refused.returncode == 1 and "automatic failover is paused cluster-wide" in refused.stderr
    assert hosts.ctl_on(other, "resume").returncode == 0
    # no majority: with two of the four voters gone, nobody holds a lease
    hosts.kill(first)
    hosts.kill("w1")
    hosts.wait(lambda: hosts.acting() == [], "no master without a majority")
    refused = hosts.ctl_on(other, "promote", other)
    assert refused.returncode == 1, refused.stderr  # (s01's lease may still run here: then that is why)

    def masterless() -> bool:
        status = hosts.status(other)
        return status is not None and not status.local.heartbeat.master

    hosts.wait(masterless, f"{other} knows of no master")
    time.sleep(LEASE)  # (and heard nothing from the two for a lease)
    refused = hosts.ctl_on(other, "promote", other)
    assert refused.returncode == 1 and "no majority: 2 of 4 voters" in refused.stderr, refused.stderr
    assert hosts.acting() == [] and hosts.epoch(other) == epoch


def test_force_promotes_a_node_when_the_masters_host_is_down_and_no_majority_is_left(build: Build) -> None:
    hosts = build()
    first = hosts.wait_for_master()
    epoch = hosts.epoch(first)
    target, third = [n for n in hosts.names if n != first]
    hosts.write(first, {"before": "everywhere"})
    hosts.wait_replicated(first)
    hosts.cut(first)  # the master's host is gone...
    hosts.kill(first)
    hosts.write(first, {"late": "written on the old master after the last pull"})
    hosts.kill(third)  # ...and so is a second voter: no majority
    hosts.wait(lambda: hosts.acting() == [], "no master")
    refused = hosts.ctl_on(target, "promote", target)
    assert refused.returncode == 1 and "no majority" in refused.stderr, refused.stderr
    forced = hosts.ctl_on(target, "promote", target, "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert hosts.acting() == [target] and hosts.epoch(target) == epoch + 1
    assert hosts.dns() == [DnsAnswer(target, epoch + 1)] * 2
    hosts.write(target, {"after": "written on the forced master"})
    hosts.heal(first)
    hosts.start(first)
    hosts.start(third)
    assert hosts.wait_for_master() == target
    hosts.wait_replicated(target)
    assert hosts.lost(target) == []
    assert "written on the old master after the last pull" in hosts.kept_aside(first)["late"]


def test_pause_survives_a_restart_and_holds_off_failover_until_resumed(build: Build) -> None:
    hosts = build()
    first = hosts.wait_for_master()
    rest = [n for n in hosts.names if n != first]
    paused = hosts.ctl_on(rest[0], "pause")
    assert paused.returncode == 0 and "automatic failover paused cluster-wide" in paused.stdout, paused.stderr

    def all_paused() -> bool:
        statuses = hosts.statuses()
        return all(s is not None and s.local.heartbeat.failover_paused for s in statuses.values())

    hosts.wait(all_paused, "every node shows the pause")
    hosts.stop(rest[1])
    hosts.start(rest[1])
    status = hosts.status(rest[1])
    assert status is not None and status.local.heartbeat.failover_paused, "persisted across the restart"
    hosts.write(first, {"during": "maintenance: replication goes on"})
    hosts.wait_replicated(first)
    hosts.kill(first)
    hosts.hold(lambda: hosts.acting(rest) == [], 4 * LEASE, "no automatic failover while paused")
    table = hosts.ctl_on(rest[0], "status")
    assert "automatic failover: PAUSED cluster-wide" in table.stdout, table.stdout
    resumed = hosts.ctl_on(rest[1], "resume")
    assert resumed.returncode == 0, resumed.stderr
    assert hosts.wait_for_master(rest, timeout=20) in rest


def test_a_vetoing_pre_promote_makes_the_next_candidate_win(build: Build) -> None:
    # s01 ranks first (its name), then s02 (priority 100), then s03 (priority 50); s02 vetoes itself
    veto = json.dumps(["sh", "-c", "echo replication lag too high >&2; exit 1"])
    members = (Member("s01"), Member("s02"), Member("s03", priority=50))
    hosts = build(members, extra_toml=f"[servers.s02.events]\npre-promote = [{veto}]\n")
    assert hosts.wait_for_master() == "s01"
    hosts.write("s01", {"a": "1"})
    hosts.wait_replicated("s01")
    hosts.kill("s01")
    assert hosts.wait_for_master(["s02", "s03"], timeout=20) == "s03"
    log = hosts.log("s02")
    assert "s02: pre-promote hook failed: `sh -c" in log and "replication lag too high" in log, log[-3000:]
    assert "vetoed" in log
