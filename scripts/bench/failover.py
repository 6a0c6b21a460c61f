"""Figure: automatic failover time. Three agents on three hosts (network namespaces, sshd,
mutual TLS) and BIND (a primary and a secondary on hosts of their own); each trial SIGKILLs
the acting master's agent and measures until the new master acts and both authoritative
servers serve the record naming it with its epoch. p50 and p99 per timing profile.

Targets: p50 at or below 3.6 s (keepalived's failover) with the default timings, at or
below 2 s with the fastest documented ones, and never two nodes acting as master at once
(checked from the agents' own log lines of when each started and stopped acting).

The anti-flap interval (min_failover_interval) is set to 1 s so that trials can follow each
other; it delays no failover here."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

from benchlib import REPO, emit, percentile

sys.path.insert(0, str(REPO))

from tests.support.failover_hosts import DNS_HOSTS, MASTER, THREE, FailoverHosts, Timings, failover_hosts

from synco.core.model import AgentSettings

DEFAULTS = AgentSettings()
PROFILES = {
    "default": Timings(
        heartbeat_interval=DEFAULTS.heartbeat_interval,
        lease=DEFAULTS.lease,
        lease_margin=DEFAULTS.lease_margin,
        master_poll=DEFAULTS.master_poll,
    ),
    "fastest": Timings(heartbeat_interval=0.2, lease=0.8, lease_margin=0.1, master_poll=2.0),
}
LINE = re.compile(r"^(\S+ \S+) \S+ (\S+): master is now (\S+) \(was (\S+)\)", re.MULTILINE)

WATCHER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from synco.core.model import DnsSettings
from synco.dns_client import Authority, parse_server
server = parse_server(sys.argv[2])
authority = Authority(DnsSettings(zone=sys.argv[3], servers=(sys.argv[2],), timeout=0.5))
seen = None
while True:
    try:
        state = authority.read(sys.argv[4], server)
        now = (state.values[0].split(".")[0] if state.kind == "cname" else "-", state.epoch)
    except Exception:
        now = None
    if now is not None and now != seen:
        seen = now
        print(f"{time.time():.3f} {now[0]} {now[1]}", flush=True)
    time.sleep(0.01)
"""


class DnsWatch:
    """One process per DNS host, inside its namespace, printing each change of the record
    with the (shared) wall clock: when each server first served what."""

    def __init__(self, hosts: FailoverHosts) -> None:
        self.processes = [
            subprocess.Popen(
                hosts.network.command(
                    host,
                    [
                        sys.executable,
                        "-c",
                        WATCHER,
                        str(REPO / "agent"),
                        f"{hosts.network.address(host)}:53",
                        MASTER.split(".", 1)[1],
                        MASTER,
                    ],
                ),
                stdout=subprocess.PIPE,
                text=True,
            )
            for host in DNS_HOSTS
        ]
        self.changes: list[list[tuple[float, str, int]]] = [[] for _ in DNS_HOSTS]
        self.readers = [
            threading.Thread(target=self._read, args=(process, changes), daemon=True)
            for process, changes in zip(self.processes, self.changes, strict=True)
        ]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(process: subprocess.Popen[str], changes: list[tuple[float, str, int]]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            at, server, epoch = line.split()
            changes.append((float(at), server, int(epoch) if epoch != "None" else -1))

    def served(self, server: str, epoch: int) -> float | None:
        """When the last of the DNS servers first served `server` with `epoch`."""
        times = []
        for changes in self.changes:
            hit = [at for at, name, seen in changes if (name, seen) == (server, epoch)]
            if not hit:
                return None
            times.append(hit[0])
        return max(times)

    def close(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait()


def acting_since(hosts: FailoverHosts, name: str) -> float | None:
    """When `name` last started acting as master, by its own log (the shared wall clock)."""
    started = None
    for when, node, now, _ in LINE.findall(hosts.log(name)):
        if node == name and now == name:
            started = datetime.strptime(when, "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return started


def intervals(hosts: FailoverHosts, killed: dict[str, list[float]]) -> list[tuple[str, float, float]]:
    """When each node acted as master (from its log; an interval a SIGKILL ended, at the kill)."""
    found = []
    for name in hosts.names:
        kills = sorted(killed.get(name, []))
        start = None
        for when, node, now, was in LINE.findall(hosts.log(name)):
            at = datetime.strptime(when, "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if node != name:
                continue
            if now == name:
                start = at
            elif was == name and start is not None:
                found.append((name, start, at))
                start = None
        if start is not None:
            end = next((k for k in kills if k > start), time.time())
            found.append((name, start, end))
    return found


def overlaps(found: list[tuple[str, float, float]]) -> int:
    count = 0
    for index, (a, a0, a1) in enumerate(found):
        for b, b0, b1 in found[index + 1 :]:
            if a != b and a0 < b1 and b0 < a1:
                count += 1
    return count


def trials(profile: str, count: int) -> dict[str, object]:
    timings = PROFILES[profile]
    timings = Timings(**{**timings.__dict__, "min_failover_interval": 1.0})
    seconds: list[float] = []
    killed: dict[str, list[float]] = {}
    directory = tempfile.mkdtemp(prefix=f"synco-bench-failover-{profile}-")
    with contextlib.ExitStack() as stack:
        if not os.environ.get("SYNCO_BENCH_KEEP"):  # (set it to look at the agents' logs afterwards)
            stack.callback(shutil.rmtree, directory, ignore_errors=True)
        hosts = stack.enter_context(failover_hosts(Path(directory), THREE, timings))
        watch = DnsWatch(hosts)
        try:
            master = hosts.wait_for_master(timeout=60)
            for trial in range(count):
                hosts.write(master, {f"trial-{trial}.txt": "x"})
                hosts.wait_replicated(master)
                time.sleep(timings.lease)  # every replica holds a fresh lease view
                epoch = hosts.epoch(master)
                killed.setdefault(master, []).append(time.time())
                kill_at = killed[master][-1]
                hosts.kill(master)
                winner = hosts.wait_for_master([n for n in hosts.names if n != master], timeout=60)
                new_epoch = hosts.epoch(winner)
                assert new_epoch > epoch
                acted = acting_since(hosts, winner)
                named = None
                deadline = time.monotonic() + 30
                while named is None and time.monotonic() < deadline:
                    named = watch.served(winner, new_epoch)
                    time.sleep(0.05)
                assert acted is not None and named is not None, (acted, named)
                seconds.append(round(max(acted, named) - kill_at, 3))
                print(
                    f"{profile} trial {trial + 1}: {master} killed, {winner} acts: {seconds[-1]:.2f} s",
                    file=sys.stderr,
                )
                hosts.start(master)  # back as a replica
                master = winner
            two_masters = overlaps(intervals(hosts, killed))
        finally:
            watch.close()
    ordered = sorted(seconds)
    return {
        "timings": {k: getattr(timings, k) for k in ("heartbeat_interval", "lease", "lease_margin")},
        "trials": len(seconds),
        "p50_s": round(percentile(ordered, 0.5), 3),
        "p99_s": round(percentile(ordered, 0.99), 3),
        "max_s": ordered[-1],
        "seconds": seconds,
        "two_masters_seen": two_masters,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--profile", choices=[*PROFILES, "all"], default="all")
    options = parser.parse_args()
    profiles = list(PROFILES) if options.profile == "all" else [options.profile]
    results = {profile: trials(profile, options.trials) for profile in profiles}
    emit(
        "failover",
        {
            **results,
            "targets": {"default_p50_s": 3.6, "fastest_p50_s": 2.0, "keepalived_s": 3.6},
        },
    )


if __name__ == "__main__":
    main()
